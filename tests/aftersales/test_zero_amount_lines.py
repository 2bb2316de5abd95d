"""A refund-only request of a gift (a line discounted to 0) inside a PAID order still completes
without a refund (``completed_without_refund``): the order's payment stays untouched. Only a
zero-PAID order's lines go through a zero-amount refund (tests/loyalty/test_zero_paid_refunds.py)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.orders.models import Order, OrderLine
from siyu.payments.models import Refund
from tests.conftest import Tenant, customer_login
from tests.factories.aftersales import (
    ADMIN,
    admin_order,
    drain,
    line_id,
    make_product,
    pay,
    request_aftersale,
    submit_order,
)


def test_a_gift_line_of_a_paid_order_completes_without_refund(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    a, gift = make_product(session_factory, tenant.id, [5000, 1200])
    headers = customer_login(client, tenant)
    order = submit_order(client, headers, [(a, 1), (gift, 1)])
    with unit_of_work(session_factory) as s:  # the gift line fully discounted, as a gift promotion would
        line = s.scalar(select(OrderLine).where(OrderLine.merchant_id == tenant.id, OrderLine.order_id == order["id"],
                                                OrderLine.sku_id == gift))
        found = s.get(Order, order["id"])
        assert line is not None and found is not None
        line.discounts = {**line.discounts, "promotions": line.payable_amount}
        line.discount_amount += line.payable_amount
        found.discount_amount += line.payable_amount
        found.payable_amount -= line.payable_amount
        line.payable_amount = 0
    pay(client, headers, order["id"])
    order = admin_order(client, tenant, order["id"])
    assert order["paid_amount"] == 5000

    r = request_aftersale(client, headers, order["id"], "refund_only", [(line_id(order, gift), 1)])
    assert r.status_code == 201 and r.json()["refund_amount"] == 0, r.text
    r = client.post(f"{ADMIN}/aftersales/{r.json()['id']}/approve", headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed" and r.json()["refund_id"] is None
    drain(session_factory, settings, tenant)
    detail = client.get(f"{ADMIN}/aftersales/{r.json()['id']}", headers=tenant.admin_headers).json()
    assert "completed_without_refund" in [e["action"] for e in detail["audit"]]
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Refund).where(Refund.merchant_id == tenant.id)) == 0
    order = admin_order(client, tenant, order["id"])
    assert (order["refunded_amount"], order["refund_status"], order["status"]) == (0, "none", "paid")
