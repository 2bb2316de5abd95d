"""Task reports under real parallel connections (PostgreSQL): a report with the ref of another one
never takes a slot of the daily cap, N reports with distinct refs reward exactly min(N, cap), and a
report that fails half-way leaves nothing behind (on SQLite too)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.loyalty import points, service
from siyu.loyalty.models import GrowthEntry, MemberLoyalty, PointsEntry, TaskCompletion, TaskCounter
from tests.conftest import Tenant
from tests.factories.concurrency import race
from tests.factories.orders import make_member
from tests.loyalty import helpers as h
from tests.loyalty import test_concurrency as tc

race_factory = tc.race_factory  # sessions over a bounded pool of real connections (fixture)

NOW = h.utc(2026, 6, 1, 4, 0)  # 12:00 in Shanghai
DAY = dt.date(2026, 6, 1)


def _report(factory: sessionmaker[Session], tenant: Tenant, member: int, ref: str, now: dt.datetime = NOW) -> str:
    with unit_of_work(factory) as s:
        out = service.complete_task(s, tenant.id, member, "share", ref=ref, now=now)
        return "rewarded" if out.rewarded else str(out.reason)


def _state(factory: sessionmaker[Session], tenant: Tenant, member: int) -> dict[str, Any]:
    """What the reports wrote for the member: the day's counter, claims, points and growth."""
    with factory() as s:
        def total(model: Any, column: Any) -> int:
            return int(s.scalar(select(func.coalesce(func.sum(column), 0)).where(
                model.merchant_id == tenant.id, model.member_id == member)) or 0)

        def rows(model: Any) -> int:
            return int(s.scalar(select(func.count()).select_from(model).where(
                model.merchant_id == tenant.id, model.member_id == member)) or 0)

        counter = s.scalar(select(TaskCounter.count).where(
            TaskCounter.merchant_id == tenant.id, TaskCounter.member_id == member, TaskCounter.task == "share",
            TaskCounter.day == DAY))
        growth = s.scalar(select(MemberLoyalty.growth).where(
            MemberLoyalty.merchant_id == tenant.id, MemberLoyalty.member_id == member))
        return {
            "counter": counter or 0, "claims": rows(TaskCompletion), "points_entries": rows(PointsEntry),
            "points": total(PointsEntry, PointsEntry.delta), "growth_entries": rows(GrowthEntry),
            "growth": growth or 0,
        }


def _expected(rewarded: int, points: int = 5, growth: int = 2) -> dict[str, int]:
    return {"counter": rewarded, "claims": rewarded, "points_entries": rewarded, "points": rewarded * points,
            "growth_entries": rewarded, "growth": rewarded * growth}


def _pg_only(settings: Settings) -> None:
    if settings.is_sqlite:
        pytest.skip(tc.PG_ONLY)


