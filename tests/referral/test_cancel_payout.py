"""Finance's "cancel this payout" (``POST .../withdrawals/{id}/cancel-payout``) for a WeChat transfer
the payee has not confirmed (``WAIT_USER_CONFIRM``): WeChat Pay is asked to cancel the bill
(``CANCELING``), the status poll (or the notification) sees ``CANCELLED``, the withdrawal fails and
its amount returns to ``available`` exactly once — under retries and parallel calls. A bill the
payee confirmed meanwhile is refused ``withdrawal_payout_cancel_too_late``. A bill left
unconfirmed past WeChat's 24-hour window is cancelled by WeChat and returned by the polls."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.dialect import is_postgres
from siyu.db.session import unit_of_work
from siyu.integrations.wechat.transfer import CONFIRM_WINDOW
from siyu.kit.audit import AuditEvent
from siyu.kit.errors import DomainError
from siyu.kit.outbox import JOB_DEAD, Job
from siyu.kit.timeutil import utcnow
from siyu.referral import payout, service
from tests.conftest import Tenant, staff_headers
from tests.referral import helpers as h
from tests.referral import test_wechat_transfer_payout as wtp
from tests.referral.test_fail_payout import _give_up_jobs, _ledger
from tests.referral.test_wechat_transfer_payout import BILLS, Wx

fake, wx = wtp.fake, wtp.wx  # the WeChat Pay fake and a distributor paid by WeChat transfer (fixtures)

CANCEL = h.ADMIN + "/withdrawals/{}/cancel-payout"


def _cancel(wx: Wx, wd_id: int, headers: dict[str, str] | None = None, note: str | None = "payee unreachable") -> Any:
    return wx.client.post(CANCEL.format(wd_id), json={"note": note}, headers=headers or wx.tenant.admin_headers)


def _cancel_calls(wx: Wx, no: str) -> int:
    return wx.fake.count_requests(f"{BILLS}/out-bill-no/{no}/cancel")


def _audits(factory: sessionmaker[Session], tenant: Tenant, wd_id: int, action: str) -> list[AuditEvent]:
    with factory() as s:
        return list(s.scalars(select(AuditEvent).where(
            AuditEvent.merchant_id == tenant.id, AuditEvent.subject_type == "withdrawal",
            AuditEvent.subject_id == wd_id, AuditEvent.action == action)))


def _waiting(wx: Wx, factory: sessionmaker[Session], amount: int = 1200) -> tuple[int, str]:
    """An approved withdrawal whose bill waits for the payee's confirmation."""
    wd = wx.withdraw(amount)
    wx.drain(factory)
    assert wx.withdrawal(wd["id"])["provider_state"] == "WAIT_USER_CONFIRM"
    return int(wd["id"]), f"WD{wd['id']}"


def _returned_once(wx: Wx, factory: sessionmaker[Session], wd_id: int) -> None:
    acct = h.account(factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (5000, 0, 0)
    assert h.ledger_sums(factory, wx.tenant.id, wx.dist) == acct
    assert [e for e, _, _ in _ledger(factory, wx.tenant, wd_id)] == ["withdrawal_requested", "withdrawal_returned"]


def test_finance_cancels_a_payout_waiting_for_the_payee(wx: Wx, session_factory: sessionmaker[Session]) -> None:
    wd_id, no = _waiting(wx, session_factory)
    r = _cancel(wx, wd_id)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["status"], out["provider_state"], out["provider_data"]) == ("approved", "CANCELING", None)
    assert out["review_note"] == "payee unreachable"
    assert wx.fake.transfer(no)["state"] == "CANCELING" and _cancel_calls(wx, no) == 1
    mine = wx.withdrawal(wd_id)  # the payee no longer gets a package to confirm
    assert (mine["status"], mine["provider_state"], mine["provider_data"]) == ("approved", "CANCELING", None)
    assert h.account(session_factory, wx.tenant.id, wx.dist)["withdrawing"] == 1200  # not back before WeChat says so
    # a retried click: asked again, the same answer, audited once
    r = _cancel(wx, wd_id)
    assert r.status_code == 200 and r.json()["provider_state"] == "CANCELING", r.text
    (audit,) = _audits(session_factory, wx.tenant, wd_id, "cancel_requested")
    assert (audit.actor_type, audit.actor_id) == ("staff", wx.tenant.owner_id)
    assert audit.data["note"] == "payee unreachable" and audit.data["provider_state"] == "WAIT_USER_CONFIRM"
    # the cancellation's status poll (a minute later) finds it CANCELLED: failed, the amount returns
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=2))
    mine = wx.withdrawal(wd_id)
    assert (mine["status"], mine["provider_state"], mine["review_note"]) == ("failed", "CANCELLED", "payee unreachable")
    _returned_once(wx, session_factory, wd_id)
    # retries, the late notification and the send's own polls change nothing
    before = h.snapshot(session_factory, wx.tenant.id)
    r = _cancel(wx, wd_id)
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    assert wx.notify(*wx.fake.finish_transfer(no, state="CANCELLED")).status_code == 204
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=3))
    assert h.snapshot(session_factory, wx.tenant.id) == before
    (failed,) = _audits(session_factory, wx.tenant, wd_id, "failed")
    assert failed.data["source"] == "query" and failed.data["state"] == "CANCELLED"


