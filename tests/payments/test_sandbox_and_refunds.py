"""Sandbox payments end to end, the store pay endpoint's guards, refunds and their guards."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.audit import AuditEvent
from siyu.kit.events import subscribe
from siyu.orders import service as orders_service
from siyu.payments.models import Payment, Refund
from siyu.worker.registry import JobContext
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import make_freight_template

PAY = "/api/store/v1/orders/{}/pay"


@subscribe("order.refunded", "test.payments.order_refunded")
def _on_refunded(ctx: JobContext) -> None:
    pass


@subscribe("order.paid", "test.payments.order_paid")
def _on_paid(ctx: JobContext) -> None:
    pass


def _drain(session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant, now: dt.datetime | None = None) -> None:
    Worker(session_factory, settings, merchant_id=tenant.id).drain(now=now)


def _pay_sandbox(client: TestClient, order_id: int, headers: dict[str, str]) -> dict:
    r = client.post(PAY.format(order_id), headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    r = client.post(body["params"]["complete_url"], headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def paid_order(client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant, items=None) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    member_id, headers = f.paying_customer(session_factory, tenant.id)
    order_id = f.pending_order(session_factory, tenant.id, member_id, items)
    _pay_sandbox(client, order_id, headers)
    return order_id, headers


def test_sandbox_pay_end_to_end(client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member_id, headers = f.paying_customer(session_factory, tenant.id)
    order_id = f.pending_order(session_factory, tenant.id, member_id)
    payable = f.order(session_factory, tenant.id, order_id).payable_amount

    r = client.post(PAY.format(order_id), headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["provider"] == "sandbox" and body["amount"] == payable
    assert body["params"]["sandbox"] is True
    assert body["params"]["complete_url"] == f"/api/store/v1/sandbox/payments/{body['out_trade_no']}/complete"
    # Asking again resumes the same open attempt.
    again = client.post(PAY.format(order_id), headers=headers).json()
    assert again["out_trade_no"] == body["out_trade_no"]

    done = client.post(body["params"]["complete_url"], headers=headers)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "succeeded" and done.json()["fee_amount"] == (payable * 60 + 5000) // 10000
    order = f.order(session_factory, tenant.id, order_id)
    assert order.status == "paid" and order.paid_amount == payable
    # Completing twice is harmless; paying a paid order is refused.
    assert client.post(body["params"]["complete_url"], headers=headers).status_code == 200
    r = client.post(PAY.format(order_id), headers=headers)
    assert r.status_code == 409 and r.json()["code"] == "order_not_payable"
    (payment,) = f.payments(session_factory, tenant.id, order_id)
    assert payment.status == "succeeded" and payment.transaction_id
    assert len(f.jobs(session_factory, tenant.id, "test.payments.order_paid", order_id=order_id)) == 1
    with session_factory() as s:
        actions = [
            a.action for a in s.query(AuditEvent).filter_by(merchant_id=tenant.id, subject_type="payment", subject_id=payment.id)
        ]
    assert actions == ["created", "succeeded"]


def test_pay_guards_change_nothing(client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member_id, headers = f.paying_customer(session_factory, tenant.id)
    _, other_headers = f.paying_customer(session_factory, tenant.id)
    order_id = f.pending_order(session_factory, tenant.id, member_id)

    r = client.post(PAY.format(order_id), headers=other_headers)  # someone else's order
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.post(PAY.format(999_999_999), headers=headers)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    with unit_of_work(session_factory) as s:
        orders_service.cancel(s, tenant.id, order_id, reason="test", actor=("system", None))
    r = client.post(PAY.format(order_id), headers=headers)
    assert r.status_code == 409 and r.json()["code"] == "order_not_payable"
    assert f.payments(session_factory, tenant.id) == []
    r = client.post("/api/store/v1/sandbox/payments/PNOPE/complete", headers=headers)
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_sandbox_complete_refused_for_wechatpay_merchant(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member_id, headers = f.paying_customer(session_factory, tenant.id)
    order_id = f.pending_order(session_factory, tenant.id, member_id)
    out_trade_no = client.post(PAY.format(order_id), headers=headers).json()["out_trade_no"]
    r = client.patch("/api/admin/v1/merchant", json={"pay_provider": "wechatpay"}, headers=tenant.admin_headers)
    assert r.status_code == 200
    r = client.post(f"/api/store/v1/sandbox/payments/{out_trade_no}/complete", headers=headers)
    assert r.status_code == 409 and r.json()["code"] == "sandbox_disabled"
    # ... and a wechatpay merchant without keys never falls back to the sandbox
    r = client.post(PAY.format(order_id), headers=headers)
    assert r.status_code == 409 and r.json()["code"] == "payments_not_configured"
    assert f.order(session_factory, tenant.id, order_id).status == "pending_payment"
    assert all(p.status == "created" for p in f.payments(session_factory, tenant.id))


def test_payment_for_cancelled_order_is_refunded_automatically(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    member_id, headers = f.paying_customer(session_factory, tenant.id)
    order_id = f.pending_order(session_factory, tenant.id, member_id)
    complete_url = client.post(PAY.format(order_id), headers=headers).json()["params"]["complete_url"]
    with unit_of_work(session_factory) as s:
        orders_service.cancel(s, tenant.id, order_id, reason="timeout", actor=("system", None))
    assert client.post(complete_url, headers=headers).status_code == 200
    (payment,) = f.payments(session_factory, tenant.id, order_id)
    assert payment.status == "succeeded" and payment.unapplied_reason == "order_not_payable"
    order = f.order(session_factory, tenant.id, order_id)
    assert order.status == "cancelled" and order.paid_amount == 0
    _drain(session_factory, settings, tenant)
    (refund,) = f.refunds(session_factory, tenant.id, order_id)
    assert refund.automatic and not refund.reserved and refund.amount == payment.amount
    assert refund.status == "succeeded"


def _refund(client: TestClient, tenant: Tenant, order_id: int, key: str, body: dict) -> dict:
    r = client.post(f"/api/admin/v1/orders/{order_id}/refunds", json=body,
                    headers={**tenant.admin_headers, "Idempotency-Key": key})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _lines(*lines: tuple[int, int]) -> dict:
    return {"lines": [{"order_line_id": x, "quantity": q} for x, q in lines], "reason": "退货"}


def test_partial_refunds_by_line_take_the_freight_with_the_last_goods_before_shipment(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    make_freight_template(session_factory, tenant.id, default=True)
    order_id, _ = paid_order(client, session_factory, tenant, [(12990, 3), (3333, 3)])
    order = f.order(session_factory, tenant.id, order_id)
    paid, freight = order.paid_amount, order.freight_amount
    a, b = (ln.id for ln in f.order_lines(session_factory, tenant.id, order_id))
    assert freight > 0 and paid == sum(ln.payable_amount for ln in f.order_lines(session_factory, tenant.id, order_id)) + freight

    answers = []
    for i, lines in enumerate([[(a, 1)], [(b, 2)], [(a, 2), (b, 1)]]):
        answers.append(_refund(client, tenant, order_id, f"r{i}", _lines(*lines)))
        _drain(session_factory, settings, tenant)
        if i < 2:  # goods are left to ship: the freight stays paid
            order = f.order(session_factory, tenant.id, order_id)
            assert (order.status, order.refund_status) == ("paid", "partial")
    assert [x["amount"] for x in answers[:2]] == [12990 * 3 // 3, 3333 * 3 * 2 // 3]
    # The last goods before shipment: the refund gives the freight back with them.
    assert [x["freight_amount"] for x in answers] == [0, 0, freight]
    last = answers[2]
    assert last["amount"] == sum(ln["amount"] for ln in last["lines"]) + freight
    assert sum(x["amount"] for x in answers) == paid
    # A retry with the same key answers the same refund, freight included.
    r = client.post(f"/api/admin/v1/orders/{order_id}/refunds", json=_lines((a, 2), (b, 1)),
                    headers={**tenant.admin_headers, "Idempotency-Key": "r2"})
    assert r.status_code == 200 and {k: r.json()[k] for k in ("id", "amount", "freight_amount", "lines")} == {
        k: last[k] for k in ("id", "amount", "freight_amount", "lines")}
    assert client.get(f"/api/admin/v1/refunds/{last['id']}", headers=tenant.admin_headers).json()[
        "freight_amount"] == freight

    order = f.order(session_factory, tenant.id, order_id)
    refunds = f.refunds(session_factory, tenant.id, order_id)
    assert all(r.status == "succeeded" for r in refunds) and len(refunds) == 3
    assert sum(r.amount for r in refunds) == paid == order.refunded_amount
    assert order.refund_status == "full" and order.status == "closed"
    assert all(ln.refunded_quantity == ln.quantity for ln in f.order_lines(session_factory, tenant.id, order_id))
    refunded = sorted(f.jobs(session_factory, tenant.id, "test.payments.order_refunded"),
                      key=lambda j: j.payload["refund_id"])
    assert [j.payload["refund_id"] for j in refunded] == [r.id for r in refunds]
    assert [j.payload["full"] for j in refunded] == [False, False, True]
    assert [j.payload["freight_amount"] for j in refunded] == [0, 0, freight]
    assert sum(j.payload["amount"] for j in refunded) == paid
    with session_factory() as s:
        requested = s.scalars(select(AuditEvent).where(
            AuditEvent.merchant_id == tenant.id, AuditEvent.subject_type == "refund", AuditEvent.action == "requested"))
        assert sorted((e.data["amount"], e.data["freight_amount"]) for e in requested) == sorted(
            (x["amount"], x["freight_amount"]) for x in answers)


def test_all_goods_at_once_before_shipment_is_the_full_paid_amount(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    """After a refund by amount (a compensation), the last goods bring back only what is left of
    the payment: never more than was paid."""
    make_freight_template(session_factory, tenant.id, default=True)
    order_id, _ = paid_order(client, session_factory, tenant, [(12990, 2), (3333, 3)])
    order = f.order(session_factory, tenant.id, order_id)
    paid, freight = order.paid_amount, order.freight_amount
    a, b = (ln.id for ln in f.order_lines(session_factory, tenant.id, order_id))
    first = _refund(client, tenant, order_id, "comp", {"amount": 300, "reason": "补偿"})
    assert first["freight_amount"] == 0 and first["lines"] == []
    rest = _refund(client, tenant, order_id, "all", _lines((a, 2), (b, 3)))
    assert rest["freight_amount"] == freight - 300 and rest["amount"] == paid - 300
    _drain(session_factory, settings, tenant)
    order = f.order(session_factory, tenant.id, order_id)
    assert (order.refunded_amount, order.refund_status, order.status) == (paid, "full", "closed")


def test_lowered_last_line_refund_adds_no_freight(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    make_freight_template(session_factory, tenant.id, default=True)
    order_id, _ = paid_order(client, session_factory, tenant, [(12990, 1)])
    order = f.order(session_factory, tenant.id, order_id)
    (line,) = f.order_lines(session_factory, tenant.id, order_id)
    lowered = _refund(client, tenant, order_id, "low", {**_lines((line.id, 1)), "amount": 12000})
    assert (lowered["amount"], lowered["freight_amount"]) == (12000, 0)
    _drain(session_factory, settings, tenant)
    order = f.order(session_factory, tenant.id, order_id)
    assert (order.refunded_amount, order.refund_status, order.status) == (12000, "partial", "paid")


def test_after_shipment_the_freight_stays_unless_refunded_by_amount(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    make_freight_template(session_factory, tenant.id, default=True)
    order_id, _ = paid_order(client, session_factory, tenant, [(12990, 2), (3333, 3)])
    order = f.order(session_factory, tenant.id, order_id)
    paid, freight = order.paid_amount, order.freight_amount
    a, b = (ln.id for ln in f.order_lines(session_factory, tenant.id, order_id))
    r = client.post(f"/api/admin/v1/orders/{order_id}/ship", json={"carrier": "SF", "tracking_no": "SF1"},
                    headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    answers = [_refund(client, tenant, order_id, "s1", _lines((a, 1))),
               _refund(client, tenant, order_id, "s2", _lines((a, 1), (b, 3)))]
    assert [x["freight_amount"] for x in answers] == [0, 0]
    assert sum(x["amount"] for x in answers) == paid - freight
    _drain(session_factory, settings, tenant)
    order = f.order(session_factory, tenant.id, order_id)
    assert (order.refunded_amount, order.refund_status, order.status) == (paid - freight, "partial", "shipped")
    # the merchant may still give the freight back by amount
    _refund(client, tenant, order_id, "s3", {"amount": freight, "reason": "运费"})
    _drain(session_factory, settings, tenant)
    order = f.order(session_factory, tenant.id, order_id)
    assert (order.refunded_amount, order.refund_status, order.status) == (paid, "full", "closed")


def test_refund_above_paid_changes_nothing(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    order_id, _ = paid_order(client, session_factory, tenant)
    paid = f.order(session_factory, tenant.id, order_id).paid_amount
    url = f"/api/admin/v1/orders/{order_id}/refunds"
    before_jobs = f.job_count(session_factory, tenant.id)
    r = client.post(url, json={"amount": paid + 1}, headers={**tenant.admin_headers, "Idempotency-Key": "too-much"})
    assert r.status_code == 409 and r.json()["code"] == "refund_exceeds_paid"
    (line, *_) = f.order_lines(session_factory, tenant.id, order_id)
    r = client.post(
        url, json={"lines": [{"order_line_id": line.id, "quantity": line.quantity + 1}]},
        headers={**tenant.admin_headers, "Idempotency-Key": "too-many"},
    )
    assert r.status_code == 422 and r.json()["code"] == "refund_quantity_invalid"
    r = client.post(url, json={}, headers={**tenant.admin_headers, "Idempotency-Key": "nothing"})
    assert r.status_code == 422 and r.json()["code"] == "refund_target_required"
    r = client.post(url, json={"amount": 1})
    assert r.status_code == 401
    r = client.post(url, json={"amount": 1}, headers=tenant.admin_headers)
    assert r.status_code == 400 and r.json()["code"] == "idempotency_key_required"
    order = f.order(session_factory, tenant.id, order_id)
    assert order.refunded_amount == 0 and order.refund_status == "none" and order.status == "paid"
    assert all(ln.refunded_amount == 0 for ln in f.order_lines(session_factory, tenant.id, order_id))
    assert f.refunds(session_factory, tenant.id) == [] and f.job_count(session_factory, tenant.id) == before_jobs


def test_refund_of_unpaid_or_foreign_order(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member_id, _ = f.paying_customer(session_factory, tenant.id)
    order_id = f.pending_order(session_factory, tenant.id, member_id)
    r = client.post(
        f"/api/admin/v1/orders/{order_id}/refunds", json={"amount": 100},
        headers={**tenant.admin_headers, "Idempotency-Key": "k"},
    )
    assert r.status_code == 409 and r.json()["code"] == "refund_no_payment"
    r = client.post(
        "/api/admin/v1/orders/999999999/refunds", json={"amount": 100},
        headers={**tenant.admin_headers, "Idempotency-Key": "k"},
    )
    assert r.status_code == 404
    assert f.refunds(session_factory, tenant.id) == []


def test_refund_request_is_idempotent(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    order_id, _ = paid_order(client, session_factory, tenant)
    url = f"/api/admin/v1/orders/{order_id}/refunds"
    headers = {**tenant.admin_headers, "Idempotency-Key": "refund-once"}
    first = client.post(url, json={"amount": 500, "reason": "补偿"}, headers=headers)
    assert first.status_code == 201, first.text
    for _ in range(3):
        again = client.post(url, json={"amount": 500, "reason": "补偿"}, headers=headers)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = client.post(url, json={"amount": 600, "reason": "补偿"}, headers=headers)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"
    assert len(f.refunds(session_factory, tenant.id)) == 1
    assert f.order(session_factory, tenant.id, order_id).refunded_amount == 500
    _drain(session_factory, settings, tenant)
    detail = client.get(f"/api/admin/v1/refunds/{first.json()['id']}", headers=tenant.admin_headers).json()
    assert detail["status"] == "succeeded" and detail["provider_refund_id"]


def test_admin_lists_and_filters(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    order_id, _ = paid_order(client, session_factory, tenant)
    member_id, headers = f.paying_customer(session_factory, tenant.id)
    open_order = f.pending_order(session_factory, tenant.id, member_id)
    client.post(PAY.format(open_order), headers=headers)
    h = tenant.admin_headers
    assert client.get("/api/admin/v1/payments", headers=h).json()["total"] == 2
    page = client.get("/api/admin/v1/payments", params={"status": "succeeded"}, headers=h).json()
    assert page["total"] == 1 and page["items"][0]["order_id"] == order_id
    assert client.get("/api/admin/v1/payments", params={"order_id": open_order}, headers=h).json()["total"] == 1
    r = client.get("/api/admin/v1/payments", params={"status": "bogus"}, headers=h)
    assert r.status_code == 422
    payment_id = page["items"][0]["id"]
    detail = client.get(f"/api/admin/v1/payments/{payment_id}", headers=h).json()
    assert detail["refunds"] == [] and detail["status"] == "succeeded"
    client.post(
        f"/api/admin/v1/orders/{order_id}/refunds", json={"amount": 100}, headers={**h, "Idempotency-Key": "x"}
    )
    refunds = client.get("/api/admin/v1/refunds", params={"order_id": order_id}, headers=h).json()
    assert refunds["total"] == 1 and refunds["items"][0]["status"] == "pending"
    assert client.get("/api/admin/v1/refunds", params={"status": "succeeded"}, headers=h).json()["total"] == 0
    # another merchant's ids are 404
    from siyu.tenancy import service as tenancy_service
    from tests.conftest import unique

    with unit_of_work(session_factory) as s:
        other = tenancy_service.create_merchant(s, code=unique("o"), name="Other")
        tenancy_service.create_staff(s, other.id, username="owner", password="owner-pass-1", role="owner")
        token, _ = tenancy_service.login_staff(
            s, merchant_code=other.code, username="owner", password="owner-pass-1", ttl=dt.timedelta(hours=1)
        )
    oh = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/admin/v1/payments/{payment_id}", headers=oh).status_code == 404
    assert client.get(f"/api/admin/v1/refunds/{refunds['items'][0]['id']}", headers=oh).status_code == 404
    r = client.post(f"/api/admin/v1/orders/{order_id}/refunds", json={"amount": 1}, headers={**oh, "Idempotency-Key": "y"})
    assert r.status_code == 404
    assert client.get("/api/admin/v1/payments", headers=oh).json()["total"] == 0


def test_reconcile_closes_sandbox_attempt_of_cancelled_order(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    member_id, headers = f.paying_customer(session_factory, tenant.id)
    order_id = f.pending_order(session_factory, tenant.id, member_id)
    client.post(PAY.format(order_id), headers=headers)
    order = f.order(session_factory, tenant.id, order_id)
    assert order.pay_deadline is not None
    # the order times out; reconciliation (deadline + 1 min) closes the unpaid attempt
    _drain(session_factory, settings, tenant, now=order.pay_deadline + dt.timedelta(minutes=2))
    assert f.order(session_factory, tenant.id, order_id).status == "cancelled"
    (payment,) = f.payments(session_factory, tenant.id, order_id)
    assert payment.status == "closed" and payment.open_order_id is None
    assert f.count(session_factory, Payment, tenant.id) == 1 and f.count(session_factory, Refund, tenant.id) == 0
