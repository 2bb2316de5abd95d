"""Queries on member statistics, stage transitions and audience settings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from siyu.audience.models import (
    STAGE_ACTIVE,
    STAGE_CHURNED,
    STAGE_NEVER,
    STAGE_PRE_CHURN,
    STAGE_SILENT,
    STAGE_SLEEPING,
    ActivityBatch,
    AudienceSettings,
    MemberStats,
    PredictionModel,
    StageDaily,
    StageTransition,
)
from siyu.audience.schemas import LifecycleConfig
from siyu.db.bulk import in_ints, json_rows
from siyu.db.dialect import insert_from_select_ignore, insert_ignore, without_nested_loops
from siyu.db.types import UTCDateTime
from siyu.members.models import Member


def settings_row(session: Session, merchant_id: int) -> AudienceSettings | None:
    return session.scalar(select(AudienceSettings).where(AudienceSettings.merchant_id == merchant_id))


def lifecycle_config(session: Session, merchant_id: int) -> LifecycleConfig:
    """The merchant's audience settings (defaults where it set none)."""
    row = settings_row(session, merchant_id)
    return LifecycleConfig.model_validate(row.lifecycle if row else {})


def stats_row(session: Session, merchant_id: int, member_id: int) -> MemberStats | None:
    return session.scalar(
        select(MemberStats).where(MemberStats.merchant_id == merchant_id, MemberStats.member_id == member_id)
    )


def ensure_rows(session: Session, merchant_id: int, member_ids: Collection[int]) -> None:
    """Create the missing stats rows of these members (idempotent, safe under concurrency).

    The hot path (every event batch, payment and tag names its members): one index lookup of
    the rows that exist, then, only for members without one, an ``INSERT ... SELECT FROM
    members ... ON CONFLICT DO NOTHING``. Only members of the merchant get a row.

    Not one anti-join over the whole list: with statistics taken before a bulk load, PostgreSQL
    planned that as a nested loop that filtered the merchant's every stats row per member (89 s
    for 500 ids among 20,000 members in the events bench)."""
    if not member_ids:
        return
    ids = sorted(set(member_ids))
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = ids[start : start + _ID_CHUNK]
        existing = set(
            session.scalars(
                select(MemberStats.member_id).where(
                    MemberStats.merchant_id == merchant_id, in_ints(session, MemberStats.member_id, chunk)
                )
            )
        )
        missing = [member_id for member_id in chunk if member_id not in existing]
        if missing:
            _insert_missing_rows(session, merchant_id, _in_ints_of(session, missing))


def _in_ints_of(session: Session, ids: list[int]) -> Callable[[Any], ColumnElement[bool]]:
    return lambda column: in_ints(session, column, ids)


# Ids per statement of a given list: one PostgreSQL array parameter, or one expanding IN on
# SQLite (which allows 32,766 parameters per statement).
_ID_CHUNK = 10_000
# Members per UPDATE of a whole-merchant rebuild: each statement groups that many members'
# paid orders (~5 each in the bench data) in one streaming pass over the paid-orders index.
_RANGE_CHUNK = 50_000

_NEW_ROW_COLUMNS = [
    "merchant_id", "member_id", "registered_at", "lifecycle_stage", "paid_orders", "paid_total",
    "refunded_total", "product_views", "cart_adds", "favorites", "shares",
]


def _in_list(session: Session, ids: list[int]) -> Callable[[Any], ColumnElement[bool]]:
    """A member filter for any member-id column: ``column IN ids`` (sorted), with the ids' range
    as well: an index range condition on (merchant, member) that holds whatever the planner
    believes about the array (with stale statistics it filtered the merchant's every order)."""
    return lambda column: and_(column >= ids[0], column <= ids[-1], in_ints(session, column, ids))


