"""Cancelling a WeChat transfer payout whose send job is still queued or retrying, and a cancel
whose answer was lost (against the local fake, served over HTTP).

- Never sent (no worker claimed the send job): the withdrawal fails at once, the amount returns
  once, and the job, when it runs, sends nothing.
- Sent without an answer (a timeout: the bill may exist): the bill is looked up by out_bill_no
  first, then cancelled there, or the withdrawal is failed because no bill exists, or recorded
  paid because the payee already took it.
- A send attempt running right now: ``withdrawal_payout_sending``, nothing changed.
- The cancel's own answer lost: the cancellation's status polls start by themselves and settle it
  (CANCELLED: failed, the amount returned once; SUCCESS: paid).
- PostgreSQL, many times over: a worker running the send (or its retry) races finance's cancel;
  never both a bill and the money back, and every cent returns exactly once in the end.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.dialect import is_postgres
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.kit.outbox import JOB_DONE, JOB_RUNNING, Job
from siyu.kit.timeutil import utcnow
from siyu.referral import payout, service
from siyu.referral.models import Withdrawal
from tests.referral import helpers as h
from tests.referral import test_wechat_transfer_payout as wtp
from tests.referral.test_cancel_payout import _audits, _cancel, _cancel_calls, _returned_once
from tests.referral.test_fail_payout import _ledger
from tests.referral.test_wechat_transfer_payout import BILLS, Wx

fake, wx = wtp.fake, wtp.wx  # the WeChat Pay fake and a distributor paid by WeChat transfer (fixtures)


def _bill_requests(wx: Wx, no: str) -> dict[str, int]:
    """Requests the fake got for the bill: creates (POST with its out_bill_no), lookups, cancels."""
    return {
        "create": wtp._posts(wx.fake, no),
        "query": wx.fake.count_requests(f"{BILLS}/out-bill-no/{no}"),
        "cancel": _cancel_calls(wx, no),
    }


def _has_bill(wx: Wx, no: str) -> bool:
    try:
        wx.fake.transfer(no)
    except KeyError:
        return False
    return True


def _send_job(factory: sessionmaker[Session], wx: Wx, wd_id: int) -> tuple[str, int]:
    with factory() as s:
        job = s.scalar(select(Job).where(Job.merchant_id == wx.tenant.id,
                                         Job.dedupe_key == f"withdrawal:{wd_id}:payout"))
        assert job is not None
        return job.status, job.attempts


def _wd(factory: sessionmaker[Session], wx: Wx, wd_id: int) -> Withdrawal:
    with factory() as s:
        w = s.scalar(select(Withdrawal).where(Withdrawal.merchant_id == wx.tenant.id, Withdrawal.id == wd_id))
        assert w is not None
        return w


def _cancel_polls(factory: sessionmaker[Session], wx: Wx, wd_id: int) -> list[str]:
    with factory() as s:
        return list(s.scalars(select(Job.dedupe_key).where(
            Job.merchant_id == wx.tenant.id, Job.dedupe_key.like(f"withdrawal:{wd_id}:query:c%"))))


def test_a_payout_cancelled_before_its_send_ran_fails_at_once_and_is_never_sent(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wd = wx.withdraw(1200)  # approved: the send job is queued, no worker took it yet
    no = f"WD{wd['id']}"
    assert _send_job(session_factory, wx, wd["id"]) == ("pending", 0)
    r = _cancel(wx, wd["id"], note="wrong account")
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["status"], out["provider_state"], out["review_note"]) == ("failed", None, "wrong account")
    _returned_once(wx, session_factory, wd["id"])
    (audit,) = _audits(session_factory, wx.tenant, wd["id"], "cancel_requested")
    assert audit.data["answer"] == "NOT_SENT"
    assert _bill_requests(wx, no) == {"create": 0, "query": 0, "cancel": 0}  # WeChat was not needed
    # the send job runs and sends nothing; repeating the cancel changes nothing
    before = h.snapshot(session_factory, wx.tenant.id)
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=3))
    assert _send_job(session_factory, wx, wd["id"]) == (JOB_DONE, 1)
    r = _cancel(wx, wd["id"])
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    assert h.snapshot(session_factory, wx.tenant.id) == before
    assert _bill_requests(wx, no) == {"create": 0, "query": 0, "cancel": 0} and not _has_bill(wx, no)


def test_a_send_whose_answer_was_lost_is_looked_up_then_cancelled_at_wechat(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wx.fake.lose_transfer_answer_next("POST", BILLS)  # WeChat creates the bill, the answer never arrives
    wd = wx.withdraw(1200)
    no = f"WD{wd['id']}"
    wx.drain(session_factory)
    assert _send_job(session_factory, wx, wd["id"]) == ("pending", 1)  # waits to retry
    assert wx.withdrawal(wd["id"])["provider_state"] is None  # we do not know about the bill
    assert wx.fake.transfer(no)["state"] == "WAIT_USER_CONFIRM"
    r = _cancel(wx, wd["id"], note="payee unreachable")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["provider_state"]) == ("approved", "CANCELING")
    assert _bill_requests(wx, no) == {"create": 1, "query": 1, "cancel": 1}  # looked up, then cancelled
    assert wx.fake.transfer(no)["state"] == "CANCELING"
    # the send's retry sends nothing (finance is cancelling that bill); the poll finds it CANCELLED
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=2))
    assert _send_job(session_factory, wx, wd["id"]) == (JOB_DONE, 2)
    assert _bill_requests(wx, no)["create"] == 1
    mine = wx.withdrawal(wd["id"])
    assert (mine["status"], mine["provider_state"], mine["review_note"]) == ("failed", "CANCELLED", "payee unreachable")
    _returned_once(wx, session_factory, wd["id"])
    (audit,) = _audits(session_factory, wx.tenant, wd["id"], "cancel_requested")
    assert audit.data["answer"] == "CANCELING" and audit.data["provider_state"] is None


def test_a_send_that_never_reached_wechat_is_failed_once_the_lookup_finds_no_bill(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wx.fake.fail_next("POST", BILLS, 500, "SYSTEM_ERROR")  # the first attempt: no bill, outcome unknown to us
    wd = wx.withdraw(800)
    no = f"WD{wd['id']}"
    wx.drain(session_factory)
    assert _send_job(session_factory, wx, wd["id"]) == ("pending", 1)
    r = _cancel(wx, wd["id"])
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    assert _bill_requests(wx, no) == {"create": 1, "query": 1, "cancel": 0}
    (audit,) = _audits(session_factory, wx.tenant, wd["id"], "cancel_requested")
    assert audit.data["answer"] == "NOT_FOUND"
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=1))  # the retry finds it failed
    assert _send_job(session_factory, wx, wd["id"]) == (JOB_DONE, 2)
    assert not _has_bill(wx, no) and _bill_requests(wx, no)["create"] == 1
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (5000, 0, 0)
    assert [e for e, _, _ in _ledger(session_factory, wx.tenant, wd["id"])] == [
        "withdrawal_requested", "withdrawal_returned"]


def test_a_bill_the_payee_took_before_the_lookup_is_recorded_paid(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wx.fake.lose_transfer_answer_next("POST", BILLS)
    wd = wx.withdraw(1000)
    no = f"WD{wd['id']}"
    wx.drain(session_factory)
    wx.fake.finish_transfer(no, state="SUCCESS")  # the payee confirmed; no notification arrived
    r = _cancel(wx, wd["id"])
    assert (r.status_code, r.json()["code"]) == (409, "withdrawal_payout_cancel_too_late"), r.text
    assert _bill_requests(wx, no) == {"create": 1, "query": 1, "cancel": 0}
    assert wx.withdrawal(wd["id"])["status"] == "paid"
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (4000, 0, 1000)
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=1))  # the retry changes nothing
    assert h.account(session_factory, wx.tenant.id, wx.dist) == acct
    assert h.ledger_sums(session_factory, wx.tenant.id, wx.dist) == acct


def test_a_send_retry_that_starts_while_the_lookup_finds_no_bill_stops_the_cancel(
    wx: Wx, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving the race below hits now and then, made certain: WeChat answers the lookup
    NOT_FOUND, and before the cancel locks the withdrawal again the send's retry runs and creates
    the bill. The cancel sees the send job moved and refuses; the money stays withdrawing."""
    wx.fake.fail_next("POST", BILLS, 500, "SYSTEM_ERROR")
    wd = wx.withdraw(800)
    no = f"WD{wd['id']}"
    wx.drain(session_factory)
    provider = payout.get("wechat_transfer")
    assert isinstance(provider, payout.WechatTransferProvider)
    real_query = provider.query

    def query_then_retry_sends(request: payout.PayoutRequest) -> payout.PayoutResult:
        try:
            return real_query(request)
        finally:
            wx.drain(session_factory, now=utcnow() + dt.timedelta(seconds=30))  # the retry, due now

    monkeypatch.setattr(provider, "query", query_then_retry_sends)
    before = h.account(session_factory, wx.tenant.id, wx.dist)
    r = _cancel(wx, wd["id"])
    assert (r.status_code, r.json()["code"]) == (409, "withdrawal_payout_sending"), r.text
    monkeypatch.undo()
    assert wx.fake.transfer(no)["state"] == "WAIT_USER_CONFIRM"  # the retry created it
    assert _send_job(session_factory, wx, wd["id"]) == (JOB_DONE, 2)
    mine = wx.withdrawal(wd["id"])
    assert (mine["status"], mine["provider_state"]) == ("approved", "WAIT_USER_CONFIRM")
    assert h.account(session_factory, wx.tenant.id, wx.dist) == before
    assert _audits(session_factory, wx.tenant, wd["id"], "cancel_requested") == []
    # asked again, the cancel finds the bill and cancels it; the polls return the amount once
    r = _cancel(wx, wd["id"])
    assert r.status_code == 200 and r.json()["provider_state"] == "CANCELING", r.text
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=2))
    _returned_once(wx, session_factory, wd["id"])


