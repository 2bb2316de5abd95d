"""A send that outlived its job lease and reached WeChat after finance's cancel (or fail-payout)
found no bill and returned the amount (against the local fake, served over HTTP).

The race is made certain: the send job's worker "freezes" inside ``provider.send`` (after it read
the withdrawal and committed, before its HTTP call). Meanwhile its lease runs out, another worker
takes the job over and its attempt creates nothing (a 500), finance cancels: the lookup by
``out_bill_no`` finds no bill, the withdrawal fails and the amount returns. Then the frozen send
reaches WeChat and creates a bill the payee could confirm.

- The send's fence: its answer, recorded under the row lock, finds the withdrawal failed and the
  bill is cancelled at once; the follow-up check sees it ``CANCELLED``.
- The late checks queued with the failure (after the lease + the send's HTTP time + a margin)
  find a bill whose send never got its answer processed and cancel it.
- A bill the payee confirmed anyway is recorded paid after failure: withdrawn, the returned
  amount taken back from ``available`` and, when it is gone, a debt recovered from the next
  money the distributor gets back. No fen lost, no balance below zero, every step audited once.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.kit.outbox import JOB_DEAD, JOB_DONE, JOB_PENDING, Job
from siyu.kit.timeutil import utcnow
from siyu.referral import payout, service
from siyu.worker.runner import Worker
from tests.referral import helpers as h
from tests.referral import test_wechat_transfer_payout as wtp
from tests.referral.test_cancel_before_send import (
    _assert_each_returned_once_and_no_bill_left,
    _bill_requests,
    _pg_only,
    _send_job,
    _settle_everything,
    _wd,
)
from tests.referral.test_cancel_payout import _audits, _cancel, _returned_once
from tests.referral.test_fail_payout import _fail, _ledger
from tests.referral.test_wechat_transfer_payout import BILLS, Wx

fake, wx = wtp.fake, wtp.wx  # the WeChat Pay fake and a distributor paid by WeChat transfer (fixtures)

FIRST_CHECK = 60 + 25 + 60  # the worker's lease + the send's longest HTTP call + the margin, seconds


def _late_jobs(factory: sessionmaker[Session], wx: Wx, wd_id: int) -> dict[str, tuple[str, dt.datetime]]:
    """The withdrawal's late checks by series and step (``n0``, ``f1``...): (status, run_at)."""
    prefix = f"withdrawal:{wd_id}:late:"
    with factory() as s:
        rows = s.execute(select(Job.dedupe_key, Job.status, Job.run_at).where(
            Job.merchant_id == wx.tenant.id, Job.dedupe_key.like(prefix + "%")))
        return {str(k).removeprefix(prefix): (st, at) for k, st, at in rows}


def _actions(factory: sessionmaker[Session], wx: Wx, wd_id: int, *names: str) -> dict[str, list[dict[str, Any]]]:
    return {n: [a.data for a in _audits(factory, wx.tenant, wd_id, n)] for n in names}


def _freeze_send(
    monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], None], *, then: Callable[[], None] | None = None
) -> None:
    """The next send stalls before its HTTP call: ``meanwhile`` runs, then the real send goes
    out (later sends are normal again); ``then`` runs after it (e.g. the worker dies)."""
    provider = payout.get("wechat_transfer")
    assert isinstance(provider, payout.WechatTransferProvider)
    real_send = provider.send

    def frozen(request: payout.PayoutRequest) -> payout.PayoutResult:
        monkeypatch.setattr(provider, "send", real_send)
        meanwhile()
        result = real_send(request)
        if then is not None:
            then()
        return result

    monkeypatch.setattr(provider, "send", frozen)


