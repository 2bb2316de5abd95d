"""The data generator: shape of what it writes on both dialects, and the stats it rebuilds."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid

import pytest
from sqlalchemy import String, and_, cast, func, literal, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience.models import STAGE_NEVER, MemberStats
from siyu.demo import generator
from siyu.events.models import Event
from siyu.members.models import Member
from siyu.orders import models as om

MEMBERS = 1500
NOW = dt.datetime(2026, 11, 1, 4, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def generated(session_factory: sessionmaker[Session]) -> generator.GenResult:
    return generator.generate(
        session_factory, members=MEMBERS, merchant_code=f"gen-{uuid.uuid4().hex[:8]}", now=NOW, seed=7
    )


def test_counts_match_the_scale(generated: generator.GenResult, session: Session) -> None:
    mid = generated.merchant_id
    members = session.scalar(select(func.count()).select_from(Member).where(Member.merchant_id == mid))
    orders = session.scalar(select(func.count()).select_from(om.Order).where(om.Order.merchant_id == mid))
    lines = session.scalar(select(func.count()).select_from(om.OrderLine).where(om.OrderLine.merchant_id == mid))
    events = session.scalar(select(func.count()).select_from(Event).where(Event.merchant_id == mid))
    assert members == generated.members == MEMBERS
    assert orders == generated.orders and lines == orders  # one line per order
    assert events == generated.events
    # the defaults ask for about 5 orders and 20 events per member
    assert 3.5 * MEMBERS <= orders <= 5.0 * MEMBERS
    assert 15 * MEMBERS <= events <= 25 * MEMBERS


def test_every_order_and_event_belongs_to_a_member_of_the_merchant(generated: generator.GenResult, session: Session) -> None:
    mid = generated.merchant_id
    o, line = om.Order, om.OrderLine
    foreign_orders = session.scalar(
        select(func.count()).select_from(o)
        .outerjoin(Member, and_(Member.id == o.member_id, Member.merchant_id == mid))
        .where(o.merchant_id == mid, Member.id.is_(None))
    )
    assert foreign_orders == 0
    orphan_lines = session.scalar(
        select(func.count()).select_from(line)
        .outerjoin(o, and_(o.id == line.order_id, o.merchant_id == mid))
        .where(line.merchant_id == mid, o.id.is_(None))
    )
    assert orphan_lines == 0
    foreign_events = session.scalar(
        select(func.count()).select_from(Event)
        .outerjoin(Member, and_(Member.id == Event.member_id, Member.merchant_id == mid))
        .where(Event.merchant_id == mid, Event.member_id.is_not(None), Member.id.is_(None))
    )
    assert foreign_events == 0
    # orders are never before the member registered, nor after "now"
    early = session.scalar(
        select(func.count()).select_from(o).join(Member, Member.id == o.member_id)
        .where(o.merchant_id == mid, o.created_at < Member.registered_at)
    )
    assert early == 0
    latest = session.scalar(select(func.max(o.created_at)).where(o.merchant_id == mid))
    assert latest is not None and latest <= NOW


def test_order_money_is_consistent(generated: generator.GenResult, session: Session) -> None:
    o = om.Order
    mid = generated.merchant_id
    bad = session.scalar(
        select(func.count()).select_from(o).where(
            o.merchant_id == mid,
            (o.payable_amount != o.goods_amount + o.freight_amount)
            | (o.refunded_amount > o.paid_amount)
            | ((o.status == om.CANCELLED) & (o.paid_amount != 0))
            | ((o.status.in_((om.PAID, om.SHIPPED, om.COMPLETED, om.CLOSED))) & (o.paid_at.is_(None))),
        )
    )
    assert bad == 0
    statuses = dict(session.execute(select(o.status, func.count()).where(o.merchant_id == mid).group_by(o.status)).all())
    assert statuses.get(om.COMPLETED, 0) > statuses.get(om.CANCELLED, 0) > 0
    assert statuses.get(om.CLOSED, 0) > 0


def test_funnels_are_monotone(generated: generator.GenResult, session: Session) -> None:
    counts = generator.funnel_counts(session, generated.merchant_id)
    steps = list(generator.FUNNEL)
    assert [s for s in counts] == steps
    for before, after in itertools.pairwise(steps):
        assert counts[before][0] >= counts[after][0] > 0, (before, after, counts)
        assert counts[before][1] >= counts[after][1] > 0, (before, after, counts)
    # each order_paid event is the server event of a paid order of this merchant
    o = om.Order
    paid_events = session.scalar(
        select(func.count()).select_from(Event)
        .join(o, and_(o.merchant_id == Event.merchant_id, Event.event_id == literal("srv:order_paid:", String) + cast(o.id, String)))
        .where(Event.merchant_id == generated.merchant_id, Event.name == "order_paid", o.paid_at.is_not(None))
    )
    assert paid_events == counts["order_paid"][0]


def test_member_attributes_follow_the_demo_skew(generated: generator.GenResult, session: Session) -> None:
    mid = generated.merchant_id
    cities = dict(session.execute(
        select(Member.city, func.count()).where(Member.merchant_id == mid).group_by(Member.city)
    ).all())
    assert max(cities, key=lambda c: cities[c]) == "杭州市"
    genders = dict(session.execute(
        select(Member.gender, func.count()).where(Member.merchant_id == mid).group_by(Member.gender)
    ).all())
    assert genders["female"] > genders["male"] > genders["unknown"] > 0
    assert session.scalar(
        select(func.count()).select_from(Member).where(Member.merchant_id == mid, Member.registered_at > NOW)
    ) == 0


def test_stats_are_rebuilt_from_orders_and_events(generated: generator.GenResult, session: Session) -> None:
    mid = generated.merchant_id
    s, o = MemberStats, om.Order
    assert session.scalar(select(func.count()).select_from(s).where(s.merchant_id == mid)) == MEMBERS
    # paid orders and net totals equal what the orders say, member by member
    paid = (
        select(o.member_id, func.count().label("n"), func.sum(o.paid_amount - o.refunded_amount).label("net"))
        .where(o.merchant_id == mid, o.status.in_((om.PAID, om.SHIPPED, om.COMPLETED)))
        .group_by(o.member_id)
        .subquery()
    )
    mismatched = session.scalar(
        select(func.count()).select_from(s)
        .outerjoin(paid, paid.c.member_id == s.member_id)
        .where(s.merchant_id == mid,
               (s.paid_orders != func.coalesce(paid.c.n, 0)) | (s.paid_total != func.coalesce(paid.c.net, 0)))
    )
    assert mismatched == 0
    # event counters equal the events
    views = session.scalar(
        select(func.count()).select_from(Event).where(Event.merchant_id == mid, Event.name == "product_view")
    )
    assert session.scalar(select(func.sum(s.product_views)).where(s.merchant_id == mid)) == views
    # stages and RFM are filled in: buyers have a stage other than never and an RFM tier
    buyers = session.scalar(select(func.count()).select_from(s).where(s.merchant_id == mid, s.paid_orders > 0))
    assert buyers and buyers > MEMBERS // 3
    staged = session.scalar(
        select(func.count()).select_from(s).where(
            s.merchant_id == mid, s.paid_orders > 0, s.lifecycle_stage != STAGE_NEVER, s.rfm_tier.is_not(None)
        )
    )
    assert staged == buyers
    assert session.scalar(
        select(func.count()).select_from(s).where(s.merchant_id == mid, s.paid_orders == 0, s.lifecycle_stage != STAGE_NEVER)
    ) == 0


def test_same_seed_gives_the_same_data(session_factory: sessionmaker[Session], generated: generator.GenResult) -> None:
    again = generator.generate(
        session_factory, members=MEMBERS, merchant_code=f"gen-{uuid.uuid4().hex[:8]}", now=NOW, seed=7
    )
    assert (again.orders, again.paid_orders, again.events) == (generated.orders, generated.paid_orders, generated.events)


def test_existing_merchant_code_is_refused(session_factory: sessionmaker[Session]) -> None:
    code = f"gen-{uuid.uuid4().hex[:8]}"
    generator.generate(session_factory, members=20, merchant_code=code, now=NOW)
    with pytest.raises(ValueError, match="already exists"):
        generator.generate(session_factory, members=20, merchant_code=code, now=NOW)


def test_lines_carry_the_purchase_facts_of_their_order(generated: generator.GenResult, session: Session) -> None:
    """What the generator writes equals what ``purchase_facts`` derives from the orders."""
    from siyu.audience.purchase_facts import bought_at

    mid = generated.merchant_id
    rows = session.execute(
        select(om.Order.status, om.Order.paid_at, om.Order.member_id, om.OrderLine.member_id, om.OrderLine.bought_at)
        .join(om.OrderLine, om.OrderLine.order_id == om.Order.id)
        .where(om.Order.merchant_id == mid)
    ).all()
    wrong = [r for r in rows if (r[3], r[4]) != (r[2], bought_at(r[0], r[1]))]
    assert rows and wrong == []
    assert any(r[4] is not None for r in rows) and any(r[4] is None for r in rows)