def test_the_cancelled_notification_also_returns_the_amount(wx: Wx, session_factory: sessionmaker[Session]) -> None:
    wd_id, no = _waiting(wx, session_factory, 800)
    assert _cancel(wx, wd_id).status_code == 200
    assert wx.notify(*wx.fake.finish_transfer(no, state="SUCCESS")).status_code == 204  # CANCELING can only end CANCELLED
    assert wx.withdrawal(wd_id)["status"] == "failed"
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=2))
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (5000, 0, 0)


def test_a_payout_the_payee_confirmed_meanwhile_cannot_be_cancelled(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wd_id, no = _waiting(wx, session_factory, 1000)
    wx.fake.finish_transfer(no, state="SUCCESS")  # confirmed; the notification is still on its way
    r = _cancel(wx, wd_id)
    assert (r.status_code, r.json()["code"]) == (409, "withdrawal_payout_cancel_too_late"), r.text
    assert "无法撤销" in r.json()["message"]
    assert wx.fake.transfer(no)["state"] == "SUCCESS"
    assert wx.withdrawal(wd_id)["status"] == "paid"  # WeChat's answer is kept: the payee has the money
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (4000, 0, 1000)
    assert _audits(session_factory, wx.tenant, wd_id, "cancel_requested") == []
    # once known paid, a cancel changes nothing and sends nothing
    before, calls = h.snapshot(session_factory, wx.tenant.id), _cancel_calls(wx, no)
    r = _cancel(wx, wd_id, headers={**wx.tenant.admin_headers, "Accept-Language": "en"})
    h.refused(r, 409, "withdrawal_payout_cancel_too_late", before, h.snapshot(session_factory, wx.tenant.id))
    assert "no longer be cancelled" in r.json()["message"] and _cancel_calls(wx, no) == calls


def test_a_failed_bill_fails_the_withdrawal_by_its_answer(wx: Wx, session_factory: sessionmaker[Session]) -> None:
    wd_id, no = _waiting(wx, session_factory, 600)
    wx.fake.finish_transfer(no, state="FAIL", fail_reason="PAYEE_ACCOUNT_ABNORMAL")
    r = _cancel(wx, wd_id)
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    assert r.json()["provider_state"] == "FAIL" and r.json()["review_note"] == "PAYEE_ACCOUNT_ABNORMAL"
    _returned_once(wx, session_factory, wd_id)


def test_a_bill_left_unconfirmed_past_the_window_is_returned_by_the_polls(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wd_id, no = _waiting(wx, session_factory, 900)
    wx.drain(session_factory, now=utcnow() + dt.timedelta(hours=23))  # polls inside the window: still waiting
    assert wx.withdrawal(wd_id)["provider_state"] == "WAIT_USER_CONFIRM"
    assert h.account(session_factory, wx.tenant.id, wx.dist)["withdrawing"] == 900
    wx.fake.advance(CONFIRM_WINDOW + dt.timedelta(minutes=1))  # WeChat closes it: nobody cancelled
    assert wx.fake.transfer(no)["state"] == "CANCELLED"
    assert sum(service.PAYOUT_POLL_MINUTES) * 60 > CONFIRM_WINDOW.total_seconds() + 3600  # polls outlast the window
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=2))
    mine = wx.withdrawal(wd_id)
    assert (mine["status"], mine["provider_state"]) == ("failed", "CANCELLED")
    _returned_once(wx, session_factory, wd_id)
    assert _cancel_calls(wx, no) == 0