def _insert_missing_rows(
    session: Session, merchant_id: int, members: Callable[[Any], ColumnElement[bool]] | None = None
) -> int:
    """Stats rows for the merchant's members that have none yet (those that ``members(column)``
    selects, or all), in one statement; returns the rows inserted."""
    s = MemberStats
    # the member filter on both sides: a hash anti-join then reads only those stats rows
    mine = [members(Member.id)] if members is not None else []
    theirs = [members(s.member_id)] if members is not None else []
    missing = select(
        Member.merchant_id, Member.id, Member.registered_at, literal(STAGE_NEVER),
        literal(0), literal(0), literal(0), literal(0), literal(0), literal(0), literal(0),
    ).where(
        Member.merchant_id == merchant_id, *mine,
        ~select(s.id).where(s.merchant_id == merchant_id, *theirs, s.member_id == Member.id).exists(),
    )
    return insert_from_select_ignore(
        session, s.__table__, _NEW_ROW_COLUMNS, missing, ["merchant_id", "member_id"]  # type: ignore[arg-type]
    )


def apply_payment(session: Session, merchant_id: int, member_id: int, amount: int, paid_at: dt.datetime, now: dt.datetime) -> None:
    s = MemberStats
    session.execute(
        update(s)
        .where(s.merchant_id == merchant_id, s.member_id == member_id)
        .values(
            paid_orders=s.paid_orders + 1,
            paid_total=s.paid_total + amount,
            first_order_at=func.coalesce(s.first_order_at, paid_at),
            second_order_at=case(
                (and_(s.paid_orders == 1, s.second_order_at.is_(None)), paid_at), else_=s.second_order_at
            ),
            last_order_at=case(
                (s.last_order_at.is_(None), paid_at), (s.last_order_at < paid_at, paid_at), else_=s.last_order_at
            ),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


def apply_refund(session: Session, merchant_id: int, member_id: int, amount: int, full: bool, now: dt.datetime) -> None:
    s = MemberStats
    values: dict[str, Any] = {
        "paid_total": case((s.paid_total >= amount, s.paid_total - amount), else_=0),
        "refunded_total": s.refunded_total + amount,
        "updated_at": now,
    }
    if full:
        values["paid_orders"] = case((s.paid_orders > 0, s.paid_orders - 1), else_=0)
    session.execute(
        update(s).where(s.merchant_id == merchant_id, s.member_id == member_id).values(**values)
        .execution_options(synchronize_session=False)
    )


def apply_activity(
    session: Session, merchant_id: int, member_id: int, last_seen: dt.datetime, counts: dict[str, int]
) -> None:
    s = MemberStats
    session.execute(
        update(s)
        .where(s.merchant_id == merchant_id, s.member_id == member_id)
        .values(
            last_visit_at=case(
                (s.last_visit_at.is_(None), last_seen), (s.last_visit_at < last_seen, last_seen), else_=s.last_visit_at
            ),
            product_views=s.product_views + counts.get("product_view", 0),
            cart_adds=s.cart_adds + counts.get("add_to_cart", 0),
            favorites=s.favorites + counts.get("favorite", 0),
            shares=s.shares + counts.get("share", 0),
        )
        .execution_options(synchronize_session=False)
    )


def claim_activity_batch(session: Session, merchant_id: int, batch_key: str, events: int, now: dt.datetime) -> bool:
    """Record that this batch's counters are being added; False when they already were (or
    another transaction holding the same key commits first: it waits for that one)."""
    return insert_ignore(
        session, ActivityBatch.__table__,  # type: ignore[arg-type]
        {"merchant_id": merchant_id, "batch_key": batch_key, "events": events, "applied_at": now},
        ["merchant_id", "batch_key"],
    )


_ACTIVITY_COLUMNS: dict[str, TypeEngine[Any]] = {
    "member_id": BigInteger(), "last_seen": UTCDateTime(), "views": Integer(), "carts": Integer(),
    "favs": Integer(), "shares": Integer(),
}


def apply_activity_rows(session: Session, merchant_id: int, rows: list[dict[str, Any]]) -> int:
    """Add per-member activity (``member_id, last_seen, views, carts, favs, shares``, one row per
    member) to the members' counters in ONE ``UPDATE ... FROM <rows as one JSON document>``.

    The members need their stats row already (``ensure_rows``). Callers hold the merchant's
    activity lock (``service.apply_activity_batch``): two of these UPDATEs sharing members would
    otherwise lock them in plan order and could deadlock; the lock costs one statement, where
    locking ~500 rows in member order first cost a second write of every row. Returns the rows
    updated."""
    if not rows:
        return 0
    src = json_rows(session, rows, _ACTIVITY_COLUMNS)
    s = MemberStats
    seen = src.c.last_seen
    result = session.execute(
        update(s)
        # the ids again as an array: the planner then looks the rows up by the unique index
        # instead of scanning the merchant's rows into a hash join (it guesses 100 rows for
        # the JSON side)
        .where(s.merchant_id == merchant_id, in_ints(session, s.member_id, [r["member_id"] for r in rows]))
        .where(s.member_id == src.c.member_id)
        .values(
            last_visit_at=case((s.last_visit_at.is_(None), seen), (s.last_visit_at < seen, seen), else_=s.last_visit_at),
            product_views=s.product_views + src.c.views,
            cart_adds=s.cart_adds + src.c.carts,
            favorites=s.favorites + src.c.favs,
            shares=s.shares + src.c.shares,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def stage_expression(cfg: LifecycleConfig, now: dt.datetime) -> ColumnElement[str]:
    """The stage as a SQL CASE on ``last_order_at`` (portable: compares with bound timestamps)."""
    last = MemberStats.last_order_at
    return case(
        (last.is_(None), literal(STAGE_NEVER)),
        (last >= now - dt.timedelta(days=cfg.active_days), literal(STAGE_ACTIVE)),
        (last >= now - dt.timedelta(days=cfg.silent_days), literal(STAGE_SILENT)),
        (last >= now - dt.timedelta(days=cfg.sleeping_days), literal(STAGE_SLEEPING)),
        (last >= now - dt.timedelta(days=cfg.pre_churn_days), literal(STAGE_PRE_CHURN)),
        else_=literal(STAGE_CHURNED),
    )


def recompute_stages(
    session: Session, merchant_id: int, cfg: LifecycleConfig, now: dt.datetime, member_id: int | None = None
) -> int:
    """Set-based: record transitions (INSERT ... SELECT) then update the stages. Returns changes."""
    stage = stage_expression(cfg, now)
    where = [MemberStats.merchant_id == merchant_id, MemberStats.lifecycle_stage != stage]
    if member_id is not None:
        where.append(MemberStats.member_id == member_id)
    changed = select(
        MemberStats.merchant_id, MemberStats.member_id, MemberStats.lifecycle_stage, stage, literal(now, type_=StageTransition.at.type)
    ).where(*where)
    session.execute(
        insert(StageTransition).from_select(["merchant_id", "member_id", "from_stage", "to_stage", "at"], changed)
    )
    _record_stage_events(session, merchant_id, where, stage, now, first_too=member_id is not None)
    result = session.execute(
        update(MemberStats).where(*where).values(lifecycle_stage=stage, stage_changed_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _record_stage_events(
    session: Session, merchant_id: int, where: list[Any], stage: ColumnElement[str], now: dt.datetime, *,
    first_too: bool,
) -> None:
    """One ``stage_changed`` behaviour event (properties ``from`` / ``to``) per member whose stage
    moves, in ONE ``INSERT ... SELECT`` over the rows the transitions were just taken from (run
    before the stages are updated). The event id is the recompute's and the member's
    (``srv:stage:<now in µs>:<member id>``), so a second run of the same recompute writes none.

    ``first_too`` False (the merchant-wide recompute): a row whose stage was never set by a
    recompute (``stage_changed_at`` empty: stats created by the backfill or a rebuild, then
    given a stage from their order history) is an initial assignment, not an event; the first
    run after the feature is switched on would otherwise announce every member with an order.
    A new member's first payment goes through ``record_payment`` (``first_too``) and is
    announced, from ``never_purchased``."""
    from siyu.db.dialect import json_object
    from siyu.events import service as events_service

    s = MemberStats
    micros = (now - _EPOCH) // dt.timedelta(microseconds=1)
    ts = UTCDateTime()
    rows = select(
        literal(merchant_id), literal(f"srv:stage:{micros}:") + cast(s.member_id, String), literal("stage_changed"),
        s.member_id, literal("server"), literal(now, type_=ts), literal(now, type_=ts),
        json_object(session, {"from": s.lifecycle_stage, "to": stage}),
    ).where(*where, *([] if first_too else [s.stage_changed_at.is_not(None)]))
    events_service.record_server_events_from(session, rows)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def stage_counts(session: Session, merchant_id: int) -> dict[str, int]:
    stmt = (
        select(MemberStats.lifecycle_stage, func.count())
        .where(MemberStats.merchant_id == merchant_id)
        .group_by(MemberStats.lifecycle_stage)
    )
    return {stage: int(n) for stage, n in session.execute(stmt).all()}


def clear_non_buyer_scores(session: Session, merchant_id: int, columns: Collection[str]) -> int:
    """Empty ``columns`` (scores of buyers: RFM, predictions, super score) on the members who are
    no longer buyers (their paid orders were all refunded), so a segment or ranking does not keep
    reading last week's score. Returns the number of rows cleared."""
    s = MemberStats
    cols = [s.__table__.c[name] for name in columns]
    stmt = (
        update(s)
        .where(s.merchant_id == merchant_id, s.paid_orders == 0, or_(*(c.is_not(None) for c in cols)))
        .values({c.name: None for c in cols})
        .execution_options(synchronize_session=False)
    )
    return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


def rfm_tier_totals(session: Session, merchant_id: int) -> dict[str | None, tuple[int, int]]:
    """Buyers per RFM tier (None: not scored yet) with their net paid total in fen."""
    s = MemberStats
    stmt = (
        select(s.rfm_tier, func.count(), func.coalesce(func.sum(s.paid_total - s.refunded_total), 0))
        .where(s.merchant_id == merchant_id, s.paid_orders > 0)
        .group_by(s.rfm_tier)
    )
    return {tier: (int(n), int(total)) for tier, n, total in session.execute(stmt).all()}


def latest_prediction_model(session: Session, merchant_id: int) -> PredictionModel | None:
    stmt = select(PredictionModel).where(PredictionModel.merchant_id == merchant_id)
    return session.scalar(stmt.order_by(PredictionModel.fitted_at.desc(), PredictionModel.id.desc()).limit(1))


def prediction_totals(session: Session, merchant_id: int) -> tuple[int, float, int]:
    """Members with a prediction, their expected purchases in 90 days and predicted value (fen)."""
    s = MemberStats
    row = session.execute(
        select(func.count(s.p_alive), func.coalesce(func.sum(s.expected_purchases_90d), 0.0),
               func.coalesce(func.sum(s.predicted_clv), 0))
        .where(s.merchant_id == merchant_id, s.p_alive.is_not(None))
    ).one()
    return int(row[0]), float(row[1] or 0.0), int(row[2] or 0)


def top_super_users(session: Session, merchant_id: int, min_score: float, limit: int) -> tuple[int, list[Any]]:
    """How many members score at least ``min_score``, and the best ``limit`` of them with their nickname."""
    s = MemberStats
    where = (s.merchant_id == merchant_id, s.super_score >= min_score)
    total = int(session.scalar(select(func.count()).select_from(s).where(*where)) or 0)
    rows = session.execute(
        select(s.member_id, Member.nickname, s.super_score, s.paid_orders, s.paid_total - s.refunded_total,
               s.last_order_at)
        .join(Member, and_(Member.merchant_id == s.merchant_id, Member.id == s.member_id))
        .where(*where)
        .order_by(s.super_score.desc(), s.member_id)
        .limit(limit)
    ).all()
    return total, list(rows)


def snapshot_day(session: Session, merchant_id: int, day: dt.date) -> None:
    for stage, n in stage_counts(session, merchant_id).items():
        row = session.scalar(
            select(StageDaily).where(StageDaily.merchant_id == merchant_id, StageDaily.day == day, StageDaily.stage == stage)
        )
        if row is None:
            session.add(StageDaily(merchant_id=merchant_id, day=day, stage=stage, members=n))
        else:
            row.members = n


def stage_history(session: Session, merchant_id: int, since: dt.date) -> list[StageDaily]:
    stmt = select(StageDaily).where(StageDaily.merchant_id == merchant_id, StageDaily.day >= since)
    return list(session.scalars(stmt.order_by(StageDaily.day, StageDaily.stage)))


def transitions_for(session: Session, merchant_id: int, member_id: int) -> list[StageTransition]:
    stmt = select(StageTransition).where(
        StageTransition.merchant_id == merchant_id, StageTransition.member_id == member_id
    )
    return list(session.scalars(stmt.order_by(StageTransition.at, StageTransition.id)))


def backfill_rows(session: Session, merchant_id: int) -> int:
    """Create stats rows for members who have none yet (one INSERT ... SELECT ... WHERE NOT
    EXISTS ... ON CONFLICT DO NOTHING). Returns the rows created.

    Planned without nested loops: with statistics taken while the merchant had no stats rows,
    PostgreSQL chose a nested anti-join that scanned the table per member, including the rows
    the statement itself had just written — 150,000 members took 151 s (with a hash anti-join,
    about 1 s)."""
    with without_nested_loops(session):
        return _insert_missing_rows(session, merchant_id)


def rebuild_stats(session: Session, merchant_id: int, member_ids: Collection[int] | None = None) -> int:
    """Recompute the order-derived columns (``paid_orders``, ``paid_total``, ``first_order_at``,
    ``second_order_at``, ``last_order_at``) of these members from their orders, creating their
    missing stats rows first; ``None`` rebuilds every member of the merchant (after a bulk load).

    Set-based, a few statements per chunk of members whatever their orders:

    - the missing rows: ``INSERT ... SELECT FROM members ... ON CONFLICT DO NOTHING``;
    - the members with paid orders: ONE ``UPDATE member_stats ... FROM (<their paid orders
      grouped by member>)``, written only where a value differs;
    - the members without paid orders (any more): one ``UPDATE`` back to 0 / NULL, again only
      where a value differs.

    A chunk is 10,000 ids of a given list, or for the whole merchant a range of 50,000 members
    by id (its bounds read from the stats rows' unique index), so memory stays bounded at any
    scale. Nothing comes back to Python but the chunk bounds. Refunds, activity counters,
    stages and scores are left as they are. Returns the rows written.

    On PostgreSQL the statements are planned without nested loops (``db.dialect.
    without_nested_loops``): right after a bulk load the statistics still say the merchant has
    next to no orders, and a nested loop rescanning one side per row ran for minutes; hash joins
    are linear whatever the estimates.
    """
    with without_nested_loops(session):
        return _rebuild_stats(session, merchant_id, member_ids)


def _rebuild_stats(session: Session, merchant_id: int, member_ids: Collection[int] | None) -> int:
    s = MemberStats
    written = 0
    if member_ids is not None:
        ids = sorted(member_ids)
        for start in range(0, len(ids), _ID_CHUNK):
            in_chunk = _in_list(session, ids[start : start + _ID_CHUNK])
            _insert_missing_rows(session, merchant_id, in_chunk)
            written += _rebuild_order_columns(session, merchant_id, in_chunk)
        return written
    _insert_missing_rows(session, merchant_id)
    after: int | None = None
    while True:
        bound = select(s.member_id).where(s.merchant_id == merchant_id)
        if after is not None:
            bound = bound.where(s.member_id > after)
        upto = session.scalar(bound.order_by(s.member_id).offset(_RANGE_CHUNK - 1).limit(1))
        lo, hi = after, upto

        def in_range(column: Any, lo: int | None = lo, hi: int | None = hi) -> ColumnElement[bool]:
            return and_(column > lo if lo is not None else true(), column <= hi if hi is not None else true())

        written += _rebuild_order_columns(session, merchant_id, in_range)
        if upto is None:
            return written
        after = upto


def _rebuild_order_columns(
    session: Session, merchant_id: int, members: Callable[[Any], ColumnElement[bool]]
) -> int:
    """The two UPDATEs of ``rebuild_stats`` for the members that ``members(column)`` selects."""
    from siyu.orders import models as om

    o, s = om.Order, MemberStats
    # The status list as literals, as in ``audience.compiler``: the planner then matches the
    # predicate of the partial index of paid orders (``ix_orders_paid_member``) with generic
    # plans too, and reads the orders from it in (member, paid_at) order without a sort.
    paid = o.status.in_(bindparam("paid_states", list(om.PAID_STATUSES), expanding=True, literal_execute=True, unique=True))
    numbered = (
        select(
            o.member_id.label("member_id"),
            o.paid_at.label("paid_at"),
            (o.paid_amount - o.refunded_amount).label("net"),
            # The second purchase is the 2nd order by (paid_at, id); its paid_at is the 2nd
            # smallest paid_at whichever way ties go, so ordering by paid_at alone gives the same
            # value and lets the index's own order serve the window.
            func.row_number().over(partition_by=o.member_id, order_by=o.paid_at).label("n"),
        )
        .where(o.merchant_id == merchant_id, members(o.member_id), paid)
        .subquery()
    )
    grouped = (
        select(
            numbered.c.member_id,
            func.count().label("paid_orders"),
            func.coalesce(func.sum(numbered.c.net), 0).label("paid_total"),
            func.min(numbered.c.paid_at).label("first_at"),
            func.max(case((numbered.c.n == 2, numbered.c.paid_at))).label("second_at"),
            func.max(numbered.c.paid_at).label("last_at"),
        )
        .group_by(numbered.c.member_id)
        .subquery()
    )
    filled = session.execute(
        update(s)
        .where(
            s.merchant_id == merchant_id, members(s.member_id), s.member_id == grouped.c.member_id,
            or_(
                s.paid_orders != grouped.c.paid_orders, s.paid_total != grouped.c.paid_total,
                s.first_order_at.is_distinct_from(grouped.c.first_at),
                s.second_order_at.is_distinct_from(grouped.c.second_at),
                s.last_order_at.is_distinct_from(grouped.c.last_at),
            ),
        )
        .values(
            paid_orders=grouped.c.paid_orders, paid_total=grouped.c.paid_total, first_order_at=grouped.c.first_at,
            second_order_at=grouped.c.second_at, last_order_at=grouped.c.last_at,
        )
        .execution_options(synchronize_session=False)
    )
    # the member filter on the orders too: a hash anti-join then reads only these members' orders
    has_paid = select(o.id).where(
        o.merchant_id == merchant_id, members(o.member_id), o.member_id == s.member_id, paid
    ).exists()
    emptied = session.execute(
        update(s)
        .where(
            s.merchant_id == merchant_id, members(s.member_id),
            or_(
                s.paid_orders != 0, s.paid_total != 0, s.first_order_at.is_not(None),
                s.second_order_at.is_not(None), s.last_order_at.is_not(None),
            ),
            ~has_paid,
        )
        .values(paid_orders=0, paid_total=0, first_order_at=None, second_order_at=None, last_order_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(filled, "rowcount", 0) or 0) + int(getattr(emptied, "rowcount", 0) or 0)


def rebuild_activity(session: Session, merchant_id: int) -> int:
    """Recompute the event-derived columns (last visit, views, cart adds, favourites, shares) of
    every member from the stored events, in one grouped UPDATE ... FROM (after a bulk load that
    bypassed the ingestion hook). Members without events keep their row, reset to zero."""
    from siyu.events.models import Event

    def count_of(name: str) -> Any:
        return func.coalesce(func.sum(case((Event.name == name, 1), else_=0)), 0)

    per_member = (
        select(
            Event.member_id.label("member_id"),
            func.max(Event.occurred_at).label("last_seen"),
            count_of("product_view").label("views"),
            count_of("add_to_cart").label("carts"),
            count_of("favorite").label("favs"),
            count_of("share").label("shares"),
        )
        .where(Event.merchant_id == merchant_id, Event.member_id.is_not(None))
        .group_by(Event.member_id)
        .subquery()
    )
    s = MemberStats
    session.execute(
        update(s)
        .where(
            s.merchant_id == merchant_id,
            or_(s.last_visit_at.is_not(None), s.product_views != 0, s.cart_adds != 0, s.favorites != 0, s.shares != 0),
        )
        .values(last_visit_at=None, product_views=0, cart_adds=0, favorites=0, shares=0)
        .execution_options(synchronize_session=False)
    )
    result = session.execute(
        update(s)
        .where(s.merchant_id == merchant_id, s.member_id == per_member.c.member_id)
        .values(
            last_visit_at=per_member.c.last_seen, product_views=per_member.c.views, cart_adds=per_member.c.carts,
            favorites=per_member.c.favs, shares=per_member.c.shares,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
