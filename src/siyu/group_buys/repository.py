"""Group-buy queries. Every one filters on ``merchant_id``.

Seats and counters move only by conditional updates (no read before the write): the ``WHERE``
carries the rule (``filled < size``, ``status = 'pending'``...), and the row count says whether
the move happened. On PostgreSQL a second updater of the same row waits for the first to end
and re-evaluates the ``WHERE`` on the committed row; SQLite serialises writers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from siyu.activities.repository import ActivityTables, rowcount
from siyu.db.dialect import for_update
from siyu.group_buys.models import (
    CANCELLED,
    FAILED,
    OPEN,
    PAID,
    PENDING,
    REFUNDED,
    RELEASED,
    SUCCESS,
    TEAM_PENDING,
    GroupBuy,
    GroupBuyMemberCounter,
    GroupSeat,
    GroupTeam,
)

TABLES = ActivityTables(
    activity=GroupBuy, child=GroupTeam, child_fk="group_buy_id", counter=GroupBuyMemberCounter,
    counter_fk="group_buy_id", counter_value="units",
)

# -- activities --------------------------------------------------------------------------------------

group_buy = TABLES.get
search_group_buys = TABLES.search
team_counts = TABLES.child_counts
has_teams = TABLES.has_children
delete_counters = TABLES.delete_counters


# -- teams -------------------------------------------------------------------------------------------


def team(session: Session, merchant_id: int, team_id: int, *, lock: bool = False) -> GroupTeam | None:
    stmt = select(GroupTeam).where(GroupTeam.merchant_id == merchant_id, GroupTeam.id == team_id)
    if lock:
        stmt = for_update(stmt, session)
    return session.scalar(stmt.execution_options(populate_existing=True))


search_teams = TABLES.search_children


def joinable_teams(
    session: Session, merchant_id: int, group_buy_id: int, now: dt.datetime, limit: int = 10
) -> list[GroupTeam]:
    stmt = select(GroupTeam).where(
        GroupTeam.merchant_id == merchant_id,
        GroupTeam.group_buy_id == group_buy_id,
        GroupTeam.status == OPEN,
        GroupTeam.filled < GroupTeam.size,
        GroupTeam.expires_at > now,
    )
    return list(session.scalars(stmt.order_by(GroupTeam.expires_at, GroupTeam.id).limit(limit)))


def take_seat(session: Session, merchant_id: int, team_id: int, now: dt.datetime) -> int | None:
    """``filled += 1`` while the team is open, unexpired and not full; the new ``filled``
    (the seat number), or None when refused. The one guard of the last seat."""
    row = session.execute(
        update(GroupTeam)
        .where(
            GroupTeam.merchant_id == merchant_id,
            GroupTeam.id == team_id,
            GroupTeam.status == OPEN,
            GroupTeam.filled < GroupTeam.size,
            GroupTeam.expires_at > now,
        )
        .values(filled=GroupTeam.filled + 1, updated_at=now)
        .returning(GroupTeam.filled)
        .execution_options(synchronize_session=False)
    ).first()
    return int(row[0]) if row else None


def give_back_seat(session: Session, merchant_id: int, team_id: int, now: dt.datetime) -> None:
    session.execute(
        update(GroupTeam)
        .where(GroupTeam.merchant_id == merchant_id, GroupTeam.id == team_id, GroupTeam.filled > 0)
        .values(filled=GroupTeam.filled - 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def count_paid_seat(session: Session, merchant_id: int, team_id: int, now: dt.datetime) -> tuple[int, int] | None:
    """``paid_count += 1`` on an open team; ``(paid_count, size)`` after, or None."""
    row = session.execute(
        update(GroupTeam)
        .where(
            GroupTeam.merchant_id == merchant_id,
            GroupTeam.id == team_id,
            GroupTeam.status == OPEN,
            GroupTeam.paid_count < GroupTeam.size,
        )
        .values(paid_count=GroupTeam.paid_count + 1, updated_at=now)
        .returning(GroupTeam.paid_count, GroupTeam.size)
        .execution_options(synchronize_session=False)
    ).first()
    return (int(row[0]), int(row[1])) if row else None


def open_team(session: Session, merchant_id: int, team_id: int, expires_at: dt.datetime, now: dt.datetime) -> bool:
    """pending → open, once, on the leader's payment: the leader's seat counts as paid and the
    validity starts (``expires_at``). A joiner's ``take_seat`` waits for this row and then sees it open."""
    result = session.execute(
        update(GroupTeam)
        .where(GroupTeam.merchant_id == merchant_id, GroupTeam.id == team_id, GroupTeam.status == TEAM_PENDING)
        .values(status=OPEN, expires_at=expires_at, paid_count=GroupTeam.paid_count + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def cancel_team(session: Session, merchant_id: int, team_id: int, now: dt.datetime) -> bool:
    """pending → cancelled, once: the leader's order went unpaid, the team never opened."""
    result = session.execute(
        update(GroupTeam)
        .where(GroupTeam.merchant_id == merchant_id, GroupTeam.id == team_id, GroupTeam.status == TEAM_PENDING)
        .values(status=CANCELLED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def finish_team(
    session: Session, merchant_id: int, team_id: int, to_status: str, now: dt.datetime, *, virtual: bool = False
) -> bool:
    """open → success / failed, once."""
    values: dict[str, Any] = {"status": to_status, "updated_at": now}
    if to_status == SUCCESS:
        values.update(succeeded_at=now, virtual=virtual)
    else:
        assert to_status == FAILED
        values["failed_at"] = now
    result = session.execute(
        update(GroupTeam)
        .where(GroupTeam.merchant_id == merchant_id, GroupTeam.id == team_id, GroupTeam.status == OPEN)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def cap_open_teams(
    session: Session, merchant_id: int, group_buy_id: int, ends_at: dt.datetime, now: dt.datetime
) -> list[int]:
    """Open (and not yet open) teams of the activity whose deadline is after ``ends_at`` get
    ``ends_at``; their ids."""
    rows = session.execute(
        update(GroupTeam)
        .where(
            GroupTeam.merchant_id == merchant_id,
            GroupTeam.group_buy_id == group_buy_id,
            GroupTeam.status.in_((OPEN, TEAM_PENDING)),
            GroupTeam.expires_at > ends_at,
        )
        .values(expires_at=ends_at, updated_at=now)
        .returning(GroupTeam.id)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(int(r[0]) for r in rows)


def due_teams(session: Session, merchant_id: int, now: dt.datetime) -> list[int]:
    stmt = select(GroupTeam.id).where(
        GroupTeam.merchant_id == merchant_id, GroupTeam.status.in_((OPEN, TEAM_PENDING)), GroupTeam.expires_at <= now
    )
    return list(session.scalars(stmt.order_by(GroupTeam.id)))


# -- seats -------------------------------------------------------------------------------------------


def seat_of_order(session: Session, merchant_id: int, order_id: int) -> GroupSeat | None:
    stmt = select(GroupSeat).where(GroupSeat.merchant_id == merchant_id, GroupSeat.order_id == order_id)
    return session.scalar(stmt.execution_options(populate_existing=True))


def seats(session: Session, merchant_id: int, team_ids: Iterable[int]) -> list[GroupSeat]:
    ids = sorted(set(team_ids))
    if not ids:
        return []
    stmt = select(GroupSeat).where(GroupSeat.merchant_id == merchant_id, GroupSeat.team_id.in_(ids))
    return list(session.scalars(stmt.order_by(GroupSeat.team_id, GroupSeat.id).execution_options(populate_existing=True)))


def held_seat(session: Session, merchant_id: int, team_id: int, member_id: int) -> GroupSeat | None:
    stmt = select(GroupSeat).where(
        GroupSeat.merchant_id == merchant_id, GroupSeat.team_id == team_id, GroupSeat.holder_member_id == member_id
    )
    return session.scalar(stmt)


def free_seat_units(session: Session, merchant_id: int, seat_id: int, qty: int) -> bool:
    """``units_freed += qty`` while it stays within the seat's quantity."""
    result = session.execute(
        update(GroupSeat)
        .where(
            GroupSeat.merchant_id == merchant_id, GroupSeat.id == seat_id,
            GroupSeat.units_freed + qty <= GroupSeat.quantity,
        )
        .values(units_freed=GroupSeat.units_freed + qty)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def move_seat(
    session: Session, merchant_id: int, seat_id: int, from_status: str, to_status: str, now: dt.datetime,
    **values: Any,
) -> bool:
    """One conditional step of a seat (``pending → paid``, ``pending → released``, ``paid → refunded``)."""
    extra: dict[str, Any] = dict(values)
    if to_status == PAID:
        extra["paid_at"] = now
    if to_status in (RELEASED, REFUNDED):
        extra.update(released_at=now, holder_member_id=None)
    result = session.execute(
        update(GroupSeat)
        .where(GroupSeat.merchant_id == merchant_id, GroupSeat.id == seat_id, GroupSeat.status == from_status)
        .values(status=to_status, updated_at=now, **extra)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


# -- per-member counter ------------------------------------------------------------------------------


def take_units(session: Session, merchant_id: int, group_buy_id: int, member_id: int, qty: int, limit: int) -> bool:
    return TABLES.take_counter(session, merchant_id, group_buy_id, member_id, qty, limit)


give_back_units = TABLES.give_back_counter
member_units = TABLES.counter_value_of


__all__ = ["PENDING"]


def seat(session: Session, merchant_id: int, seat_id: int, *, lock: bool = False) -> GroupSeat | None:
    stmt = select(GroupSeat).where(GroupSeat.merchant_id == merchant_id, GroupSeat.id == seat_id)
    if lock:
        stmt = for_update(stmt, session)
    return session.scalar(stmt.execution_options(populate_existing=True))


def uncount_paid_seat(session: Session, merchant_id: int, team_id: int, now: dt.datetime) -> None:
    session.execute(
        update(GroupTeam)
        .where(GroupTeam.merchant_id == merchant_id, GroupTeam.id == team_id, GroupTeam.paid_count > 0)
        .values(paid_count=GroupTeam.paid_count - 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )




def virtual_successes(session: Session, merchant_id: int, group_buy_id: int) -> int:
    """Teams of a group buy that succeeded by virtual success."""
    t = GroupTeam
    stmt = select(func.count()).where(
        t.merchant_id == merchant_id, t.group_buy_id == group_buy_id, t.status == SUCCESS, t.virtual.is_(True)
    )
    return int(session.scalar(stmt) or 0)


def seat_figures(session: Session, merchant_id: int, group_buy_id: int) -> dict[str, tuple[int, int, int]]:
    """Seats of a group buy by status: (seats, units, amount in fen)."""
    s = GroupSeat
    stmt = (
        select(s.status, func.count(), func.coalesce(func.sum(s.quantity), 0), func.coalesce(func.sum(s.amount), 0))
        .where(s.merchant_id == merchant_id, s.group_buy_id == group_buy_id)
        .group_by(s.status)
    )
    return {str(status): (int(n), int(units), int(amount)) for status, n, units, amount in session.execute(stmt).all()}


def paid_seat_discount(session: Session, merchant_id: int, group_buy_id: int) -> int:
    """What the paid seats' order lines were given off the sale price (fen)."""
    from siyu.orders.models import OrderLine

    s, ln = GroupSeat, OrderLine
    stmt = select(func.coalesce(func.sum(ln.goods_amount - ln.payable_amount), 0)).select_from(s).join(
        ln, (ln.merchant_id == s.merchant_id) & (ln.order_id == s.order_id) & (ln.sku_id == s.sku_id)
    ).where(s.merchant_id == merchant_id, s.group_buy_id == group_buy_id, s.status == PAID)
    return int(session.scalar(stmt) or 0)
