"""Bargain queries. Every one filters on ``merchant_id``; helps and state moves are
conditional updates (the ``WHERE`` carries the rule, the row count says whether it happened)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from siyu.activities.repository import ActivityTables, rowcount
from siyu.bargains.models import (
    ACTIVE,
    EXPIRED,
    FLOOR_REACHED,
    ORDERED,
    Bargain,
    BargainActivity,
    BargainHelp,
    BargainMemberCounter,
)
from siyu.db.dialect import for_update
from siyu.orders.models import Order

TABLES = ActivityTables(
    activity=BargainActivity, child=Bargain, child_fk="activity_id", counter=BargainMemberCounter,
    counter_fk="activity_id", counter_value="started",
)

activity = TABLES.get
search_activities = TABLES.search
bargain_counts = TABLES.child_counts
search_bargains = TABLES.search_children
has_bargains = TABLES.has_children
delete_counters = TABLES.delete_counters


def bargain(session: Session, merchant_id: int, bargain_id: int, *, lock: bool = False) -> Bargain | None:
    stmt = select(Bargain).where(Bargain.merchant_id == merchant_id, Bargain.id == bargain_id)
    if lock:
        stmt = for_update(stmt, session)
    return session.scalar(stmt.execution_options(populate_existing=True))


def bargain_of_order(session: Session, merchant_id: int, order_id: int) -> Bargain | None:
    stmt = select(Bargain).where(Bargain.merchant_id == merchant_id, Bargain.order_id == order_id)
    return session.scalar(stmt.execution_options(populate_existing=True))


def helps(session: Session, merchant_id: int, bargain_id: int) -> list[BargainHelp]:
    stmt = select(BargainHelp).where(BargainHelp.merchant_id == merchant_id, BargainHelp.bargain_id == bargain_id)
    return list(session.scalars(stmt.order_by(BargainHelp.seq)))


def help_of(session: Session, merchant_id: int, bargain_id: int, helper_id: int) -> BargainHelp | None:
    stmt = select(BargainHelp).where(
        BargainHelp.merchant_id == merchant_id, BargainHelp.bargain_id == bargain_id,
        BargainHelp.helper_member_id == helper_id,
    )
    return session.scalar(stmt)


def has_paid_order(session: Session, merchant_id: int, member_id: int) -> bool:
    stmt = select(Order.id).where(
        Order.merchant_id == merchant_id, Order.member_id == member_id, Order.paid_at.is_not(None)
    ).limit(1)
    return session.scalar(stmt) is not None


def take_start(session: Session, merchant_id: int, activity_id: int, member_id: int, limit: int) -> bool:
    """``started += 1`` while below the member's limit."""
    return TABLES.take_counter(session, merchant_id, activity_id, member_id, 1, limit)


def take_help_slot(session: Session, merchant_id: int, bargain_id: int, now: dt.datetime) -> int | None:
    """``helped_count += 1`` on an active, unexpired bargain below H; the new count (the help's
    sequence number), or None. Concurrent helps never exceed H."""
    row = session.execute(
        update(Bargain)
        .where(
            Bargain.merchant_id == merchant_id,
            Bargain.id == bargain_id,
            Bargain.status == ACTIVE,
            Bargain.helped_count < Bargain.helpers_needed,
            Bargain.expires_at > now,
        )
        .values(helped_count=Bargain.helped_count + 1, updated_at=now)
        .returning(Bargain.helped_count, Bargain.helpers_needed)
        .execution_options(synchronize_session=False)
    ).first()
    return int(row[0]) if row else None