def _lease_taken_over_without_bill(wx: Wx, factory: sessionmaker[Session], wd_id: int) -> None:
    """The frozen worker's lease runs out; another worker takes the job over and its attempt
    creates nothing (WeChat answers 500): the job waits to retry, no bill exists."""
    wx.fake.fail_next("POST", BILLS, 500, "SYSTEM_ERROR")
    later = utcnow() + dt.timedelta(seconds=wx.settings.worker_lease_seconds + 1)
    assert Worker(factory, wx.settings, merchant_id=wx.tenant.id, worker_id="worker-b").run_once(now=later) == 1
    assert _send_job(factory, wx, wd_id) == (JOB_PENDING, 2)
    assert wx.withdrawal(wd_id)["status"] == "approved"


def _cancelled_meanwhile(wx: Wx, factory: sessionmaker[Session], wd_id: int) -> dt.datetime:
    _lease_taken_over_without_bill(wx, factory, wd_id)
    at = utcnow()
    r = _cancel(wx, wd_id, note="wrong account")
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    _returned_once(wx, factory, wd_id)
    return at


def test_a_frozen_send_that_lands_after_the_cancel_is_cancelled_at_once(
    wx: Wx, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    wd_id = int(wx.withdraw(1200)["id"])
    no = f"WD{wd_id}"
    seen: dict[str, Any] = {}

    def meanwhile() -> None:
        seen["cancelled_at"] = _cancelled_meanwhile(wx, session_factory, wd_id)
        seen["late"] = _late_jobs(session_factory, wx, wd_id)

    _freeze_send(monkeypatch, meanwhile)
    wx.drain(session_factory)  # the frozen send goes out last
    # the cancel found no bill after a send attempt: a late check, after lease + HTTP + margin
    ((status, run_at),) = seen["late"].values()
    assert list(seen["late"]) == ["n0"] and status == JOB_PENDING
    assert dt.timedelta(seconds=FIRST_CHECK - 1) <= run_at - seen["cancelled_at"] <= dt.timedelta(seconds=FIRST_CHECK + 5)
    # the send's answer met the failed withdrawal: the bill was cancelled at once
    assert wx.fake.transfer(no)["state"] == "CANCELING"
    assert _bill_requests(wx, no) == {"create": 2, "query": 1, "cancel": 1}
    mine = wx.withdrawal(wd_id)
    assert (mine["status"], mine["provider_state"], mine["review_note"]) == ("failed", None, "wrong account")
    _returned_once(wx, session_factory, wd_id)
    acts = _actions(session_factory, wx, wd_id, "cancel_requested", "late_bill_cancel", "late_bill_closed")
    assert [a["answer"] for a in acts["cancel_requested"]] == ["NOT_FOUND"]
    (cancel,) = acts["late_bill_cancel"]
    assert (cancel["bill_state"], cancel["answer"], cancel["source"]) == ("WAIT_USER_CONFIRM", "CANCELING", "send")
    assert cancel["reference"] == wx.fake.transfer(no)["transfer_bill_no"]
    assert acts["late_bill_closed"] == []
    assert {k: st for k, (st, _) in _late_jobs(session_factory, wx, wd_id).items()} == {
        "n0": JOB_PENDING, "f0": JOB_PENDING}
    assert _send_job(session_factory, wx, wd_id)[0] == JOB_DONE
    # the follow-up a minute later sees it CANCELLED; the late check finds it final: the end
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=3))
    assert wx.fake.transfer(no)["state"] == "CANCELLED"
    (closed,) = _actions(session_factory, wx, wd_id, "late_bill_closed")["late_bill_closed"]
    assert closed["state"] == "CANCELLED"
    assert {k: st for k, (st, _) in _late_jobs(session_factory, wx, wd_id).items()} == {"n0": JOB_DONE, "f0": JOB_DONE}
    before = h.snapshot(session_factory, wx.tenant.id)
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=3))
    assert h.snapshot(session_factory, wx.tenant.id) == before
    assert _bill_requests(wx, no) == {"create": 2, "query": 3, "cancel": 1}
    _returned_once(wx, session_factory, wd_id)


