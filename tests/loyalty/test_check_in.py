"""Check-in: one per local day, streaks across the merchant's midnight and across DST changes
(America/New_York), streak rewards, make-up check-in, tasks with daily caps."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.loyalty import service
from siyu.loyalty.models import CheckIn
from tests.conftest import Tenant
from tests.factories.orders import make_member
from tests.loyalty import helpers as h


def _check(factory: sessionmaker[Session], tenant: Tenant, member: int, at: dt.datetime) -> CheckIn:
    with unit_of_work(factory) as s:
        return service.check_in(s, tenant.id, member, at)


def test_second_check_in_on_the_same_local_day_is_refused_and_changes_nothing(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = make_member(session_factory, tenant.id)
    # 2026-11-23 08:00 and 23:59 in Shanghai (UTC+8)
    _check(session_factory, tenant, member, h.utc(2026, 11, 23, 0, 0))
    with pytest.raises(DomainError) as exc:
        _check(session_factory, tenant, member, h.utc(2026, 11, 23, 15, 59))
    assert exc.value.code == "checkin_already"
    assert h.count(session_factory, CheckIn, tenant.id) == 1
    assert h.balance(session_factory, tenant.id, member) == 5


def test_streak_counts_local_days_across_the_merchants_midnight(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = make_member(session_factory, tenant.id)
    # Same UTC day, two Shanghai days: 23:59 on the 23rd and 00:01 on the 24th.
    first = _check(session_factory, tenant, member, h.utc(2026, 11, 23, 15, 59))
    second = _check(session_factory, tenant, member, h.utc(2026, 11, 23, 16, 1))
    assert (first.day, first.streak) == (dt.date(2026, 11, 23), 1)
    assert (second.day, second.streak) == (dt.date(2026, 11, 24), 2)
    # A skipped local day breaks the streak.
    third = _check(session_factory, tenant, member, h.utc(2026, 11, 25, 16, 30))  # 26th, 00:30 local
    assert (third.day, third.streak) == (dt.date(2026, 11, 26), 1)


@pytest.mark.parametrize(
    ("moments", "days"),
    [
        # Spring forward, 2026-03-08 02:00 EST -> 03:00 EDT: the 8th is a 23-hour day.
        ([(2026, 3, 8, 4, 59), (2026, 3, 8, 5, 1), (2026, 3, 9, 3, 59), (2026, 3, 9, 4, 1)],
         ["2026-03-07", "2026-03-08", None, "2026-03-09"]),
        # Fall back, 2026-11-01 02:00 EDT -> 01:00 EST: the 1st is a 25-hour day.
        ([(2026, 11, 1, 3, 59), (2026, 11, 1, 4, 1), (2026, 11, 2, 4, 59), (2026, 11, 2, 5, 1)],
         ["2026-10-31", "2026-11-01", None, "2026-11-02"]),
    ],
)
def test_streak_across_a_dst_change_in_new_york(
    session_factory: sessionmaker[Session], tenant: Tenant, moments: list[tuple[int, ...]], days: list[str | None]
) -> None:
    h.set_timezone(session_factory, tenant.id, "America/New_York")
    member = make_member(session_factory, tenant.id)
    streak = 0
    for moment, day in zip(moments, days, strict=True):
        at = h.utc(*moment)
        if day is None:  # 23:59 local on the day just checked in: still the same day
            with pytest.raises(DomainError) as exc:
                _check(session_factory, tenant, member, at)
            assert exc.value.code == "checkin_already"
            continue
        streak += 1
        row = _check(session_factory, tenant, member, at)
        assert (row.day.isoformat(), row.streak) == (day, streak)


def test_streak_rewards_are_paid_on_the_configured_days(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    h.set_rules(session_factory, tenant.id, check_in={
        "points": 5, "growth": 1, "streak_rewards": [{"day": 3, "points": 30, "growth": 3}, {"day": 7, "points": 70}],
    })
    member = make_member(session_factory, tenant.id)
    start = h.utc(2026, 6, 1, 2, 0)
    rows = [_check(session_factory, tenant, member, start + dt.timedelta(days=i)) for i in range(7)]
    assert [r.points for r in rows] == [5, 5, 35, 5, 5, 5, 75]
    assert [r.growth for r in rows] == [1, 1, 4, 1, 1, 1, 1]
    assert h.balance(session_factory, tenant.id, member) == 5 * 7 + 30 + 70
    with session_factory() as s:
        summary = service.summary(s, tenant.id, member, now=start + dt.timedelta(days=6, hours=1))
    assert (summary.check_in_streak, summary.checked_in_today, summary.growth) == (7, True, 10)


def test_makeup_check_in_costs_points_and_mends_the_streak(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    h.set_rules(session_factory, tenant.id, check_in={
        "points": 10, "growth": 0, "streak_rewards": [], "makeup": {"enabled": True, "cost_points": 15, "within_days": 3},
    })
    member = make_member(session_factory, tenant.id)
    d = h.utc(2026, 6, 1, 2, 0)  # 10:00 Shanghai
    _check(session_factory, tenant, member, d)  # 1st
    _check(session_factory, tenant, member, d + dt.timedelta(days=2))  # 3rd (2nd missed)
    last = _check(session_factory, tenant, member, d + dt.timedelta(days=3))  # 4th
    assert last.streak == 2
    with unit_of_work(session_factory) as s:
        made = service.makeup_check_in(s, tenant.id, member, dt.date(2026, 6, 2), now=d + dt.timedelta(days=3))
        assert (made.streak, made.makeup) == (2, True)
    with session_factory() as s:
        cal = service.calendar(s, tenant.id, member, "2026-06", now=d + dt.timedelta(days=3))
    assert [(c.day.day, c.streak) for c in cal.days] == [(1, 1), (2, 2), (3, 3), (4, 4)] and cal.streak == 4
    assert h.balance(session_factory, tenant.id, member) == 30 - 15


@pytest.mark.parametrize(("day", "why"), [(dt.date(2026, 6, 10), "today"), (dt.date(2026, 6, 5), "too old"),
                                          (dt.date(2026, 6, 9), "already")])
def test_makeup_outside_the_rules_is_refused_and_changes_nothing(
    session_factory: sessionmaker[Session], tenant: Tenant, day: dt.date, why: str
) -> None:
    h.set_rules(session_factory, tenant.id, check_in={"makeup": {"enabled": True, "cost_points": 1, "within_days": 3}})
    member = make_member(session_factory, tenant.id)
    now = h.utc(2026, 6, 10, 4, 0)
    _check(session_factory, tenant, member, now - dt.timedelta(days=1))  # the 9th
    before = h.balance(session_factory, tenant.id, member)
    with pytest.raises(DomainError) as exc, unit_of_work(session_factory) as s:
        service.makeup_check_in(s, tenant.id, member, day, now=now)
    assert exc.value.code == "makeup_not_allowed", why
    assert h.count(session_factory, CheckIn, tenant.id) == 1
    assert h.balance(session_factory, tenant.id, member) == before


def test_makeup_without_enough_points_is_refused_and_changes_nothing(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    h.set_rules(session_factory, tenant.id, check_in={"makeup": {"enabled": True, "cost_points": 100}})
    member = make_member(session_factory, tenant.id)
    now = h.utc(2026, 6, 10, 4, 0)
    with pytest.raises(DomainError) as exc, unit_of_work(session_factory) as s:
        service.makeup_check_in(s, tenant.id, member, dt.date(2026, 6, 9), now=now)
    assert exc.value.code == "points_insufficient"
    assert h.count(session_factory, CheckIn, tenant.id) == 0


def test_task_rewards_respect_the_daily_cap_and_refs(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = make_member(session_factory, tenant.id)  # default: share = 5 points, 2 growth, 3 a day
    now = h.utc(2026, 6, 1, 4, 0)
    outcomes = []
    with unit_of_work(session_factory) as s:
        for ref in ("p1", "p1", "p2", "p3", "p4"):
            out = service.complete_task(s, tenant.id, member, "share", ref=ref, now=now)
            outcomes.append(out.reason if not out.rewarded else "ok")
    assert outcomes == ["ok", "duplicate", "ok", "ok", "daily_cap"]
    with unit_of_work(session_factory) as s:  # the next local day the cap starts again
        assert service.complete_task(s, tenant.id, member, "share", ref="p5", now=now + dt.timedelta(days=1)).rewarded
    assert h.balance(session_factory, tenant.id, member) == 4 * 5
    with pytest.raises(DomainError) as exc, unit_of_work(session_factory) as s:
        service.complete_task(s, tenant.id, member, "dance", ref="x", now=now)
    assert exc.value.code == "task_unknown"


def test_total_check_in_rewards_come_once_even_with_broken_streaks(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    h.set_rules(session_factory, tenant.id, check_in={
        "points": 1, "growth": 0, "streak_rewards": [], "total_rewards": [{"day": 3, "points": 100}],
    })
    member = make_member(session_factory, tenant.id)
    start = h.utc(2026, 6, 1, 4, 0)
    rows = [_check(session_factory, tenant, member, start + dt.timedelta(days=d)) for d in (0, 2, 4, 5)]
    assert [r.streak for r in rows] == [1, 1, 1, 2]
    assert [r.points for r in rows] == [1, 1, 101, 1]
    assert rows[2].rewards == [{"kind": "total", "day": 3, "points": 100}]
    assert h.balance(session_factory, tenant.id, member) == 104
