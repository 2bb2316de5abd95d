"""Staff ownership (导购): which staff member owns a customer, and handover when staff leave.

A member is bound to a staff member at registration through the staff's channel code (only
when it has no owner yet), by an operator, or by a handover. Every change is appended to
``member_ownership_log`` (from, to, reason, actor). A handover moves all or some customers of
one staff member to a successor of the same merchant: a staff id of another merchant is a 404
and nothing changes; the successor must be active. Staff accounts (role ``staff``) see only
their own customers (``/my-customers``) and those customers' orders.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.kit.errors import DomainError, FieldError, not_found, register_messages
from siyu.kit.timeutil import utcnow
from siyu.members import repository as repo
from siyu.members.models import Member, OwnershipLog
from siyu.tenancy.models import Staff

register_messages(
    {
        "staff_owner_inactive": (409, "该员工已停用，不能再分配客户", "The staff member is disabled and cannot own customers"),
        "handover_same_staff": (422, "交接双方不能是同一员工", "Handover needs two different staff members"),
        "staff_only": (403, "仅员工账号可以查看“我的客户”", "Only staff accounts have their own customers"),
    }
)


def _staff(session: Session, merchant_id: int, staff_id: int) -> Staff:
    from siyu.tenancy import service as tenancy_service

    return tenancy_service.get_staff(session, merchant_id, staff_id)  # 404 for another merchant's staff


def set_owner(
    session: Session, merchant_id: int, member: Member, staff_id: int | None, *, reason: str,
    actor: tuple[str, int | None] = ("system", None),
) -> bool:
    """Point ``member`` at ``staff_id`` (validated by the caller) and log it; False if unchanged."""
    if member.staff_id == staff_id:
        return False
    now = utcnow()
    session.add(OwnershipLog(merchant_id=merchant_id, member_id=member.id, from_staff_id=member.staff_id,
                             to_staff_id=staff_id, reason=reason, actor_type=actor[0], actor_id=actor[1], at=now))
    member.staff_id = staff_id
    member.staff_bound_at = now if staff_id is not None else None
    return True


def assign(
    session: Session, merchant_id: int, member_id: int, staff_id: int | None, *, actor: tuple[str, int | None],
) -> Member:
    from siyu.members.service import get_member

    member = get_member(session, merchant_id, member_id)
    if staff_id is not None:
        staff = _staff(session, merchant_id, staff_id)
        if not staff.active:
            raise DomainError("staff_owner_inactive")
    set_owner(session, merchant_id, member, staff_id, reason="operator", actor=actor)
    return member


def bind_from_channel(session: Session, merchant_id: int, member: Member, staff_id: int) -> bool:
    """At registration through a staff's channel code: bind when unowned and the staff is active."""
    if member.staff_id is not None:
        return False
    staff = session.scalar(select(Staff).where(Staff.merchant_id == merchant_id, Staff.id == staff_id))
    if staff is None or not staff.active:
        return False
    return set_owner(session, merchant_id, member, staff_id, reason="channel_code")


def handover(
    session: Session, merchant_id: int, from_staff_id: int, to_staff_id: int, member_ids: list[int] | None,
    *, actor: tuple[str, int | None],
) -> int:
    """Move customers of ``from_staff_id`` to ``to_staff_id``; every check runs before any write."""
    _staff(session, merchant_id, from_staff_id)
    successor = _staff(session, merchant_id, to_staff_id)
    if from_staff_id == to_staff_id:
        raise DomainError("handover_same_staff")
    if not successor.active:
        raise DomainError("staff_owner_inactive")
    owned = repo.owned_member_ids(session, merchant_id, from_staff_id)
    if member_ids is None:
        targets = owned
    else:
        owned_set = set(owned)
        bad = [FieldError(f"body.member_ids.{i}", "not_owned", f"member {m} is not a customer of staff {from_staff_id}",
                          f"会员 {m} 不是员工 {from_staff_id} 的客户")
               for i, m in enumerate(member_ids) if m not in owned_set]
        if bad:
            raise DomainError("validation_error", fields=bad)
        targets = list(dict.fromkeys(member_ids))
    moved = 0
    for start in range(0, len(targets), 500):
        chunk = targets[start:start + 500]
        for member in session.scalars(select(Member).where(Member.merchant_id == merchant_id, Member.id.in_(chunk))):
            if set_owner(session, merchant_id, member, to_staff_id, reason="handover", actor=actor):
                moved += 1
    return moved


def owner_summary(session: Session, merchant_id: int, member: Member) -> dict[str, Any] | None:
    if member.staff_id is None:
        return None
    staff = session.scalar(select(Staff).where(Staff.merchant_id == merchant_id, Staff.id == member.staff_id))
    return {
        "staff_id": member.staff_id,
        "display_name": staff.display_name if staff else None,
        "active": staff.active if staff else False,
        "bound_at": member.staff_bound_at,
    }


def my_customer(session: Session, merchant_id: int, staff_id: int, member_id: int) -> Member:
    member = repo.by_id(session, merchant_id, member_id)
    if member is None or member.staff_id != staff_id:
        raise not_found("客户", "Customer")
    return member


def history(session: Session, merchant_id: int, member_id: int) -> list[OwnershipLog]:
    from siyu.members.service import get_member

    get_member(session, merchant_id, member_id)
    return repo.ownership_log(session, merchant_id, member_id)
