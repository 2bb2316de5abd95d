"""WeChat Pay v3 payment notifications: recorded once however often they come; anything forged,
stale, tampered or mismatching changes nothing but the log. PostgreSQL: 10 concurrent deliveries."""

from __future__ import annotations

import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.events import subscribe
from siyu.orders import service as orders_service
from siyu.payments import service
from siyu.payments.endpoints import process_notification
from siyu.worker.registry import JobContext
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.payments.wechat_helpers import Keys, make_keys, notification, transaction


@subscribe("order.paid", "test.payments.wx_order_paid")
def _on_paid(ctx: JobContext) -> None:
    pass


@pytest.fixture
def keys(client: TestClient, tenant: Tenant) -> Keys:
    k = make_keys()
    r = client.patch("/api/admin/v1/merchant", json=k.merchant_patch(), headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["has_pay_keys"] is True
    return k


@pytest.fixture
def open_payment(keys: Keys, session_factory: sessionmaker[Session], tenant: Tenant) -> tuple[int, str, int]:
    """(order_id, out_trade_no, amount) of a pending order with an open WeChat Pay attempt."""
    member_id, _ = f.paying_customer(session_factory, tenant.id)
    order_id = f.pending_order(session_factory, tenant.id, member_id)
    with unit_of_work(session_factory) as s:
        payment, _ = service.prepare_payment(s, tenant.id, member_id, order_id)
        found = (order_id, payment.out_trade_no, payment.amount)
    return found


def _post(client: TestClient, tenant: Tenant, headers: dict[str, str], body: bytes):  # type: ignore[no-untyped-def]
    return client.post(f"/api/pay/wechat/notify/{tenant.code}", content=body, headers=headers)


def test_notification_once_marks_paid_and_repeats_are_duplicates(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant, keys: Keys,
    open_payment: tuple[int, str, int],
) -> None:
    order_id, out_trade_no, amount = open_payment
    headers, body = notification(keys, transaction(keys, out_trade_no, amount))
    for _ in range(5):
        r = _post(client, tenant, headers, body)
        assert r.status_code == 204 and r.content == b""
    order = f.order(session_factory, tenant.id, order_id)
    assert order.status == "paid" and order.paid_amount == amount
    (payment,) = f.payments(session_factory, tenant.id, order_id)
    assert payment.status == "succeeded" and payment.transaction_id and payment.payer_openid == "o-test"
    assert payment.fee_amount == (amount * 60 + 5000) // 10000
    assert [n.outcome for n in f.notification_log(session_factory, tenant.id)] == ["accepted"] + ["duplicate"] * 4
    assert len(f.jobs(session_factory, tenant.id, "test.payments.wx_order_paid", order_id=order_id)) == 1


def _assert_rejected(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant, order_id: int,
    headers: dict[str, str], body: bytes, reason: str, status: int,
) -> None:
    before = len(f.notification_log(session_factory, tenant.id))
    r = _post(client, tenant, headers, body)
    assert r.status_code == status, r.text
    assert r.json()["code"] == "FAIL" and reason in r.json()["message"]
    order = f.order(session_factory, tenant.id, order_id)
    assert order.status == "pending_payment" and order.paid_amount == 0
    assert all(p.status == "created" and p.transaction_id is None for p in f.payments(session_factory, tenant.id))
    log = f.notification_log(session_factory, tenant.id)
    assert len(log) == before + 1 and log[-1].outcome == "rejected" and log[-1].reason == reason


@pytest.mark.parametrize(
    ("case", "reason", "status"),
    [
        ("forged_signature", "bad_signature", 401),
        ("unknown_serial", "unknown_serial", 401),
        ("stale", "stale_timestamp", 401),
        ("tampered_ciphertext", "decrypt_failed", 400),
        ("wrong_apiv3_key", "decrypt_failed", 400),
        ("amount_mismatch", "amount_mismatch", 400),
        ("wrong_mchid", "mchid_mismatch", 400),
        ("wrong_appid", "appid_mismatch", 400),
        ("unknown_out_trade_no", "unknown_out_trade_no", 404),
        ("not_success", "trade_state_not_success", 400),
        ("missing_headers", "missing_headers", 401),
    ],
)
def test_bad_notifications_change_nothing(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant, keys: Keys,
    open_payment: tuple[int, str, int], case: str, reason: str, status: int,
) -> None:
    order_id, out_trade_no, amount = open_payment
    resource = transaction(keys, out_trade_no, amount)
    kwargs: dict = {}
    if case == "forged_signature":
        kwargs["signer"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif case == "unknown_serial":
        kwargs["serial"] = "PUB_KEY_ID_UNKNOWN"
    elif case == "stale":
        kwargs["timestamp"] = int(time.time()) - 301
    elif case == "tampered_ciphertext":
        kwargs["tamper_ciphertext"] = True
    elif case == "wrong_apiv3_key":
        kwargs["apiv3_key"] = "b" * 32
    elif case == "amount_mismatch":
        resource = transaction(keys, out_trade_no, amount - 1)
    elif case == "wrong_mchid":
        resource = transaction(keys, out_trade_no, amount, mchid="1900000999")
    elif case == "wrong_appid":
        resource = transaction(keys, out_trade_no, amount, appid="wx0000000000000000")
    elif case == "unknown_out_trade_no":
        resource = transaction(keys, "P20260101000000ffffffffffffff", amount)
    elif case == "not_success":
        resource = transaction(keys, out_trade_no, amount, trade_state="NOTPAY")
    headers, body = notification(keys, resource, **kwargs)
    if case == "missing_headers":
        headers = {"Content-Type": "application/json"}
    _assert_rejected(client, session_factory, tenant, order_id, headers, body, reason, status)


def test_replayed_id_with_other_content_is_rejected(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant, keys: Keys,
    open_payment: tuple[int, str, int],
) -> None:
    order_id, out_trade_no, amount = open_payment
    first = transaction(keys, out_trade_no, amount)
    headers, body = notification(keys, first, notification_id="EV-1")
    assert _post(client, tenant, headers, body).status_code == 204
    other = dict(first, transaction_id="4200000000000000000000000001")
    headers, body = notification(keys, other, notification_id="EV-1")
    r = _post(client, tenant, headers, body)
    assert r.status_code == 400 and "replay_content_mismatch" in r.json()["message"]
    # a new id for the same trade with another transaction id is refused too
    headers, body = notification(keys, other, notification_id="EV-2")
    r = _post(client, tenant, headers, body)
    assert r.status_code == 400 and "transaction_mismatch" in r.json()["message"]
    (payment,) = f.payments(session_factory, tenant.id, order_id)
    assert payment.transaction_id == first["transaction_id"]
    assert [n.outcome for n in f.notification_log(session_factory, tenant.id)] == ["accepted", "rejected", "rejected"]


def test_unknown_merchant_and_sandbox_merchant(client: TestClient, tenant: Tenant) -> None:
    keys = make_keys()
    headers, body = notification(keys, transaction(keys, "P1", 100))
    r = client.post("/api/pay/wechat/notify/no-such-merchant", content=body, headers=headers)
    assert r.status_code == 404 and r.json()["code"] == "FAIL"
    r = client.post(f"/api/pay/wechat/notify/{tenant.code}", content=body, headers=headers)  # sandbox merchant
    assert r.status_code == 404 and r.json()["code"] == "FAIL"


def test_notification_for_cancelled_order_records_payment_and_refunds(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant, keys: Keys,
    open_payment: tuple[int, str, int],
) -> None:
    order_id, out_trade_no, amount = open_payment
    with unit_of_work(session_factory) as s:
        orders_service.cancel(s, tenant.id, order_id, reason="timeout", actor=("system", None))
    headers, body = notification(keys, transaction(keys, out_trade_no, amount))
    assert _post(client, tenant, headers, body).status_code == 204
    assert _post(client, tenant, headers, body).status_code == 204
    (payment,) = f.payments(session_factory, tenant.id, order_id)
    assert payment.status == "succeeded" and payment.unapplied_reason == "order_not_payable"
    assert f.order(session_factory, tenant.id, order_id).status == "cancelled"
    (refund,) = f.refunds(session_factory, tenant.id, order_id)
    assert refund.automatic and refund.amount == amount and refund.status == "pending"
    assert f.job_count(session_factory, tenant.id, "payments.submit_refund", refund_id=refund.id) == 1


def test_concurrent_deliveries_record_one_payment(
    app: FastAPI, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant, keys: Keys,
    open_payment: tuple[int, str, int], db_url: str,
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("row-lock concurrency is exercised on PostgreSQL")
    order_id, out_trade_no, amount = open_payment
    headers, body = notification(keys, transaction(keys, out_trade_no, amount))
    barrier = threading.Barrier(10)
    answers: list[tuple[int, str | None]] = []

    def deliver() -> None:
        barrier.wait()
        a = process_notification(
            session_factory, settings, app.state.secret_box, tenant.code, "payment", headers, body
        )
        answers.append((a.status, a.outcome))

    threads = [threading.Thread(target=deliver) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == sorted([(204, "accepted")] + [(204, "duplicate")] * 9)
    (payment,) = f.payments(session_factory, tenant.id, order_id)
    assert payment.status == "succeeded"
    assert len(f.jobs(session_factory, tenant.id, "test.payments.wx_order_paid", order_id=order_id)) == 1
    order = f.order(session_factory, tenant.id, order_id)
    assert order.status == "paid" and order.paid_amount == amount
