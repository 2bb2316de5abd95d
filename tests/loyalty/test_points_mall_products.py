"""Points-mall products (积分商城 product exchange): a SKU listed in the loyalty rules' ``mall``
with a points price and a cash part, exchanged through the normal checkout with
``options={"points_mall": {"sku_id": S}}``. The points ride the order's points spend, so cancel
and refunds return them; the per-member limit counts pending and paid exchanges; nothing else
(coupons, member price, points deduction) stacks on the exchanged line."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import PRODUCT_OFF_SHELF, Sku
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.loyalty import mall, points, service
from siyu.loyalty.schemas import LoyaltyRules
from siyu.orders import checkout
from siyu.orders.models import Order
from siyu.orders.schemas import CheckoutIn
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.coupons.helpers import give, make_template
from tests.factories import payments as f
from tests.factories.concurrency import race
from tests.factories.orders import make_sku
from tests.loyalty import helpers as h
from tests.loyalty.test_concurrency import race_factory  # noqa: F401  (fixture)

STORE = "/api/store/v1"
ADMIN = "/api/admin/v1"
TIMEOUT = dt.timedelta(minutes=30)
PG_ONLY = "SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL"


def _mall(client: TestClient, tenant: Tenant, *items: dict[str, Any]) -> Any:
    return client.put(f"{ADMIN}/loyalty/rules", headers=tenant.admin_headers, json={"mall": list(items)})


def _product(sku: int, points: int = 100, cash: int = 990, **extra: Any) -> dict[str, Any]:
    return {"kind": "product", "sku_id": sku, "points": points, "cash": cash, **extra}


def _body(sku: int, quantity: int = 1, **extra: Any) -> dict[str, Any]:
    return {"items": [{"sku_id": sku, "quantity": quantity}], "options": {"points_mall": {"sku_id": sku}}, **extra}


def _submit(client: TestClient, headers: dict[str, str], body: dict[str, Any], key: str | None = None) -> Any:
    return client.post(f"{STORE}/checkout/submit", json=body,
                       headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex})


def _pay(client: TestClient, order_id: int, headers: dict[str, str]) -> None:
    r = client.post(f"{STORE}/orders/{order_id}/pay", headers=headers)
    assert r.status_code == 200, r.text
    r = client.post(r.json()["params"]["complete_url"], headers=headers)
    assert r.status_code == 200, r.text


def _drain(factory: sessionmaker[Session], settings: Settings, tenant: Tenant) -> None:
    Worker(factory, settings, merchant_id=tenant.id).drain()
    Worker(factory, settings, merchant_id=tenant.id).drain()


def _mall_spends(factory: sessionmaker[Session], tenant: Tenant, member: int, sku: int) -> list[tuple[int, str | None]]:
    return [(e.delta, e.ref) for e in h.entries(factory, tenant.id, member) if e.reason == f"mall_product:{sku}"]


def _orders(factory: sessionmaker[Session], tenant: Tenant, member: int) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(Order).where(
            Order.merchant_id == tenant.id, Order.member_id == member)) or 0)


def _stock(factory: sessionmaker[Session], sku: int) -> int:
    with factory() as s:
        found = s.get(Sku, sku)
        assert found is not None
        return found.stock


def _listed(client: TestClient, tenant: Tenant, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    r = client.get(f"{STORE}/loyalty/mall", headers={**tenant.store_headers, **(headers or {})})
    assert r.status_code == 200, r.text
    return [item for item in r.json() if item["kind"] == "product"]


def test_an_exchange_with_a_cash_part_is_priced_paid_and_spends_its_points_once(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    h.add_level(session_factory, tenant.id, 0, "普通会员", member_price_percent=80)  # must not apply to the exchange
    sku = make_sku(session_factory, tenant.id, price=5000, free_shipping=True, title="保温杯")
    assert _mall(client, tenant, _product(sku, per_member_limit=2)).status_code == 200
    member, headers = f.paying_customer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 500, "start")

    listed = _listed(client, tenant, headers)
    assert len(listed) == 1
    item = listed[0]
    assert (item["sku_id"], item["title"], item["points"], item["cash"], item["sale_price"], item["per_member_limit"],
            item["remaining"], item["can_redeem"]) == (sku, "保温杯", 100, 990, 5000, 2, 2, True)

    r = client.post(f"{STORE}/checkout/preview", json=_body(sku), headers=headers)
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["payable_amount"] == 990
    assert [(b["code"], b["amount"]) for b in preview["breakdown"] if b["stage"] == "points"] == [
        (f"points_mall:{sku}", -4010)]
    assert not any(b["stage"] == "member_price" for b in preview["breakdown"])

    key = uuid.uuid4().hex
    r = _submit(client, headers, _body(sku), key)
    assert r.status_code == 201, r.text
    order = r.json()
    assert (order["payable_amount"], order["points_used"]) == (990, 100)
    assert _submit(client, headers, _body(sku), key).status_code == 200  # a retry returns the same order
    assert h.balance(session_factory, tenant.id, member) == 400
    _pay(client, order["id"], headers)
    _drain(session_factory, settings, tenant)
    assert _mall_spends(session_factory, tenant, member, sku) == [(-100, f"order:{order['id']}")]
    assert _stock(session_factory, sku) == 99
    assert _listed(client, tenant, headers)[0]["remaining"] == 1
    assert _listed(client, tenant)[0]["remaining"] is None  # anonymous visitor


def test_cancelling_an_unpaid_exchange_returns_its_points_and_its_limit(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=5000, free_shipping=True)
    assert _mall(client, tenant, _product(sku, per_member_limit=1)).status_code == 200
    member, headers = f.paying_customer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 300, "start")
    r = _submit(client, headers, _body(sku))
    assert r.status_code == 201, r.text
    assert h.balance(session_factory, tenant.id, member) == 200
    refused = _submit(client, headers, _body(sku))
    assert (refused.status_code, refused.json()["code"]) == (409, "points_mall_limit_reached"), refused.text
    r = client.post(f"{STORE}/orders/{r.json()['id']}/cancel", headers=headers)
    assert r.status_code == 200, r.text
    _drain(session_factory, settings, tenant)
    assert h.balance(session_factory, tenant.id, member) == 300 == h.entries_sum(session_factory, tenant.id, member)
    assert _stock(session_factory, sku) == 100
    assert _submit(client, headers, _body(sku)).status_code == 201  # the cancelled one no longer counts


def test_over_the_limit_and_short_of_points_are_refused_with_nothing_written(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=5000, free_shipping=True)
    other = make_sku(session_factory, tenant.id, price=3000, free_shipping=True)
    assert _mall(client, tenant, _product(sku, points=100, per_member_limit=2)).status_code == 200
    member, headers = f.paying_customer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 150, "start")
    cases = [
        (_body(sku, 3), 409, "points_mall_limit_reached"),  # 3 units, limit 2
        (_body(sku, 2), 409, "points_insufficient"),  # 200 points, 150 held
        (_body(other), 422, "validation_error"),  # not in the mall
        ({**_body(sku), "items": [{"sku_id": sku, "quantity": 1}, {"sku_id": other, "quantity": 1}]}, 422,
         "validation_error"),  # an exchange is an order of its own
    ]
    for body, status, code in cases:
        r = _submit(client, headers, body)
        assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert h.balance(session_factory, tenant.id, member) == 150
    assert len(h.entries(session_factory, tenant.id, member)) == 1
    assert _orders(session_factory, tenant, member) == 0
    assert _stock(session_factory, sku) == 100


def test_the_balance_falling_before_submit_is_points_insufficient_and_rolls_the_order_back(
    session_factory: sessionmaker[Session], tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook's spend is the binding check: the pricing read passed, then the balance fell."""
    sku = make_sku(session_factory, tenant.id, price=5000, free_shipping=True)
    with unit_of_work(session_factory) as s:
        service.put_rules(s, tenant.id, LoyaltyRules.model_validate({"mall": [_product(sku)]}), actor=h.SYSTEM)
    member, _ = f.paying_customer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 100, "start")
    original = mall.submit

    def spend_first(ctx: Any, order_id: int) -> str | None:
        points.spend(ctx.session, tenant.id, member, 50, reason="elsewhere", idempotency_key="elsewhere")
        return original(ctx, order_id)

    monkeypatch.setattr(mall, "submit", spend_first)
    with pytest.raises(DomainError) as err, unit_of_work(session_factory) as s:
        checkout.submit(s, tenant.id, member, CheckoutIn.model_validate(_body(sku)), idempotency_key="k1",
                        payment_timeout=TIMEOUT)
    assert err.value.code == "points_insufficient"
    assert h.balance(session_factory, tenant.id, member) == 100
    assert len(h.entries(session_factory, tenant.id, member)) == 1
    assert _orders(session_factory, tenant, member) == 0
    assert _stock(session_factory, sku) == 100


