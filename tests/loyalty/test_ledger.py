"""Points ledger: idempotent award/spend/reverse, lots consumed soonest-expiry first, expiry,
reversal shortfall, and the invariant balance == sum(entries) == sum(open lots)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.kit.events import subscribe
from siyu.kit.outbox import Job
from siyu.loyalty import points, service
from siyu.loyalty.models import PointsEntry, PointsLotUse
from siyu.worker.registry import JobContext
from tests.conftest import Tenant
from tests.factories.orders import make_member
from tests.loyalty import helpers as h


@subscribe("points.expiring", "test.loyalty.points_expiring")
def _on_expiring(ctx: JobContext) -> None:
    pass


def test_the_ledger_lives_in_points_and_service_re_exports_it() -> None:
    # callers outside loyalty (orders, referral, reviews) keep calling ``loyalty.service.award`` etc.
    for name in ("award", "spend", "reverse", "adjust", "check_member", "expire_due", "notify_expiring", "statement",
                 "points_summary"):
        assert getattr(service, name) is getattr(points, name)


def _invariant(factory: sessionmaker[Session], tenant: Tenant, member: int) -> int:
    bal = h.balance(factory, tenant.id, member)
    assert bal == h.entries_sum(factory, tenant.id, member) == h.open_lots_sum(factory, tenant.id, member)
    return bal


def test_award_twice_with_one_key_makes_one_entry(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = make_member(session_factory, tenant.id)
    first = h.award(session_factory, tenant.id, member, 100, "k1")
    again = h.award(session_factory, tenant.id, member, 100, "k1")
    assert first == again
    assert len(h.entries(session_factory, tenant.id, member)) == 1
    assert _invariant(session_factory, tenant, member) == 100


def test_spend_more_than_balance_is_refused_and_changes_nothing(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 100, "a")
    with pytest.raises(DomainError) as exc:
        h.spend(session_factory, tenant.id, member, 101, "s")
    assert exc.value.code == "points_insufficient"
    assert len(h.entries(session_factory, tenant.id, member)) == 1
    assert _invariant(session_factory, tenant, member) == 100


def test_zero_or_negative_points_are_refused(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = make_member(session_factory, tenant.id)
    for bad in (0, -5):
        with pytest.raises(DomainError) as exc:
            h.award(session_factory, tenant.id, member, bad, f"bad{bad}")
        assert exc.value.code == "points_invalid"
    assert h.entries(session_factory, tenant.id, member) == []


def test_key_of_another_member_is_refused(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    a, b = make_member(session_factory, tenant.id), make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, a, 10, "shared")
    with pytest.raises(DomainError) as exc:
        h.award(session_factory, tenant.id, b, 10, "shared")
    assert exc.value.code == "points_key_reused"
    assert h.balance(session_factory, tenant.id, b) == 0


def test_spend_takes_soonest_expiring_lots_first_and_reversal_returns_to_them(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = make_member(session_factory, tenant.id)
    now = dt.datetime.now(dt.UTC)
    late = h.award(session_factory, tenant.id, member, 100, "late", expires_at=now + dt.timedelta(days=300))
    never = h.award(session_factory, tenant.id, member, 100, "never", expires_at=False)
    soon = h.award(session_factory, tenant.id, member, 100, "soon", expires_at=now + dt.timedelta(days=10))
    spend_id = h.spend(session_factory, tenant.id, member, 150, "s")
    by_entry = {lt.entry_id: lt for lt in h.lots(session_factory, tenant.id, member)}
    assert (by_entry[soon].remaining, by_entry[late].remaining, by_entry[never].remaining) == (0, 50, 100)
    with session_factory() as s:
        uses = s.scalars(select(PointsLotUse).where(PointsLotUse.merchant_id == tenant.id,
                                                    PointsLotUse.entry_id == spend_id)).all()
        assert sorted((u.lot_id, u.points) for u in uses) == sorted(
            [(by_entry[soon].id, 100), (by_entry[late].id, 50)]
        )
    with unit_of_work(session_factory) as s:
        service.reverse(s, tenant.id, "s", 120, reason="test", idempotency_key="r1")
    by_entry = {lt.entry_id: lt for lt in h.lots(session_factory, tenant.id, member)}
    assert (by_entry[soon].remaining, by_entry[late].remaining) == (100, 70)
    with unit_of_work(session_factory) as s:  # only 30 are left to return, asking for more returns 30
        service.reverse(s, tenant.id, "s", None, reason="test", idempotency_key="r2")
        assert service.reverse(s, tenant.id, "s", None, reason="test", idempotency_key="r3") is None
    by_entry = {lt.entry_id: lt for lt in h.lots(session_factory, tenant.id, member)}
    assert (by_entry[soon].remaining, by_entry[late].remaining) == (100, 100)
    assert _invariant(session_factory, tenant, member) == 300


def test_reversing_an_earn_already_spent_takes_what_is_there_and_records_the_shortfall(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 100, "earn")
    h.spend(session_factory, tenant.id, member, 80, "spend")
    with unit_of_work(session_factory) as s:
        rev = service.reverse(s, tenant.id, "earn", None, reason="refund", idempotency_key="rev")
        assert rev is not None and (rev.delta, rev.shortfall) == (-20, 80)
    with unit_of_work(session_factory) as s:  # retried: same entry, nothing more taken
        again = service.reverse(s, tenant.id, "earn", None, reason="refund", idempotency_key="rev")
        assert again is not None and again.id == rev.id
    assert _invariant(session_factory, tenant, member) == 0


def test_expiry_writes_offsetting_entries_for_the_due_lots_only(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = make_member(session_factory, tenant.id)
    t0 = dt.datetime.now(dt.UTC)
    first = h.award(session_factory, tenant.id, member, 100, "first", expires_at=t0 + dt.timedelta(days=1))
    h.award(session_factory, tenant.id, member, 70, "second", expires_at=t0 + dt.timedelta(days=5))
    h.spend(session_factory, tenant.id, member, 30, "s")  # from the first lot: 70 of it left
    with unit_of_work(session_factory) as s:
        assert service.expire_due(s, tenant.id, t0 + dt.timedelta(days=2)) == 1
    with unit_of_work(session_factory) as s:  # the job again: nothing left to do
        assert service.expire_due(s, tenant.id, t0 + dt.timedelta(days=2)) == 0
    expired = [e for e in h.entries(session_factory, tenant.id, member) if e.kind == "expire"]
    assert [(e.delta, e.ref) for e in expired] == [(-70, f"lot:{h.lots(session_factory, tenant.id, member)[0].id}")]
    assert h.lots(session_factory, tenant.id, member)[0].entry_id == first
    assert _invariant(session_factory, tenant, member) == 70
    # A spend after the expiry takes the second lot.
    h.spend(session_factory, tenant.id, member, 70, "s2")
    assert _invariant(session_factory, tenant, member) == 0


def test_points_expiring_is_emitted_once_per_lot(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    h.set_rules(session_factory, tenant.id, expiry={"mode": "days", "days": 40, "notice_days": 30})
    member = make_member(session_factory, tenant.id)
    t0 = dt.datetime.now(dt.UTC)
    h.award(session_factory, tenant.id, member, 10, "a", now=t0)
    h.award(session_factory, tenant.id, member, 10, "b", now=t0 + dt.timedelta(days=20))
    with unit_of_work(session_factory) as s:
        assert service.notify_expiring(s, tenant.id, t0 + dt.timedelta(days=5)) == 0  # 35 days away
        assert service.notify_expiring(s, tenant.id, t0 + dt.timedelta(days=11)) == 1
        assert service.notify_expiring(s, tenant.id, t0 + dt.timedelta(days=12)) == 0
    with session_factory() as s:
        jobs = s.scalars(select(Job).where(Job.merchant_id == tenant.id, Job.kind == "test.loyalty.points_expiring")).all()
    assert len(jobs) == 1 and jobs[0].payload["points"] == 10


def test_end_of_next_year_expiry_is_local_new_year(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = make_member(session_factory, tenant.id)  # Asia/Shanghai, default rules
    earned = h.utc(2026, 12, 31, 17, 0)  # already 2027-01-01 01:00 in Shanghai
    h.award(session_factory, tenant.id, member, 5, "ny", now=earned)
    (lot,) = h.lots(session_factory, tenant.id, member)
    assert lot.expires_at == h.utc(2028, 12, 31, 16, 0)  # 2029-01-01 00:00 +08:00


def test_statement_pages_by_keyset_newest_first(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = make_member(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        for i in range(25):
            service.award(s, tenant.id, member, i + 1, reason="t", idempotency_key=f"st{i}")
    with session_factory() as s:
        page1, nxt = service.statement(s, tenant.id, member, limit=10)
        page2, nxt2 = service.statement(s, tenant.id, member, before=nxt, limit=10)
        page3, nxt3 = service.statement(s, tenant.id, member, before=nxt2, limit=10)
    deltas = [e.delta for e in page1 + page2 + page3]
    assert deltas == list(range(25, 0, -1))
    assert nxt3 is None and len(page3) == 5


def test_adjust_negative_never_goes_below_zero(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = make_member(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        service.adjust(s, tenant.id, member, 50, reason="goodwill", idempotency_key="adj1", actor=h.SYSTEM)
    with pytest.raises(DomainError) as exc, unit_of_work(session_factory) as s:
        service.adjust(s, tenant.id, member, -60, reason="fix", idempotency_key="adj2", actor=h.SYSTEM)
    assert exc.value.code == "points_insufficient"
    with session_factory() as s:
        kinds = [e.kind for e in s.scalars(select(PointsEntry).where(PointsEntry.merchant_id == tenant.id))]
    assert kinds == ["adjust"]
    assert _invariant(session_factory, tenant, member) == 50


def test_a_spend_across_more_lots_than_one_batch_takes_them_in_expiry_order(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = make_member(session_factory, tenant.id)
    t0 = dt.datetime.now(dt.UTC)
    with unit_of_work(session_factory) as s:
        for i in range(120):  # lot i expires after 120 - i days: the newest lot expires first
            service.award(s, tenant.id, member, 1, reason="t", idempotency_key=f"many{i}",
                          expires_at=t0 + dt.timedelta(days=120 - i))
    h.spend(session_factory, tenant.id, member, 110, "big")
    left = sorted(lt.expires_at for lt in h.lots(session_factory, tenant.id, member) if lt.remaining and lt.expires_at)
    assert len(left) == 10 and left[0] == t0 + dt.timedelta(days=111)
    assert _invariant(session_factory, tenant, member) == 10