def test_a_frozen_send_after_fail_payout_whose_bill_the_payee_confirms_is_paid_once_and_taken_back(
    wx: Wx, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    wd_id = int(wx.withdraw(1200)["id"])
    no = f"WD{wd_id}"

    def meanwhile() -> None:  # the other workers' attempts ran out, finance closes the payout
        with unit_of_work(session_factory) as s:
            s.execute(update(Job).where(Job.merchant_id == wx.tenant.id,
                                        Job.dedupe_key == f"withdrawal:{wd_id}:payout")
                      .values(status=JOB_DEAD, attempts=8, locked_by=None, locked_until=None))
        r = _fail(wx, wd_id)
        assert r.status_code == 200 and r.json()["status"] == "failed", r.text
        assert list(_late_jobs(session_factory, wx, wd_id)) == ["n0"]
        # the send's fence will ask WeChat to cancel: that request never arrives
        wx.fake.fail_next("POST", f"{BILLS}/out-bill-no/{no}/cancel", 500, "SYSTEM_ERROR")

    _freeze_send(monkeypatch, meanwhile)
    wx.drain(session_factory)
    assert wx.fake.transfer(no)["state"] == "WAIT_USER_CONFIRM"
    (cancel,) = _actions(session_factory, wx, wd_id, "late_bill_cancel")["late_bill_cancel"]
    assert (cancel["answer"], cancel["source"]) == ("SYSTEM_ERROR", "send")
    _returned_once(wx, session_factory, wd_id)
    # the payee confirms before anything else happens; WeChat notifies
    headers, body = wx.fake.finish_transfer(no, state="SUCCESS")
    assert wx.notify(headers, body).status_code == 204
    mine = wx.withdrawal(wd_id)
    assert (mine["status"], mine["provider_state"]) == ("paid", "SUCCESS")
    assert mine["failed_at"] is not None and mine["paid_at"] is not None
    assert mine["provider_reference"] == wx.fake.transfer(no)["transfer_bill_no"]
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"], acct["debt"]) == (3800, 0, 1200, 0)
    assert h.ledger_sums(session_factory, wx.tenant.id, wx.dist) == acct
    assert _ledger(session_factory, wx.tenant, wd_id) == [
        ("withdrawal_requested", -1200, 1200), ("withdrawal_returned", 1200, -1200),
        ("withdrawal_paid_late", -1200, 0)]
    (paid,) = _actions(session_factory, wx, wd_id, "paid_after_failure")["paid_after_failure"]
    assert (paid["source"], paid["amount"], paid["from_available"], paid["debt"]) == ("notification", 1200, 1200, 0)
    # the notification again, the follow-up check, the late checks: nothing more
    before = h.snapshot(session_factory, wx.tenant.id)
    assert wx.notify(headers, body).status_code == 204
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=3))
    assert h.snapshot(session_factory, wx.tenant.id) == before
    assert _bill_requests(wx, no)["cancel"] == 1


def _worker_dies() -> None:
    raise RuntimeError("the worker died after its request reached WeChat")


