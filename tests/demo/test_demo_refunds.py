"""A merchant walking ``siyu demo`` can refund the seeded orders: every seeded paid order has its
succeeded sandbox payment (as the sandbox path writes it), so the admin refund API books the
refund, the in-process worker's job submits it to the sandbox and it succeeds — in full or in
part. (Before, the seeded orders had no payment and refunding one was 409 ``refund_no_payment``.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from siyu.app import create_app
from siyu.config import Settings
from siyu.db.engine import make_engine
from siyu.db.migrate import upgrade
from siyu.db.session import make_session_factory
from siyu.demo.seed import DEMO_CODE, seed_demo
from siyu.orders import models as om
from siyu.payments.models import PAYMENT_SUCCEEDED, REFUND_SUCCEEDED, SANDBOX, Payment, Refund
from siyu.tenancy.models import Merchant
from siyu.worker.runner import Worker

ADMIN = "/api/admin/v1"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str], Any, Settings]]:
    folder = Path(tmp_path_factory.mktemp("demo_refunds"))
    settings = Settings(database_url=f"sqlite:///{folder / 'siyu.sqlite'}", data_dir=folder, secret_key="demo-test",
                        env="test", redis_url="")
    engine = make_engine(settings.database_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    seed_demo(factory, settings)
    with TestClient(create_app(settings)) as client:
        r = client.post(f"{ADMIN}/auth/login",
                        json={"merchant": DEMO_CODE, "username": "finance", "password": "demo-finance-123"})
        assert r.status_code == 200, r.text
        yield client, {"Authorization": f"Bearer {r.json()['token']}"}, factory, settings
    engine.dispose()


def _merchant_id(factory: Any) -> int:
    with factory() as s:
        return int(s.scalar(select(Merchant.id).where(Merchant.code == DEMO_CODE)))


def _seeded(factory: Any, status: str) -> list[om.Order]:
    with factory() as s:
        return list(s.scalars(select(om.Order).where(om.Order.status == status).order_by(om.Order.id)))


def test_every_seeded_paid_order_has_one_succeeded_sandbox_payment_of_its_paid_amount(
    demo: tuple[TestClient, dict[str, str], Any, Settings],
) -> None:
    _, _, factory, _ = demo
    with factory() as s:
        orders = list(s.scalars(select(om.Order).where(om.Order.paid_amount > 0)))
        payments = list(s.scalars(select(Payment)))
        refunds = list(s.scalars(select(Refund)))
    assert orders and {o.status for o in orders} <= {om.PAID, om.SHIPPED, om.COMPLETED, om.CLOSED}
    by_order = {p.order_id: p for p in payments}
    assert len(payments) == len(by_order) == len(orders)
    for o in orders:
        p = by_order[o.id]
        assert (p.status, p.provider, p.amount, p.paid_at, p.member_id) == (
            PAYMENT_SUCCEEDED, SANDBOX, o.paid_amount, o.paid_at, o.member_id)
        assert p.transaction_id == f"SBX{p.out_trade_no}" and p.unapplied_reason is None
    # the closed (fully refunded) history has its succeeded refund: goods and freight
    closed = {o.id: o for o in orders if o.status == om.CLOSED}
    assert closed and {r.order_id for r in refunds} == set(closed)
    for r in refunds:
        assert r.status == REFUND_SUCCEEDED and r.amount == closed[r.order_id].paid_amount
        assert r.freight_amount == closed[r.order_id].freight_amount


def test_finance_refunds_a_seeded_order_in_part_then_another_in_full(
    demo: tuple[TestClient, dict[str, str], Any, Settings],
) -> None:
    client, headers, factory, settings = demo
    merchant_id = _merchant_id(factory)
    with factory() as s:  # a completed order with a line of several units
        several = set(s.scalars(select(om.OrderLine.order_id).where(om.OrderLine.quantity > 1)))
    completed = next(o for o in _seeded(factory, om.COMPLETED) if o.id in several)
    paid = _seeded(factory, om.PAID)[0]

    # In part: one unit of a line of several (its paid share; no freight after shipment).
    lines = client.get(f"{ADMIN}/orders/{completed.id}", headers=headers).json()["lines"]
    line = next(ln for ln in lines if ln["quantity"] > 1)
    r = client.post(f"{ADMIN}/orders/{completed.id}/refunds",
                    json={"lines": [{"order_line_id": line["id"], "quantity": 1}], "reason": "演示部分退款"},
                    headers={**headers, "Idempotency-Key": "demo-part"})
    assert r.status_code == 201, r.text
    part = r.json()
    assert part["amount"] == line["payable_amount"] // line["quantity"] and part["freight_amount"] == 0

    # In full: the whole paid amount of a seeded order not yet shipped.
    r = client.post(f"{ADMIN}/orders/{paid.id}/refunds", json={"amount": paid.paid_amount, "reason": "演示全额退款"},
                    headers={**headers, "Idempotency-Key": "demo-full"})
    assert r.status_code == 201, r.text
    full = r.json()

    Worker(factory, settings, merchant_id=merchant_id).drain()
    for refund in (part, full):
        detail = client.get(f"{ADMIN}/refunds/{refund['id']}", headers=headers).json()
        assert detail["status"] == "succeeded" and detail["provider_refund_id"], detail
    order = client.get(f"{ADMIN}/orders/{completed.id}", headers=headers).json()
    assert (order["status"], order["refund_status"], order["refunded_amount"]) == (
        "completed", "partial", part["amount"])
    order = client.get(f"{ADMIN}/orders/{paid.id}", headers=headers).json()
    assert (order["status"], order["refund_status"], order["refunded_amount"]) == (
        "closed", "full", paid.paid_amount)


def test_the_demo_points_mall_sells_a_coupon_and_a_product_for_points(
    demo: tuple[TestClient, dict[str, str], Any, Settings],
) -> None:
    """The seeded loyalty rules put a coupon and a product ("500 积分 + ¥9.90") in the points mall;
    a new customer, with no points yet, sees both and is refused the exchange with nothing written."""
    client, _, factory, _ = demo
    r = client.post("/api/store/v1/auth/wechat-login", json={"code": "sandbox-mall-walker"},
                    headers={"X-Siyu-Merchant": DEMO_CODE})
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {r.json()['token']}", "X-Siyu-Merchant": DEMO_CODE}
    items = client.get("/api/store/v1/loyalty/mall", headers=headers).json()
    kinds = {item["kind"]: item for item in items}
    assert set(kinds) == {"coupon", "product"}, items
    product = kinds["product"]
    assert (product["points"], product["cash"]) == (500, 990)
    r = client.post("/api/store/v1/addresses", headers=headers, json={
        "name": "王五", "phone": "13700000000", "province": "浙江省", "city": "杭州市", "district": "西湖区",
        "detail": "1 号", "is_default": True})
    assert r.status_code == 201, r.text
    body = {"items": [{"sku_id": product["sku_id"], "quantity": 1}], "options": {"points_mall": {"sku_id": product["sku_id"]}}}
    before = len(_seeded(factory, "pending_payment"))
    r = client.post("/api/store/v1/checkout/submit", json=body, headers={**headers, "Idempotency-Key": "mall-1"})
    assert (r.status_code, r.json()["code"]) == (409, "points_insufficient"), r.text
    assert len(_seeded(factory, "pending_payment")) == before
