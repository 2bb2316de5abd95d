"""Buying a flash-sale item through the HTTP checkout (``options={"flash_sale": {"item_id": N}}``)
and the buy-now endpoint, with the database gate alone and with the Redis gate in front: the
price and stacking flags, every refusal with its own code (changing nothing, in the database
and in Redis), and units coming back when an unpaid order times out or is cancelled."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.flash_sales import service
from siyu.kit.timeutil import utcnow
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.coupons.helpers import give, make_template
from tests.factories.aftersales import pay
from tests.factories.orders import make_freight_template, make_sku, sku_stock
from tests.flash_sales.helpers import (
    ADMIN,
    STORE,
    bound,
    create_sale,
    item_row,
    ledger,
    login,
    preview,
    redis_state,
    state,
    submit,
    window,
)


@dataclass
class Gate:
    """The HTTP client, and the Redis client and prefix when the Redis gate is on (else None)."""

    client: TestClient
    redis: redis.Redis | None
    prefix: str

    def snapshot(self, tenant: Tenant, item_id: int) -> Any:
        return None if self.redis is None else redis_state(self.redis, self.prefix, tenant.id, item_id)


@pytest.fixture(params=["database", "redis"])
def gate_mode(request: pytest.FixtureRequest, app: Any, engine: Engine, fs_prefix: str) -> Iterator[Gate]:
    """The same tests with the database gate alone and with the Redis gate in front of it (the
    app's engine for HTTP, the test engine for the worker)."""
    with TestClient(app) as client:
        if request.param == "database":
            yield Gate(client, None, fs_prefix)
            return
        rclient = request.getfixturevalue("rclient")
        with bound(app.state.engine, rclient, fs_prefix), bound(engine, rclient, fs_prefix):
            yield Gate(client, rclient, fs_prefix)


def drain(factory: sessionmaker[Session], settings: Settings, tenant: Tenant, g: Gate,
          now: dt.datetime | None = None) -> int:
    return Worker(factory, settings, merchant_id=tenant.id, redis=g.redis).drain(now=now)


def _sale(g: Gate, tenant: Tenant, factory: sessionmaker[Session], *, stock: int = 10, price: int = 10000,
          flash_price: int = 5000, **extra: Any) -> tuple[int, int]:
    sku = make_sku(factory, tenant.id, price=price, stock=stock + 20, **extra.pop("sku", {}))
    sale = create_sale(g.client, tenant, [{"sku_id": sku, "flash_price": flash_price, "activity_stock": stock}], **extra)
    return sku, int(sale["items"][0]["id"])


# -- price and stacking ----------------------------------------------------------------------------------


def test_the_line_is_priced_at_the_flash_price_and_flagged_for_later_stages(
    gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    g = gate_mode
    sku, item = _sale(g, tenant, session_factory, per_member_limit=2)
    headers, _ = login(g.client, tenant)
    r = preview(g.client, headers, sku, item, qty=2)
    assert r.status_code == 200, r.text
    out = r.json()
    line = out["lines"][0]
    assert line["payable_amount"] == 2 * 5000 and out["payable_amount"] == 2 * 5000
    assert line["discounts"] == {"item_promotions": 2 * (10000 - 5000)}
    assert line["flags"]["activity"].startswith("flash_sale:") and line["flags"]["activity_stock"]
    assert line["flags"]["no_coupon"] and line["flags"]["no_points"] and line["flags"]["no_order_promotions"]
    assert "free_shipping" not in line["flags"]
    assert item_row(session_factory, item).sold == 0  # a preview takes nothing
    r = submit(g.client, headers, sku, item, qty=2)
    assert r.status_code == 201, r.text
    assert r.json()["payable_amount"] == 2 * 5000
    assert sku_stock(session_factory, sku) == 20  # the normal stock is untouched: the units came from the activity
    assert state(session_factory, tenant.id, item)["sold"] == 2
    if g.redis is not None:
        _, member = headers, r.json()["member_id"]
        assert g.snapshot(tenant, item) == (8, {member: 2})
    # Without the option the same SKU is a normal line at the normal price, from normal stock.
    r = submit(g.client, headers, sku, None)
    assert r.status_code == 201 and r.json()["payable_amount"] == 10000
    assert sku_stock(session_factory, sku) == 19 and item_row(session_factory, item).sold == 2


def test_a_coupon_less_flash_line_is_skipped_by_the_coupon_stage_unless_the_sale_allows_coupons(
    gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    g = gate_mode
    sku, item = _sale(g, tenant, session_factory)  # default: no coupons
    allowed_sku, allowed_item = _sale(g, tenant, session_factory, allows_coupons=True)
    headers, member = login(g.client, tenant)
    coupon = give(session_factory, tenant.id, make_template(session_factory, tenant.id, "fixed", amount=1000), member)

    out = preview(g.client, headers, sku, item).json()
    assert out["lines"][0]["flags"]["no_coupon"] is True
    assert [row for row in out["breakdown"] if row["stage"] == "coupons"] == []
    assert {n["coupon_id"]: n["code"] for n in out["notes"]["coupons"]} == {coupon: "activity_excludes_coupons"}
    assert out["payable_amount"] == 5000

    out = preview(g.client, headers, allowed_sku, allowed_item).json()
    assert out["lines"][0]["flags"]["no_coupon"] is False
    assert [row["amount"] for row in out["breakdown"] if row["stage"] == "coupons"] == [-1000]
    assert out["payable_amount"] == 5000 - 1000  # the coupon works on what the flash price left


def test_free_shipping_when_the_sale_says_so(
    gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    g = gate_mode
    template = make_freight_template(session_factory, tenant.id)  # 8.00 for the first unit
    sku_opts: dict[str, Any] = {"sku": {"freight_template_id": template}}
    paid_sku, paid_item = _sale(g, tenant, session_factory, **sku_opts)
    free_sku, free_item = _sale(g, tenant, session_factory, free_shipping=True, **sku_opts)
    headers, _ = login(g.client, tenant)
    out = preview(g.client, headers, paid_sku, paid_item).json()
    assert out["freight_amount"] == 800 and out["payable_amount"] == 5000 + 800
    out = preview(g.client, headers, free_sku, free_item).json()
    assert out["lines"][0]["flags"]["free_shipping"] is True
    assert out["freight_amount"] == 0 and out["payable_amount"] == 5000


# -- refusals ---------------------------------------------------------------------------------------------


def _refused(g: Gate, tenant: Tenant, factory: sessionmaker[Session], headers: dict[str, str], sku: int, item: int,
             code: str, qty: int = 1) -> dict[str, Any]:
    """Submit must be refused with ``code`` and leave the database and Redis as they were."""
    before, stock_before, redis_before = state(factory, tenant.id, item), sku_stock(factory, sku), g.snapshot(tenant, item)
    r = submit(g.client, headers, sku, item, qty=qty)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == code, r.text
    assert state(factory, tenant.id, item) == before
    assert sku_stock(factory, sku) == stock_before
    assert g.snapshot(tenant, item) == redis_before
    b = g.client.post(f"{STORE}/flash-sales/{item}/buy", json={"quantity": qty},
                      headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
    assert b.status_code == 409 and b.json()["code"] == code, b.text
    assert state(factory, tenant.id, item) == before and g.snapshot(tenant, item) == redis_before
    return dict(r.json())


def test_not_started(gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    g = gate_mode
    sku, item = _sale(g, tenant, session_factory, **window(dt.timedelta(hours=2), dt.timedelta(hours=3)))
    headers, _ = login(g.client, tenant)
    assert preview(g.client, headers, sku, item).json()["code"] == "flash_sale_not_started"
    _refused(g, tenant, session_factory, headers, sku, item, "flash_sale_not_started")


def test_ended(gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    g = gate_mode
    sku, item = _sale(g, tenant, session_factory)
    sale_id = item_row(session_factory, item).flash_sale_id
    assert g.client.post(f"{ADMIN}/flash-sales/{sale_id}/end", headers=tenant.admin_headers).status_code == 200
    headers, _ = login(g.client, tenant)
    _refused(g, tenant, session_factory, headers, sku, item, "flash_sale_ended")


def test_outside_a_session_slot(gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    """The window is open but now is between two daily slots: its own code, with the next start."""
    g = gate_mode
    local = utcnow().astimezone(ZoneInfo("Asia/Shanghai"))
    start = local + dt.timedelta(hours=2)
    slot = {"start": start.strftime("%H:%M"), "end": (start + dt.timedelta(minutes=1)).strftime("%H:%M")}
    if slot["end"] <= slot["start"]:
        pytest.skip("the slot two hours from now would cross local midnight")
    sku, item = _sale(g, tenant, session_factory, slots=[slot], **window(dt.timedelta(days=-1), dt.timedelta(days=3)))
    headers, _ = login(g.client, tenant)
    out = _refused(g, tenant, session_factory, headers, sku, item, "flash_sale_outside_session")
    next_start = dt.datetime.fromisoformat(out["detail"]["next_session_starts_at"])
    assert next_start.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%H:%M") == slot["start"]


def test_past_the_limit_in_one_order_and_across_orders(
    gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    g = gate_mode
    sku, item = _sale(g, tenant, session_factory, per_member_limit=2)
    headers, _ = login(g.client, tenant)
    out = _refused(g, tenant, session_factory, headers, sku, item, "flash_sale_limit_reached", qty=3)
    assert out["detail"] == {"limit": 2}
    assert submit(g.client, headers, sku, item).status_code == 201
    _refused(g, tenant, session_factory, headers, sku, item, "flash_sale_limit_reached", qty=2)
    assert submit(g.client, headers, sku, item).status_code == 201  # exactly up to the limit
    _refused(g, tenant, session_factory, headers, sku, item, "flash_sale_limit_reached")
    assert item_row(session_factory, item).sold == 2


def test_stock_gone(gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    g = gate_mode
    sku, item = _sale(g, tenant, session_factory, stock=2, per_member_limit=5)
    first, _ = login(g.client, tenant)
    assert submit(g.client, first, sku, item, qty=2).status_code == 201
    second, _ = login(g.client, tenant)
    _refused(g, tenant, session_factory, second, sku, item, "flash_sale_sold_out")
    row = item_row(session_factory, item)
    assert (row.sold, row.activity_stock) == (2, 2)


def test_refusal_messages_are_in_chinese_and_english(
    gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    g = gate_mode
    sku, item = _sale(g, tenant, session_factory, per_member_limit=1)
    headers, _ = login(g.client, tenant)
    zh = submit(g.client, {**headers, "Accept-Language": "zh-CN"}, sku, item, qty=2).json()["message"]
    en = submit(g.client, {**headers, "Accept-Language": "en"}, sku, item, qty=2).json()["message"]
    assert zh == "该秒杀商品每人限购 1 件" and en == "The flash-sale item is limited to 1 per member"


# -- units coming back ----------------------------------------------------------------------------------------


def test_an_unpaid_order_timing_out_returns_its_unit_to_the_database_and_redis_then_another_member_buys_it(
    gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    g = gate_mode
    sku, item = _sale(g, tenant, session_factory, stock=1)
    a, member_a = login(g.client, tenant)
    b, member_b = login(g.client, tenant)
    order = submit(g.client, a, sku, item)
    assert order.status_code == 201, order.text
    assert submit(g.client, b, sku, item).json()["code"] == "flash_sale_sold_out"
    if g.redis is not None:
        assert g.snapshot(tenant, item) == (0, {member_a: 1})

    deadline = dt.datetime.fromisoformat(order.json()["pay_deadline"])
    drain(session_factory, settings, tenant, g, now=deadline - dt.timedelta(seconds=5))
    assert item_row(session_factory, item).sold == 1  # not before the deadline
    drain(session_factory, settings, tenant, g, now=deadline + dt.timedelta(seconds=1))
    r = g.client.get(f"{ADMIN}/orders/{order.json()['id']}", headers=tenant.admin_headers)
    assert r.json()["status"] == "cancelled", r.text
    assert state(session_factory, tenant.id, item) == {
        "sold": 0, "activity_stock": 1, "counters": {}, "ledger": {"released": 1}, "orders": 1}
    if g.redis is not None:
        assert g.snapshot(tenant, item) == (1, {})
    assert sku_stock(session_factory, sku) == 20  # it went back to the activity, not to normal stock

    # The worker ran in this process (another engine on the same database): its release reached
    # the API's sold-out memo at once (another process's would within gate.SOLD_OUT_TTL).
    again = submit(g.client, b, sku, item)
    assert again.status_code == 201, again.text
    assert item_row(session_factory, item).sold == 1
    assert ledger(session_factory, item) == {"released": 1, "reserved": 1}
    if g.redis is not None:
        assert g.snapshot(tenant, item) == (0, {member_b: 1})
    # The release runs once: the event delivered again moves nothing.
    with unit_of_work(session_factory) as s:
        assert service.release_order(s, tenant.id, order.json()["id"]) == 0
    assert item_row(session_factory, item).sold == 1
    assert ledger(session_factory, item) == {"released": 1, "reserved": 1}


def test_a_customer_cancel_returns_the_unit_and_paying_marks_the_ledger_paid(
    gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    g = gate_mode
    sku, item = _sale(g, tenant, session_factory, stock=3, per_member_limit=1)
    headers, member = login(g.client, tenant)
    first = submit(g.client, headers, sku, item).json()
    assert g.client.post(f"{STORE}/orders/{first['id']}/cancel", headers=headers).status_code == 200
    drain(session_factory, settings, tenant, g)
    assert item_row(session_factory, item).sold == 0
    second = submit(g.client, headers, sku, item)  # the limit counts held units, and the cancelled one is back
    assert second.status_code == 201, second.text
    pay(g.client, headers, second.json()["id"])
    drain(session_factory, settings, tenant, g)
    assert ledger(session_factory, item) == {"released": 1, "paid": 1}
    sale_id = item_row(session_factory, item).flash_sale_id
    stats = g.client.get(f"{ADMIN}/flash-sales/{sale_id}/stats", headers=tenant.admin_headers).json()
    assert (stats["sold"], stats["paid_units"], stats["paid_orders"], stats["released_units"], stats["gmv"]) == (
        1, 1, 1, 1, 5000)
    if g.redis is not None:
        assert g.snapshot(tenant, item) == (2, {member: 1})


def test_ending_returns_unsold_units_and_a_later_cancel_returns_its_unit_to_normal_stock(
    gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    g = gate_mode
    sku, item = _sale(g, tenant, session_factory, stock=5)
    headers, _ = login(g.client, tenant)
    order = submit(g.client, headers, sku, item).json()
    sale_id = item_row(session_factory, item).flash_sale_id
    assert g.client.post(f"{ADMIN}/flash-sales/{sale_id}/end", headers=tenant.admin_headers).status_code == 200
    assert sku_stock(session_factory, sku) == 20 + 4
    if g.redis is not None:
        assert g.snapshot(tenant, item) is None  # the keys are gone with the activity
    assert g.client.post(f"{STORE}/orders/{order['id']}/cancel", headers=headers).status_code == 200
    drain(session_factory, settings, tenant, g)
    assert sku_stock(session_factory, sku) == 25  # every unit is back where it came from, once
    row = item_row(session_factory, item)
    assert (row.sold, row.activity_stock, row.returned_stock) == (0, 0, 5)
    if g.redis is not None:
        assert g.snapshot(tenant, item) is None


def _refund_in_full(g: Gate, tenant: Tenant, order_id: int, key: str) -> None:
    detail = g.client.get(f"{ADMIN}/orders/{order_id}", headers=tenant.admin_headers).json()
    r = g.client.post(f"{ADMIN}/orders/{order_id}/refunds", json={"amount": detail["paid_amount"]},
                      headers={**tenant.admin_headers, "Idempotency-Key": key})
    assert r.status_code == 201, r.text


def test_a_full_refund_before_shipping_returns_the_unit_to_the_activity_and_redis_once(
    gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    g = gate_mode
    sku, item = _sale(g, tenant, session_factory, stock=1, per_member_limit=1)
    a, member_a = login(g.client, tenant)
    b, member_b = login(g.client, tenant)
    order = submit(g.client, a, sku, item).json()
    pay(g.client, a, order["id"])
    drain(session_factory, settings, tenant, g)
    assert ledger(session_factory, item) == {"paid": 1}
    assert submit(g.client, b, sku, item).json()["code"] == "flash_sale_sold_out"

    _refund_in_full(g, tenant, order["id"], f"fs-refund-{order['id']}")
    drain(session_factory, settings, tenant, g)
    assert state(session_factory, tenant.id, item) == {
        "sold": 0, "activity_stock": 1, "counters": {}, "ledger": {"refunded": 1}, "orders": 1}
    if g.redis is not None:
        assert g.snapshot(tenant, item) == (1, {})
    assert sku_stock(session_factory, sku) == 20  # back to the activity, not to normal stock
    sale_id = item_row(session_factory, item).flash_sale_id
    stats = g.client.get(f"{ADMIN}/flash-sales/{sale_id}/stats", headers=tenant.admin_headers).json()
    assert (stats["sold"], stats["paid_units"], stats["released_units"], stats["gmv"]) == (0, 0, 1, 0)
    # The event delivered again moves nothing.
    with unit_of_work(session_factory) as s:
        assert service.refund_order(s, tenant.id, order["id"]) == 0
    assert item_row(session_factory, item).sold == 0

    again = submit(g.client, b, sku, item)  # the returned unit sells again
    assert again.status_code == 201, again.text
    assert item_row(session_factory, item).sold == 1
    if g.redis is not None:
        assert g.snapshot(tenant, item) == (0, {member_b: 1})
    assert member_a != member_b


def test_a_full_refund_after_shipping_leaves_the_unit_sold(
    gate_mode: Gate, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    g = gate_mode
    sku, item = _sale(g, tenant, session_factory, stock=2)
    headers, member = login(g.client, tenant)
    order = submit(g.client, headers, sku, item).json()
    pay(g.client, headers, order["id"])
    r = g.client.post(f"{ADMIN}/orders/{order['id']}/ship", json={"carrier": "SF", "tracking_no": "SF1"},
                      headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    drain(session_factory, settings, tenant, g)
    _refund_in_full(g, tenant, order["id"], f"fs-refund-{order['id']}")
    drain(session_factory, settings, tenant, g)
    assert state(session_factory, tenant.id, item) == {
        "sold": 1, "activity_stock": 2, "counters": {member: 1}, "ledger": {"paid": 1}, "orders": 1}
    if g.redis is not None:
        assert g.snapshot(tenant, item) == (1, {member: 1})
