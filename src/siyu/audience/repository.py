"""Queries on member statistics, stage transitions and audience settings."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Integer, and_, case, func, insert, literal, or_, select, update
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
    StageDaily,
    StageTransition,
)
from siyu.audience.schemas import LifecycleConfig
from siyu.db.bulk import in_ints, json_rows
from siyu.db.dialect import bulk_update, insert_ignore, insert_ignore_rows
from siyu.db.types import UTCDateTime
from siyu.members.models import Member


def settings_row(session: Session, merchant_id: int) -> AudienceSettings | None:
    return session.scalar(select(AudienceSettings).where(AudienceSettings.merchant_id == merchant_id))


def stats_row(session: Session, merchant_id: int, member_id: int) -> MemberStats | None:
    return session.scalar(
        select(MemberStats).where(MemberStats.merchant_id == merchant_id, MemberStats.member_id == member_id)
    )


def ensure_rows(session: Session, merchant_id: int, member_ids: set[int]) -> None:
    """Create missing stats rows (idempotent, safe under concurrency)."""
    if not member_ids:
        return
    existing = set(
        session.scalars(
            select(MemberStats.member_id).where(
                MemberStats.merchant_id == merchant_id, in_ints(session, MemberStats.member_id, member_ids)
            )
        )
    )
    missing = member_ids - existing
    if not missing:
        return
    registered = dict(
        session.execute(
            select(Member.id, Member.registered_at).where(
                Member.merchant_id == merchant_id, in_ints(session, Member.id, missing)
            )
        ).all()
    )
    rows = [
        {
            "merchant_id": merchant_id, "member_id": member_id, "registered_at": registered.get(member_id),
            "paid_orders": 0, "paid_total": 0, "refunded_total": 0, "product_views": 0, "cart_adds": 0,
            "favorites": 0, "shares": 0, "lifecycle_stage": STAGE_NEVER,
        }
        for member_id in sorted(missing)
    ]
    for start in range(0, len(rows), 2000):
        insert_ignore_rows(session, MemberStats.__table__, rows[start : start + 2000], ["merchant_id", "member_id"], "id")  # type: ignore[arg-type]


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
    result = session.execute(
        update(MemberStats).where(*where).values(lifecycle_stage=stage, stage_changed_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def stage_counts(session: Session, merchant_id: int) -> dict[str, int]:
    stmt = (
        select(MemberStats.lifecycle_stage, func.count())
        .where(MemberStats.merchant_id == merchant_id)
        .group_by(MemberStats.lifecycle_stage)
    )
    return {stage: int(n) for stage, n in session.execute(stmt).all()}


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
    """Create stats rows for members who have none yet (INSERT ... SELECT ... WHERE NOT EXISTS)."""
    missing = select(
        Member.merchant_id, Member.id, Member.registered_at, literal(STAGE_NEVER),
        literal(0), literal(0), literal(0), literal(0), literal(0), literal(0), literal(0),
    ).where(
        Member.merchant_id == merchant_id,
        ~select(MemberStats.id)
        .where(MemberStats.merchant_id == merchant_id, MemberStats.member_id == Member.id)
        .exists(),
    )
    result = session.execute(
        insert(MemberStats).from_select(
            ["merchant_id", "member_id", "registered_at", "lifecycle_stage", "paid_orders", "paid_total",
             "refunded_total", "product_views", "cart_adds", "favorites", "shares"],
            missing,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def rebuild_stats(session: Session, merchant_id: int, member_ids: list[int]) -> None:
    """Recompute the order-derived columns of these members from their orders (after an import).

    One grouped pass over the members' paid orders (a window function numbers each member's
    orders to find the second), then one bulk update; members without paid orders are reset.
    """
    from siyu.orders import models as om

    o = om.Order
    paid = (om.PAID, om.SHIPPED, om.COMPLETED)
    for start in range(0, len(member_ids), 2000):
        chunk = member_ids[start : start + 2000]
        ensure_rows(session, merchant_id, set(chunk))
        numbered = (
            select(
                o.member_id.label("member_id"),
                o.paid_at.label("paid_at"),
                (o.paid_amount - o.refunded_amount).label("net"),
                func.row_number().over(partition_by=o.member_id, order_by=(o.paid_at, o.id)).label("n"),
            )
            .where(o.merchant_id == merchant_id, o.member_id.in_(chunk), o.status.in_(paid))
            .subquery()
        )
        grouped = select(
            numbered.c.member_id,
            func.count(),
            func.coalesce(func.sum(numbered.c.net), 0),
            func.min(numbered.c.paid_at),
            func.max(case((numbered.c.n == 2, numbered.c.paid_at))),
            func.max(numbered.c.paid_at),
        ).group_by(numbered.c.member_id)
        found = {
            int(mid): {"paid_orders": int(n), "paid_total": int(total), "first_order_at": first,
                       "second_order_at": second, "last_order_at": last}
            for mid, n, total, first, second, last in session.execute(grouped)
        }
        empty = {"paid_orders": 0, "paid_total": 0, "first_order_at": None, "second_order_at": None, "last_order_at": None}
        rows = [{"merchant_id": merchant_id, "member_id": mid, **found.get(mid, empty)} for mid in chunk]
        bulk_update(session, MemberStats.__table__, ["merchant_id", "member_id"], rows)  # type: ignore[arg-type]


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
