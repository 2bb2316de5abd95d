"""Coupon queries. Every one filters on ``merchant_id``.

Counters and wallet transitions are conditional updates (no read-then-write): each moves a
row only from the state it expects, so a retried or concurrent call moves it at most once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from siyu.coupons.models import (
    ACTIVE,
    DRAFT,
    EXPIRED,
    LOCKED,
    UNUSED,
    USED,
    CouponCode,
    CouponMemberCounter,
    CouponTemplate,
    MemberCoupon,
)
from siyu.db.dialect import insert_ignore
from siyu.members.models import Member, MemberTag


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


# -- templates ---------------------------------------------------------------------------------------


def template(session: Session, merchant_id: int, template_id: int, *, refresh: bool = False) -> CouponTemplate | None:
    stmt = select(CouponTemplate).where(CouponTemplate.merchant_id == merchant_id, CouponTemplate.id == template_id)
    if refresh:
        stmt = stmt.execution_options(populate_existing=True)
    return session.scalar(stmt)


def templates_naming_level(session: Session, merchant_id: int, level_id: int) -> list[int]:
    """Ids of the merchant's draft or active templates whose ``level_ids`` name ``level_id``
    (ascending). ``level_ids`` is a JSON list: the merchant's draft/active templates that have
    any are read and matched here rather than with a dialect's JSON containment (``@>`` on
    PostgreSQL, ``json_each`` on SQLite); it runs only when a level is deleted."""
    rows = session.execute(
        select(CouponTemplate.id, CouponTemplate.level_ids)
        .where(CouponTemplate.merchant_id == merchant_id, CouponTemplate.status.in_((DRAFT, ACTIVE)))
        .order_by(CouponTemplate.id)
    )
    return [int(tid) for tid, level_ids in rows if level_ids and level_id in {int(x) for x in level_ids}]


def search_templates(merchant_id: int, status: str | None = None, kind: str | None = None) -> Select[Any]:
    stmt = select(CouponTemplate).where(CouponTemplate.merchant_id == merchant_id)
    if status:
        stmt = stmt.where(CouponTemplate.status == status)
    if kind:
        stmt = stmt.where(CouponTemplate.kind == kind)
    return stmt


def active_templates(session: Session, merchant_id: int) -> list[CouponTemplate]:
    stmt = select(CouponTemplate).where(CouponTemplate.merchant_id == merchant_id, CouponTemplate.status == ACTIVE)
    return list(session.scalars(stmt.order_by(CouponTemplate.id)))


def take_template_unit(session: Session, merchant_id: int, template_id: int) -> bool:
    """``issued += 1`` while below ``total_quantity`` (unlimited when NULL); False when sold out."""
    result = session.execute(
        update(CouponTemplate)
        .where(
            CouponTemplate.merchant_id == merchant_id,
            CouponTemplate.id == template_id,
            or_(CouponTemplate.total_quantity.is_(None), CouponTemplate.issued < CouponTemplate.total_quantity),
        )
        .values(issued=CouponTemplate.issued + 1)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def take_member_slot(session: Session, merchant_id: int, template_id: int, member_id: int, limit: int) -> bool:
    """``received += 1`` for the member while below ``limit``; False when the limit is reached."""
    insert_ignore(
        session, CouponMemberCounter.__table__,  # type: ignore[arg-type]
        {"merchant_id": merchant_id, "template_id": template_id, "member_id": member_id, "received": 0},
        ["merchant_id", "template_id", "member_id"],
    )
    result = session.execute(
        update(CouponMemberCounter)
        .where(
            CouponMemberCounter.merchant_id == merchant_id,
            CouponMemberCounter.template_id == template_id,
            CouponMemberCounter.member_id == member_id,
            CouponMemberCounter.received < limit,
        )
        .values(received=CouponMemberCounter.received + 1)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def received_counts(session: Session, merchant_id: int, member_id: int, template_ids: Iterable[int]) -> dict[int, int]:
    ids = sorted(set(template_ids))
    if not ids:
        return {}
    stmt = select(CouponMemberCounter.template_id, CouponMemberCounter.received).where(
        CouponMemberCounter.merchant_id == merchant_id,
        CouponMemberCounter.member_id == member_id,
        CouponMemberCounter.template_id.in_(ids),
    )
    return {int(t): int(n) for t, n in session.execute(stmt).all()}


# -- wallet ------------------------------------------------------------------------------------------


def coupon_by_key(session: Session, merchant_id: int, key: str) -> MemberCoupon | None:
    stmt = select(MemberCoupon).where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.idempotency_key == key)
    return session.scalar(stmt)


def coupon(session: Session, merchant_id: int, coupon_id: int, *, refresh: bool = False) -> MemberCoupon | None:
    stmt = select(MemberCoupon).where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.id == coupon_id)
    if refresh:
        stmt = stmt.execution_options(populate_existing=True)
    return session.scalar(stmt)


def add_coupon(session: Session, coupon: MemberCoupon) -> None:
    session.add(coupon)
    session.flush()


def wallet_query(merchant_id: int, member_id: int | None = None, status: str | None = None,
                 template_id: int | None = None, now: dt.datetime | None = None) -> Select[Any]:
    """With ``now``, an unused coupon past its validity counts as expired (the job may be late)."""
    stmt = select(MemberCoupon).where(MemberCoupon.merchant_id == merchant_id)
    if member_id is not None:
        stmt = stmt.where(MemberCoupon.member_id == member_id)
    if status and now is not None and status == UNUSED:
        stmt = stmt.where(MemberCoupon.status == UNUSED, MemberCoupon.valid_until > now)
    elif status and now is not None and status == EXPIRED:
        stmt = stmt.where(or_(MemberCoupon.status == EXPIRED,
                              and_(MemberCoupon.status == UNUSED, MemberCoupon.valid_until <= now)))
    elif status:
        stmt = stmt.where(MemberCoupon.status == status)
    if template_id is not None:
        stmt = stmt.where(MemberCoupon.template_id == template_id)
    return stmt


def templates_by_id(session: Session, merchant_id: int, ids: Iterable[int]) -> dict[int, CouponTemplate]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    stmt = select(CouponTemplate).where(CouponTemplate.merchant_id == merchant_id, CouponTemplate.id.in_(wanted))
    return {t.id: t for t in session.scalars(stmt)}


def _pricing_stmt(explicit: bool) -> Select[MemberCoupon, CouponTemplate]:
    stmt = (
        select(MemberCoupon, CouponTemplate)
        .join(CouponTemplate, and_(CouponTemplate.id == MemberCoupon.template_id,
                                   CouponTemplate.merchant_id == MemberCoupon.merchant_id))
        .where(MemberCoupon.merchant_id == bindparam("merchant_id"))
    )
    if explicit:
        stmt = stmt.where(MemberCoupon.id.in_(bindparam("ids", expanding=True)))
    else:
        stmt = stmt.where(MemberCoupon.member_id == bindparam("member_id"),
                          MemberCoupon.status.in_((UNUSED, LOCKED)))
    return stmt.order_by(MemberCoupon.valid_until, MemberCoupon.id)


# Built once: the preview runs this on every checkout, and building the statement costs more
# than running it on a small wallet.
_WALLET_STMT = _pricing_stmt(explicit=False)
_CHOSEN_STMT = _pricing_stmt(explicit=True)


def pricing_coupons(
    session: Session, merchant_id: int, member_id: int, coupon_ids: list[int] | None
) -> list[tuple[MemberCoupon, CouponTemplate]]:
    """One query for the pricing stage: the member's unused (and locked, to say so) coupons with
    their templates, or (explicit choice) the given ids in any state and of any member of the
    merchant — the stage reports why one does not apply."""
    if coupon_ids is None:
        result = session.execute(_WALLET_STMT, {"merchant_id": merchant_id, "member_id": member_id})
    else:
        result = session.execute(_CHOSEN_STMT, {"merchant_id": merchant_id, "ids": sorted(set(coupon_ids))})
    return [(c, t) for c, t in result.all()]


def lock_coupon(
    session: Session, merchant_id: int, member_id: int, coupon_id: int, order_id: int, discount: int, now: dt.datetime
) -> bool:
    result = session.execute(
        update(MemberCoupon)
        .where(
            MemberCoupon.merchant_id == merchant_id,
            MemberCoupon.id == coupon_id,
            MemberCoupon.member_id == member_id,
            MemberCoupon.status == UNUSED,
            MemberCoupon.valid_from <= now,
            MemberCoupon.valid_until > now,
        )
        .values(status=LOCKED, order_id=order_id, discount_amount=discount, locked_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def mark_used(session: Session, merchant_id: int, order_id: int, paid_amount: int, now: dt.datetime) -> list[int]:
    rows = session.execute(
        update(MemberCoupon)
        .where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.order_id == order_id, MemberCoupon.status == LOCKED)
        .values(status=USED, used_at=now, order_amount=paid_amount, updated_at=now)
        .returning(MemberCoupon.id)
        .execution_options(synchronize_session=False)
    ).all()
    return [int(r[0]) for r in rows]


def return_coupons(
    session: Session, merchant_id: int, order_id: int, from_states: tuple[str, ...], now: dt.datetime
) -> list[tuple[int, str]]:
    """Coupons of the order back to the wallet: ``unused`` while still valid, else ``expired``.
    Two conditional updates (one per target state); returns ``(coupon_id, new status)``."""
    out: list[tuple[int, str]] = []
    common = (
        MemberCoupon.merchant_id == merchant_id,
        MemberCoupon.order_id == order_id,
        MemberCoupon.status.in_(from_states),
    )
    reset = {"order_id": None, "discount_amount": 0, "order_amount": 0, "locked_at": None, "used_at": None,
             "returned_at": now, "updated_at": now}
    for target, cond in ((UNUSED, MemberCoupon.valid_until > now), (EXPIRED, MemberCoupon.valid_until <= now)):
        values = dict(reset, status=target, **({"expired_at": now} if target == EXPIRED else {}))
        rows = session.execute(
            update(MemberCoupon).where(*common, cond).values(**values)
            .returning(MemberCoupon.id).execution_options(synchronize_session=False)
        ).all()
        out += [(int(r[0]), target) for r in rows]
    return out


def coupon_holders(session: Session, merchant_id: int, coupon_ids: list[int]) -> dict[int, int]:
    """``{coupon id: member id}`` of these coupons."""
    if not coupon_ids:
        return {}
    rows = session.execute(
        select(MemberCoupon.id, MemberCoupon.member_id)
        .where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.id.in_(sorted(coupon_ids)))
    )
    return {int(cid): int(mid) for cid, mid in rows}


def move_coupons(session: Session, merchant_id: int, coupon_ids: list[int], member_id: int, now: dt.datetime) -> int:
    """Re-point these coupons to ``member_id`` (a merged member's returned coupons to the kept one)."""
    if not coupon_ids:
        return 0
    result = session.execute(
        update(MemberCoupon)
        .where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.id.in_(sorted(coupon_ids)))
        .values(member_id=member_id, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


def expire_due(session: Session, merchant_id: int, now: dt.datetime, limit: int = 5000) -> list[int]:
    ids = list(session.scalars(
        select(MemberCoupon.id).where(
            MemberCoupon.merchant_id == merchant_id, MemberCoupon.status == UNUSED, MemberCoupon.valid_until <= now
        ).order_by(MemberCoupon.id).limit(limit)
    ))
    if not ids:
        return []
    rows = session.execute(
        update(MemberCoupon)
        .where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.id.in_(ids), MemberCoupon.status == UNUSED,
               MemberCoupon.valid_until <= now)
        .values(status=EXPIRED, expired_at=now, updated_at=now)
        .returning(MemberCoupon.id)
        .execution_options(synchronize_session=False)
    ).all()
    return [int(r[0]) for r in rows]


def claim_reminders(session: Session, merchant_id: int, now: dt.datetime, limit: int = 5000) -> list[MemberCoupon]:
    """Unused coupons whose reminder time has come and that were never reminded: marked
    reminded (conditionally, once) and returned."""
    ids = list(session.scalars(
        select(MemberCoupon.id).where(
            MemberCoupon.merchant_id == merchant_id, MemberCoupon.status == UNUSED,
            MemberCoupon.remind_at <= now, MemberCoupon.reminded_at.is_(None), MemberCoupon.valid_until > now,
        ).order_by(MemberCoupon.id).limit(limit)
    ))
    if not ids:
        return []
    moved = session.execute(
        update(MemberCoupon)
        .where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.id.in_(ids), MemberCoupon.reminded_at.is_(None))
        .values(reminded_at=now)
        .returning(MemberCoupon.id)
        .execution_options(synchronize_session=False)
    ).all()
    got = [int(r[0]) for r in moved]
    if not got:
        return []
    stmt = select(MemberCoupon).where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.id.in_(got))
    return list(session.scalars(stmt.order_by(MemberCoupon.id).execution_options(populate_existing=True)))


