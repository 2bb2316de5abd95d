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


def test_a_status_poll_keeps_the_package_the_payee_confirms_with(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    """WeChat's query answer has no ``package_info`` (only the create answer has): a poll that finds
    the bill still waiting keeps the one the send stored, so the payee can still confirm."""
    wd = wx.withdraw(500)
    wx.drain(session_factory)
    package = wx.withdrawal(wd["id"])["provider_data"]["package_info"]
    assert package
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=6))  # the first status poll
    mine = wx.withdrawal(wd["id"])
    assert (mine["provider_state"], mine["provider_data"]) == ("WAIT_USER_CONFIRM", {"package_info": package})
    assert wx.fake.count_requests(f"{BILLS}/out-bill-no/WD{wd['id']}") == 1


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


# -- from 2,000 yuan: the payee's real name ----------------------------------------------------

NAME = "张三丰"
BIG = 200_000  # fen: from here WeChat Pay needs the encrypted real name


def _credit(factory: sessionmaker[Session], tenant: Tenant, dist: int, amount: int) -> None:
    with unit_of_work(factory) as s:
        repo.move(s, tenant.id, dist, key=f"test:{uuid.uuid4().hex}", entry="settled", amount=amount,
                  deltas={"available": amount})


def _request(wx: Wx, amount: int, headers: dict[str, str] | None = None, **body: Any) -> Any:
    return wx.client.post(
        f"{h.STORE}/withdrawals",
        json={"amount": amount, **body},
        headers={**(headers or wx.headers), "Idempotency-Key": uuid.uuid4().hex},
    )