def test_parallel_reports_with_one_ref_take_one_slot(
    session_factory: sessionmaker[Session], race_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    _pg_only(settings)
    member = make_member(session_factory, tenant.id)  # default share: 5 points, 2 growth, 3 a day
    results = race(16, lambda i: _report(race_factory, tenant, member, "same-page"))
    assert Counter(results) == Counter({"rewarded": 1, "duplicate": 15}), results
    assert _state(session_factory, tenant, member) == _expected(1)
    # the two other slots of the day are still there, and only two
    outcomes = [_report(session_factory, tenant, member, ref) for ref in ("p2", "p3", "p4", "same-page")]
    assert outcomes == ["rewarded", "rewarded", "daily_cap", "duplicate"]
    assert _state(session_factory, tenant, member) == _expected(3)


def test_parallel_reports_with_repeated_refs_reward_each_ref_once_within_the_cap(
    session_factory: sessionmaker[Session], race_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    _pg_only(settings)
    h.set_rules(session_factory, tenant.id, earn={"tasks": {"share": {"points": 7, "growth": 3, "daily_cap": 5}}})
    member = make_member(session_factory, tenant.id)
    refs = [f"page-{i % 8}" for i in range(24)]  # 8 refs, each reported 3 times at once
    results = race(24, lambda i: _report(race_factory, tenant, member, refs[i]))
    by_ref: dict[str, Counter[str]] = {}
    for ref, outcome in zip(refs, results, strict=True):
        by_ref.setdefault(ref, Counter())[outcome] += 1
    rewarded = [ref for ref, c in by_ref.items() if c["rewarded"]]
    # 5 refs rewarded once each (their other reports are duplicates); the other 3 refs found the cap
    # full every time (a report refused by the cap leaves no claim for its twin to trip on)
    assert len(rewarded) == 5, by_ref
    assert all(by_ref[ref] == Counter({"rewarded": 1, "duplicate": 2}) for ref in rewarded), by_ref
    assert all(c == Counter({"daily_cap": 3}) for ref, c in by_ref.items() if ref not in rewarded), by_ref
    assert _state(session_factory, tenant, member) == _expected(5, points=7, growth=3)
    # an unrewarded ref is rewarded on the next local day
    late = next(ref for ref in by_ref if ref not in rewarded)
    assert _report(session_factory, tenant, member, late, NOW + dt.timedelta(days=1)) == "rewarded"


@pytest.mark.parametrize(("reports", "cap"), [(24, 10), (8, 10), (10, 10)])
def test_parallel_reports_with_distinct_refs_reward_exactly_min_of_reports_and_cap(
    session_factory: sessionmaker[Session], race_factory: sessionmaker[Session], settings: Settings, tenant: Tenant,
    reports: int, cap: int,
) -> None:
    _pg_only(settings)
    h.set_rules(session_factory, tenant.id, earn={"tasks": {"share": {"points": 5, "growth": 2, "daily_cap": cap}}})
    member = make_member(session_factory, tenant.id)
    results = race(reports, lambda i: _report(race_factory, tenant, member, f"ref-{i}"))
    rewarded = min(reports, cap)
    expected = Counter({"rewarded": rewarded, "daily_cap": reports - rewarded})
    assert Counter(results) == +expected, results
    assert _state(session_factory, tenant, member) == _expected(rewarded)
    assert h.balance(session_factory, tenant.id, member) == rewarded * 5


class _Boom(RuntimeError):
    pass


def test_a_report_that_fails_half_way_leaves_nothing_and_the_next_one_is_rewarded(
    session_factory: sessionmaker[Session], tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = make_member(session_factory, tenant.id)
    real = service.add_growth

    def failing_growth(*args: Any, **kwargs: Any) -> Any:  # after the claim, the counter and the points
        raise _Boom("growth store down")

    monkeypatch.setattr(service, "add_growth", failing_growth)
    with pytest.raises(_Boom), unit_of_work(session_factory) as s:  # the request's transaction rolls back
        service.complete_task(s, tenant.id, member, "share", ref="p1", now=NOW)
    assert _state(session_factory, tenant, member) == _expected(0)
    # a caller that catches the error and commits its own work keeps nothing of the report either
    with unit_of_work(session_factory) as s:
        with pytest.raises(_Boom):
            service.complete_task(s, tenant.id, member, "share", ref="p1", now=NOW)
        points.award(s, tenant.id, member, 1, reason="unrelated", idempotency_key="unrelated")  # its own work
    assert _state(session_factory, tenant, member) == {**_expected(0), "points_entries": 1, "points": 1}
    monkeypatch.setattr(service, "add_growth", real)
    assert [_report(session_factory, tenant, member, ref) for ref in ("p1", "p1", "p2", "p3", "p4")] == [
        "rewarded", "duplicate", "rewarded", "rewarded", "daily_cap"]
    assert _state(session_factory, tenant, member) == {
        **_expected(3), "points_entries": 4, "points": 3 * 5 + 1}