def add_cut(session: Session, merchant_id: int, bargain_id: int, amount: int, *, floor: bool, now: dt.datetime) -> None:
    values: dict[str, Any] = {"cut_total": Bargain.cut_total + amount, "updated_at": now}
    if floor:
        values.update(status=FLOOR_REACHED, floor_reached_at=now)
    session.execute(
        update(Bargain)
        .where(Bargain.merchant_id == merchant_id, Bargain.id == bargain_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def mark_ordered(session: Session, merchant_id: int, bargain_id: int, order_id: int, now: dt.datetime) -> bool:
    """active / floor_reached → ordered, once (``order_id IS NULL``)."""
    result = session.execute(
        update(Bargain)
        .where(
            Bargain.merchant_id == merchant_id,
            Bargain.id == bargain_id,
            Bargain.status.in_((ACTIVE, FLOOR_REACHED)),
            Bargain.order_id.is_(None),
            Bargain.expires_at > now,
        )
        .values(status=ORDERED, order_id=order_id, ordered_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def reopen(session: Session, merchant_id: int, order_id: int, now: dt.datetime) -> bool:
    """The bargain's order was cancelled: ordered → active / floor_reached again (expiry decides later)."""
    found = bargain_of_order(session, merchant_id, order_id)
    if found is None:
        return False
    back = FLOOR_REACHED if found.helped_count >= found.helpers_needed else ACTIVE
    result = session.execute(
        update(Bargain)
        .where(
            Bargain.merchant_id == merchant_id, Bargain.id == found.id, Bargain.status == ORDERED,
            Bargain.order_id == order_id,
        )
        .values(status=back, order_id=None, ordered_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def expire(session: Session, merchant_id: int, bargain_id: int, now: dt.datetime) -> bool:
    result = session.execute(
        update(Bargain)
        .where(
            Bargain.merchant_id == merchant_id,
            Bargain.id == bargain_id,
            Bargain.status.in_((ACTIVE, FLOOR_REACHED)),
            Bargain.expires_at <= now,
        )
        .values(status=EXPIRED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def due_bargains(session: Session, merchant_id: int, now: dt.datetime) -> list[int]:
    stmt = select(Bargain.id).where(
        Bargain.merchant_id == merchant_id,
        Bargain.status.in_((ACTIVE, FLOOR_REACHED)),
        Bargain.expires_at <= now,
    )
    return list(session.scalars(stmt.order_by(Bargain.id)))


def bargain_by_start_key(session: Session, merchant_id: int, member_id: int, key: str) -> Bargain | None:
    stmt = select(Bargain).where(
        Bargain.merchant_id == merchant_id, Bargain.member_id == member_id, Bargain.start_key == key
    )
    return session.scalar(stmt)



def help_figures(session: Session, merchant_id: int, activity_id: int) -> tuple[int, int]:
    """(helps, distinct helpers) of an activity's bargains."""
    h, b = BargainHelp, Bargain
    stmt = select(func.count(), func.count(func.distinct(h.helper_member_id))).select_from(h).join(
        b, (b.merchant_id == h.merchant_id) & (b.id == h.bargain_id)
    ).where(h.merchant_id == merchant_id, b.activity_id == activity_id)
    helps, helpers = session.execute(stmt).one()
    return int(helps), int(helpers)


def paid_order_figures(session: Session, merchant_id: int, activity_id: int) -> tuple[int, int, int, int]:
    """The bargains' paid orders (paid, shipped or completed): (orders, units, the bargain lines'
    payable net of refunds, what those lines were given off the sale price), fen."""
    from siyu.orders.models import PAID_STATUSES, OrderLine

    b, o, ln = Bargain, Order, OrderLine
    stmt = (
        select(
            func.count(func.distinct(o.id)), func.coalesce(func.sum(ln.quantity - ln.refunded_quantity), 0),
            func.coalesce(func.sum(ln.payable_amount - ln.refunded_amount), 0),
            func.coalesce(func.sum(ln.goods_amount - ln.payable_amount), 0),
        )
        .select_from(b)
        .join(o, (o.merchant_id == b.merchant_id) & (o.id == b.order_id))
        .join(ln, (ln.merchant_id == b.merchant_id) & (ln.order_id == b.order_id) & (ln.sku_id == b.sku_id))
        .where(b.merchant_id == merchant_id, b.activity_id == activity_id, o.status.in_(PAID_STATUSES))
    )
    orders, units, gmv, discount = session.execute(stmt).one()
    return int(orders), int(units), int(gmv), int(discount)
