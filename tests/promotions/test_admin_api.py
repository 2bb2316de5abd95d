"""Admin CRUD, activate/stop, validation on write (refusals change nothing), tenancy, store listing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.promotions.models import Promotion
from siyu.tenancy import service as tenancy_service
from tests.conftest import Tenant, unique
from tests.factories.orders import make_sku
from tests.factories.promotions import ADMIN, STORE, create_promotion, promotion_body, window


def _count(factory: sessionmaker[Session], tenant: Tenant) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(Promotion).where(Promotion.merchant_id == tenant.id)) or 0)


def _post(client: TestClient, tenant: Tenant, body: dict[str, Any]) -> Any:
    return client.post(f"{ADMIN}/promotions", json=body, headers=tenant.admin_headers)


def test_crud_activate_stop(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    body = promotion_body("limited_discount", {"items": [{"sku_id": sku, "price": 8000}]}, per_member_limit=2,
                          allows_coupons=False, **window(1, 3))
    r = _post(client, tenant, body)
    assert r.status_code == 201, r.text
    promo = r.json()
    assert (promo["status"], promo["effective_status"], promo["allows_coupons"]) == ("draft", "draft", False)
    assert promo["rules"] == {"items": [{"sku_id": sku, "price": 8000, "percent_off": None}], "over_limit": "refuse"}
    assert promo["over_limit"] == "refuse"
    pid = promo["id"]
    r = client.patch(f"{ADMIN}/promotions/{pid}", json={"name": "双十一 8 折", "per_member_limit": 3},
                     headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["per_member_limit"] == 3
    r = client.post(f"{ADMIN}/promotions/{pid}/activate", headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["effective_status"] == "scheduled"
    r = client.get(f"{ADMIN}/promotions", params={"kind": "limited_discount"}, headers=tenant.admin_headers)
    assert [p["id"] for p in r.json()["items"]] == [pid]
    r = client.post(f"{ADMIN}/promotions/{pid}/activate", headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "promotion_state_invalid"
    r = client.post(f"{ADMIN}/promotions/{pid}/stop", headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["status"] == "stopped"
    r = client.patch(f"{ADMIN}/promotions/{pid}", json={"name": "x"}, headers=tenant.admin_headers)
    assert r.status_code == 409
    r = client.delete(f"{ADMIN}/promotions/{pid}", headers=tenant.admin_headers)
    assert r.status_code == 409  # only drafts
    draft = _post(client, tenant, promotion_body("limited_discount", {"items": [{"sku_id": sku, "percent_off": 10}]}))
    r = client.delete(f"{ADMIN}/promotions/{draft.json()['id']}", headers=tenant.admin_headers)
    assert r.status_code == 204
    assert _count(session_factory, tenant) == 1


def test_rules_cannot_change_once_started(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    promo = create_promotion(client, tenant, "limited_discount", {"items": [{"sku_id": sku, "price": 8000}]})
    assert promo["effective_status"] == "active"
    r = client.patch(f"{ADMIN}/promotions/{promo['id']}", json={"allows_coupons": False}, headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "promotion_state_invalid"


@pytest.mark.parametrize(
    ("kind", "rules", "path", "code"),
    [
        ("spend_save", {"tiers": [{"threshold": 50000, "discount": 3000}, {"threshold": 30000, "discount": 6000}]},
         "rules.tiers.1.threshold", "tiers_not_increasing"),
        ("spend_save", {"tiers": [{"threshold": 30000, "discount": 3000}, {"threshold": 50000, "discount": 3000}]},
         "rules.tiers.1.discount", "tiers_not_increasing"),
        ("spend_save", {"tiers": [{"threshold": 30000, "discount": 30000}]},
         "rules.tiers.0.discount", "discount_not_below_threshold"),
        ("spend_save", {"tiers": [{"threshold": 100, "discount": 10}, {"threshold": 200, "discount": 20}],
                        "repeat": True}, "rules.repeat", "repeat_needs_one_tier"),
        ("spend_save", {"tiers": []}, "rules.tiers", "too_short"),
        ("limited_discount", {"items": [{"sku_id": "SKU", "price": 10000}]}, "rules.items.0.price",
         "price_not_below_sale_price"),
        ("limited_discount", {"items": [{"sku_id": "SKU", "price": 100, "percent_off": 10}]}, "rules.items.0",
         "price_or_percent_off"),
        ("first_order", {"items": [{"sku_id": "SKU", "price": 100}, {"sku_id": "SKU", "price": 200}]},
         "rules.items.1.sku_id", "duplicate_sku"),
        ("add_on", {"threshold": 100, "items": [{"sku_id": "SKU", "price": 100}]}, "rules.items.0.stock", "missing"),
        ("spend_gift", {"tiers": [{"threshold": 100, "gift_sku_id": "SKU"}], "extra": 1}, "rules.extra",
         "extra_forbidden"),
    ],
)
def test_bad_rules_are_refused_and_change_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session],
    kind: str, rules: dict[str, Any], path: str, code: str,
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)

    def fill(value: Any) -> Any:
        if value == "SKU":
            return sku
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    r = _post(client, tenant, promotion_body(kind, fill(rules)))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error"
    assert {(f["path"], f["code"]) for f in r.json()["fields"]} >= {(path, code)}, r.json()["fields"]
    assert _count(session_factory, tenant) == 0


def test_window_and_foreign_ids(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    body = promotion_body("first_order", {"items": [{"sku_id": sku, "price": 100}]}, **window(3, 1))
    r = _post(client, tenant, body)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "window_invalid"
    with unit_of_work(session_factory) as s:
        other = tenancy_service.create_merchant(s, code=unique("m"), name="Other").id
    foreign = make_sku(session_factory, other, price=10000)
    r = _post(client, tenant, promotion_body("first_order", {"items": [{"sku_id": foreign, "price": 100}]}))
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = _post(client, tenant, promotion_body("spend_gift", {"tiers": [{"threshold": 100, "gift_sku_id": foreign}]}))
    assert r.status_code == 404
    r = _post(client, tenant, promotion_body("spend_save", {"scope": {"type": "products", "ids": [10**9]},
                                                            "tiers": [{"threshold": 100, "discount": 10}]}))
    assert r.status_code == 404
    assert _count(session_factory, tenant) == 0


def test_a_first_order_special_takes_no_limit_above_one_unit(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """首单特价 is one unit of a member's first order by definition; a larger limit was accepted and ignored."""
    sku = make_sku(session_factory, tenant.id, price=10000)
    rules = {"items": [{"sku_id": sku, "price": 100}]}
    r = _post(client, tenant, promotion_body("first_order", rules, per_member_limit=2))
    assert r.status_code == 422, r.text
    assert [(f["path"], f["code"]) for f in r.json()["fields"]] == [("per_member_limit", "first_order_one_unit")]
    assert r.json()["fields"][0]["message"] == "首单特价每位会员限购 1 件（限购请留空或填 1）"
    assert _count(session_factory, tenant) == 0
    created = create_promotion(client, tenant, "first_order", rules, activate=False, per_member_limit=1)
    r = client.patch(f"{ADMIN}/promotions/{created['id']}", json={"per_member_limit": 3}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "first_order_one_unit", r.text
    r = client.get(f"{ADMIN}/promotions/{created['id']}", headers=tenant.admin_headers)
    assert r.json()["per_member_limit"] == 1


def test_another_merchants_promotion_is_404(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    import datetime as dt

    code = unique("m")
    with unit_of_work(session_factory) as s:
        other = tenancy_service.create_merchant(s, code=code, name="Other")
        tenancy_service.create_staff(s, other.id, username="owner", password="owner-pass-1", role="owner")
        token, _ = tenancy_service.login_staff(s, merchant_code=code, username="owner", password="owner-pass-1",
                                               ttl=dt.timedelta(hours=1))
    sku = make_sku(session_factory, tenant.id, price=10000)
    mine = create_promotion(client, tenant, "first_order", {"items": [{"sku_id": sku, "price": 100}]})
    theirs = {"Authorization": f"Bearer {token}"}
    for method, suffix in (("get", ""), ("post", "/stop"), ("get", "/stats"), ("delete", "")):
        r = client.request(method.upper(), f"{ADMIN}/promotions/{mine['id']}{suffix}", headers=theirs)
        assert r.status_code == 404, (method, suffix, r.text)


def test_store_lists_live_promotions_of_a_product(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    other = make_sku(session_factory, tenant.id, price=5000)
    create_promotion(client, tenant, "limited_discount", {"items": [{"sku_id": sku, "percent_off": 15}]},
                     per_member_limit=2)
    create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 30000, "discount": 3000},
                                                              {"threshold": 50000, "discount": 6000}]})
    create_promotion(client, tenant, "first_order", {"items": [{"sku_id": other, "price": 100}]})
    create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 100, "discount": 10}]}, **window(1, 2))
    create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 100, "discount": 10}]}, activate=False)
    r = client.get(f"{STORE}/promotions", params={"sku_id": sku}, headers=tenant.store_headers)
    assert r.status_code == 200, r.text
    got = {(p["kind"], p["label"]): p for p in r.json()}
    assert set(got) == {("limited_discount", "限时折扣"), ("spend_save", "满300减30，满500减60")}
    assert got[("limited_discount", "限时折扣")]["sku_prices"] == {str(sku): 8500}
    assert got[("limited_discount", "限时折扣")]["per_member_limit"] == 2
    r = client.get(f"{STORE}/promotions", params={"sku_id": 10**9}, headers=tenant.store_headers)
    assert r.status_code == 404
    r = client.get(f"{STORE}/promotions", headers=tenant.store_headers)
    assert r.status_code == 422