def test_a_refund_of_the_exchange_returns_its_points(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=5000, free_shipping=True)
    assert _mall(client, tenant, _product(sku, points=100, cash=1000)).status_code == 200
    member, headers = f.paying_customer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 500, "start")
    r = _submit(client, headers, _body(sku, 2))
    assert r.status_code == 201, r.text
    order = r.json()
    assert (order["payable_amount"], order["points_used"]) == (2000, 200)
    _pay(client, order["id"], headers)
    _drain(session_factory, settings, tenant)
    earned = h.balance(session_factory, tenant.id, member) - 300
    for amount, key in ((1000, "half"), (1000, "rest")):
        r = client.post(f"{ADMIN}/orders/{order['id']}/refunds", json={"amount": amount, "reason": "退款"},
                        headers={**tenant.admin_headers, "Idempotency-Key": key})
        assert r.status_code == 201, r.text
        _drain(session_factory, settings, tenant)
        if key == "half":  # half the goods refunded: half the exchange's points back
            assert h.balance(session_factory, tenant.id, member) == 300 + 100 + earned - earned // 2
    assert h.balance(session_factory, tenant.id, member) == 500 == h.entries_sum(session_factory, tenant.id, member)


def test_coupons_cannot_be_applied_to_the_exchanged_line(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=5000, free_shipping=True)
    assert _mall(client, tenant, _product(sku)).status_code == 200
    member, headers = f.paying_customer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 500, "start")
    coupon = give(session_factory, tenant.id, make_template(session_factory, tenant.id), member)
    r = client.post(f"{STORE}/checkout/preview", json=_body(sku, coupon_ids=[coupon]), headers=headers)
    assert r.json().get("code") == "coupon_excluded_by_activity", r.text
    r = client.post(f"{STORE}/checkout/preview", json=_body(sku, points_to_use=300), headers=headers)
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["payable_amount"] == 990  # no coupon picked, no points deduction on top
    assert [b["code"] for b in preview["breakdown"] if b["stage"] in ("coupons", "points")] == [f"points_mall:{sku}"]
    r = _submit(client, headers, _body(sku, points_to_use=300))
    assert r.status_code == 201, r.text
    assert r.json()["points_used"] == 100
    assert h.balance(session_factory, tenant.id, member) == 400


