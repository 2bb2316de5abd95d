"""Referral and distribution queries. Every one filters on ``merchant_id``.

Account buckets move only through ``move``: the ledger row is inserted first (its unique ``key``
makes a retried movement a no-op), then one conditional ``UPDATE`` applies the deltas with a
``bucket >= needed`` guard for every bucket it takes from. A guard that fails raises, so the
transaction (ledger row included) rolls back and nothing changes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, exists, func, literal, or_, select, update
from sqlalchemy.orm import Session

from siyu.aftersales.models import OPEN_STATUSES, AfterSale
from siyu.db.dialect import for_update, insert_ignore_many
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.orders.models import Order, OrderLine
from siyu.referral.models import (
    BUCKETS,
    DIST_APPROVED,
    Commission,
    CommissionLedger,
    CommissionLine,
    CommissionRefund,
    CommissionRule,
    Distributor,
    DistributorLevel,
    ReferralBindingLog,
    ReferralProfile,
    ReferralReward,
    ReferralSettings,
    Withdrawal,
)


class InsufficientBalance(Exception):
    """A conditional update found a bucket smaller than what it takes."""


def insert_once(session: Session, table: Any, values: dict[str, Any], conflict_cols: list[str]) -> bool:
    """``INSERT ... ON CONFLICT DO NOTHING``; True when this call inserted the row.

    Decided by ``RETURNING id`` rather than the row count: ``db.dialect.insert_ignore`` reports
    True on PostgreSQL even when the row conflicted (psycopg's rowcount with implicit RETURNING),
    and every idempotency check here depends on the answer.
    """
    return bool(insert_ignore_many(session, table, [values], conflict_cols, returning="id"))


# -- settings and profiles ---------------------------------------------------------------------


def settings(session: Session, merchant_id: int) -> ReferralSettings | None:
    return session.scalar(select(ReferralSettings).where(ReferralSettings.merchant_id == merchant_id))


def profile(session: Session, merchant_id: int, member_id: int, *, lock: bool = False) -> ReferralProfile | None:
    stmt = select(ReferralProfile).where(
        ReferralProfile.merchant_id == merchant_id, ReferralProfile.member_id == member_id
    )
    if lock:
        stmt = for_update(stmt, session).execution_options(populate_existing=True)
    return session.scalar(stmt)


def lock_profiles(session: Session, merchant_id: int, member_ids: Iterable[int]) -> None:
    """Lock the profiles of ``member_ids`` in id order (PostgreSQL; SQLite serialises writers)."""
    stmt = (
        select(ReferralProfile.id)
        .where(ReferralProfile.merchant_id == merchant_id, ReferralProfile.member_id.in_(list(member_ids)))
        .order_by(ReferralProfile.id)
    )
    session.execute(for_update(stmt, session))


def profile_by_code(session: Session, merchant_id: int, code: str) -> ReferralProfile | None:
    return session.scalar(
        select(ReferralProfile).where(ReferralProfile.merchant_id == merchant_id, ReferralProfile.code == code)
    )


def insert_profile(session: Session, merchant_id: int, member_id: int, code: str) -> bool:
    now = utcnow()
    return insert_once(
        session, ReferralProfile.__table__,  # type: ignore[arg-type]
        {"merchant_id": merchant_id, "member_id": member_id, "code": code, "created_at": now, "updated_at": now},
        ["merchant_id", "member_id"],
    )


def code_taken(session: Session, merchant_id: int, code: str) -> bool:
    return bool(
        session.scalar(
            select(exists().where(ReferralProfile.merchant_id == merchant_id, ReferralProfile.code == code))
        )
    )


def inviter_of(session: Session, merchant_id: int, member_id: int) -> int | None:
    return session.scalar(
        select(ReferralProfile.inviter_member_id).where(
            ReferralProfile.merchant_id == merchant_id, ReferralProfile.member_id == member_id
        )
    )


def inviter_chain(session: Session, merchant_id: int, start_id: int, limit: int) -> list[int]:
    """``start_id`` and its inviters upwards, in order, in one recursive query (at most ``limit``
    + 1 members: a longer chain, or a ring, comes back cut at that length)."""
    base = select(
        ReferralProfile.member_id.label("member_id"),
        ReferralProfile.inviter_member_id.label("inviter_id"),
        literal(0).label("depth"),
    ).where(ReferralProfile.merchant_id == merchant_id, ReferralProfile.member_id == start_id)
    chain = base.cte("inviter_chain", recursive=True)
    step = (
        select(ReferralProfile.member_id, ReferralProfile.inviter_member_id, chain.c.depth + 1)
        .join(chain, ReferralProfile.member_id == chain.c.inviter_id)
        .where(ReferralProfile.merchant_id == merchant_id, chain.c.depth < limit)
    )
    chain = chain.union_all(step)
    rows = session.execute(select(chain.c.member_id, chain.c.inviter_id).order_by(chain.c.depth)).all()
    if not rows:
        return [start_id]
    members = [int(m) for m, _ in rows]
    last_inviter = rows[-1][1]
    if last_inviter is not None and len(members) <= limit:  # the top inviter has no profile row
        members.append(int(last_inviter))
    return members


def lock_binding(session: Session, merchant_id: int, member_id: int, first_order_id: int | None) -> None:
    """Lock the member's binding (first paid order seen) and record ``first_order_id`` if given."""
    now = utcnow()
    values: dict[str, Any] = {"locked_at": func.coalesce(ReferralProfile.locked_at, now), "updated_at": now}
    if first_order_id is not None:
        values["first_paid_order_id"] = func.coalesce(ReferralProfile.first_paid_order_id, first_order_id)
    session.execute(
        update(ReferralProfile)
        .where(ReferralProfile.merchant_id == merchant_id, ReferralProfile.member_id == member_id)
        .values(values)
        .execution_options(synchronize_session=False)
    )


def member(session: Session, merchant_id: int, member_id: int) -> Member | None:
    return session.scalar(select(Member).where(Member.merchant_id == merchant_id, Member.id == member_id))


def has_paid_order(session: Session, merchant_id: int, member_id: int, *, other_than: int | None = None,
                   before: dt.datetime | None = None) -> bool:
    cond = [Order.merchant_id == merchant_id, Order.member_id == member_id, Order.paid_at.is_not(None)]
    if other_than is not None:
        cond.append(Order.id != other_than)
    if before is not None:
        cond.append(Order.paid_at < before)
    return bool(session.scalar(select(exists().where(and_(*cond)))))


def invitees_stmt(merchant_id: int, inviter_member_id: int) -> Any:
    return (
        select(ReferralProfile, Member)
        .join(Member, and_(Member.merchant_id == ReferralProfile.merchant_id, Member.id == ReferralProfile.member_id))
        .where(ReferralProfile.merchant_id == merchant_id, ReferralProfile.inviter_member_id == inviter_member_id)
    )


def count_invitees(session: Session, merchant_id: int, inviter_member_id: int) -> int:
    stmt = select(func.count()).select_from(ReferralProfile).where(
        ReferralProfile.merchant_id == merchant_id, ReferralProfile.inviter_member_id == inviter_member_id
    )
    return int(session.scalar(stmt) or 0)


def paid_totals(session: Session, merchant_id: int, member_ids: list[int]) -> dict[int, tuple[int, int]]:
    """(paid order count, net paid amount) per member: refunds are netted, and an order refunded
    in full no longer counts as a paid order."""
    if not member_ids:
        return {}
    rows = session.execute(
        select(Order.member_id, func.count(), func.coalesce(func.sum(Order.paid_amount - Order.refunded_amount), 0))
        .where(Order.merchant_id == merchant_id, Order.member_id.in_(member_ids), Order.paid_at.is_not(None),
               or_(Order.refunded_amount < Order.paid_amount, Order.paid_amount == 0))
        .group_by(Order.member_id)
    ).all()
    return {int(m): (int(c), int(s)) for m, c, s in rows}


# -- orders (read only) ------------------------------------------------------------------------


def order(session: Session, merchant_id: int, order_id: int) -> Order | None:
    return session.scalar(select(Order).where(Order.merchant_id == merchant_id, Order.id == order_id))


def order_lines(session: Session, merchant_id: int, order_id: int) -> list[OrderLine]:
    stmt = select(OrderLine).where(OrderLine.merchant_id == merchant_id, OrderLine.order_id == order_id)
    return list(session.scalars(stmt.order_by(OrderLine.id)))


def has_open_aftersale(session: Session, merchant_id: int, order_id: int) -> bool:
    return bool(
        session.scalar(
            select(
                exists().where(
                    AfterSale.merchant_id == merchant_id, AfterSale.order_id == order_id,
                    AfterSale.status.in_(OPEN_STATUSES),
                )
            )
        )
    )


# -- rewards -----------------------------------------------------------------------------------


def insert_reward(session: Session, values: dict[str, Any]) -> bool:
    now = utcnow()
    return insert_once(
        session, ReferralReward.__table__,  # type: ignore[arg-type]
        {**values, "created_at": now, "updated_at": now},
        ["merchant_id", "invitee_member_id", "role", "reward_index"],
    )


def rewards_of_invitee(session: Session, merchant_id: int, invitee_member_id: int) -> list[ReferralReward]:
    stmt = select(ReferralReward).where(
        ReferralReward.merchant_id == merchant_id, ReferralReward.invitee_member_id == invitee_member_id
    )
    return list(session.scalars(for_update(stmt.order_by(ReferralReward.id), session)))


def rewards_of_order(session: Session, merchant_id: int, order_id: int) -> list[ReferralReward]:
    stmt = select(ReferralReward).where(ReferralReward.merchant_id == merchant_id, ReferralReward.order_id == order_id)
    return list(session.scalars(for_update(stmt.order_by(ReferralReward.id), session)))


def pending_rewards(session: Session, merchant_id: int, limit: int = 200) -> list[ReferralReward]:
    stmt = select(ReferralReward).where(ReferralReward.merchant_id == merchant_id, ReferralReward.status == "pending")
    return list(session.scalars(for_update(stmt.order_by(ReferralReward.id).limit(limit), session, skip_locked=True)))


def search_rewards(merchant_id: int, status: str | None, member_id: int | None) -> Select[Any]:
    stmt = select(ReferralReward).where(ReferralReward.merchant_id == merchant_id)
    if status:
        stmt = stmt.where(ReferralReward.status == status)
    if member_id is not None:
        stmt = stmt.where(ReferralReward.beneficiary_member_id == member_id)
    return stmt


# -- distributors and levels -------------------------------------------------------------------


def level(session: Session, merchant_id: int, level_id: int) -> DistributorLevel | None:
    return session.scalar(
        select(DistributorLevel).where(DistributorLevel.merchant_id == merchant_id, DistributorLevel.id == level_id)
    )


def levels(session: Session, merchant_id: int) -> list[DistributorLevel]:
    stmt = select(DistributorLevel).where(DistributorLevel.merchant_id == merchant_id)
    return list(session.scalars(stmt.order_by(DistributorLevel.rank, DistributorLevel.id)))


def default_level(session: Session, merchant_id: int) -> DistributorLevel | None:
    stmt = select(DistributorLevel).where(DistributorLevel.merchant_id == merchant_id)
    return session.scalar(stmt.order_by(DistributorLevel.is_default.desc(), DistributorLevel.rank, DistributorLevel.id))


def distributor(session: Session, merchant_id: int, distributor_id: int, *, lock: bool = False) -> Distributor | None:
    stmt = select(Distributor).where(Distributor.merchant_id == merchant_id, Distributor.id == distributor_id)
    if lock:
        stmt = for_update(stmt, session).execution_options(populate_existing=True)
    return session.scalar(stmt)


def distributor_of_member(
    session: Session, merchant_id: int, member_id: int, *, lock: bool = False
) -> Distributor | None:
    stmt = select(Distributor).where(Distributor.merchant_id == merchant_id, Distributor.member_id == member_id)
    if lock:
        stmt = for_update(stmt, session).execution_options(populate_existing=True)
    return session.scalar(stmt)


def approved_distributor_of_member(session: Session, merchant_id: int, member_id: int) -> Distributor | None:
    return session.scalar(
        select(Distributor).where(
            Distributor.merchant_id == merchant_id, Distributor.member_id == member_id,
            Distributor.status == DIST_APPROVED,
        )
    )


def search_distributors(merchant_id: int, status: str | None) -> Select[Any]:
    stmt = select(Distributor).where(Distributor.merchant_id == merchant_id)
    if status:
        stmt = stmt.where(Distributor.status == status)
    return stmt


def rules_for(session: Session, merchant_id: int, product_ids: Iterable[int]) -> list[CommissionRule]:
    """Enabled rules that may apply to these products (product-specific and catch-all ones)."""
    ids = list(product_ids)
    stmt = select(CommissionRule).where(
        CommissionRule.merchant_id == merchant_id,
        CommissionRule.enabled.is_(True),
        (CommissionRule.product_id.is_(None)) | (CommissionRule.product_id.in_(ids)),
    )
    return list(session.scalars(stmt.order_by(CommissionRule.id)))


def rule(session: Session, merchant_id: int, rule_id: int) -> CommissionRule | None:
    return session.scalar(
        select(CommissionRule).where(CommissionRule.merchant_id == merchant_id, CommissionRule.id == rule_id)
    )


def search_rules(merchant_id: int) -> Select[Any]:
    return select(CommissionRule).where(CommissionRule.merchant_id == merchant_id)


# -- commissions -------------------------------------------------------------------------------


def commissions_of_order(session: Session, merchant_id: int, order_id: int, *, lock: bool = False) -> list[Commission]:
    stmt = select(Commission).where(Commission.merchant_id == merchant_id, Commission.order_id == order_id)
    stmt = stmt.order_by(Commission.id)
    if lock:
        stmt = for_update(stmt, session).execution_options(populate_existing=True)
    return list(session.scalars(stmt))


def commission(session: Session, merchant_id: int, commission_id: int, *, lock: bool = False) -> Commission | None:
    stmt = select(Commission).where(Commission.merchant_id == merchant_id, Commission.id == commission_id)
    if lock:
        stmt = for_update(stmt, session).execution_options(populate_existing=True)
    return session.scalar(stmt)


def commission_lines(session: Session, merchant_id: int, commission_id: int) -> list[CommissionLine]:
    stmt = select(CommissionLine).where(
        CommissionLine.merchant_id == merchant_id, CommissionLine.commission_id == commission_id
    )
    return list(session.scalars(stmt.order_by(CommissionLine.id)))


def insert_commission(session: Session, values: dict[str, Any]) -> int | None:
    """Insert once per (order, tier); returns the new id, or None when it already exists."""
    now = utcnow()
    inserted = insert_once(
        session, Commission.__table__,  # type: ignore[arg-type]
        {**values, "created_at": now, "updated_at": now}, ["merchant_id", "order_id", "tier"],
    )
    if not inserted:
        return None
    return session.scalar(
        select(Commission.id).where(
            Commission.merchant_id == values["merchant_id"], Commission.order_id == values["order_id"],
            Commission.tier == values["tier"],
        )
    )


def mark_refund_applied(session: Session, merchant_id: int, commission_id: int, refund_id: int, amount: int) -> bool:
    return insert_once(
        session, CommissionRefund.__table__,  # type: ignore[arg-type]
        {"merchant_id": merchant_id, "commission_id": commission_id, "refund_id": refund_id, "amount": amount,
         "at": utcnow()},
        ["merchant_id", "commission_id", "refund_id"],
    )


def search_commissions(
    merchant_id: int, *, distributor_id: int | None = None, status: str | None = None, order_id: int | None = None
) -> Select[Any]:
    stmt = select(Commission).where(Commission.merchant_id == merchant_id)
    if distributor_id is not None:
        stmt = stmt.where(Commission.distributor_id == distributor_id)
    if status:
        stmt = stmt.where(Commission.status == status)
    if order_id is not None:
        stmt = stmt.where(Commission.order_id == order_id)
    return stmt


def ledger_stmt(merchant_id: int, distributor_id: int) -> Select[Any]:
    return select(CommissionLedger).where(
        CommissionLedger.merchant_id == merchant_id, CommissionLedger.distributor_id == distributor_id
    )


def ledger_sums(session: Session, merchant_id: int, distributor_id: int) -> dict[str, int]:
    cols = [func.coalesce(func.sum(getattr(CommissionLedger, f"d_{b}")), 0) for b in BUCKETS]
    row = session.execute(
        select(*cols).where(
            CommissionLedger.merchant_id == merchant_id, CommissionLedger.distributor_id == distributor_id
        )
    ).one()
    return {b: int(v) for b, v in zip(BUCKETS, row, strict=True)}


# -- the account -------------------------------------------------------------------------------


def move(
    session: Session,
    merchant_id: int,
    distributor_id: int,
    *,
    key: str,
    entry: str,
    amount: int,
    deltas: dict[str, int],
    commission_id: int | None = None,
    withdrawal_id: int | None = None,
    order_id: int | None = None,
) -> bool:
    """Apply bucket ``deltas`` once per ``key``. Returns False when ``key`` was applied before.

    Raises ``InsufficientBalance`` (the caller turns it into a domain error or lets the job fail)
    when a bucket would go below zero; the ledger row goes with the rollback.
    """
    unknown = set(deltas) - set(BUCKETS)
    if unknown:
        raise ValueError(f"unknown buckets {unknown}")
    deltas = {b: d for b, d in deltas.items() if d}
    session.flush()  # pending ORM changes first: the loaded row is expired below
    ledger_values: dict[str, Any] = {
        "merchant_id": merchant_id, "distributor_id": distributor_id, "key": key, "entry": entry,
        "commission_id": commission_id, "withdrawal_id": withdrawal_id, "order_id": order_id, "amount": amount,
        "at": utcnow(), **{f"d_{b}": deltas.get(b, 0) for b in BUCKETS},
    }
    if not insert_once(session, CommissionLedger.__table__, ledger_values, ["merchant_id", "key"]):  # type: ignore[arg-type]
        return False
    if not deltas:
        return True
    table: Any = Distributor.__table__
    guards = [table.c[b] >= -d for b, d in deltas.items() if d < 0]
    stmt = (
        update(table)
        .where(table.c.merchant_id == merchant_id, table.c.id == distributor_id, *guards)
        .values({b: table.c[b] + d for b, d in deltas.items()} | {"updated_at": utcnow()})
    )
    result = session.execute(stmt)
    if not getattr(result, "rowcount", 0):
        raise InsufficientBalance(key)
    # keep a loaded Distributor in step with the database
    loaded = session.identity_map.get(session.identity_key(Distributor, distributor_id))  # type: ignore[arg-type]
    if loaded is not None:
        session.expire(loaded)
    return True


# -- withdrawals -------------------------------------------------------------------------------


def withdrawal(session: Session, merchant_id: int, withdrawal_id: int, *, lock: bool = False) -> Withdrawal | None:
    stmt = select(Withdrawal).where(Withdrawal.merchant_id == merchant_id, Withdrawal.id == withdrawal_id)
    if lock:
        stmt = for_update(stmt, session).execution_options(populate_existing=True)
    return session.scalar(stmt)


def withdrawal_by_key(session: Session, merchant_id: int, distributor_id: int, key: str) -> Withdrawal | None:
    return session.scalar(
        select(Withdrawal).where(
            Withdrawal.merchant_id == merchant_id, Withdrawal.distributor_id == distributor_id,
            Withdrawal.request_key == key,
        )
    )


def set_withdrawal_status(
    session: Session, merchant_id: int, withdrawal_id: int, from_states: tuple[str, ...], values: dict[str, Any]
) -> bool:
    """Conditional transition: exactly one concurrent reviewer wins."""
    result = session.execute(
        update(Withdrawal)
        .where(
            Withdrawal.merchant_id == merchant_id, Withdrawal.id == withdrawal_id,
            Withdrawal.status.in_(from_states),
        )
        .values({**values, "updated_at": utcnow()})
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def search_withdrawals(merchant_id: int, *, status: str | None = None, distributor_id: int | None = None) -> Select[Any]:
    stmt = select(Withdrawal).where(Withdrawal.merchant_id == merchant_id)
    if status:
        stmt = stmt.where(Withdrawal.status == status)
    if distributor_id is not None:
        stmt = stmt.where(Withdrawal.distributor_id == distributor_id)
    return stmt


# -- stats -------------------------------------------------------------------------------------


def stats(session: Session, merchant_id: int) -> dict[str, Any]:
    """Program figures for the operator: bindings, converted invitees, money by status."""
    bound = session.scalar(
        select(func.count()).where(ReferralProfile.merchant_id == merchant_id,
                                   ReferralProfile.inviter_member_id.is_not(None))
    ) or 0
    converted = session.scalar(
        select(func.count()).where(ReferralProfile.merchant_id == merchant_id,
                                   ReferralProfile.inviter_member_id.is_not(None),
                                   ReferralProfile.first_paid_order_id.is_not(None))
    ) or 0
    rewards = dict(
        session.execute(
            select(ReferralReward.status, func.count()).where(ReferralReward.merchant_id == merchant_id)
            .group_by(ReferralReward.status)
        ).all()
    )
    net = Commission.amount - Commission.reversed_amount
    commissions = {
        str(st): (int(n), int(total or 0))
        for st, n, total in session.execute(
            select(Commission.status, func.count(), func.sum(net)).where(Commission.merchant_id == merchant_id)
            .group_by(Commission.status)
        ).all()
    }
    withdrawals = {
        str(st): (int(n), int(total or 0))
        for st, n, total in session.execute(
            select(Withdrawal.status, func.count(), func.sum(Withdrawal.amount))
            .where(Withdrawal.merchant_id == merchant_id).group_by(Withdrawal.status)
        ).all()
    }
    distributors = dict(
        session.execute(
            select(Distributor.status, func.count()).where(Distributor.merchant_id == merchant_id)
            .group_by(Distributor.status)
        ).all()
    )
    return {
        "bound_members": int(bound), "converted_members": int(converted),
        "rewards": {str(k): int(v) for k, v in rewards.items()},
        "distributors": {str(k): int(v) for k, v in distributors.items()},
        "commissions": {k: {"count": n, "amount": a} for k, (n, a) in commissions.items()},
        "withdrawals": {k: {"count": n, "amount": a} for k, (n, a) in withdrawals.items()},
    }


# -- member merge ------------------------------------------------------------------------------


def merged_into(session: Session, merchant_id: int, member_id: int) -> int:
    """The member ``member_id`` was folded into (following a chain of merges), else itself."""
    current = member_id
    for _ in range(10):
        row = session.execute(
            select(Member.status, Member.merged_into).where(Member.merchant_id == merchant_id, Member.id == current)
        ).first()
        if row is None or row[0] != "merged" or row[1] is None:
            break
        current = int(row[1])
    return current


def repoint_invitees(session: Session, merchant_id: int, drop_id: int, keep_id: int) -> int:
    """Members invited by ``drop_id`` are now invited by ``keep_id`` (``keep_id``'s own profile
    is left to the caller: it must not point at itself)."""
    result = session.execute(
        update(ReferralProfile)
        .where(
            ReferralProfile.merchant_id == merchant_id,
            ReferralProfile.inviter_member_id == drop_id,
            ReferralProfile.member_id != keep_id,
        )
        .values(inviter_member_id=keep_id, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def repoint_binding_log(session: Session, merchant_id: int, drop_id: int, keep_id: int) -> int:
    Log = ReferralBindingLog
    n = 0
    for col in (Log.member_id, Log.inviter_member_id, Log.previous_inviter_id):
        result = session.execute(
            update(Log)
            .where(Log.merchant_id == merchant_id, col == drop_id)
            .values({col.key: keep_id})
            .execution_options(synchronize_session=False)
        )
        n += int(getattr(result, "rowcount", 0) or 0)
    return n


def repoint_rewards(session: Session, merchant_id: int, drop_id: int, keep_id: int) -> tuple[int, int]:
    """Rewards the dropped member received or caused follow the kept member; (moved, left).

    ``(invitee, role, position)`` is unique: when both members were rewarded as invitees, the
    dropped member's rows keep their invitee (both first orders really happened) and only
    their beneficiary moves."""
    result = session.execute(
        update(ReferralReward)
        .where(ReferralReward.merchant_id == merchant_id, ReferralReward.beneficiary_member_id == drop_id)
        .values(beneficiary_member_id=keep_id, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    moved = int(getattr(result, "rowcount", 0) or 0)
    taken = {
        (r, i)
        for r, i in session.execute(
            select(ReferralReward.role, ReferralReward.reward_index).where(
                ReferralReward.merchant_id == merchant_id, ReferralReward.invitee_member_id == keep_id
            )
        ).all()
    }
    left = 0
    for reward in session.scalars(
        select(ReferralReward).where(
            ReferralReward.merchant_id == merchant_id, ReferralReward.invitee_member_id == drop_id
        )
    ):
        if (reward.role, reward.reward_index) in taken:
            left += 1
            continue
        reward.invitee_member_id = keep_id
        moved += 1
    session.flush()
    return moved, left


def lock_distributors(session: Session, merchant_id: int, member_ids: Iterable[int]) -> list[Distributor]:
    stmt = (
        select(Distributor)
        .where(Distributor.merchant_id == merchant_id, Distributor.member_id.in_(list(member_ids)))
        .order_by(Distributor.id)
    )
    return list(session.scalars(for_update(stmt, session).execution_options(populate_existing=True)))


def fold_distributor(session: Session, merchant_id: int, drop: Distributor, keep: Distributor) -> dict[str, int]:
    """Move everything of distributor ``drop`` to ``keep``: ledger rows, commissions, withdrawals,
    rate rules, and the buckets (added as they are, so each bucket still equals its ledger sum)."""
    counts: dict[str, int] = {}
    for name, model in (
        ("ledger", CommissionLedger), ("commissions", Commission), ("commission_rules", CommissionRule),
    ):
        result = session.execute(
            update(model)
            .where(model.merchant_id == merchant_id, model.distributor_id == drop.id)
            .values(distributor_id=keep.id)
            .execution_options(synchronize_session=False)
        )
        counts[name] = int(getattr(result, "rowcount", 0) or 0)
    # withdrawals: request keys are unique per distributor; a clashing key gets a merge suffix
    keep_keys = set(
        session.scalars(
            select(Withdrawal.request_key).where(
                Withdrawal.merchant_id == merchant_id, Withdrawal.distributor_id == keep.id
            )
        )
    )
    n = 0
    for w in session.scalars(
        select(Withdrawal).where(Withdrawal.merchant_id == merchant_id, Withdrawal.distributor_id == drop.id)
    ):
        if w.request_key in keep_keys:
            w.request_key = f"merged-{drop.id}-{w.id}"
        w.distributor_id = keep.id
        n += 1
    counts["withdrawals"] = n
    table: Any = Distributor.__table__
    session.execute(
        update(table)
        .where(table.c.merchant_id == merchant_id, table.c.id == keep.id)
        .values({b: table.c[b] + getattr(drop, b) for b in BUCKETS} | {"updated_at": utcnow()})
    )
    session.execute(
        update(table)
        .where(table.c.merchant_id == merchant_id, table.c.id == drop.id)
        .values({b: 0 for b in BUCKETS} | {"updated_at": utcnow()})
    )
    session.flush()
    session.expire(keep)
    session.expire(drop)
    return counts


def repoint_withdrawal_member(session: Session, merchant_id: int, drop_id: int, keep_id: int) -> int:
    result = session.execute(
        update(Withdrawal)
        .where(Withdrawal.merchant_id == merchant_id, Withdrawal.member_id == drop_id)
        .values(member_id=keep_id)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def payout_job_live(session: Session, merchant_id: int, withdrawal_id: int) -> bool:
    """Whether a ``referral.payout`` send or a ``referral.payout_query`` poll of the withdrawal
    is still queued or running (not done, not dead after its retries)."""
    from siyu.kit.outbox import JOB_PENDING, JOB_RUNNING, Job

    prefix = f"withdrawal:{withdrawal_id}:"
    return bool(
        session.scalar(
            select(
                exists().where(
                    Job.merchant_id == merchant_id,
                    Job.status.in_((JOB_PENDING, JOB_RUNNING)),
                    (Job.dedupe_key == prefix + "payout") | Job.dedupe_key.like(prefix + "query:%"),
                )
            )
        )
    )


class SendJob(NamedTuple):
    status: str
    attempts: int  # attempts claimed by workers (a claim counts one before its handler runs)


def payout_send_job(session: Session, merchant_id: int, withdrawal_id: int) -> SendJob | None:
    """The ``referral.payout`` send job of the withdrawal, as committed now (None if there is none)."""
    from siyu.kit.outbox import Job

    row = session.execute(
        select(Job.status, Job.attempts).where(
            Job.merchant_id == merchant_id, Job.dedupe_key == f"withdrawal:{withdrawal_id}:payout"
        )
    ).first()
    return SendJob(row[0], row[1]) if row is not None else None


def job_exists(session: Session, merchant_id: int, dedupe_key: str) -> bool:
    """Whether a job with this dedupe key was ever enqueued (in whatever state)."""
    from siyu.kit.outbox import Job

    return bool(
        session.scalar(select(exists().where(Job.merchant_id == merchant_id, Job.dedupe_key == dedupe_key)))
    )