def test_a_lookup_without_answer_and_a_send_in_progress_are_refused_and_change_nothing(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wx.fake.lose_transfer_answer_next("POST", BILLS)
    wd = wx.withdraw(600)
    no = f"WD{wd['id']}"
    wx.drain(session_factory)
    wx.fake.fail_next("GET", f"{BILLS}/out-bill-no/{no}", 500, "SYSTEM_ERROR")
    before = h.snapshot(session_factory, wx.tenant.id)
    h.refused(_cancel(wx, wd["id"]), 503, "withdrawal_payout_unknown", before, h.snapshot(session_factory, wx.tenant.id))
    assert _bill_requests(wx, no) == {"create": 1, "query": 1, "cancel": 0}  # nothing was cancelled
    assert _cancel_polls(session_factory, wx, wd["id"]) == []
    # a worker is sending right now (its job claimed): a bill may be being created
    with unit_of_work(session_factory) as s:
        s.execute(update(Job).where(Job.merchant_id == wx.tenant.id, Job.dedupe_key == f"withdrawal:{wd['id']}:payout")
                  .values(status=JOB_RUNNING, attempts=Job.attempts + 1))
    r = _cancel(wx, wd["id"], headers={**wx.tenant.admin_headers, "Accept-Language": "en"})
    h.refused(r, 409, "withdrawal_payout_sending", before, h.snapshot(session_factory, wx.tenant.id))
    assert "right now" in r.json()["message"]
    assert _bill_requests(wx, no) == {"create": 1, "query": 1, "cancel": 0}


def test_a_cancel_whose_answer_was_lost_is_settled_by_the_polls(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wd = wx.withdraw(1200)
    no = f"WD{wd['id']}"
    wx.drain(session_factory)
    wx.fake.lose_transfer_answer_next("POST", f"{BILLS}/out-bill-no/{no}/cancel")  # accepted, answer lost
    r = _cancel(wx, wd["id"], note="payee unreachable")
    assert (r.status_code, r.json()["code"]) == (503, "withdrawal_payout_cancel_unconfirmed"), r.text
    assert "自动查询" in r.json()["message"]
    assert wx.fake.transfer(no)["state"] == "CANCELING"
    mine = wx.withdrawal(wd["id"])
    assert (mine["status"], mine["provider_state"]) == ("approved", "WAIT_USER_CONFIRM")  # not guessed
    assert h.account(session_factory, wx.tenant.id, wx.dist)["withdrawing"] == 1200
    assert _cancel_polls(session_factory, wx, wd["id"]) == [f"withdrawal:{wd['id']}:query:c0"]
    (audit,) = _audits(session_factory, wx.tenant, wd["id"], "cancel_requested")
    assert (audit.data["answer"], audit.data["note"]) == ("NO_ANSWER", "payee unreachable")
    # nobody repeats the cancel: the poll a minute later finds it CANCELLED
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=2))
    mine = wx.withdrawal(wd["id"])
    assert (mine["status"], mine["provider_state"], mine["review_note"]) == ("failed", "CANCELLED", "payee unreachable")
    _returned_once(wx, session_factory, wd["id"])
    before = h.snapshot(session_factory, wx.tenant.id)
    assert _cancel(wx, wd["id"]).json()["status"] == "failed"
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=3))
    assert h.snapshot(session_factory, wx.tenant.id) == before


