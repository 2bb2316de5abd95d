"""Refunds of zero-paid orders (payable 0: a points-only exchange, or coupons covering it all).

Such an order has no payment; a line refund of it is a Refund of amount 0 without a payment that
succeeds when booked, without the provider, and emits ``order.refunded`` like any refund: the
points spent come back (by the refunded goods' share, weighted by unit sale price), a coupon
comes back on a full refund, the order closes once every unit is refunded. A refund by amount
of such an order is refused (``refund_exceeds_paid``, refundable 0)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.coupons.models import UNUSED, USED, MemberCoupon
from siyu.kit.outbox import JOB_DEAD, Job
from siyu.payments.models import Refund
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.coupons.helpers import give, make_template
from tests.factories import payments as f
from tests.factories.aftersales import admin_order, request_aftersale
from tests.factories.orders import make_sku
from tests.loyalty import helpers as h

STORE = "/api/store/v1"
ADMIN = "/api/admin/v1"


def _exchange_only_points(client: TestClient, tenant: Tenant, factory: sessionmaker[Session], quantity: int,
                          points: int = 300) -> tuple[int, dict[str, str], dict[str, Any]]:
    sku = make_sku(factory, tenant.id, price=5000, free_shipping=True)
    r = client.put(f"{ADMIN}/loyalty/rules", headers=tenant.admin_headers,
                   json={"mall": [{"kind": "product", "sku_id": sku, "points": points, "cash": 0,
                                   "per_member_limit": 5}]})
    assert r.status_code == 200, r.text
    member, headers = f.paying_customer(factory, tenant.id)
    h.award(factory, tenant.id, member, 1000, "start")
    r = client.post(f"{STORE}/checkout/submit", headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                    json={"items": [{"sku_id": sku, "quantity": quantity}], "options": {"points_mall": {"sku_id": sku}}})
    assert r.status_code == 201, r.text
    order = r.json()
    assert (order["payable_amount"], order["status"], order["points_used"]) == (0, "paid", points * quantity)
    return member, headers, order


def _drain(factory: sessionmaker[Session], settings: Settings, tenant: Tenant) -> None:
    """Run the jobs; every listener of order.refunded (catalog, promotions, referral...) must take
    a zero-amount refund without an error."""
    Worker(factory, settings, merchant_id=tenant.id).drain()
    Worker(factory, settings, merchant_id=tenant.id).drain()
    with factory() as s:
        failed = s.execute(select(Job.kind, Job.last_error).where(
            Job.merchant_id == tenant.id, (Job.status == JOB_DEAD) | Job.last_error.is_not(None))).all()
    assert failed == []


def _refund_lines(client: TestClient, tenant: Tenant, order_id: int, lines: list[tuple[int, int]], key: str) -> Any:
    return client.post(f"{ADMIN}/orders/{order_id}/refunds", headers={**tenant.admin_headers, "Idempotency-Key": key},
                       json={"lines": [{"order_line_id": lid, "quantity": q} for lid, q in lines], "reason": "退款"})


def _refunds(factory: sessionmaker[Session], tenant: Tenant, order_id: int) -> list[Refund]:
    with factory() as s:
        return list(s.scalars(select(Refund).where(Refund.merchant_id == tenant.id, Refund.order_id == order_id)))


def _assert_no_provider(factory: sessionmaker[Session], refund: Refund) -> None:
    assert (refund.amount, refund.status, refund.payment_id) == (0, "succeeded", None)
    assert refund.submitted_at is None and refund.provider_refund_id is None and refund.provider_status is None
    with factory() as s:  # never queued for the provider
        assert s.scalars(select(Job.id).where(Job.merchant_id == refund.merchant_id,
                                              Job.dedupe_key == f"refund:{refund.id}:submit")).all() == []


def test_a_points_only_exchange_refunded_in_full_returns_its_points_and_closes(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    member, _, order = _exchange_only_points(client, tenant, session_factory, 1)
    _drain(session_factory, settings, tenant)
    assert h.balance(session_factory, tenant.id, member) == 700
    line = order["lines"][0]["id"] if "lines" in order else admin_order(client, tenant, order["id"])["lines"][0]["id"]

    r = client.post(f"{ADMIN}/orders/{order['id']}/refunds", json={"amount": 1, "reason": "退款"},
                    headers={**tenant.admin_headers, "Idempotency-Key": "by-amount"})
    assert (r.status_code, r.json()["code"]) == (409, "refund_exceeds_paid"), r.text
    assert _refunds(session_factory, tenant, order["id"]) == []

    r = _refund_lines(client, tenant, order["id"], [(line, 1)], "all")
    assert r.status_code == 201, r.text
    assert (r.json()["amount"], r.json()["status"], r.json()["payment_id"]) == (0, "succeeded", None)
    assert _refund_lines(client, tenant, order["id"], [(line, 1)], "all").json()["id"] == r.json()["id"]  # replay
    _drain(session_factory, settings, tenant)
    _drain(session_factory, settings, tenant)  # nothing more happens: once per refund

    (refund,) = _refunds(session_factory, tenant, order["id"])
    _assert_no_provider(session_factory, refund)
    assert h.balance(session_factory, tenant.id, member) == 1000 == h.entries_sum(session_factory, tenant.id, member)
    detail = admin_order(client, tenant, order["id"])
    assert (detail["status"], detail["refund_status"], detail["refunded_amount"]) == ("closed", "full", 0)
    assert _refund_lines(client, tenant, order["id"], [(line, 1)], "again").json()["code"] == "refund_quantity_invalid"


def test_a_partial_line_refund_of_a_two_unit_exchange_returns_half_the_points(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    member, _, order = _exchange_only_points(client, tenant, session_factory, 2)
    _drain(session_factory, settings, tenant)
    assert h.balance(session_factory, tenant.id, member) == 400
    line = admin_order(client, tenant, order["id"])["lines"][0]["id"]

    assert _refund_lines(client, tenant, order["id"], [(line, 1)], "one").status_code == 201
    _drain(session_factory, settings, tenant)
    assert h.balance(session_factory, tenant.id, member) == 700
    detail = admin_order(client, tenant, order["id"])
    assert (detail["status"], detail["refund_status"]) == ("paid", "partial")

    assert _refund_lines(client, tenant, order["id"], [(line, 1)], "two").status_code == 201
    _drain(session_factory, settings, tenant)
    assert h.balance(session_factory, tenant.id, member) == 1000 == h.entries_sum(session_factory, tenant.id, member)
    detail = admin_order(client, tenant, order["id"])
    assert (detail["status"], detail["refund_status"]) == ("closed", "full")
    for refund in _refunds(session_factory, tenant, order["id"]):
        _assert_no_provider(session_factory, refund)


def test_an_order_made_zero_by_a_coupon_refunded_in_full_returns_the_coupon(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=800, free_shipping=True)
    member, headers = f.paying_customer(session_factory, tenant.id)
    coupon = give(session_factory, tenant.id, make_template(session_factory, tenant.id, amount=1000), member)
    r = client.post(f"{STORE}/checkout/submit", headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                    json={"items": [{"sku_id": sku, "quantity": 1}], "coupon_ids": [coupon]})
    assert r.status_code == 201, r.text
    order = r.json()
    assert (order["payable_amount"], order["status"]) == (0, "paid")
    _drain(session_factory, settings, tenant)
    with session_factory() as s:
        assert s.get(MemberCoupon, coupon).status == USED  # type: ignore[union-attr]

    line = admin_order(client, tenant, order["id"])["lines"][0]["id"]
    assert _refund_lines(client, tenant, order["id"], [(line, 1)], "all").status_code == 201
    _drain(session_factory, settings, tenant)
    with session_factory() as s:
        found = s.get(MemberCoupon, coupon)
        assert found is not None and found.status == UNUSED and found.order_id is None
    assert admin_order(client, tenant, order["id"])["refund_status"] == "full"


def test_refund_only_aftersale_of_a_zero_paid_order_goes_through_the_refund(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    member, headers, order = _exchange_only_points(client, tenant, session_factory, 2)
    _drain(session_factory, settings, tenant)
    line = admin_order(client, tenant, order["id"])["lines"][0]["id"]

    r = request_aftersale(client, headers, order["id"], "refund_only", [(line, 1)])
    assert r.status_code == 201, r.text
    assert r.json()["refund_amount"] == 0
    r = client.post(f"{ADMIN}/aftersales/{r.json()['id']}/approve", headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["status"] == "refunding", r.text
    assert r.json()["refund_id"] is not None
    _drain(session_factory, settings, tenant)

    detail = client.get(f"{ADMIN}/aftersales/{r.json()['id']}", headers=tenant.admin_headers).json()
    assert detail["status"] == "completed"
    assert "completed_without_refund" not in [e["action"] for e in detail["audit"]]
    (refund,) = _refunds(session_factory, tenant, order["id"])
    _assert_no_provider(session_factory, refund)
    assert refund.aftersale_id == detail["id"]
    assert h.balance(session_factory, tenant.id, member) == 700
    assert admin_order(client, tenant, order["id"])["refund_status"] == "partial"
