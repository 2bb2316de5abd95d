"""Finance's "fail this payout" (``POST .../withdrawals/{id}/fail-payout``) for a WeChat transfer
whose send kept failing until the worker gave up, or whose polls ran out: the provider is asked
first; the withdrawal becomes failed and its amount returns to ``available`` exactly once;
retries are idempotent; paid, in-flight, unknown and never-approved payouts are refused with
stable codes and change nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.audit import AuditEvent
from siyu.kit.outbox import JOB_DEAD, Job
from siyu.kit.timeutil import utcnow
from siyu.referral.models import CommissionLedger
from tests.conftest import Tenant, staff_headers
from tests.referral import helpers as h
from tests.referral import test_wechat_transfer_payout as wtp
from tests.referral.test_wechat_transfer_payout import BILLS, Wx

fake, wx = wtp.fake, wtp.wx  # the WeChat Pay fake and a distributor paid by WeChat transfer (fixtures)

FAIL = h.ADMIN + "/withdrawals/{}/fail-payout"


def _fail(wx: Wx, wd_id: int, headers: dict[str, str] | None = None, note: str | None = "sent by hand?") -> Any:
    return wx.client.post(FAIL.format(wd_id), json={"note": note}, headers=headers or wx.tenant.admin_headers)


def _give_up_jobs(factory: sessionmaker[Session], tenant: Tenant) -> None:
    """The polls ran out (as after the last ``PAYOUT_POLL_MINUTES``): no job of the payout left."""
    with unit_of_work(factory) as s:
        s.execute(update(Job).where(Job.merchant_id == tenant.id, Job.dedupe_key.like("withdrawal:%"),
                                    Job.status != "done").values(status=JOB_DEAD))


def _ledger(factory: sessionmaker[Session], tenant: Tenant, wd_id: int) -> list[tuple[str, int, int]]:
    with factory() as s:
        rows = s.scalars(select(CommissionLedger).where(CommissionLedger.merchant_id == tenant.id,
                                                        CommissionLedger.withdrawal_id == wd_id)
                         .order_by(CommissionLedger.id))
        return [(r.entry, r.d_available, r.d_withdrawing) for r in rows]


def test_a_send_that_failed_until_the_retries_ran_out_is_failed_once_by_finance(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wx.fake.fail_next("POST", BILLS, 500, "SYSTEM_ERROR", times=50)
    wd = wx.withdraw(1200)
    no = f"WD{wd['id']}"
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=2))
    with session_factory() as s:
        job = s.scalar(select(Job).where(Job.merchant_id == wx.tenant.id, Job.dedupe_key == f"withdrawal:{wd['id']}:payout"))
        assert job is not None and job.status == JOB_DEAD  # the worker gave up
    assert wx.withdrawal(wd["id"])["status"] == "approved"
    assert h.account(session_factory, wx.tenant.id, wx.dist)["withdrawing"] == 1200
    posts = wx.fake.count_requests(BILLS)
    r = _fail(wx, wd["id"])
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["review_note"]) == ("failed", "sent by hand?")
    assert wx.fake.count_requests(BILLS) == posts  # asked (GET .../out-bill-no/WD..), never sent again
    assert wx.fake.count_requests(f"{BILLS}/out-bill-no/{no}") == 1
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (5000, 0, 0)
    assert h.ledger_sums(session_factory, wx.tenant.id, wx.dist) == acct
    # a retried call (double click, timeout) changes nothing: the amount returned exactly once
    before = h.snapshot(session_factory, wx.tenant.id)
    r = _fail(wx, wd["id"])
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    assert h.snapshot(session_factory, wx.tenant.id) == before
    assert _ledger(session_factory, wx.tenant, wd["id"]) == [
        ("withdrawal_requested", -1200, 1200), ("withdrawal_returned", 1200, -1200)]
    with session_factory() as s:
        audits = s.scalars(select(AuditEvent).where(
            AuditEvent.merchant_id == wx.tenant.id, AuditEvent.subject_type == "withdrawal",
            AuditEvent.subject_id == wd["id"], AuditEvent.action == "failed"))
        (audit,) = list(audits)
        assert audit.data["source"] == "admin" and audit.data["provider_answer"] == "NOT_FOUND"
        assert (audit.actor_type, audit.actor_id) == ("staff", wx.tenant.owner_id)
    # a late retry of the dead job finds nothing to send
    wx.drain(session_factory, now=utcnow() + dt.timedelta(days=3))
    assert wx.fake.count_requests(BILLS) == posts and h.snapshot(session_factory, wx.tenant.id) == before


def test_in_flight_paid_and_unanswered_payouts_are_refused(wx: Wx, session_factory: sessionmaker[Session]) -> None:
    wd = wx.withdraw(1000)
    no = f"WD{wd['id']}"
    wx.drain(session_factory)  # the bill waits for the user to confirm; polls are queued
    before = h.snapshot(session_factory, wx.tenant.id)
    h.refused(_fail(wx, wd["id"]), 409, "withdrawal_payout_in_flight", before, h.snapshot(session_factory, wx.tenant.id))
    _give_up_jobs(session_factory, wx.tenant)
    before = h.snapshot(session_factory, wx.tenant.id)
    r = _fail(wx, wd["id"])  # the provider says the user has still to confirm
    h.refused(r, 409, "withdrawal_payout_in_flight", before, h.snapshot(session_factory, wx.tenant.id))
    assert "WAIT_USER_CONFIRM" in r.json()["detail"] or "WAIT_USER_CONFIRM" in r.text
    # the provider cannot be asked: nothing changes
    wx.fake.fail_next("GET", f"{BILLS}/out-bill-no/{no}", 500, "SYSTEM_ERROR")
    h.refused(_fail(wx, wd["id"]), 503, "withdrawal_payout_unknown", before, h.snapshot(session_factory, wx.tenant.id))
    # the user confirmed but the notification was lost: the query finds it paid, which is kept
    wx.fake.finish_transfer(no)
    r = _fail(wx, wd["id"])
    assert (r.status_code, r.json()["code"]) == (409, "withdrawal_already_paid"), r.text
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (4000, 0, 1000)
    assert wx.withdrawal(wd["id"])["status"] == "paid"
    before = h.snapshot(session_factory, wx.tenant.id)
    h.refused(_fail(wx, wd["id"]), 409, "withdrawal_already_paid", before, h.snapshot(session_factory, wx.tenant.id))


def test_a_transfer_cancelled_at_the_provider_is_failed_by_its_answer(
    wx: Wx, session_factory: sessionmaker[Session]
) -> None:
    wd = wx.withdraw(700)
    wx.drain(session_factory)
    _give_up_jobs(session_factory, wx.tenant)
    wx.fake.finish_transfer(f"WD{wd['id']}", state="CANCELLED")  # notification lost
    r = _fail(wx, wd["id"])
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    acct = h.account(session_factory, wx.tenant.id, wx.dist)
    assert (acct["available"], acct["withdrawing"]) == (5000, 0)
    assert [e for e, _, _ in _ledger(session_factory, wx.tenant, wd["id"])] == [
        "withdrawal_requested", "withdrawal_returned"]


def test_bad_inputs_are_refused_and_change_nothing(wx: Wx, session_factory: sessionmaker[Session]) -> None:
    r = wx.client.post(f"{h.STORE}/withdrawals", json={"amount": 300},
                       headers={**wx.headers, "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    requested = r.json()["id"]
    before = h.snapshot(session_factory, wx.tenant.id)
    h.refused(_fail(wx, requested), 409, "withdrawal_not_in_payout", before, h.snapshot(session_factory, wx.tenant.id))
    h.refused(_fail(wx, 987654321), 404, "not_found", before, h.snapshot(session_factory, wx.tenant.id))
    other = h.other_tenant(session_factory)
    h.refused(_fail(wx, requested, other.admin_headers), 404, "not_found", before,
              h.snapshot(session_factory, wx.tenant.id))
    operator = staff_headers(session_factory, wx.tenant, "operator")
    h.refused(_fail(wx, requested, operator), 403, "forbidden", before, h.snapshot(session_factory, wx.tenant.id))
    r = wx.client.post(FAIL.format(requested), json={"note": "x" * 201}, headers=wx.tenant.admin_headers)
    assert r.status_code == 422 and h.snapshot(session_factory, wx.tenant.id) == before
    r = wx.client.post(FAIL.format(requested), json={"note": "a", "amount": 1}, headers=wx.tenant.admin_headers)
    assert r.status_code == 422 and h.snapshot(session_factory, wx.tenant.id) == before


def test_a_manual_payout_approved_but_never_paid_can_be_failed(
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
    r = client.post(f"{h.STORE}/withdrawals", json={"amount": 900}, headers={**m, "Idempotency-Key": "k1"})
    wd_id = r.json()["id"]
    assert client.post(f"{h.ADMIN}/withdrawals/{wd_id}/approve", json={}, headers=tenant.admin_headers).status_code == 200
    for _ in range(2):
        r = client.post(FAIL.format(wd_id), json={}, headers=tenant.admin_headers)
        assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    acct = h.account(session_factory, tenant.id, dist)
    assert (acct["available"], acct["withdrawing"]) == (900, 0)
    assert h.ledger_sums(session_factory, tenant.id, dist) == acct