def test_a_send_whose_worker_died_after_the_cancel_is_found_and_cancelled_by_the_late_check(
    wx: Wx, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    wd_id = int(wx.withdraw(900)["id"])
    no = f"WD{wd_id}"
    _freeze_send(monkeypatch, lambda: _cancelled_meanwhile(wx, session_factory, wd_id), then=_worker_dies)
    wx.drain(session_factory)
    assert wx.fake.transfer(no)["state"] == "WAIT_USER_CONFIRM"  # nobody processed the send's answer
    assert list(_late_jobs(session_factory, wx, wd_id)) == ["n0"]
    assert _actions(session_factory, wx, wd_id, "late_bill_cancel")["late_bill_cancel"] == []
    # before the first check is due, nothing happens (the send job's retry sends nothing)
    wx.drain(session_factory, now=utcnow() + dt.timedelta(seconds=FIRST_CHECK - 30))
    assert wx.fake.transfer(no)["state"] == "WAIT_USER_CONFIRM"
    assert _bill_requests(wx, no) == {"create": 2, "query": 1, "cancel": 0}
    # the late check finds the bill and cancels it; its follow-up sees it CANCELLED
    wx.drain(session_factory, now=utcnow() + dt.timedelta(seconds=FIRST_CHECK + 5))
    assert wx.fake.transfer(no)["state"] == "CANCELING"
    (cancel,) = _actions(session_factory, wx, wd_id, "late_bill_cancel")["late_bill_cancel"]
    assert (cancel["bill_state"], cancel["answer"], cancel["source"]) == ("WAIT_USER_CONFIRM", "CANCELING", "late_check")
    wx.drain(session_factory, now=utcnow() + dt.timedelta(minutes=10))
    assert wx.fake.transfer(no)["state"] == "CANCELLED"
    assert len(_actions(session_factory, wx, wd_id, "late_bill_closed")["late_bill_closed"]) == 1
    assert {k: st for k, (st, _) in _late_jobs(session_factory, wx, wd_id).items()} == {"n0": JOB_DONE, "f0": JOB_DONE}
    mine = wx.withdrawal(wd_id)
    assert (mine["status"], mine["review_note"]) == ("failed", "wrong account")
    _returned_once(wx, session_factory, wd_id)
    before = h.snapshot(session_factory, wx.tenant.id)
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=3))
    assert h.snapshot(session_factory, wx.tenant.id) == before


def test_a_late_bill_paid_after_the_amount_was_withdrawn_again_becomes_a_debt_recovered_first(
    wx: Wx, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    wd_id = int(wx.withdraw(1200)["id"])
    no = f"WD{wd_id}"
    second: dict[str, int] = {}

    def meanwhile() -> None:
        _cancelled_meanwhile(wx, session_factory, wd_id)
        # the distributor asks for everything, the returned 1,200 included
        r = wx.client.post(f"{h.STORE}/withdrawals", json={"amount": 5000},
                           headers={**wx.headers, "Idempotency-Key": uuid.uuid4().hex})
        assert r.status_code == 201, r.text
        second["id"] = int(r.json()["id"])

    _freeze_send(monkeypatch, meanwhile, then=_worker_dies)
    wx.drain(session_factory)
    headers, body = wx.fake.finish_transfer(no, state="SUCCESS")  # the payee confirmed; the notification is lost
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"], acct["debt"]) == (0, 5000, 0, 0)
    # the late check finds the bill paid: withdrawn, and nothing available to take back: a debt
    wx.drain(session_factory, now=utcnow() + dt.timedelta(seconds=FIRST_CHECK + 5))
    mine = wx.withdrawal(wd_id)
    assert (mine["status"], mine["provider_state"]) == ("paid", "SUCCESS")
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"], acct["debt"]) == (0, 5000, 1200, 1200)
    assert h.ledger_sums(session_factory, wx.tenant.id, wx.dist) == acct
    assert _ledger(session_factory, wx.tenant, wd_id) == [
        ("withdrawal_requested", -1200, 1200), ("withdrawal_returned", 1200, -1200),
        ("withdrawal_paid_late", 0, 0)]
    (paid,) = _actions(session_factory, wx, wd_id, "paid_after_failure")["paid_after_failure"]
    assert (paid["source"], paid["from_available"], paid["debt"]) == ("late_check", 0, 1200)
    assert _bill_requests(wx, no)["cancel"] == 0  # a paid bill is not cancelled
    # the check again, the lost notification arriving late: recorded once
    with unit_of_work(session_factory) as s:
        service.check_late_bill(s, wx.tenant.id, wd_id, "n", 0, wx.settings)
        w = service.apply_payout_result(s, wx.tenant.id, wd_id, payout.PayoutResult(
            status="paid", reference="x", state="SUCCESS"), source="notification")
        assert w is not None and w.status == "paid"
    assert wx.notify(headers, body).status_code == 204
    assert h.account(session_factory, wx.tenant.id, wx.dist) == acct
    assert len(_actions(session_factory, wx, wd_id, "paid_after_failure")["paid_after_failure"]) == 1
    # finance rejects the second withdrawal: its 5,000 come back, the debt is paid from them first
    r = wx.client.post(f"{h.ADMIN}/withdrawals/{second['id']}/reject", json={"note": "debt"},
                       headers=wx.tenant.admin_headers)
    assert r.status_code == 200, r.text
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"], acct["debt"]) == (3800, 0, 1200, 0)
    assert h.ledger_sums(session_factory, wx.tenant.id, wx.dist) == acct
    assert acct["available"] + acct["withdrawn"] == 5000  # every fen accounted for
    assert _wd(session_factory, wx, wd_id).status == "paid"


def test_a_frozen_send_whose_answer_is_lost_after_the_cancel_is_followed_up(
    wx: Wx, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    wd_id = int(wx.withdraw(700)["id"])
    no = f"WD{wd_id}"

    def meanwhile() -> None:
        _cancelled_meanwhile(wx, session_factory, wd_id)
        wx.fake.lose_transfer_answer_next("POST", BILLS)  # WeChat creates the bill; the answer is lost

    _freeze_send(monkeypatch, meanwhile)
    wx.drain(session_factory)
    assert wx.fake.transfer(no)["state"] == "WAIT_USER_CONFIRM"
    # the send ends (no retry would send again) and leaves a follow-up check a minute later
    assert _send_job(session_factory, wx, wd_id)[0] == JOB_DONE
    (unanswered,) = _actions(session_factory, wx, wd_id, "late_send_unanswered")["late_send_unanswered"]
    assert unanswered["error"] == "NETWORK"
    assert set(_late_jobs(session_factory, wx, wd_id)) == {"n0", "f0"}
    wx.drain(session_factory, now=utcnow() + dt.timedelta(seconds=90))  # f0 only: n0 is not due yet
    assert wx.fake.transfer(no)["state"] == "CANCELING"
    (cancel,) = _actions(session_factory, wx, wd_id, "late_bill_cancel")["late_bill_cancel"]
    assert (cancel["answer"], cancel["source"]) == ("CANCELING", "late_check")
    assert _late_jobs(session_factory, wx, wd_id)["f1"][0] == JOB_PENDING
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=3))
    assert wx.fake.transfer(no)["state"] == "CANCELLED"
    assert _bill_requests(wx, no)["cancel"] == 1
    assert len(_actions(session_factory, wx, wd_id, "late_bill_closed")["late_bill_closed"]) == 1
    _returned_once(wx, session_factory, wd_id)