def test_a_cancel_that_never_arrived_leaves_the_bill_to_the_polls_and_a_repeat(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wd = wx.withdraw(700)
    no = f"WD{wd['id']}"
    wx.drain(session_factory)
    wx.fake.fail_next("POST", f"{BILLS}/out-bill-no/{no}/cancel", 500, "SYSTEM_ERROR")  # not carried out
    r = _cancel(wx, wd["id"])
    assert (r.status_code, r.json()["code"]) == (503, "withdrawal_payout_cancel_unconfirmed"), r.text
    assert wx.fake.transfer(no)["state"] == "WAIT_USER_CONFIRM"
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=2))  # the poll sees the bill still waiting
    mine = wx.withdrawal(wd["id"])
    assert (mine["status"], mine["provider_state"]) == ("approved", "WAIT_USER_CONFIRM")
    assert mine["provider_data"]["package_info"]
    r = _cancel(wx, wd["id"])  # finance repeats it
    assert r.status_code == 200 and r.json()["provider_state"] == "CANCELING", r.text
    wx.drain(session_factory, now=utcnow() + dt.timedelta(hours=1))
    assert wx.withdrawal(wd["id"])["status"] == "failed"
    _returned_once(wx, session_factory, wd["id"])
    assert [a.data["answer"] for a in _audits(session_factory, wx.tenant, wd["id"], "cancel_requested")] == [
        "NO_ANSWER", "CANCELING"]


