"""Withdrawals paid through WeChat Pay's merchant transfer (商家转账) against the local fake:
the approval sends one transfer bill (out_bill_no ``WD<id>``) after commit, a retried send
returns the same bill, the user-confirmation state is shown, and the finished notification or
a status query moves the withdrawal exactly once (paid → withdrawn; failed → available)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.app import create_app
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from siyu.referral import repository as repo
from siyu.referral import service
from siyu.testing.fake_wechat import FakeMerchant, FakeWechat
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.referral import helpers as h

BILLS = "/v3/fund-app/mch-transfer/transfer-bills"


@pytest.fixture
def fake() -> Iterator[FakeWechat]:
    """One fake per test: withdrawal ids repeat across the SQLite and PostgreSQL runs."""
    with FakeWechat() as fw:
        yield fw


@dataclass
class Wx:
    client: TestClient
    settings: Settings
    merchant: FakeMerchant
    fake: FakeWechat
    tenant: Tenant
    dist: int
    headers: dict[str, str]

    def drain(self, factory: sessionmaker[Session], now: dt.datetime | None = None) -> None:
        Worker(factory, self.settings, merchant_id=self.tenant.id).drain(now=now)

    def withdraw(self, amount: int) -> dict[str, Any]:
        r = self.client.post(
            f"{h.STORE}/withdrawals",
            json={"amount": amount},
            headers={**self.headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert r.status_code == 201, r.text
        wd = r.json()
        r = self.client.post(
            f"{h.ADMIN}/withdrawals/{wd['id']}/approve", json={}, headers=self.tenant.admin_headers
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def withdrawal(self, wd_id: int) -> dict[str, Any]:
        items = self.client.get(f"{h.STORE}/withdrawals", headers=self.headers).json()["items"]
        return next(w for w in items if w["id"] == wd_id)

    def notify(self, headers: dict[str, str], body: bytes) -> Any:
        return self.client.post(
            f"/api/pay/wechat/transfer-notify/{self.tenant.code}",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )


@pytest.fixture
def wx(  # type: ignore[no-untyped-def]
    fake: FakeWechat, settings: Settings, engine, tenant: Tenant, session_factory: sessionmaker[Session]
) -> Iterator[Wx]:
    wx_settings = settings.model_copy(update={"wechatpay_api_base": fake.base_url})
    merchant = fake.make_merchant(f"19{uuid.uuid4().int % 10**8:08d}", f"wx{uuid.uuid4().hex[:16]}")
    with TestClient(create_app(wx_settings)) as client:
        r = client.patch(
            "/api/admin/v1/merchant",
            json={
                "pay_provider": "wechatpay",
                "pay_mchid": merchant.mchid,
                "pay_serial_no": merchant.merchant_serial_no,
                "pay_private_key_pem": merchant.merchant_private_key_pem,
                "pay_apiv3_key": merchant.apiv3_key,
                "pay_platform_keys": merchant.platform_public_keys,
                "wechat_appid": merchant.appid,
            },
            headers=tenant.admin_headers,
        )
        assert r.status_code == 200, r.text
        h.configure(client, tenant, payout_provider="wechat_transfer", min_withdrawal=100)
        h.create_level(client, tenant)
        _, headers = h.login(client, tenant)
        dist = h.make_distributor(client, tenant, headers)
        with unit_of_work(session_factory) as s:
            repo.move(
                s,
                tenant.id,
                dist,
                key=f"test:{uuid.uuid4().hex}",
                entry="settled",
                amount=5000,
                deltas={"available": 5000},
            )
        yield Wx(client, wx_settings, merchant, fake, tenant, dist, headers)


def _posts(fake: FakeWechat, no: str) -> int:
    return sum(
        1 for r in fake.requests if r.method == "POST" and r.path == BILLS and f'"{no}"'.encode() in r.body
    )


def test_notification_pays_the_withdrawal_once(wx: Wx, session_factory: sessionmaker[Session]) -> None:
    wd = wx.withdraw(1200)
    no = f"WD{wd['id']}"
    assert _posts(wx.fake, no) == 0  # nothing is sent inside the approval request
    wx.drain(session_factory)
    bill = wx.fake.transfer(no)
    assert (bill["transfer_amount"], bill["state"]) == (1200, "WAIT_USER_CONFIRM")
    assert bill["openid"].startswith("sandbox-")  # the member's openid (sandbox login here)
    mine = wx.withdrawal(wd["id"])
    assert mine["status"] == "approved" and mine["provider_state"] == "WAIT_USER_CONFIRM"
    assert mine["provider_data"]["package_info"]  # for wx.requestMerchantTransfer
    assert mine["provider_reference"] == bill["transfer_bill_no"]
    wx.drain(session_factory)
    assert _posts(wx.fake, no) == 1
    headers, body = wx.fake.finish_transfer(no, state="SUCCESS")
    assert wx.notify(headers, body).status_code == 204
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (3800, 0, 1200)
    assert wx.withdrawal(wd["id"])["status"] == "paid"
    # WeChat Pay delivers again, and the scheduled status query runs: nothing moves twice
    assert wx.notify(*wx.fake.finish_transfer(no, state="SUCCESS")).status_code == 204
    wx.drain(session_factory, now=utcnow() + dt.timedelta(hours=2))
    assert h.account(session_factory, wx.tenant.id, wx.dist) == acct
    assert h.ledger_sums(session_factory, wx.tenant.id, wx.dist) == acct


def test_a_retried_send_returns_the_same_bill(wx: Wx, session_factory: sessionmaker[Session]) -> None:
    """The job's answer was lost (e.g. the worker died after sending): sending again with the same
    out_bill_no gets the same bill from WeChat Pay, and the money moves once."""
    wd = wx.withdraw(700)
    no = f"WD{wd['id']}"
    refs = []
    for _ in range(2):
        with unit_of_work(session_factory) as s:
            sub = service.payout_submission(s, wx.tenant.id, wd["id"], wx.settings)
            assert sub is not None
            s.commit()
            refs.append(sub.provider.send(sub.request).reference)
    assert refs[0] == refs[1] and _posts(wx.fake, no) == 2
    assert wx.fake.transfer(no, wx.merchant.mchid)["transfer_bill_no"] == refs[0]
    wx.drain(session_factory)
    wx.notify(*wx.fake.finish_transfer(no))
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawn"]) == (4300, 700)


def test_status_query_fails_a_cancelled_transfer_and_returns_the_amount(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wd = wx.withdraw(900)
    no = f"WD{wd['id']}"
    wx.drain(session_factory)
    wx.fake.finish_transfer(no, state="CANCELLED")  # the user never confirmed; not delivered
    assert h.account(session_factory, wx.tenant.id, wx.dist)["withdrawing"] == 900
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=6))  # the first status query
    mine = wx.withdrawal(wd["id"])
    assert (mine["status"], mine["provider_state"]) == ("failed", "CANCELLED")
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (5000, 0, 0)
    assert h.ledger_sums(session_factory, wx.tenant.id, wx.dist) == acct
    # finance cannot reject a withdrawal whose automatic payout was on its way
    wd2 = wx.withdraw(300)
    r = wx.client.post(f"{h.ADMIN}/withdrawals/{wd2['id']}/reject", json={}, headers=wx.tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "withdrawal_not_pending"


def test_refused_send_fails_the_withdrawal_and_bad_notifications_change_nothing(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wx.fake.fail_next("POST", BILLS, 403, "NOT_ENOUGH", "资金不足")
    wd = wx.withdraw(1000)
    wx.drain(session_factory)
    mine = wx.withdrawal(wd["id"])
    assert mine["status"] == "failed" and "NOT_ENOUGH" in mine["review_note"]
    assert h.account(session_factory, wx.tenant.id, wx.dist)["available"] == 5000
    # a transient error is retried with the same out_bill_no
    wx.fake.fail_next("POST", BILLS, 500, "SYSTEM_ERROR")
    wd = wx.withdraw(400)
    no = f"WD{wd['id']}"
    wx.drain(session_factory)
    assert wx.withdrawal(wd["id"])["provider_state"] is None
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=1))
    assert wx.withdrawal(wd["id"])["provider_state"] == "WAIT_USER_CONFIRM"
    before = h.snapshot(session_factory, wx.tenant.id)
    headers, body = wx.fake.finish_transfer(no)
    forged = {**headers, "Wechatpay-Signature": headers["Wechatpay-Signature"][::-1]}
    r = wx.notify(forged, body)
    assert r.status_code == 401 and r.json()["code"] == "FAIL"
    assert wx.notify(headers, body.replace(b"resource", b"resourcX")).status_code in (400, 401)
    assert h.snapshot(session_factory, wx.tenant.id) == before
    assert wx.notify(headers, body).status_code == 204
    assert wx.withdrawal(wd["id"])["status"] == "paid"


def test_choosing_wechat_transfer_needs_wechat_pay_credentials(client: TestClient, tenant: Tenant) -> None:
    before = client.get(f"{h.ADMIN}/settings", headers=tenant.admin_headers).json()
    r = client.put(
        f"{h.ADMIN}/settings", json={"payout_provider": "wechat_transfer"}, headers=tenant.admin_headers
    )
    assert r.status_code == 409 and r.json()["code"] == "payout_provider_not_configured", r.text
    assert client.get(f"{h.ADMIN}/settings", headers=tenant.admin_headers).json() == before