def test_a_points_only_exchange_is_paid_at_once(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=5000, free_shipping=True)
    assert _mall(client, tenant, _product(sku, points=300, cash=0)).status_code == 200
    member, headers = f.paying_customer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 300, "start")
    r = _submit(client, headers, _body(sku))
    assert r.status_code == 201, r.text
    assert (r.json()["payable_amount"], r.json()["status"], r.json()["points_used"]) == (0, "paid", 300)
    assert h.balance(session_factory, tenant.id, member) == 0


def test_the_mall_products_in_the_rules_are_validated(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=5000)
    off = make_sku(session_factory, tenant.id, price=5000, status=PRODUCT_OFF_SHELF)
    before = client.get(f"{ADMIN}/loyalty/rules", headers=tenant.admin_headers).json()
    for items, path, code in (
        ([_product(987654321)], "mall.0.sku_id", "sku_not_found"),
        ([_product(off)], "mall.0.sku_id", "sku_not_on_sale"),
        ([_product(sku, cash=5000)], "mall.0.cash", "mall_cash_not_below_price"),
        ([_product(sku, points=0)], "body.mall.0.points", "greater_than_equal"),  # schema paths name the body
        ([_product(sku, cash=-1)], "body.mall.0.cash", "greater_than_equal"),
        ([_product(sku), _product(sku, points=5)], None, "mall_product_repeated"),
        ([{**_product(sku), "coupon_template_id": 1}], None, "mall_item_kind_fields"),
        ([{"kind": "product", "points": 10}], None, "mall_item_kind_fields"),
    ):
        r = _mall(client, tenant, *items)
        assert r.status_code == 422, r.text
        fields = r.json()["fields"]
        if path:
            assert [x["path"] for x in fields] == [path], r.text
        if code:
            assert [x["code"] for x in fields] == [code], r.text
    assert client.get(f"{ADMIN}/loyalty/rules", headers=tenant.admin_headers).json() == before
    r = client.put(f"{ADMIN}/loyalty/rules", headers={**tenant.admin_headers, "Accept-Language": "en"},
                   json={"mall": [_product(off)]})
    assert r.json()["fields"][0]["message"] == f"SKU {off} is not on sale", r.text


def test_two_parallel_exchanges_of_a_limit_one_item_make_one_order(
    session_factory: sessionmaker[Session], race_factory: sessionmaker[Session],  # noqa: F811
    settings: Settings, tenant: Tenant,
) -> None:
    if settings.is_sqlite:
        pytest.skip(PG_ONLY)
    sku = make_sku(session_factory, tenant.id, price=5000, free_shipping=True)
    with unit_of_work(session_factory) as s:
        service.put_rules(s, tenant.id, LoyaltyRules.model_validate({"mall": [_product(sku, per_member_limit=1)]}),
                          actor=h.SYSTEM)
    member, _ = f.paying_customer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 1000, "start")

    def submit(i: int) -> str:
        with unit_of_work(race_factory) as s:
            checkout.submit(s, tenant.id, member, CheckoutIn.model_validate(_body(sku)),
                                       idempotency_key=f"race-{i}", payment_timeout=TIMEOUT)
            return "order"

    results = race(2, submit)
    assert sorted(results) == ["order", "points_mall_limit_reached"], results
    assert _orders(session_factory, tenant, member) == 1
    assert h.balance(session_factory, tenant.id, member) == 900
