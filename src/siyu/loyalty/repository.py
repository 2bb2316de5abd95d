"""Loyalty queries. Every one filters on ``merchant_id``.

Balances move only through the conditional updates here (``balance >= n`` in the WHERE), which
also take the account's row lock on PostgreSQL: the account row serialises everything that
touches a member's points (lots included) for the rest of the transaction.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence

from sqlalchemy import Table, bindparam, extract, func, select, update
from sqlalchemy.orm import Session

from siyu.catalog.models import Product, Sku
from siyu.db.dialect import for_update, insert_ignore
from siyu.loyalty.models import (
    CARD_ACTIVE,
    CARD_EXPIRED,
    CardPlan,
    CheckIn,
    GrowthEntry,
    Level,
    LevelHistory,
    LoyaltySettings,
    MemberCard,
    MemberLoyalty,
    OrderPoints,
    PendingReward,
    PointsAccount,
    PointsEntry,
    PointsLot,
    PointsLotUse,
    TaskCompletion,
    TaskCounter,
)
from siyu.orders.models import PAID_STATUSES, PENDING_PAYMENT, Order, OrderLine

# -- settings ---------------------------------------------------------------------------------------


def settings_row(session: Session, merchant_id: int) -> LoyaltySettings | None:
    return session.scalar(select(LoyaltySettings).where(LoyaltySettings.merchant_id == merchant_id))


# -- points accounts ------------------------------------------------------------------------------


def ensure_account(session: Session, merchant_id: int, member_id: int) -> None:
    insert_ignore(
        session, PointsAccount.__table__,  # type: ignore[arg-type]
        {"merchant_id": merchant_id, "member_id": member_id, "balance": 0, "earned_total": 0, "spent_total": 0,
         "updated_at": dt.datetime.now(dt.UTC)},
        ["merchant_id", "member_id"],
    )


def account(session: Session, merchant_id: int, member_id: int) -> PointsAccount | None:
    return session.scalar(
        select(PointsAccount).where(PointsAccount.merchant_id == merchant_id, PointsAccount.member_id == member_id)
    )


def credit(session: Session, merchant_id: int, member_id: int, points: int, *, earned: int, unspent: int = 0) -> int:
    """balance += points (earned_total += earned, spent_total -= unspent); the new balance. Takes the row lock."""
    stmt = (
        update(PointsAccount)
        .where(PointsAccount.merchant_id == merchant_id, PointsAccount.member_id == member_id)
        .values(balance=PointsAccount.balance + points, earned_total=PointsAccount.earned_total + earned,
                spent_total=PointsAccount.spent_total - unspent, updated_at=dt.datetime.now(dt.UTC))
        .returning(PointsAccount.balance)
    )
    new = session.execute(stmt).scalar_one_or_none()
    if new is None:
        ensure_account(session, merchant_id, member_id)
        new = session.execute(stmt).scalar_one()
    return int(new)


_ACCOUNTS: Table = PointsAccount.__table__  # type: ignore[assignment]
# Built once: the spend hot path runs it thousands of times a second (a Core statement with bind
# parameters, not an ORM bulk update rebuilt and evaluated against the identity map each call).
_DEBIT = (
    update(_ACCOUNTS)
    .where(
        _ACCOUNTS.c.merchant_id == bindparam("m"), _ACCOUNTS.c.member_id == bindparam("member"),
        _ACCOUNTS.c.balance >= bindparam("points"),
    )
    .values(balance=_ACCOUNTS.c.balance - bindparam("points"), spent_total=_ACCOUNTS.c.spent_total + bindparam("spent"),
            earned_total=_ACCOUNTS.c.earned_total - bindparam("unearned"), updated_at=bindparam("now"))
    .returning(_ACCOUNTS.c.id, _ACCOUNTS.c.balance)
)


def debit(
    session: Session, merchant_id: int, member_id: int, points: int, *, spent: int = 0, unearned: int = 0
) -> int | None:
    """balance -= points only if the balance covers it; the new balance, or None when it does not.

    A copy of the account loaded in the session is expired (it reloads on next access)."""
    session.flush()  # as an ORM statement would autoflush
    row = session.connection().execute(_DEBIT, {
        "m": merchant_id, "member": member_id, "points": points, "spent": spent, "unearned": unearned,
        "now": dt.datetime.now(dt.UTC),
    }).first()
    if row is None:
        return None
    loaded = session.identity_map.get(session.identity_key(PointsAccount, (row[0],)))
    if loaded is not None:
        session.expire(loaded)
    return int(row[1])


def lock_account(session: Session, merchant_id: int, member_id: int) -> PointsAccount:
    ensure_account(session, merchant_id, member_id)
    stmt = for_update(
        select(PointsAccount).where(PointsAccount.merchant_id == merchant_id, PointsAccount.member_id == member_id),
        session,
    ).execution_options(populate_existing=True)
    return session.scalars(stmt).one()


# -- entries and lots -------------------------------------------------------------------------------


def entry_by_key(session: Session, merchant_id: int, key: str) -> PointsEntry | None:
    return session.scalar(
        select(PointsEntry).where(PointsEntry.merchant_id == merchant_id, PointsEntry.idempotency_key == key)
    )


def entry(session: Session, merchant_id: int, entry_id: int) -> PointsEntry | None:
    return session.scalar(select(PointsEntry).where(PointsEntry.merchant_id == merchant_id, PointsEntry.id == entry_id))


def statement(
    session: Session, merchant_id: int, member_id: int, *, before: int | None, limit: int
) -> list[PointsEntry]:
    """Newest first, keyset on ``id`` (index ``(merchant_id, member_id, id)``)."""
    stmt = select(PointsEntry).where(PointsEntry.merchant_id == merchant_id, PointsEntry.member_id == member_id)
    if before is not None:
        stmt = stmt.where(PointsEntry.id < before)
    return list(session.scalars(stmt.order_by(PointsEntry.id.desc()).limit(limit)))


def entries_sum(session: Session, merchant_id: int, member_id: int) -> int:
    return int(
        session.scalar(
            select(func.coalesce(func.sum(PointsEntry.delta), 0)).where(
                PointsEntry.merchant_id == merchant_id, PointsEntry.member_id == member_id
            )
        )
        or 0
    )


def open_lots(session: Session, merchant_id: int, member_id: int, limit: int | None = None) -> list[PointsLot]:
    """Lots with points left, soonest expiry first (never-expiring last), then oldest."""
    stmt = (
        select(PointsLot)
        .where(PointsLot.merchant_id == merchant_id, PointsLot.member_id == member_id, PointsLot.remaining > 0,
               PointsLot.expired_at.is_(None))
        .order_by(PointsLot.expires_at.is_(None), PointsLot.expires_at, PointsLot.id)
        .execution_options(populate_existing=True)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def lot(session: Session, merchant_id: int, lot_id: int) -> PointsLot | None:
    """Always the row as stored now (``populate_existing``): on PostgreSQL spends move lots with
    statements outside the ORM, so a copy loaded earlier in the session may be stale."""
    return session.scalar(
        select(PointsLot).where(PointsLot.merchant_id == merchant_id, PointsLot.id == lot_id)
        .execution_options(populate_existing=True)
    )


def set_lot_expiry(session: Session, merchant_id: int, entry_id: int, expires_at: dt.datetime | None) -> None:
    session.execute(
        update(PointsLot).where(PointsLot.merchant_id == merchant_id, PointsLot.entry_id == entry_id)
        .values(expires_at=expires_at)
    )


def lot_of_entry(session: Session, merchant_id: int, entry_id: int) -> PointsLot | None:
    return session.scalar(
        select(PointsLot).where(PointsLot.merchant_id == merchant_id, PointsLot.entry_id == entry_id)
        .execution_options(populate_existing=True)
    )


def lot_uses(session: Session, merchant_id: int, entry_id: int) -> list[PointsLotUse]:
    return list(
        session.scalars(
            select(PointsLotUse)
            .where(PointsLotUse.merchant_id == merchant_id, PointsLotUse.entry_id == entry_id)
            .order_by(PointsLotUse.id)
        )
    )


def due_lots(session: Session, merchant_id: int, now: dt.datetime, limit: int = 500) -> list[PointsLot]:
    return list(
        session.scalars(
            select(PointsLot)
            .where(PointsLot.merchant_id == merchant_id, PointsLot.expires_at <= now, PointsLot.remaining > 0,
                   PointsLot.expired_at.is_(None))
            .order_by(PointsLot.expires_at, PointsLot.id)
            .limit(limit)
            .execution_options(populate_existing=True)
        )
    )


def lots_to_notify(session: Session, merchant_id: int, until: dt.datetime, limit: int = 500) -> list[PointsLot]:
    return list(
        session.scalars(
            select(PointsLot)
            .where(PointsLot.merchant_id == merchant_id, PointsLot.expires_at <= until, PointsLot.remaining > 0,
                   PointsLot.expired_at.is_(None), PointsLot.notified_at.is_(None))
            .order_by(PointsLot.expires_at, PointsLot.id)
            .limit(limit)
            .execution_options(populate_existing=True)
        )
    )


def mark_notified(session: Session, merchant_id: int, lot_id: int, now: dt.datetime) -> bool:
    result = session.execute(
        update(PointsLot)
        .where(PointsLot.merchant_id == merchant_id, PointsLot.id == lot_id, PointsLot.notified_at.is_(None))
        .values(notified_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


def expiring_points(session: Session, merchant_id: int, member_id: int, until: dt.datetime) -> tuple[int, dt.datetime | None]:
    row = session.execute(
        select(func.coalesce(func.sum(PointsLot.remaining), 0), func.min(PointsLot.expires_at)).where(
            PointsLot.merchant_id == merchant_id, PointsLot.member_id == member_id, PointsLot.remaining > 0,
            PointsLot.expired_at.is_(None), PointsLot.expires_at <= until,
        )
    ).one()
    return int(row[0] or 0), row[1]


def next_expiry(session: Session, merchant_id: int, member_id: int) -> dt.datetime | None:
    return session.scalar(
        select(func.min(PointsLot.expires_at)).where(
            PointsLot.merchant_id == merchant_id, PointsLot.member_id == member_id, PointsLot.remaining > 0,
            PointsLot.expired_at.is_(None),
        )
    )


# -- orders ----------------------------------------------------------------------------------------


def order_points(session: Session, merchant_id: int, order_id: int, *, lock: bool = False) -> OrderPoints | None:
    stmt = select(OrderPoints).where(OrderPoints.merchant_id == merchant_id, OrderPoints.order_id == order_id)
    if lock:
        stmt = for_update(stmt, session).execution_options(populate_existing=True)
    return session.scalar(stmt)


def ensure_order_points(session: Session, merchant_id: int, order_id: int, member_id: int) -> OrderPoints:
    insert_ignore(
        session, OrderPoints.__table__,  # type: ignore[arg-type]
        {"merchant_id": merchant_id, "order_id": order_id, "member_id": member_id, "spent": 0, "spent_returned": 0,
         "earned": 0, "earn_reversed": 0, "growth": 0, "growth_reversed": 0, "paid_counted": False, "paid_amount": 0,
         "refunded_amount": 0},
        ["merchant_id", "order_id"],
    )
    found = order_points(session, merchant_id, order_id, lock=True)
    assert found is not None
    return found


# -- member state, growth, levels ------------------------------------------------------------------


def member_state(session: Session, merchant_id: int, member_id: int, *, lock: bool = False) -> MemberLoyalty:
    """The member's loyalty row (created on first use). ``lock=True`` locks the points account
    first: every path takes the account lock before the member-state lock, so two paths
    touching one member can never deadlock."""
    if lock:
        lock_account(session, merchant_id, member_id)
    if lock or member_state_or_none(session, merchant_id, member_id) is None:
        insert_ignore(
            session, MemberLoyalty.__table__,  # type: ignore[arg-type]
            {"merchant_id": merchant_id, "member_id": member_id, "growth": 0, "paid_spend": 0, "paid_orders": 0,
             "updated_at": dt.datetime.now(dt.UTC)},
            ["merchant_id", "member_id"],
        )
    stmt = select(MemberLoyalty).where(MemberLoyalty.merchant_id == merchant_id, MemberLoyalty.member_id == member_id)
    if lock:
        stmt = for_update(stmt, session)
    return session.scalars(stmt.execution_options(populate_existing=True)).one()


def member_state_or_none(session: Session, merchant_id: int, member_id: int) -> MemberLoyalty | None:
    return session.scalar(
        select(MemberLoyalty).where(MemberLoyalty.merchant_id == merchant_id, MemberLoyalty.member_id == member_id)
    )


def growth_entry_by_key(session: Session, merchant_id: int, key: str) -> GrowthEntry | None:
    return session.scalar(
        select(GrowthEntry).where(GrowthEntry.merchant_id == merchant_id, GrowthEntry.idempotency_key == key)
    )


def growth_since(session: Session, merchant_id: int, member_id: int, since: dt.datetime) -> int:
    return int(
        session.scalar(
            select(func.coalesce(func.sum(GrowthEntry.delta), 0)).where(
                GrowthEntry.merchant_id == merchant_id, GrowthEntry.member_id == member_id,
                GrowthEntry.created_at >= since,
            )
        )
        or 0
    )


def levels(session: Session, merchant_id: int) -> list[Level]:
    return list(session.scalars(select(Level).where(Level.merchant_id == merchant_id).order_by(Level.rank)))


def level(session: Session, merchant_id: int, level_id: int) -> Level | None:
    return session.scalar(select(Level).where(Level.merchant_id == merchant_id, Level.id == level_id))


def level_users(session: Session, merchant_id: int, level_id: int, now: dt.datetime) -> tuple[int, int, int]:
    """(members holding the level as their rules level, members holding it through an active,
    unexpired card, card plans granting it)."""
    holders = session.scalar(
        select(func.count()).select_from(MemberLoyalty)
        .where(MemberLoyalty.merchant_id == merchant_id, MemberLoyalty.level_id == level_id)
    ) or 0
    carded = session.scalar(
        select(func.count(func.distinct(MemberCard.member_id)))
        .where(MemberCard.merchant_id == merchant_id, MemberCard.level_id == level_id,
               MemberCard.status == CARD_ACTIVE, MemberCard.ends_at > now)
    ) or 0
    plans = session.scalar(
        select(func.count()).select_from(CardPlan).where(CardPlan.merchant_id == merchant_id, CardPlan.level_id == level_id)
    ) or 0
    return holders, carded, plans


def level_history(session: Session, merchant_id: int, member_id: int, limit: int = 50) -> list[LevelHistory]:
    return list(
        session.scalars(
            select(LevelHistory)
            .where(LevelHistory.merchant_id == merchant_id, LevelHistory.member_id == member_id)
            .order_by(LevelHistory.id.desc())
            .limit(limit)
        )
    )


def members_due_review(session: Session, merchant_id: int, before: dt.datetime, limit: int = 500) -> list[MemberLoyalty]:
    """Members holding a rules level whose last review (or reaching it) is a year old."""
    last = func.coalesce(MemberLoyalty.level_reviewed_at, MemberLoyalty.level_since)
    return list(
        session.scalars(
            select(MemberLoyalty)
            .where(MemberLoyalty.merchant_id == merchant_id, MemberLoyalty.level_id.is_not(None), last <= before)
            .order_by(MemberLoyalty.id)
            .limit(limit)
        )
    )


def members_with_birthday(session: Session, merchant_id: int, day: dt.date) -> list[tuple[int, int | None]]:
    """(member_id, rules level_id) of members whose birthday is ``day`` (month and day); on 28
    February of a year without a 29th, also those born on 29 February."""
    from sqlalchemy import ColumnElement, or_

    from siyu.members.models import Member

    month, dom = extract("month", Member.birthday), extract("day", Member.birthday)
    match: ColumnElement[bool] = (month == day.month) & (dom == day.day)
    if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
        match = or_(match, (month == 2) & (dom == 29))
    stmt = (
        select(Member.id, MemberLoyalty.level_id)
        .join(MemberLoyalty, (MemberLoyalty.merchant_id == Member.merchant_id) & (MemberLoyalty.member_id == Member.id))
        .where(Member.merchant_id == merchant_id, Member.birthday.is_not(None), match)
    )
    return [(int(a), b) for a, b in session.execute(stmt).all()]


# -- tasks, check-in --------------------------------------------------------------------------------


def bump_task_counter(session: Session, merchant_id: int, member_id: int, task: str, day: dt.date, cap: int) -> bool:
    """count += 1 only while below ``cap`` (conditional update); False when the cap is reached."""
    insert_ignore(
        session, TaskCounter.__table__,  # type: ignore[arg-type]
        {"merchant_id": merchant_id, "member_id": member_id, "task": task, "day": day, "count": 0},
        ["merchant_id", "member_id", "task", "day"],
    )
    result = session.execute(
        update(TaskCounter)
        .where(TaskCounter.merchant_id == merchant_id, TaskCounter.member_id == member_id, TaskCounter.task == task,
               TaskCounter.day == day, TaskCounter.count < cap)
        .values(count=TaskCounter.count + 1)
    )
    return bool(getattr(result, "rowcount", 0))


def claim_task(session: Session, merchant_id: int, member_id: int, key: str, now: dt.datetime) -> bool:
    """Insert a task report's claim (``ON CONFLICT DO NOTHING``); False when ``key`` is taken,
    by a committed report or by a parallel one (PostgreSQL: this waits on the unique index until
    that one commits — or rolls back, and then this one claims it)."""
    return insert_ignore(
        session, TaskCompletion.__table__,  # type: ignore[arg-type]
        {"merchant_id": merchant_id, "member_id": member_id, "idempotency_key": key, "created_at": now},
        ["merchant_id", "idempotency_key"],
    )


def check_in(session: Session, merchant_id: int, member_id: int, day: dt.date) -> CheckIn | None:
    return session.scalar(
        select(CheckIn).where(CheckIn.merchant_id == merchant_id, CheckIn.member_id == member_id, CheckIn.day == day)
    )


def check_in_count(session: Session, merchant_id: int, member_id: int) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(CheckIn).where(CheckIn.merchant_id == merchant_id,
                                                             CheckIn.member_id == member_id)
        )
        or 0
    )


def check_ins_between(session: Session, merchant_id: int, member_id: int, first: dt.date, last: dt.date) -> list[CheckIn]:
    return list(
        session.scalars(
            select(CheckIn)
            .where(CheckIn.merchant_id == merchant_id, CheckIn.member_id == member_id, CheckIn.day >= first,
                   CheckIn.day <= last)
            .order_by(CheckIn.day)
            .execution_options(populate_existing=True)
        )
    )


# -- cards ------------------------------------------------------------------------------------------


def card_plans(session: Session, merchant_id: int, *, active_only: bool = False) -> list[CardPlan]:
    stmt = select(CardPlan).where(CardPlan.merchant_id == merchant_id)
    if active_only:
        stmt = stmt.where(CardPlan.active.is_(True))
    return list(session.scalars(stmt.order_by(CardPlan.id)))


def card_plan(session: Session, merchant_id: int, plan_id: int) -> CardPlan | None:
    return session.scalar(select(CardPlan).where(CardPlan.merchant_id == merchant_id, CardPlan.id == plan_id))


def card_plans_by_ids(session: Session, merchant_id: int, plan_ids: Sequence[int]) -> list[CardPlan]:
    if not plan_ids:
        return []
    return list(session.scalars(
        select(CardPlan).where(CardPlan.merchant_id == merchant_id, CardPlan.id.in_(list(plan_ids))).order_by(CardPlan.id)
    ))


def card_plans_for_products(session: Session, merchant_id: int, product_ids: Sequence[int]) -> list[CardPlan]:
    if not product_ids:
        return []
    return list(
        session.scalars(
            select(CardPlan).where(CardPlan.merchant_id == merchant_id, CardPlan.product_id.in_(list(product_ids)))
        )
    )


def active_cards(session: Session, merchant_id: int, member_id: int, now: dt.datetime) -> list[MemberCard]:
    return list(
        session.scalars(
            select(MemberCard)
            .where(MemberCard.merchant_id == merchant_id, MemberCard.member_id == member_id,
                   MemberCard.status == CARD_ACTIVE, MemberCard.starts_at <= now, MemberCard.ends_at > now)
            .order_by(MemberCard.ends_at.desc())
        )
    )


def cards_of_member(session: Session, merchant_id: int, member_id: int) -> list[MemberCard]:
    return list(
        session.scalars(
            select(MemberCard)
            .where(MemberCard.merchant_id == merchant_id, MemberCard.member_id == member_id)
            .order_by(MemberCard.id.desc())
        )
    )


def last_card_end(session: Session, merchant_id: int, member_id: int, plan_id: int, now: dt.datetime) -> dt.datetime | None:
    return session.scalar(
        select(func.max(MemberCard.ends_at)).where(
            MemberCard.merchant_id == merchant_id, MemberCard.member_id == member_id, MemberCard.plan_id == plan_id,
            MemberCard.status == CARD_ACTIVE, MemberCard.ends_at > now,
        )
    )


def cards_ended(session: Session, merchant_id: int, now: dt.datetime, limit: int = 500) -> list[MemberCard]:
    """Active cards whose term is over, the earliest first."""
    return list(session.scalars(
        select(MemberCard)
        .where(MemberCard.merchant_id == merchant_id, MemberCard.status == CARD_ACTIVE, MemberCard.ends_at <= now)
        .order_by(MemberCard.ends_at, MemberCard.id).limit(limit)
    ))


def claim_card_expiry(session: Session, merchant_id: int, card_id: int) -> bool:
    """active → expired, once (a parallel run finds it taken)."""
    result = session.execute(
        update(MemberCard)
        .where(MemberCard.merchant_id == merchant_id, MemberCard.id == card_id, MemberCard.status == CARD_ACTIVE)
        .values(status=CARD_EXPIRED)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def cards_of_order(session: Session, merchant_id: int, order_id: int) -> list[MemberCard]:
    stmt = select(MemberCard).where(MemberCard.merchant_id == merchant_id, MemberCard.order_id == order_id)
    return list(session.scalars(for_update(stmt, session).execution_options(populate_existing=True)))


def pending_reward_count(session: Session, merchant_id: int, member_id: int) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(PendingReward).where(
                PendingReward.merchant_id == merchant_id, PendingReward.member_id == member_id,
                PendingReward.status == "pending",
            )
        )
        or 0
    )


def existing_coupon_template_ids(session: Session, merchant_id: int, ids: set[int]) -> set[int] | None:
    """Which of these coupon templates this merchant has; None without the coupons module (the
    rewards are then kept pending, see ``service.issue_coupon``)."""
    try:
        from siyu.coupons.models import CouponTemplate
    except ImportError:
        return None
    if not ids:
        return set()
    return set(session.scalars(
        select(CouponTemplate.id).where(CouponTemplate.merchant_id == merchant_id, CouponTemplate.id.in_(sorted(ids)))
    ))


def coupon_template_names_and_levels(
    session: Session, merchant_id: int, ids: set[int]
) -> dict[int, tuple[str, list[int]]]:
    """Name and ``level_ids`` (empty: everyone) of these coupon templates of the merchant, one
    query ({} without the coupons module)."""
    try:
        from siyu.coupons.models import CouponTemplate
    except ImportError:
        return {}
    if not ids:
        return {}
    rows = session.execute(
        select(CouponTemplate.id, CouponTemplate.name, CouponTemplate.level_ids)
        .where(CouponTemplate.merchant_id == merchant_id, CouponTemplate.id.in_(sorted(ids)))
    )
    return {int(i): (str(n), [int(x) for x in (lv or [])]) for i, n, lv in rows}


# -- member merge (``merge.merge_members``) ----------------------------------------------------------


def move_active_cards(session: Session, merchant_id: int, drop_id: int, keep_id: int, now: dt.datetime) -> int:
    """Active cards not yet ended (renewals that start later too) re-pointed to ``keep_id``."""
    result = session.execute(
        update(MemberCard)
        .where(MemberCard.merchant_id == merchant_id, MemberCard.member_id == drop_id,
               MemberCard.status == CARD_ACTIVE, MemberCard.ends_at > now)
        .values(member_id=keep_id)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def move_pending_rewards(session: Session, merchant_id: int, drop_id: int, keep_id: int) -> int:
    result = session.execute(
        update(PendingReward)
        .where(PendingReward.merchant_id == merchant_id, PendingReward.member_id == drop_id,
               PendingReward.status == "pending")
        .values(member_id=keep_id)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def holder(session: Session, merchant_id: int, member_id: int) -> int:
    """The member whose loyalty ``member_id``'s is now: itself, or (after a member merge) the
    member it was merged into, following a chain of merges."""
    from siyu.members.models import MEMBER_MERGED, Member

    for _ in range(10):
        row = session.execute(
            select(Member.status, Member.merged_into).where(Member.merchant_id == merchant_id, Member.id == member_id)
        ).first()
        if row is None or row[0] != MEMBER_MERGED or row[1] is None:
            break
        member_id = int(row[1])
    return member_id


# -- points mall: products ----------------------------------------------------------------------------


def mall_skus(session: Session, merchant_id: int, sku_ids: Sequence[int]) -> dict[int, tuple[Sku, Product]]:
    """The store's SKUs among ``sku_ids`` with their products (another store's id is absent)."""
    if not sku_ids:
        return {}
    rows = session.execute(
        select(Sku, Product).join(Product, Product.id == Sku.product_id)
        .where(Sku.merchant_id == merchant_id, Product.merchant_id == merchant_id, Sku.id.in_(sorted(set(sku_ids))))
    ).all()
    return {sku.id: (sku, product) for sku, product in rows}


def mall_exchanged_units(
    session: Session, merchant_id: int, member_ids: Sequence[int], sku_ids: Sequence[int], reason_prefix: str,
) -> dict[int, int]:
    """Units of each SKU the members exchanged on orders still pending or paid, net of refunded
    units. An exchange order is found by its points spend (``reason`` ``<prefix><sku_id>``, ``ref``
    ``order:<id>``): ledger entries are few per member, then one read of those orders' lines."""
    if not member_ids or not sku_ids:
        return {}
    reasons = [f"{reason_prefix}{sku_id}" for sku_id in sku_ids]
    refs = session.scalars(
        select(PointsEntry.ref).where(PointsEntry.merchant_id == merchant_id, PointsEntry.member_id.in_(member_ids),
                                      PointsEntry.reason.in_(reasons), PointsEntry.delta < 0)
    ).all()
    order_ids = sorted({int(ref.split(":", 1)[1]) for ref in refs if ref and ref.startswith("order:")})
    if not order_ids:
        return {}
    rows = session.execute(
        select(OrderLine.sku_id, func.sum(OrderLine.quantity - OrderLine.refunded_quantity))
        .join(Order, Order.id == OrderLine.order_id)
        .where(Order.merchant_id == merchant_id, OrderLine.merchant_id == merchant_id, Order.id.in_(order_ids),
               Order.status.in_((PENDING_PAYMENT, *PAID_STATUSES)), OrderLine.sku_id.in_(sorted(set(sku_ids))))
        .group_by(OrderLine.sku_id)
    ).all()
    return {int(sku_id): int(units or 0) for sku_id, units in rows}
