"""Admin rules for bargain activities: update what may change, disable, delete only when unused;
the store activity page; the checkout preview of a bargain and its stacking flags."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.kit.timeutil import utcnow
from tests.bargains import helpers as h
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import buyer, make_sku
from tests.factories.promotions import create_promotion

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"


def test_update_disable_delete(client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    used = h.make_activity(session_factory, tenant.id, sku)
    unused = h.make_activity(session_factory, tenant.id, sku)
    h.start(session_factory, tenant.id, buyer(session_factory, tenant.id), used)

    r = client.patch(f"{ADMIN}/bargain-activities/{used}", json={"name": "砍一刀", "per_member_limit": 2},
                     headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "bargain_state_invalid"  # the limit is fixed once started
    r = client.patch(f"{ADMIN}/bargain-activities/{used}", json={"name": "砍一刀"}, headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["name"] == "砍一刀" and r.json()["per_member_limit"] == 1
    assert r.json()["bargains"] == {"active": 1}
    r = client.patch(f"{ADMIN}/bargain-activities/{used}", json={"floor_price": 1}, headers=tenant.admin_headers)
    assert r.status_code == 422  # prices and H are fixed once created
    r = client.patch(f"{ADMIN}/bargain-activities/{used}", json={"ends_at": (utcnow() - dt.timedelta(days=2)).isoformat()},
                     headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "window_invalid"

    r = client.delete(f"{ADMIN}/bargain-activities/{used}", headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "bargain_state_invalid"
    assert client.delete(f"{ADMIN}/bargain-activities/{unused}", headers=tenant.admin_headers).status_code == 204
    assert client.get(f"{ADMIN}/bargain-activities/{unused}", headers=tenant.admin_headers).status_code == 404

    page = client.get(f"{STORE}/bargains/activities/{used}", headers=tenant.store_headers)
    assert page.status_code == 200 and page.json()["status"] == "active" and page.json()["start_price"] == 10000
    r = client.post(f"{ADMIN}/bargain-activities/{used}/disable", headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["effective_status"] == "disabled"
    assert client.get(f"{STORE}/bargains/activities/{used}", headers=tenant.store_headers).status_code == 404
    _, headers = f.paying_customer(session_factory, tenant.id)
    r = client.post(f"{STORE}/bargains/activities/{used}/start", headers=headers)
    assert r.status_code == 404
    listed = client.get(f"{ADMIN}/bargain-activities?status=disabled", headers=tenant.admin_headers).json()
    assert [a["id"] for a in listed["items"]] == [used]


def test_preview_prices_one_unit_at_the_current_price_with_flags(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    act = h.make_activity(session_factory, tenant.id, sku, helpers_needed=2, allows_coupons=True)
    member, headers = f.paying_customer(session_factory, tenant.id)
    bargain_id = h.start(session_factory, tenant.id, member, act)
    cut = h.help_(session_factory, tenant.id, bargain_id, buyer(session_factory, tenant.id))
    body = {"items": [{"sku_id": sku, "quantity": 1}], "options": {"bargain": {"bargain_id": bargain_id}}}
    r = client.post(f"{STORE}/checkout/preview", json=body, headers=headers)
    assert r.status_code == 200, r.text
    (line,) = r.json()["lines"]
    assert line["payable_amount"] == 10000 - cut
    assert line["flags"]["activity"] == f"bargain:{bargain_id}"
    assert line["flags"]["no_coupon"] is False and line["flags"]["no_points"] is True
    r = client.post(f"{STORE}/checkout/preview", json={**body, "items": [{"sku_id": sku, "quantity": 2}]}, headers=headers)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "bargain_quantity_one"
    # another member cannot use it
    _, other = f.paying_customer(session_factory, tenant.id)
    r = client.post(f"{STORE}/checkout/preview", json=body, headers=other)
    assert r.status_code == 404


def _preview(client: TestClient, headers: dict[str, str], items: list[tuple[int, int]], bargain_id: int) -> dict[str, Any]:
    body = {"items": [{"sku_id": s, "quantity": q} for s, q in items], "coupon_ids": [],
            "options": {"bargain": {"bargain_id": bargain_id}}}
    r = client.post(f"{STORE}/checkout/preview", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _order_promotion_rows(out: dict[str, Any]) -> list[tuple[str, int]]:
    return [(row["code"], row["amount"]) for row in out["breakdown"] if row["stage"] == "order_promotions"]


def test_bargain_lines_take_spend_and_save_only_when_the_activity_allows_order_promotions(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    plain = make_sku(session_factory, tenant.id, price=3000)
    save = create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 12000, "discount": 1000}]})
    code = f"spend_save:{save['id']}"
    member, headers = f.paying_customer(session_factory, tenant.id)
    # no helps yet: the bargain's current price is its start price, ¥100
    off = h.start(session_factory, tenant.id, member, h.make_activity(session_factory, tenant.id, sku))

    # the default: off. The ¥100 bargain line does not count: ¥30 alone is under ¥120 ...
    out = _preview(client, headers, [(sku, 1), (plain, 1)], off)
    assert out["lines"][0]["flags"]["no_order_promotions"] is True
    assert _order_promotion_rows(out) == []
    assert [ln["payable_amount"] for ln in out["lines"]] == [10000, 3000]
    # ... and with ¥120 of plain goods the threshold is met by them alone: the whole ¥10 is theirs
    out = _preview(client, headers, [(sku, 1), (plain, 4)], off)
    assert _order_promotion_rows(out) == [(code, -1000)]
    assert [ln["discounts"].get("order_promotions", 0) for ln in out["lines"]] == [0, 1000]
    assert [ln["payable_amount"] for ln in out["lines"]] == [10000, 12000 - 1000]

    # allowed: ¥100 + ¥30 = ¥130 ≥ ¥120 saves ¥10, allocated 100:30 by largest remainder (769.23 / 230.77)
    act = h.make_activity(session_factory, tenant.id, sku, allows_order_promotions=True)
    on = h.start(session_factory, tenant.id, member, act)
    out = _preview(client, headers, [(sku, 1), (plain, 1)], on)
    assert out["lines"][0]["flags"]["no_order_promotions"] is False and out["lines"][0]["flags"]["no_coupon"] is True
    assert _order_promotion_rows(out) == [(code, -1000)]
    assert [ln["discounts"].get("order_promotions", 0) for ln in out["lines"]] == [769, 231]
    assert [ln["payable_amount"] for ln in out["lines"]] == [10000 - 769, 3000 - 231]
    body = {"items": [{"sku_id": sku, "quantity": 1}, {"sku_id": plain, "quantity": 1}], "coupon_ids": [],
            "options": {"bargain": {"bargain_id": on}}}
    r = client.post(f"{STORE}/checkout/submit", json=body, headers={**headers, "Idempotency-Key": "bargain-save-1"})
    assert r.status_code == 201, r.text
    assert [ln["payable_amount"] for ln in r.json()["lines"]] == [10000 - 769, 3000 - 231]
    assert h.bargain(session_factory, on).status == "ordered"


def test_stacking_settings_change_only_before_the_start(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    running = h.make_activity(session_factory, tenant.id, sku)
    upcoming = h.make_activity(session_factory, tenant.id, sku, starts_in=dt.timedelta(hours=2))
    got = client.get(f"{ADMIN}/bargain-activities/{upcoming}", headers=tenant.admin_headers).json()
    assert (got["allows_coupons"], got["allows_points"], got["allows_order_promotions"], got["free_shipping"]) == (
        False, False, False, False)  # the defaults
    stacking = {"allows_coupons": True, "allows_points": True, "allows_order_promotions": True, "free_shipping": True}
    r = client.patch(f"{ADMIN}/bargain-activities/{upcoming}", json=stacking, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in stacking} == stacking
    # once started, what the customer was told holds; nothing changes (the name neither)
    r = client.patch(f"{ADMIN}/bargain-activities/{running}", json={"name": "改", "allows_order_promotions": True},
                     headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "bargain_state_invalid"
    got = client.get(f"{ADMIN}/bargain-activities/{running}", headers=tenant.admin_headers).json()
    assert got["allows_order_promotions"] is False and got["name"] == "好友砍价"
    page = client.get(f"{STORE}/bargains/activities/{upcoming}", headers=tenant.store_headers).json()
    assert {k: page[k] for k in stacking} == stacking and page["per_member_limit"] == 1