def test_a_cancel_that_found_no_bill_checks_three_times_and_then_stops(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    """No frozen send: the late checks find nothing, change nothing, and end after the third."""
    wx.fake.fail_next("POST", BILLS, 500, "SYSTEM_ERROR")
    wd_id = int(wx.withdraw(800)["id"])
    no = f"WD{wd_id}"
    wx.drain(session_factory)
    assert _cancel(wx, wd_id).json()["status"] == "failed"
    assert _cancel(wx, wd_id).json()["status"] == "failed"  # a retried click: the same one check
    assert list(_late_jobs(session_factory, wx, wd_id)) == ["n0"]
    before = h.snapshot(session_factory, wx.tenant.id)
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=3))
    jobs = _late_jobs(session_factory, wx, wd_id)
    assert {k: st for k, (st, _) in jobs.items()} == {"n0": JOB_DONE, "n1": JOB_DONE, "n2": JOB_DONE}
    assert jobs["n1"][1] - jobs["n0"][1] == dt.timedelta(minutes=15)
    assert jobs["n2"][1] - jobs["n1"][1] == dt.timedelta(hours=25)  # past WeChat's 24-hour window
    assert _bill_requests(wx, no) == {"create": 1, "query": 4, "cancel": 0}
    assert h.snapshot(session_factory, wx.tenant.id) == before
    _returned_once(wx, session_factory, wd_id)


