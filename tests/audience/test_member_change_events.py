"""Per-member behaviour events for journeys: a saved segment's recompute writes one
``segment_entered`` / ``segment_left`` per member that moved, a stage move one ``stage_changed``
(from / to), set-based into the events table (source ``server``), idempotent, usable in segment
definitions at once, and not counted as visits. Not events: a new segment's first fill and a
member's first stage from the merchant-wide recompute (backfilled stats). SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import repository as repo
from siyu.audience import segments, service
from siyu.audience.models import MemberStats, SegmentChange, StageTransition
from siyu.db.session import unit_of_work
from siyu.events.models import Event
from siyu.kit.outbox import Job
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from tests.conftest import Tenant

ACTIVE = {"type": "stage", "in": ["active"]}


def _members(factory: sessionmaker[Session], merchant_id: int, n: int) -> list[int]:
    with unit_of_work(factory) as s:
        rows = [Member(merchant_id=merchant_id, openid=f"o-{uuid.uuid4().hex[:12]}") for _ in range(n)]
        s.add_all(rows)
        s.flush()
        return [m.id for m in rows]


def _pay(factory: sessionmaker[Session], merchant_id: int, member_id: int, paid_at: dt.datetime) -> None:
    with unit_of_work(factory) as s:
        service.record_payment(s, merchant_id, member_id, 1000, paid_at)


def _events(factory: sessionmaker[Session], merchant_id: int, *names: str) -> list[tuple[int, str, dict[str, Any]]]:
    with factory() as s:
        rows = s.scalars(select(Event).where(Event.merchant_id == merchant_id, Event.name.in_(names)).order_by(Event.id))
        out = []
        for e in rows:
            assert e.source == "server"
            assert e.member_id is not None
            out.append((e.member_id, e.name, dict(e.properties)))
        return out


def _saved(factory: sessionmaker[Session], merchant_id: int, name: str, definition: dict[str, Any]) -> int:
    with unit_of_work(factory) as s:
        return segments.save_segment(s, merchant_id, name=name, description=None,
                                     definition=segments.parse_definition(definition)).id


def _recompute(factory: sessionmaker[Session], merchant_id: int, segment_id: int, now: dt.datetime) -> segments.RecomputeResult:
    with unit_of_work(factory) as s:
        return segments.recompute(s, merchant_id, segment_id, now=now)


def test_a_segment_recompute_writes_one_entered_or_left_event_per_moving_member_and_a_rerun_none(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    a, b, c = _members(session_factory, tenant.id, 3)
    seg = _saved(session_factory, tenant.id, "active", ACTIVE)  # nobody bought yet: empty
    # a new segment's first fill is its definition taking effect: change rows, no events
    other = _saved(session_factory, tenant.id, "everyone", {"type": "random_bucket", "percent": 100})
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(SegmentChange).where(SegmentChange.segment_id == other)) == 3
    assert _events(session_factory, tenant.id, "segment_entered") == []
    now = utcnow()
    _pay(session_factory, tenant.id, a, now)
    _pay(session_factory, tenant.id, b, now)
    assert _recompute(session_factory, tenant.id, seg, now) == segments.RecomputeResult(entered=2, left=0, members=2)
    mine = [e for e in _events(session_factory, tenant.id, "segment_entered", "segment_left") if e[2]["segment_id"] == seg]
    assert sorted(mine) == [(a, "segment_entered", {"segment_id": seg}), (b, "segment_entered", {"segment_id": seg})]

    # the same recompute again: nothing moves, nothing written; writing its changes again is a no-op
    assert _recompute(session_factory, tenant.id, seg, now) == segments.RecomputeResult(entered=0, left=0, members=2)
    with unit_of_work(session_factory) as s:
        segments._record_change_events(s, tenant.id, seg, now, [])
    assert len(_events(session_factory, tenant.id, "segment_entered", "segment_left")) == 2

    # an edited definition moves members: those are events (c enters, a and b stay)
    with unit_of_work(session_factory) as s:
        s.execute(update(Member).where(Member.id == c).values(nickname="zed"))
    with unit_of_work(session_factory) as s:
        segments.save_segment(s, tenant.id, name="active", description=None, segment_id=seg,
                              definition=segments.parse_definition({"type": "or", "nodes": [
                                  ACTIVE, {"type": "attribute", "field": "nickname", "op": "eq", "value": "zed"}]}))
    assert (c, "segment_entered", {"segment_id": seg}) in _events(session_factory, tenant.id, "segment_entered")
    with unit_of_work(session_factory) as s:
        segments.save_segment(s, tenant.id, name="active", description=None, segment_id=seg,
                              definition=segments.parse_definition(ACTIVE))
    assert (c, "segment_left", {"segment_id": seg}) in _events(session_factory, tenant.id, "segment_left")
    before = len(_events(session_factory, tenant.id, "segment_left"))

    # 100 days on, both are silent: they leave
    later = now + dt.timedelta(days=100)
    with unit_of_work(session_factory) as s:
        service.recompute_lifecycle(s, tenant.id, now=later)
    assert _recompute(session_factory, tenant.id, seg, later) == segments.RecomputeResult(entered=0, left=2, members=0)
    left = _events(session_factory, tenant.id, "segment_left")[before:]
    assert sorted(left) == [(a, "segment_left", {"segment_id": seg}), (b, "segment_left", {"segment_id": seg})]
    with session_factory() as s:
        at = s.scalars(select(Event.occurred_at).where(Event.merchant_id == tenant.id, Event.name == "segment_left",
                                                       Event.member_id.in_([a, b])))
        assert set(at) == {later}


def test_a_payment_that_moves_the_stage_writes_one_stage_changed_with_from_and_to(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    (a,) = _members(session_factory, tenant.id, 1)
    now = utcnow()
    _pay(session_factory, tenant.id, a, now)  # a new member's first purchase is announced
    assert _events(session_factory, tenant.id, "stage_changed") == [
        (a, "stage_changed", {"from": "never_purchased", "to": "active"})
    ]
    _pay(session_factory, tenant.id, a, now)  # still active: no move, no event
    assert len(_events(session_factory, tenant.id, "stage_changed")) == 1


def test_the_nightly_recompute_writes_one_stage_changed_per_moved_member_not_for_an_initial_assignment(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    a, b, c, d = _members(session_factory, tenant.id, 4)
    now = utcnow()
    _pay(session_factory, tenant.id, a, now)
    _pay(session_factory, tenant.id, b, now - dt.timedelta(days=120))  # silent already at `now`
    with unit_of_work(session_factory) as s:
        # c: stats from its order history (a backfill / rebuild), never given a stage by a recompute
        repo.ensure_rows(s, tenant.id, {c})
        repo.apply_payment(s, tenant.id, c, 500, now, now)
    before = len(_events(session_factory, tenant.id, "stage_changed"))
    assert before == 2  # a: never_purchased -> active; b: never_purchased -> silent

    later = now + dt.timedelta(days=100)
    with unit_of_work(session_factory) as s:
        done = service.daily_recompute(s, tenant.id, now=later, day=later.date())
    assert done["stages_changed"] == 3  # a, b and c moved; d never bought
    new = _events(session_factory, tenant.id, "stage_changed")[before:]
    assert sorted(new) == sorted([
        (a, "stage_changed", {"from": "active", "to": "silent"}),
        (b, "stage_changed", {"from": "silent", "to": "sleeping"}),
    ])
    with session_factory() as s:  # c's initial assignment is a transition, not an event
        assert s.scalar(select(StageTransition.to_stage).where(
            StageTransition.merchant_id == tenant.id, StageTransition.member_id == c)) == "silent"

    with unit_of_work(session_factory) as s:  # the same night again: nothing moves, nothing written
        assert service.recompute_lifecycle(s, tenant.id, now=later) == 0
    assert len(_events(session_factory, tenant.id, "stage_changed")) == before + 2

    with unit_of_work(session_factory) as s:  # c's next move is an event
        service.recompute_lifecycle(s, tenant.id, now=now + dt.timedelta(days=200))
    assert (c, "stage_changed", {"from": "silent", "to": "sleeping"}) in _events(session_factory, tenant.id, "stage_changed")
    assert d not in {m for m, _, _ in _events(session_factory, tenant.id, "stage_changed")}


def test_a_segment_on_segment_entered_with_the_segment_id_filter_and_no_visit_counted(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    a, b, c = _members(session_factory, tenant.id, 3)
    seg = _saved(session_factory, tenant.id, "active", ACTIVE)
    now = utcnow()
    _pay(session_factory, tenant.id, a, now)
    _pay(session_factory, tenant.id, b, now)
    _recompute(session_factory, tenant.id, seg, now)

    def entered(segment_id: int) -> segments.Preview:
        definition = segments.parse_definition({
            "type": "behavior", "event": "segment_entered", "within_days": 7,
            "where": [{"property": "segment_id", "op": "eq", "value": segment_id}],
        })
        with session_factory() as s:
            assert segments.check_references(s, tenant.id, definition) == []  # a registered name
            return segments.preview(s, tenant.id, definition)

    assert entered(seg).count == 2
    assert {r["member_id"] for r in entered(seg).sample} == {a, b}
    assert entered(seg + 1000).count == 0
    moved = _saved(session_factory, tenant.id, "just entered", {
        "type": "behavior", "event": "stage_changed", "within_days": 7,
        "where": [{"property": "to", "op": "eq", "value": "active"}],
    })
    with session_factory() as s:
        assert segments.get_segment(s, tenant.id, moved).member_count == 2

    # none of these events is a visit: last visit and counters untouched, no activity job queued
    with session_factory() as s:
        stats = {r.member_id: r for r in s.scalars(select(MemberStats).where(MemberStats.merchant_id == tenant.id))}
        for m in (a, b):
            assert stats[m].last_visit_at is None
            assert (stats[m].product_views, stats[m].cart_adds, stats[m].favorites, stats[m].shares) == (0, 0, 0, 0)
        assert c not in stats or stats[c].last_visit_at is None
        assert s.scalar(select(Job.id).where(Job.merchant_id == tenant.id, Job.kind == service.ACTIVITY_JOB)) is None