def void_coupon(session: Session, merchant_id: int, coupon_id: int, now: dt.datetime) -> bool:
    result = session.execute(
        update(MemberCoupon)
        .where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.id == coupon_id, MemberCoupon.status == UNUSED)
        .values(status="voided", voided_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


# -- redeem codes ------------------------------------------------------------------------------------


def add_codes(session: Session, merchant_id: int, template_id: int, codes: list[str]) -> None:
    session.add_all([CouponCode(merchant_id=merchant_id, template_id=template_id, code=c) for c in codes])
    session.flush()


def code_row(session: Session, merchant_id: int, code: str) -> CouponCode | None:
    stmt = select(CouponCode).where(CouponCode.merchant_id == merchant_id, CouponCode.code == code)
    return session.scalar(stmt.execution_options(populate_existing=True))


def redeem_code(session: Session, merchant_id: int, code_id: int, member_id: int, now: dt.datetime) -> bool:
    result = session.execute(
        update(CouponCode)
        .where(CouponCode.merchant_id == merchant_id, CouponCode.id == code_id, CouponCode.redeemed_by.is_(None))
        .values(redeemed_by=member_id, redeemed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def set_code_coupon(session: Session, merchant_id: int, code_id: int, coupon_id: int) -> None:
    session.execute(
        update(CouponCode).where(CouponCode.merchant_id == merchant_id, CouponCode.id == code_id)
        .values(member_coupon_id=coupon_id).execution_options(synchronize_session=False)
    )


def code_counts(session: Session, merchant_id: int, template_id: int) -> tuple[int, int]:
    stmt = select(func.count(), func.count(CouponCode.redeemed_by)).where(
        CouponCode.merchant_id == merchant_id, CouponCode.template_id == template_id
    )
    row = session.execute(stmt).one()
    return int(row[0]), int(row[1])


# -- audiences and stats -----------------------------------------------------------------------------


def _matching(
    merchant_id: int, *, member_ids: list[int] | None, province: str | None, city: str | None,
    gender: str | None, tag_id: int | None,
) -> Select[Any]:
    stmt = select(Member.id).where(Member.merchant_id == merchant_id, Member.status == "active")
    if member_ids is not None:
        stmt = stmt.where(Member.id.in_(sorted(set(member_ids))))
    if province:
        stmt = stmt.where(Member.province == province)
    if city:
        stmt = stmt.where(Member.city == city)
    if gender:
        stmt = stmt.where(Member.gender == gender)
    if tag_id is not None:
        stmt = stmt.where(
            select(MemberTag.id).where(
                MemberTag.merchant_id == merchant_id, MemberTag.member_id == Member.id, MemberTag.tag_id == tag_id
            ).exists()
        )
    return stmt


def matching_members(session: Session, merchant_id: int, *, limit: int, after_id: int = 0, **conditions: Any) -> list[int]:
    """Active members matching every condition, by id, after ``after_id`` (keyset pages)."""
    stmt = _matching(merchant_id, **conditions).where(Member.id > after_id)
    return [int(i) for i in session.scalars(stmt.order_by(Member.id).limit(limit))]


def count_matching(session: Session, merchant_id: int, **conditions: Any) -> int:
    stmt = _matching(merchant_id, **conditions)
    return int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)


def member_exists(session: Session, merchant_id: int, member_id: int) -> bool:
    stmt = select(Member.id).where(Member.merchant_id == merchant_id, Member.id == member_id)
    return session.scalar(stmt) is not None


def template_stats(session: Session, merchant_id: int, template_id: int) -> dict[str, dict[str, dict[str, int]]]:
    """Per status: coupons, discount given and order amount; plus per source counts."""
    by_status = session.execute(
        select(
            MemberCoupon.status, func.count(), func.coalesce(func.sum(MemberCoupon.discount_amount), 0),
            func.coalesce(func.sum(MemberCoupon.order_amount), 0),
        )
        .where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.template_id == template_id)
        .group_by(MemberCoupon.status)
    ).all()
    by_source = session.execute(
        select(MemberCoupon.source, func.count())
        .where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.template_id == template_id)
        .group_by(MemberCoupon.source)
    ).all()
    return {
        "status": {str(s): {"count": int(n), "discount": int(d), "gmv": int(g)} for s, n, d, g in by_status},
        "source": {str(s): {"count": int(n)} for s, n in by_source},
    }


__all__ = ["USED"]


def member_wallet(session: Session, merchant_id: int, member_id: int) -> list[MemberCoupon]:
    stmt = select(MemberCoupon).where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.member_id == member_id)
    return list(session.scalars(stmt.order_by(MemberCoupon.id)))


def unused_count(session: Session, merchant_id: int, member_id: int, now: dt.datetime) -> int:
    stmt = select(func.count()).select_from(MemberCoupon).where(
        MemberCoupon.merchant_id == merchant_id, MemberCoupon.member_id == member_id,
        MemberCoupon.status == UNUSED, MemberCoupon.valid_until > now,
    )
    return int(session.scalar(stmt) or 0)



