"""WeChat Pay end to end against ``FakeWechat`` on a real local port: prepay and the signed
``wx.requestPayment`` fields, notification → paid, reconciliation of a lost notification,
refunds (processing → notified success / closed, refused at submit)."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from siyu.app import create_app
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.events import subscribe
from siyu.kit.timeutil import utcnow
from siyu.payments.models import Payment
from siyu.testing.fake_wechat import FakeMerchant, FakeWechat
from siyu.worker.registry import JobContext
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.factories import payments as f


@subscribe("order.refunded", "test.payments.fake_order_refunded")
def _on_refunded(ctx: JobContext) -> None:
    pass


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWechat]:
    with FakeWechat() as fw:
        yield fw


@dataclass
class Wx:
    client: TestClient
    settings: Settings
    merchant: FakeMerchant
    fake: FakeWechat

    def drain(self, factory: sessionmaker[Session], tenant: Tenant, now: dt.datetime | None = None) -> None:
        Worker(factory, self.settings, merchant_id=tenant.id).drain(now=now)


@pytest.fixture
def wx(fake: FakeWechat, settings: Settings, engine, tenant: Tenant) -> Iterator[Wx]:  # type: ignore[no-untyped-def]
    wx_settings = settings.model_copy(update={"wechatpay_api_base": fake.base_url})
    merchant = fake.make_merchant(f"19{uuid.uuid4().int % 10**8:08d}", f"wx{uuid.uuid4().hex[:16]}")
    app = create_app(wx_settings)
    with TestClient(app) as client:
        r = client.patch(
            "/api/admin/v1/merchant",
            json={
                "pay_provider": "wechatpay", "pay_mchid": merchant.mchid, "pay_serial_no": merchant.merchant_serial_no,
                "pay_private_key_pem": merchant.merchant_private_key_pem, "pay_apiv3_key": merchant.apiv3_key,
                "pay_platform_keys": merchant.platform_public_keys, "wechat_appid": merchant.appid,
            },
            headers=tenant.admin_headers,
        )
        assert r.status_code == 200, r.text
        yield Wx(client, wx_settings, merchant, fake)


def _start(wx: Wx, factory: sessionmaker[Session], tenant: Tenant, items=None) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    member_id, headers = f.paying_customer(factory, tenant.id)
    order_id = f.pending_order(factory, tenant.id, member_id, items)
    r = wx.client.post(f"/api/store/v1/orders/{order_id}/pay", headers=headers)
    assert r.status_code == 200, r.text
    return order_id, r.json()


def _paid(wx: Wx, factory: sessionmaker[Session], tenant: Tenant, items=None) -> int:  # type: ignore[no-untyped-def]
    order_id, pay = _start(wx, factory, tenant, items)
    headers, body = wx.fake.pay(pay["out_trade_no"])
    r = wx.client.post(f"/api/pay/wechat/notify/{tenant.code}", content=body, headers=headers)
    assert r.status_code == 204, r.text
    assert f.order(factory, tenant.id, order_id).status == "paid"
    return order_id


def test_prepay_returns_verifiable_request_payment_params(
    wx: Wx, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    order_id, pay = _start(wx, session_factory, tenant)
    assert pay["provider"] == "wechatpay"
    params = pay["params"]
    assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["signType"] == "RSA" and params["package"].startswith("prepay_id=")
    message = f"{wx.merchant.appid}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n".encode()
    public = serialization.load_pem_public_key(wx.merchant.merchant_public_key_pem.encode())
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(base64.b64decode(params["paySign"]), message, padding.PKCS1v15(), hashes.SHA256())
    trade = wx.fake.transaction(pay["out_trade_no"])
    assert trade["amount"]["total"] == pay["amount"] == f.order(session_factory, tenant.id, order_id).payable_amount
    # Resuming reuses the prepay: one jsapi call for two pay requests.
    again = wx.client.post(f"/api/store/v1/orders/{order_id}/pay", headers=_headers_of(session_factory, tenant, order_id))
    assert again.json()["params"]["package"] == params["package"]
    (payment,) = f.payments(session_factory, tenant.id, order_id)
    assert payment.prepay_id == params["package"].removeprefix("prepay_id=")


def _headers_of(factory: sessionmaker[Session], tenant: Tenant, order_id: int) -> dict[str, str]:
    import datetime as _dt

    from siyu.tenancy import service as tenancy_service

    member_id = f.order(factory, tenant.id, order_id).member_id
    with unit_of_work(factory) as s:
        token, _ = tenancy_service.issue_customer_token(s, tenant.id, member_id, _dt.timedelta(hours=1))
    return {"Authorization": f"Bearer {token}"}


def test_provider_error_at_prepay_leaves_order_pending(
    wx: Wx, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member_id, headers = f.paying_customer(session_factory, tenant.id)
    order_id = f.pending_order(session_factory, tenant.id, member_id)
    wx.fake.fail_next("POST", "/v3/pay/transactions/jsapi", 500, "SYSTEM_ERROR")
    r = wx.client.post(f"/api/store/v1/orders/{order_id}/pay", headers=headers)
    assert r.status_code == 502 and r.json()["code"] == "provider_error"
    assert f.order(session_factory, tenant.id, order_id).status == "pending_payment"
    (payment,) = f.payments(session_factory, tenant.id, order_id)
    assert payment.prepay_id is None and payment.status == "created"
    r = wx.client.post(f"/api/store/v1/orders/{order_id}/pay", headers=headers)  # retry works, same attempt
    assert r.status_code == 200 and r.json()["out_trade_no"] == payment.out_trade_no


def test_reconciliation_picks_up_payment_whose_notification_never_came(
    wx: Wx, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    order_id, pay = _start(wx, session_factory, tenant)
    wx.fake.pay(pay["out_trade_no"])  # paid at WeChat; the notification is lost
    with unit_of_work(session_factory) as s:
        s.execute(
            update(Payment).where(Payment.merchant_id == tenant.id).values(created_at=utcnow() - dt.timedelta(minutes=10))
        )
    wx.drain(session_factory, tenant, now=utcnow() + dt.timedelta(minutes=6))  # the 5-minute sweep fires
    order = f.order(session_factory, tenant.id, order_id)
    assert order.status == "paid" and order.paid_amount == pay["amount"]
    (payment,) = f.payments(session_factory, tenant.id, order_id)
    assert payment.status == "succeeded" and payment.transaction_id == wx.fake.transaction(pay["out_trade_no"])["transaction_id"]
    # a late notification is then just a duplicate
    headers, body = wx.fake.pay(pay["out_trade_no"])
    assert wx.client.post(f"/api/pay/wechat/notify/{tenant.code}", content=body, headers=headers).status_code == 204
    assert [n.outcome for n in f.notification_log(session_factory, tenant.id)] == ["duplicate"]


def test_refund_processing_then_notified_success(
    wx: Wx, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    order_id = _paid(wx, session_factory, tenant)
    paid = f.order(session_factory, tenant.id, order_id).paid_amount
    line = f.order_lines(session_factory, tenant.id, order_id)[0]
    r = wx.client.post(
        f"/api/admin/v1/orders/{order_id}/refunds", json={"lines": [{"order_line_id": line.id, "quantity": 1}]},
        headers={**tenant.admin_headers, "Idempotency-Key": "wx-r1"},
    )
    assert r.status_code == 201, r.text
    refund = r.json()
    wx.drain(session_factory, tenant)
    (row,) = f.refunds(session_factory, tenant.id, order_id)
    assert row.status == "processing" and row.provider_refund_id
    assert wx.fake.refund(row.out_refund_no)["amount"]["refund"] == refund["amount"]
    headers, body = wx.fake.complete_refund(row.out_refund_no)
    for _ in range(2):
        r = wx.client.post(f"/api/pay/wechat/refund-notify/{tenant.code}", content=body, headers=headers)
        assert r.status_code == 204, r.text
    (row,) = f.refunds(session_factory, tenant.id, order_id)
    assert row.status == "succeeded" and row.succeeded_at is not None
    (event,) = f.jobs(session_factory, tenant.id, "test.payments.fake_order_refunded")
    assert event.payload["refund_id"] == row.id and event.payload["amount"] == refund["amount"]
    assert event.payload["full"] is False and event.payload["lines"][0]["order_line_id"] == line.id
    order = f.order(session_factory, tenant.id, order_id)
    assert order.refunded_amount == refund["amount"] < paid and order.refund_status == "partial"


def test_refund_closed_or_refused_releases_the_booking(
    wx: Wx, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    order_id = _paid(wx, session_factory, tenant)
    url = f"/api/admin/v1/orders/{order_id}/refunds"
    r = wx.client.post(url, json={"amount": 100}, headers={**tenant.admin_headers, "Idempotency-Key": "closed"})
    assert r.status_code == 201
    wx.drain(session_factory, tenant)
    (row,) = f.refunds(session_factory, tenant.id, order_id)
    headers, body = wx.fake.complete_refund(row.out_refund_no, status="CLOSED")
    assert wx.client.post(f"/api/pay/wechat/refund-notify/{tenant.code}", content=body, headers=headers).status_code == 204
    assert f.refunds(session_factory, tenant.id, order_id)[0].status == "failed"
    assert f.order(session_factory, tenant.id, order_id).refunded_amount == 0

    wx.fake.fail_next("POST", "/v3/refund/domestic/refunds", 400, "INVALID_REQUEST")
    r = wx.client.post(url, json={"amount": 200}, headers={**tenant.admin_headers, "Idempotency-Key": "refused"})
    assert r.status_code == 201
    assert f.order(session_factory, tenant.id, order_id).refunded_amount == 200
    wx.drain(session_factory, tenant)
    refused = f.refunds(session_factory, tenant.id, order_id)[1]
    assert refused.status == "failed" and refused.failure_reason == "INVALID_REQUEST"
    order = f.order(session_factory, tenant.id, order_id)
    assert order.refunded_amount == 0 and order.refund_status == "none" and order.status == "paid"