def test_a_bill_already_closed_by_wechat_is_failed_at_once(wx: Wx, session_factory: sessionmaker[Session]) -> None:
    wd_id, _ = _waiting(wx, session_factory, 700)
    wx.fake.advance(CONFIRM_WINDOW + dt.timedelta(minutes=1))
    r = _cancel(wx, wd_id, note=None)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["provider_state"]) == ("failed", "CANCELLED")
    assert r.json()["review_note"].startswith("打款已撤销")
    _returned_once(wx, session_factory, wd_id)


def test_a_bill_never_created_is_failed_by_the_cancel(wx: Wx, session_factory: sessionmaker[Session]) -> None:
    wx.fake.fail_next("POST", BILLS, 500, "SYSTEM_ERROR", times=8)  # every attempt of the send job
    wd = wx.withdraw(1200)
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=2))  # the send's retries ran out
    with session_factory() as s:
        job = s.scalar(select(Job).where(Job.merchant_id == wx.tenant.id,
                                         Job.dedupe_key == f"withdrawal:{wd['id']}:payout"))
        assert job is not None and job.status == JOB_DEAD
    with pytest.raises(KeyError):
        wx.fake.transfer(f"WD{wd['id']}")
    r = _cancel(wx, wd["id"])
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    _returned_once(wx, session_factory, wd["id"])
    (audit,) = _audits(session_factory, wx.tenant, wd["id"], "cancel_requested")
    assert audit.data["answer"] == "NOT_FOUND"


def test_refusals_change_nothing(wx: Wx, session_factory: sessionmaker[Session], client: TestClient) -> None:
    wd = wx.withdraw(500)
    wx.drain(session_factory)  # the bill waits for the payee
    # never approved, unknown, another merchant's, not finance
    r = wx.client.post(f"{h.STORE}/withdrawals", json={"amount": 300},
                       headers={**wx.headers, "Idempotency-Key": uuid.uuid4().hex})
    requested = r.json()["id"]
    before = h.snapshot(session_factory, wx.tenant.id)
    h.refused(_cancel(wx, requested), 409, "withdrawal_not_cancellable", before, h.snapshot(session_factory, wx.tenant.id))
    h.refused(_cancel(wx, 987654321), 404, "not_found", before, h.snapshot(session_factory, wx.tenant.id))
    other = h.other_tenant(session_factory)
    h.refused(_cancel(wx, wd["id"], other.admin_headers), 404, "not_found", before,
              h.snapshot(session_factory, wx.tenant.id))
    for role in ("operator", "staff"):
        headers = staff_headers(session_factory, wx.tenant, role)
        h.refused(_cancel(wx, wd["id"], headers), 403, "forbidden", before, h.snapshot(session_factory, wx.tenant.id))
    finance = staff_headers(session_factory, wx.tenant, "finance")
    r = wx.client.post(CANCEL.format(wd["id"]), json={"note": "x" * 201}, headers=finance)
    assert r.status_code == 422 and h.snapshot(session_factory, wx.tenant.id) == before
    assert _cancel(wx, wd["id"], finance).json()["provider_state"] == "CANCELING"  # finance may


def test_a_manual_payout_is_not_cancellable(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    h.configure(client, tenant)
    h.create_level(client, tenant)
    _, m = h.login(client, tenant)
    dist = h.make_distributor(client, tenant, m)
    with unit_of_work(session_factory) as s:
        from siyu.referral import repository as repo

        repo.move(s, tenant.id, dist, key=f"test:{uuid.uuid4().hex}", entry="settled", amount=900,
                  deltas={"available": 900})
    wd_id = client.post(f"{h.STORE}/withdrawals", json={"amount": 900}, headers={**m, "Idempotency-Key": "k1"}).json()["id"]
    assert client.post(f"{h.ADMIN}/withdrawals/{wd_id}/approve", json={}, headers=tenant.admin_headers).status_code == 200
    before = h.snapshot(session_factory, tenant.id)
    r = client.post(CANCEL.format(wd_id), json={}, headers=tenant.admin_headers)
    h.refused(r, 409, "payout_cancel_unsupported", before, h.snapshot(session_factory, tenant.id))
    assert "fail-payout" in client.post(CANCEL.format(wd_id), json={},
                                        headers={**tenant.admin_headers, "Accept-Language": "en"}).json()["message"]


def test_a_cancel_repeated_after_its_polls_ran_out_polls_again(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wd_id, no = _waiting(wx, session_factory)
    assert _cancel(wx, wd_id).status_code == 200
    _give_up_jobs(session_factory, wx.tenant)  # WeChat stayed CANCELING until every poll was spent
    assert wx.fake.transfer(no)["state"] == "CANCELING"
    r = _cancel(wx, wd_id)
    assert r.status_code == 200 and r.json()["provider_state"] == "CANCELING", r.text
    assert len(_audits(session_factory, wx.tenant, wd_id, "cancel_requested")) == 1
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=2))
    assert wx.withdrawal(wd_id)["status"] == "failed"
    _returned_once(wx, session_factory, wd_id)