def test_a_cancel_before_any_send_needs_no_late_check(wx: Wx, session_factory: sessionmaker[Session]) -> None:
    wd_id = int(wx.withdraw(500)["id"])
    assert _cancel(wx, wd_id).json()["status"] == "failed"  # NOT_SENT: no worker ever claimed the send
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=3))
    assert _late_jobs(session_factory, wx, wd_id) == {}
    assert _bill_requests(wx, f"WD{wd_id}") == {"create": 0, "query": 0, "cancel": 0}


# -- PostgreSQL: the frozen send's answer and finance's cancel at the same moment, many times ----

ROUNDS = 15


def _frozen_race(wx: Wx, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch, wd_id: int) -> tuple[Any, Any]:
    """After the takeover's attempt failed, the frozen send (create + recording its answer under
    the row lock) and finance's cancel (lookup + failing under the row lock) are released
    together, each up to 50 ms late. (the worker's drain, the cancel's outcome or refusal code)"""
    barrier = threading.Barrier(2, timeout=30)
    outcome: list[Any] = [None, None]

    def meanwhile() -> None:
        _lease_taken_over_without_bill(wx, factory, wd_id)
        barrier.wait()
        time.sleep(random.uniform(0, 0.05))

    def frozen_worker() -> None:
        try:
            wx.drain(factory)
            outcome[0] = "drained"
        except Exception as exc:  # surfaced by the assertion
            outcome[0] = f"{type(exc).__name__}: {exc}"

    def cancel() -> None:
        barrier.wait()
        time.sleep(random.uniform(0, 0.05))
        try:
            with unit_of_work(factory) as s:
                w = service.cancel_payout(s, wx.tenant.id, wd_id, "race", actor=("staff", wx.tenant.owner_id),
                                          settings=wx.settings)
                outcome[1] = (w.status, w.provider_state)
        except DomainError as exc:
            outcome[1] = exc.code
        except Exception as exc:  # surfaced by the assertion
            outcome[1] = f"{type(exc).__name__}: {exc}"

    _freeze_send(monkeypatch, meanwhile)
    threads = [threading.Thread(target=frozen_worker), threading.Thread(target=cancel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcome[0], outcome[1]


def test_a_frozen_send_racing_the_cancel_never_leaves_a_live_bill_with_the_money_back(
    wx: Wx, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the order: right after the race, a failed withdrawal has no bill that could still
    be paid, an approved one still holds its amount; in the end every fen returns once."""
    _pg_only(session_factory)
    seen: Counter[str] = Counter()
    ids: list[int] = []
    for _ in range(ROUNDS):
        wd_id = int(wx.withdraw(100)["id"])
        ids.append(wd_id)
        drained, outcome = _frozen_race(wx, session_factory, monkeypatch, wd_id)
        assert drained == "drained", drained
        w = _wd(session_factory, wx, wd_id)
        acct = h.account(session_factory, wx.tenant.id, wx.dist)
        state = wx.fake.transfer(f"WD{wd_id}")["state"]  # the frozen send always creates the bill
        if w.status == "failed":  # the cancel found no bill: the fence cancelled it at once
            assert outcome == ("failed", None), outcome
            assert state in ("CANCELING", "CANCELLED"), (outcome, state)
            assert acct["withdrawing"] == 0, acct
            seen["failed, late bill cancelled by the send"] += 1
        else:  # the cancel saw the bill (cancelling it at WeChat) or the send's answer (refused)
            assert w.status == "approved", (outcome, w.status)
            assert acct["withdrawing"] == 100, (outcome, acct)
            assert outcome in (("approved", "CANCELING"), "withdrawal_payout_sending"), outcome
            seen[f"approved, {outcome}"] += 1
        _settle_everything(wx, session_factory, [wd_id])
    print(f"\n{ROUNDS} races of a frozen send with the cancel: {dict(seen)}")
    _assert_each_returned_once_and_no_bill_left(wx, session_factory, ids)
    for wd_id in ids:
        assert wx.fake.transfer(f"WD{wd_id}")["state"] == "CANCELLED"
        assert _actions(session_factory, wx, wd_id, "paid_after_failure")["paid_after_failure"] == []
