"""The rest of issue 5's segment bullets, each asserted: every attribute operator, staff owner
and registration channel, behaviour between dates, and a payment re-evaluating the member's
saved segments at once (with ``segment.changed``). SQLite and PostgreSQL; the five members of
``test_segments.World``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import segments
from siyu.audience.models import SegmentChange
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.events import emit, subscribe
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.worker.registry import JobContext
from siyu.worker.runner import Worker
from tests.audience.test_segments import World, ago, match
from tests.conftest import Tenant

SEGMENT_CHANGES: list[dict[str, Any]] = []


@subscribe("segment.changed", "tests.audience.segment_changed_probe")
def _segment_changed_probe(ctx: JobContext) -> None:
    SEGMENT_CHANGES.append({"merchant_id": ctx.merchant_id, **ctx.payload})


@pytest.fixture
def world(session_factory: sessionmaker[Session], tenant: Tenant) -> World:
    w = World(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:  # owners and channels: ann and bob by staff 7, cat came by QR code
        s.execute(update(Member).where(Member.id.in_([w.ids["ann"], w.ids["bob"]])).values(staff_id=7))
        s.execute(update(Member).where(Member.id == w.ids["cat"]).values(registration_channel="qr:store-1"))
    return w


def attr(field: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"type": "attribute", "field": field, "op": op, "value": value}


@pytest.mark.parametrize(("definition", "expected"), [
    (attr("city", "ne", "杭州市"), {"cat", "eve"}),
    (attr("city", "not_in", ["杭州市", "北京市"]), {"cat"}),
    (attr("nickname", "contains", "a"), {"ann", "cat", "dan"}),
    (attr("paid_orders", "gt", 0), {"ann", "bob", "dan", "eve"}),
    (attr("paid_orders", "lt", 1), {"cat"}),
    (attr("paid_total", "lte", 0), {"cat"}),
    (attr("registered_at", "between", [ago(days=350).isoformat(), ago(days=100).isoformat()]), {"bob", "dan"}),
    (attr("registered_at", "before_days_ago", 365), {"ann", "eve"}),
    (attr("last_order_at", "is_set"), {"ann", "bob", "dan", "eve"}),
    (attr("staff_id", "eq", 7), {"ann", "bob"}),  # staff owner
    (attr("staff_id", "is_not_set"), {"cat", "dan", "eve"}),
    (attr("registration_channel", "eq", "qr:store-1"), {"cat"}),
])
def test_every_attribute_operator(session_factory: sessionmaker[Session], world: World, definition: dict[str, Any],
                                  expected: set[str]) -> None:
    assert match(session_factory, world, definition) == expected


def test_behaviour_between_dates(session_factory: sessionmaker[Session], world: World) -> None:
    """ann viewed 3, 5 and 60 days ago, dan 2 days ago, bob 4 days ago."""
    window = {"type": "behavior", "event": "product_view", "since": ago(days=10).isoformat(),
              "until": ago(days=3, hours=12).isoformat()}
    assert match(session_factory, world, window) == {"ann", "bob"}
    assert match(session_factory, world, {**window, "op": "eq", "count": 0}) == {"cat", "dan", "eve"}
    since_only = {"type": "behavior", "event": "product_view", "since": ago(days=90).isoformat(), "op": "gte", "count": 3}
    assert match(session_factory, world, since_only) == {"ann"}


def test_a_payment_re_evaluates_the_members_saved_segments_at_once(
    session_factory: sessionmaker[Session], settings: Settings, world: World
) -> None:
    """cat never bought; her first payment makes her active, and the saved "active" segment
    has her as soon as the order.paid job ran (no recompute of the segment)."""
    definition = segments.parse_definition({"type": "stage", "in": ["active"]})
    with unit_of_work(session_factory) as s:
        seg_id = segments.save_segment(s, world.merchant_id, name="active", description=None, definition=definition).id
    SEGMENT_CHANGES.clear()
    cat = world.ids["cat"]
    with unit_of_work(session_factory) as s:
        emit(s, world.merchant_id, "order.paid", {"order_id": 424242, "member_id": cat, "paid_amount": 9900,
                                                  "paid_at": utcnow().isoformat()}, key="order:424242")
    Worker(session_factory, settings, merchant_id=world.merchant_id).drain()
    with session_factory() as s:
        changes = [(c.member_id, c.change) for c in s.scalars(select(SegmentChange).where(
            SegmentChange.merchant_id == world.merchant_id, SegmentChange.segment_id == seg_id,
            SegmentChange.at > utcnow() - dt.timedelta(minutes=5)).order_by(SegmentChange.id))]
    assert changes[-1] == (cat, "entered") and len(changes) == 2  # bob on save, then cat
    mine = [c for c in SEGMENT_CHANGES if c["merchant_id"] == world.merchant_id]
    # one on save (bob), one when cat paid
    assert [(c["segment_id"], c["entered"], c["left"]) for c in mine] == [(seg_id, 1, 0), (seg_id, 1, 0)]