def test_an_older_poll_answer_does_not_undo_the_cancellation(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wd_id, _ = _waiting(wx, session_factory)
    assert _cancel(wx, wd_id).status_code == 200
    stale = payout.PayoutResult(status="processing", state="WAIT_USER_CONFIRM", data={"package_info": "old"})
    with unit_of_work(session_factory) as s:  # a poll that asked before the cancel answers now
        service.apply_payout_result(s, wx.tenant.id, wd_id, stale, source="query", poll=0)
    mine = wx.withdrawal(wd_id)
    assert (mine["provider_state"], mine["provider_data"]) == ("CANCELING", None)
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=2))
    _returned_once(wx, session_factory, wd_id)


def _parallel(*calls: Any) -> list[Any]:
    """Run the calls at once, each in its own thread and database connection; their outcomes
    (a ``DomainError`` as its code)."""
    barrier = threading.Barrier(len(calls), timeout=20)
    outcomes: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = calls[i]()
        except DomainError as exc:
            outcomes[i] = exc.code
        except Exception as exc:  # pragma: no cover - reported by the assertion
            outcomes[i] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


@pytest.mark.parametrize("closed_by_wechat", [False, True], ids=["canceling", "cancelled"])
def test_parallel_cancels_return_the_amount_once(
    wx: Wx, session_factory: sessionmaker[Session], closed_by_wechat: bool
) -> None:
    with session_factory() as s:
        if not is_postgres(s):
            pytest.skip("SQLite serialises writers; parallel cancels need PostgreSQL's row locks")
    wd_id, no = _waiting(wx, session_factory)
    if closed_by_wechat:
        wx.fake.advance(CONFIRM_WINDOW + dt.timedelta(minutes=1))
    actor = ("staff", wx.tenant.owner_id)

    def call() -> tuple[str, str | None]:
        with unit_of_work(session_factory) as s:
            w = service.cancel_payout(s, wx.tenant.id, wd_id, "parallel", actor=actor, settings=wx.settings)
            return w.status, w.provider_state

    outcomes = _parallel(call, call, call, call)
    expected = ("failed", "CANCELLED") if closed_by_wechat else ("approved", "CANCELING")
    assert outcomes == [expected] * 4, outcomes
    assert _cancel_calls(wx, no) == 4
    assert len(_audits(session_factory, wx.tenant, wd_id, "cancel_requested")) == 1
    with session_factory() as s:
        polls = list(s.scalars(select(Job.dedupe_key).where(
            Job.merchant_id == wx.tenant.id, Job.dedupe_key.like(f"withdrawal:{wd_id}:query:c%"))))
    assert polls == ([] if closed_by_wechat else [f"withdrawal:{wd_id}:query:c0"])

    def poll() -> str:  # the cancellation's status poll, due now
        wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=2))
        return "polled"

    # retried cancels race the poll that finds it CANCELLED: failed once, whoever wins
    outcomes = _parallel(call, call, poll)
    assert outcomes[2] == "polled" and all(o in (expected, ("failed", "CANCELLED")) for o in outcomes[:2]), outcomes
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=3))  # a poll that lost the race retries
    assert wx.withdrawal(wd_id)["status"] == "failed"
    _returned_once(wx, session_factory, wd_id)
    assert len(_audits(session_factory, wx.tenant, wd_id, "failed")) == 1
    assert len(_audits(session_factory, wx.tenant, wd_id, "cancel_requested")) == 1