def test_a_cancel_that_never_arrived_while_the_payee_confirmed_ends_paid(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wd = wx.withdraw(900)
    no = f"WD{wd['id']}"
    wx.drain(session_factory)
    wx.fake.fail_next("POST", f"{BILLS}/out-bill-no/{no}/cancel", 504, "SYSTEM_ERROR")
    assert _cancel(wx, wd["id"]).json()["code"] == "withdrawal_payout_cancel_unconfirmed"
    wx.fake.finish_transfer(no, state="SUCCESS")  # the payee took it; the notification is lost
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=2))
    assert wx.withdrawal(wd["id"])["status"] == "paid"
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (4100, 0, 900)
    assert h.ledger_sums(session_factory, wx.tenant.id, wx.dist) == acct


# -- PostgreSQL: the send job and finance's cancel at the same moment, many times ---------------------

ROUNDS = 25


def _race(
    wx: Wx, factory: sessionmaker[Session], wd_id: int, worker_now: dt.datetime, jitter: float
) -> tuple[Any, Any]:
    """A worker runs the withdrawal's due jobs while finance cancels it, released together (each
    up to ``jitter`` seconds late, so both orders happen). The cancel's outcome: the
    withdrawal's (status, provider_state), or the refusal's code."""
    barrier = threading.Barrier(2, timeout=30)
    outcome: list[Any] = [None, None]
    worker_delay, cancel_delay = random.uniform(0, jitter), random.uniform(0, jitter)

    def worker() -> None:
        barrier.wait()
        time.sleep(worker_delay)
        try:
            wx.drain(factory, now=worker_now)
            outcome[0] = "drained"
        except Exception as exc:  # surfaced by the assertion
            outcome[0] = f"{type(exc).__name__}: {exc}"

    def cancel() -> None:
        barrier.wait()
        time.sleep(cancel_delay)
        try:
            with unit_of_work(factory) as s:
                w = service.cancel_payout(s, wx.tenant.id, wd_id, "race", actor=("staff", wx.tenant.owner_id),
                                          settings=wx.settings)
                outcome[1] = (w.status, w.provider_state)
        except DomainError as exc:
            outcome[1] = exc.code
        except Exception as exc:  # surfaced by the assertion
            outcome[1] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=worker), threading.Thread(target=cancel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcome[0], outcome[1]


def _settle_everything(wx: Wx, factory: sessionmaker[Session], ids: list[int]) -> None:
    """Cancel what is still waiting for the payee, let every poll run: each withdrawal ends failed."""
    for wd_id in ids:
        w = _wd(factory, wx, wd_id)
        if w.status == "approved" and w.provider_state != "CANCELING":
            r = _cancel(wx, wd_id)
            assert r.status_code == 200, r.text
    wx.drain(factory, now=utcnow() + dt.timedelta(days=3))


def _assert_each_returned_once_and_no_bill_left(wx: Wx, factory: sessionmaker[Session], ids: list[int]) -> None:
    for wd_id in ids:
        w = _wd(factory, wx, wd_id)
        assert w.status == "failed", (wd_id, w.status, w.provider_state)
        assert [e for e, _, _ in _ledger(factory, wx.tenant, wd_id)] == ["withdrawal_requested", "withdrawal_returned"]
        if _has_bill(wx, f"WD{wd_id}"):
            assert wx.fake.transfer(f"WD{wd_id}")["state"] == "CANCELLED", wd_id
    acct = h.account(factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (5000, 0, 0)
    assert h.ledger_sums(factory, wx.tenant.id, wx.dist) == acct


def _check_round(wx: Wx, factory: sessionmaker[Session], wd_id: int, outcome: Any) -> str:
    """The invariant right after a race: never both a live bill and the money back."""
    no = f"WD{wd_id}"
    w = _wd(factory, wx, wd_id)
    acct = h.account(factory, wx.tenant.id, wx.dist)
    if w.status == "failed":  # the cancel won: the money is back and no bill can be paid
        assert not _has_bill(wx, no) or wx.fake.transfer(no)["state"] == "CANCELLED", (outcome, wx.fake.transfer(no))
        assert acct["withdrawing"] == 0, (outcome, acct)
        return "cancelled before the send"
    assert w.status == "approved", (outcome, w.status)
    assert _has_bill(wx, no), outcome  # the send won: its bill exists and the money is still withdrawing
    assert wx.fake.transfer(no)["state"] in ("WAIT_USER_CONFIRM", "CANCELING"), outcome
    assert acct["withdrawing"] == w.amount, (outcome, acct)
    assert outcome in ("withdrawal_payout_sending", ("approved", "CANCELING")), outcome
    return "sent, then " + ("refused" if outcome == "withdrawal_payout_sending" else "cancelling at WeChat")


def _pg_only(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        if not is_postgres(s):
            pytest.skip("SQLite serialises writers; the race between the send and the cancel needs PostgreSQL")


def test_the_send_job_racing_the_cancel_never_both_sends_and_returns_the_money(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    _pg_only(session_factory)
    seen: Counter[str] = Counter()
    ids: list[int] = []
    for _ in range(ROUNDS):
        wd_id = int(wx.withdraw(100)["id"])  # approved: its send job is due now
        ids.append(wd_id)
        drained, outcome = _race(wx, session_factory, wd_id, utcnow(), 0.03)
        assert drained == "drained", drained
        seen[_check_round(wx, session_factory, wd_id, outcome)] += 1
        _settle_everything(wx, session_factory, [wd_id])  # one withdrawal in flight at a time: 100 of 5000
    print(f"\n{ROUNDS} races of the send with the cancel: {dict(seen)}")
    _assert_each_returned_once_and_no_bill_left(wx, session_factory, ids)
    creates = sum(_bill_requests(wx, f"WD{i}")["create"] for i in ids)
    assert creates == sum(1 for i in ids if _has_bill(wx, f"WD{i}"))  # one create per bill, none for the rest


def test_a_send_retry_racing_a_cancel_that_found_no_bill_never_both_sends_and_returns_the_money(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    _pg_only(session_factory)
    seen: Counter[str] = Counter()
    ids: list[int] = []
    for _ in range(ROUNDS):
        wx.fake.fail_next("POST", BILLS, 500, "SYSTEM_ERROR")  # the first attempt creates nothing
        wd_id = int(wx.withdraw(100)["id"])
        ids.append(wd_id)
        wx.drain(session_factory)
        assert _send_job(session_factory, wx, wd_id) == ("pending", 1)
        # the retry is due on the worker's clock: it races the cancel's lookup (NOT_FOUND so far)
        drained, outcome = _race(wx, session_factory, wd_id, utcnow() + dt.timedelta(seconds=30), 0.1)
        assert drained == "drained", drained
        seen[_check_round(wx, session_factory, wd_id, outcome)] += 1
        _settle_everything(wx, session_factory, [wd_id])
    print(f"\n{ROUNDS} races of the send's retry with the cancel: {dict(seen)}")
    _assert_each_returned_once_and_no_bill_left(wx, session_factory, ids)