def test_add_on_stock_follows_the_rules_until_the_start(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    from siyu.promotions.models import PromotionSkuCounter

    extra = make_sku(session_factory, tenant.id, price=5000)
    rules = {"threshold": 100, "items": [{"sku_id": extra, "price": 100, "stock": 5}]}
    promo = create_promotion(client, tenant, "add_on", rules, **window(1, 3))
    rules["items"][0]["stock"] = 8
    r = client.patch(f"{ADMIN}/promotions/{promo['id']}", json={"rules": rules}, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    with session_factory() as s:
        counter = s.scalar(select(PromotionSkuCounter).where(PromotionSkuCounter.promotion_id == promo["id"]))
        assert counter is not None and (counter.stock, counter.sold) == (8, 0)


def test_list_filters_by_kind_and_status(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    active = create_promotion(client, tenant, "first_order", {"items": [{"sku_id": sku, "price": 100}]})
    draft = create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 100, "discount": 10}]},
                             activate=False)
    r = client.get(f"{ADMIN}/promotions", params={"status": "draft"}, headers=tenant.admin_headers)
    assert [p["id"] for p in r.json()["items"]] == [draft["id"]]
    r = client.get(f"{ADMIN}/promotions", params={"kind": "first_order", "status": "active"},
                   headers=tenant.admin_headers)
    assert [p["id"] for p in r.json()["items"]] == [active["id"]] and r.json()["total"] == 1
    r = client.get(f"{ADMIN}/promotions", params={"kind": "bogus"}, headers=tenant.admin_headers)
    assert r.status_code == 422