def _approve(wx: Wx, wd_id: int) -> dict[str, Any]:
    r = wx.client.post(f"{h.ADMIN}/withdrawals/{wd_id}/approve", json={}, headers=wx.tenant.admin_headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _stored(factory: sessionmaker[Session], tenant: Tenant) -> str:
    """Every withdrawal, job and audit row of the merchant as text (to look for a leaked name)."""
    from sqlalchemy import select

    from siyu.kit.audit import AuditEvent
    from siyu.kit.outbox import Job
    from siyu.referral.models import Withdrawal

    with factory() as s:
        parts = [repr([(w.payee_name_enc, w.payee_name_masked, w.review_note, w.provider_data)
                       for w in s.scalars(select(Withdrawal).where(Withdrawal.merchant_id == tenant.id))])]
        parts += [repr(j.payload) + str(j.last_error) for j in s.scalars(select(Job).where(Job.merchant_id == tenant.id))]
        parts += [repr(a.data) for a in s.scalars(select(AuditEvent).where(AuditEvent.merchant_id == tenant.id))]
    return "\n".join(parts)


def test_a_withdrawal_from_2000_yuan_pays_with_the_real_name_never_shown(
    wx: Wx, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    _credit(session_factory, wx.tenant, wx.dist, BIG)
    r = _request(wx, BIG, real_name=f" {NAME} ")
    assert r.status_code == 201, r.text
    answers = [r.text]
    wd = r.json()
    assert wd["payee_name_masked"] == "张**丰"
    answers.append(json_text := str(_approve(wx, wd["id"])))
    assert "张**丰" in json_text
    no = f"WD{wd['id']}"
    wx.drain(session_factory)
    assert wx.fake.transfer_user_name(no) == NAME  # decrypted by WeChat's (the fake's) platform key
    assert wx.fake.transfer(no)["transfer_amount"] == BIG
    assert all(NAME.encode() not in q.body for q in wx.fake.requests)  # only ciphertext on the wire
    assert wx.notify(*wx.fake.finish_transfer(no)).status_code == 204
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (5000, 0, BIG)
    answers += [
        wx.client.get(f"{h.STORE}/withdrawals", headers=wx.headers).text,
        wx.client.get(f"{h.ADMIN}/withdrawals", headers=wx.tenant.admin_headers).text,
    ]
    assert all(NAME not in a for a in answers) and "张**丰" in answers[-1]
    stored = _stored(session_factory, wx.tenant)
    assert NAME not in stored and "v2:" in stored  # encrypted at rest (bound to its row), in no job or audit row
    assert NAME not in caplog.text


def test_the_name_given_when_applying_is_used_when_the_request_has_none(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    _credit(session_factory, wx.tenant, wx.dist, BIG)
    r = _request(wx, BIG)  # the distributor applied as 王五 (helpers.make_distributor)
    assert r.status_code == 201, r.text
    assert r.json()["payee_name_masked"] == "王*"
    _approve(wx, r.json()["id"])
    wx.drain(session_factory)
    assert wx.fake.transfer_user_name(f"WD{r.json()['id']}") == "王五"


def test_missing_name_is_refused_and_changes_nothing(wx: Wx, session_factory: sessionmaker[Session]) -> None:
    _, headers = h.login(wx.client, wx.tenant)
    r = wx.client.post(f"{h.STORE}/distributor/apply", json={}, headers=headers)  # no real name given
    assert r.status_code == 201, r.text
    dist = int(r.json()["id"])
    r = wx.client.post(f"{h.ADMIN}/distributors/{dist}/approve", json={}, headers=wx.tenant.admin_headers)
    assert r.status_code == 200, r.text
    _credit(session_factory, wx.tenant, dist, 300_000)
    before = h.snapshot(session_factory, wx.tenant.id)
    h.refused(_request(wx, BIG, headers), 422, "withdrawal_real_name_required", before,
              h.snapshot(session_factory, wx.tenant.id))
    r = _request(wx, BIG, {**headers, "Accept-Language": "en"})
    assert "¥2,000" in r.json()["message"] and "real name" in r.json()["message"]
    r = _request(wx, BIG, {**headers, "Accept-Language": "zh-CN"})
    assert "2,000 元" in r.json()["message"] and "真实姓名" in r.json()["message"]
    r = _request(wx, BIG, headers, real_name="   ")
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert h.snapshot(session_factory, wx.tenant.id) == before
    # below 2,000 yuan no name is needed, and none is sent
    r = _request(wx, BIG - 1, headers)
    assert r.status_code == 201 and r.json()["payee_name_masked"] is None, r.text
    _approve(wx, r.json()["id"])
    wx.drain(session_factory)
    no = f"WD{r.json()['id']}"
    assert wx.fake.transfer(no)["transfer_amount"] == BIG - 1 and wx.fake.transfer_user_name(no) is None


def _set_platform_keys(wx: Wx, keys: dict[str, str]) -> None:
    r = wx.client.patch("/api/admin/v1/merchant", json={"pay_platform_keys": keys}, headers=wx.tenant.admin_headers)
    assert r.status_code == 200, r.text


def test_a_wrong_platform_serial_is_refused_and_the_withdrawal_stays_retryable(
    wx: Wx, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    caplog.set_level("DEBUG")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    # the merchant entered a WeChat Pay public key id the platform does not know (chosen: sorts last)
    _set_platform_keys(wx, {**wx.merchant.platform_public_keys, f"PUB_KEY_ID_{'9' * 32}": other})
    _credit(session_factory, wx.tenant, wx.dist, BIG)
    r = _request(wx, BIG, real_name=NAME)
    assert r.status_code == 201, r.text
    wd = _approve(wx, r.json()["id"])
    no = f"WD{wd['id']}"
    wx.drain(session_factory)
    assert _posts(wx.fake, no) == 1
    with pytest.raises(KeyError):
        wx.fake.transfer(no)  # refused (PARAM_ERROR): no bill
    mine = wx.withdrawal(wd["id"])
    assert (mine["status"], mine["provider_state"]) == ("approved", None)
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"]) == (5000, BIG)
    # the merchant fixes its platform keys; the job's next attempt sends the same out_bill_no
    _set_platform_keys(wx, dict(wx.merchant.platform_public_keys))
    wx.drain(session_factory, now=utcnow() + dt.timedelta(hours=1))
    assert wx.fake.transfer_user_name(no) == NAME
    assert wx.withdrawal(wd["id"])["provider_state"] == "WAIT_USER_CONFIRM"
    assert wx.notify(*wx.fake.finish_transfer(no)).status_code == 204
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["withdrawing"], acct["withdrawn"]) == (0, BIG)
    assert h.ledger_sums(session_factory, wx.tenant.id, wx.dist) == acct
    assert NAME not in caplog.text and NAME not in _stored(session_factory, wx.tenant)


def test_the_provider_threshold_is_wechats() -> None:
    from siyu.integrations.wechat.transfer import NAME_REQUIRED_FROM
    from siyu.referral import payout

    assert payout.WechatTransferProvider.name_required_from == NAME_REQUIRED_FROM
    assert payout.needs_real_name("wechat_transfer", NAME_REQUIRED_FROM)
    assert not payout.needs_real_name("wechat_transfer", NAME_REQUIRED_FROM - 1)
    assert not payout.needs_real_name("manual", 10**9)
    request = payout.PayoutRequest(1, 2, 3, NAME_REQUIRED_FROM, "k", payee_name=NAME)
    assert NAME not in repr(request)
