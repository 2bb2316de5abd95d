"""A member merge, the coupon side (called by ``siyu.members.service.merge_members``).

- **Unused** coupons of the dropped member move to the kept member's wallet.
- **Locked** coupons (held by a pending order of the dropped member) move to the kept member
  too, still locked by that order: the order keeps its coupon (``mark_used`` and
  ``return_coupons`` find coupons by order), and when it is cancelled (or refunded while the
  coupon is still locked) the coupon comes back as ``unused`` in the kept member's wallet, not
  in the merged member's, which nobody can log in as.
- **Used, expired and voided** coupons stay under the dropped member as history (the
  ``MemberMerge`` row links the two). A used coupon returned later by a full refund of an order
  paid before the merge goes to the kept member's wallet (``service._to_holders`` follows
  ``merged_into`` on every return path), not to the merged member's.
- **Per-member claim counters** (``received``): the dropped member's are added to the kept
  member's, per template, and zeroed, so the per-member limit holds for the person (the sum may
  be above the limit: the person already holds that many, and can claim no more).

Idempotent: a second run finds nothing left under the dropped member (coupons moved, counters
at zero) and moves nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from siyu.coupons.models import LOCKED, UNUSED, CouponMemberCounter, MemberCoupon
from siyu.db.dialect import for_update, insert_ignore
from siyu.kit.timeutil import utcnow


def merge_members(session: Session, merchant_id: int, drop_id: int, keep_id: int) -> dict[str, Any]:
    """Fold the wallet and claim counters of member ``drop_id`` into ``keep_id``; returns counts."""
    session.flush()
    now = utcnow()
    moved: dict[str, Any] = {}
    for status, name in ((UNUSED, "coupons_unused"), (LOCKED, "coupons_locked")):
        moved[name] = _repoint(session, merchant_id, drop_id, keep_id, status, now)
    counters = _counters(session, merchant_id, drop_id)
    for counter in counters:
        _add_received(session, merchant_id, counter.template_id, keep_id, counter.received)
    moved["coupon_counters"] = {str(c.template_id): c.received for c in counters}
    for counter in counters:
        counter.received = 0
    session.flush()
    return moved


# -- queries (here rather than in repository.py, which another change is editing) ------------------


def _repoint(session: Session, merchant_id: int, drop_id: int, keep_id: int, status: str, now: Any) -> int:
    result = session.execute(
        update(MemberCoupon)
        .where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.member_id == drop_id,
               MemberCoupon.status == status)
        .values(member_id=keep_id, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _counters(session: Session, merchant_id: int, member_id: int) -> list[CouponMemberCounter]:
    """The member's non-zero claim counters, locked, by template."""
    stmt = (
        select(CouponMemberCounter)
        .where(CouponMemberCounter.merchant_id == merchant_id, CouponMemberCounter.member_id == member_id,
               CouponMemberCounter.received > 0)
        .order_by(CouponMemberCounter.template_id)
    )
    return list(session.scalars(for_update(stmt, session).execution_options(populate_existing=True)))


def _add_received(session: Session, merchant_id: int, template_id: int, member_id: int, n: int) -> None:
    insert_ignore(
        session, CouponMemberCounter.__table__,  # type: ignore[arg-type]
        {"merchant_id": merchant_id, "template_id": template_id, "member_id": member_id, "received": 0},
        ["merchant_id", "template_id", "member_id"],
    )
    session.execute(
        update(CouponMemberCounter)
        .where(CouponMemberCounter.merchant_id == merchant_id, CouponMemberCounter.template_id == template_id,
               CouponMemberCounter.member_id == member_id)
        .values(received=CouponMemberCounter.received + n)
        .execution_options(synchronize_session=False)
    )
