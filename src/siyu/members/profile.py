"""Member profile: attributes, merchant-defined custom fields, and the member 360 view.

Custom field values live in ``members.custom_fields`` (a JSON object keyed by the field key)
and are validated by type on every write (``custom_field_invalid`` with the field path, e.g.
``custom_fields.shoe_size``). Required fields are checked when a write touches
``custom_fields``, so members created before a field became required can still change their
other attributes. The age band is derived from the birthday in the merchant's time zone.

A profile is **complete** when gender (male / female), birthday, city and phone are set
(``is_complete``); the first time it is, the loyalty task ``complete_profile`` is rewarded
(``note_completion`` → ``member.profile_completed`` → job → ``loyalty.complete_task``).

The 360 view collects sections; modules that are not installed are skipped. Other modules add
a section with ``register_section(name, fn)`` where ``fn(session, merchant_id, member_id)``
returns a JSON-able value (or ``None`` to leave it out). Built-in sections: profile, stats
(``siyu.audience``), loyalty (``siyu.loyalty.service.member_summary`` when it exists), coupons
(``siyu.coupons.service.member_coupon_count``), recent orders, tags, staff
owner, latest records, consent, merges.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.kit.errors import DomainError, FieldError, not_found, register_messages
from siyu.kit.outbox import enqueue
from siyu.kit.timeutil import local_date, utcnow
from siyu.members import repository as repo
from siyu.members.models import CustomFieldDef, Member
from siyu.members.schemas import (
    CustomFieldDefIn,
    FieldDef,
    ProfileOut,
    ProfilePatch,
    check_values,
    required_error,
)

register_messages(
    {
        "custom_field_invalid": (422, "自定义字段的值不正确", "A custom field value is not valid"),
        "custom_field_key_taken": (409, "自定义字段 {key} 已存在", "Custom field {key} already exists"),
    }
)

Section = Callable[[Session, int, int], Any]
_SECTIONS: dict[str, Section] = {}


def register_section(name: str, fn: Section) -> None:
    """Add a section to the member 360 view (other modules call this at import)."""
    _SECTIONS[name] = fn


def age_band(birthday: dt.date | None, today: dt.date) -> str | None:
    if birthday is None:
        return None
    age = today.year - birthday.year - ((today.month, today.day) < (birthday.month, birthday.day))
    if age < 18:
        return "lt_18"
    for upper, band in ((24, "18_24"), (34, "25_34"), (44, "35_44"), (54, "45_54")):
        if age <= upper:
            return band
    return "55_plus"


def _merchant_today(session: Session, merchant_id: int) -> dt.date:
    from siyu.tenancy import service as tenancy_service

    return local_date(utcnow(), tenancy_service.get_merchant(session, merchant_id).timezone)


# -- custom field definitions -------------------------------------------------------------------


def list_field_defs(session: Session, merchant_id: int) -> list[CustomFieldDef]:
    return repo.custom_field_defs(session, merchant_id)


def create_field_def(session: Session, merchant_id: int, data: CustomFieldDefIn) -> CustomFieldDef:
    if repo.custom_field_by_key(session, merchant_id, data.key):
        raise DomainError("custom_field_key_taken", key=data.key)
    row = CustomFieldDef(
        merchant_id=merchant_id, **data.model_dump(include={"key", "label", "type", "options", "required", "position"}),
        constraints=data.model_dump(include={"min", "max", "max_length"}),
    )
    session.add(row)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise DomainError("custom_field_key_taken", key=data.key) from exc
    return row


def update_field_def(session: Session, merchant_id: int, def_id: int, data: CustomFieldDefIn) -> CustomFieldDef:
    row = repo.custom_field_def(session, merchant_id, def_id)
    if row is None:
        raise not_found("自定义字段", "Custom field")
    if data.key != row.key:
        raise DomainError("validation_error", fields=[FieldError("body.key", "immutable", "the key cannot change",
                                                                 "字段 key 创建后不能修改")])
    row.label, row.type, row.options, row.required, row.position = (
        data.label, data.type, list(data.options), data.required, data.position,
    )
    row.constraints = data.model_dump(include={"min", "max", "max_length"})
    return row


def delete_field_def(session: Session, merchant_id: int, def_id: int) -> None:
    row = repo.custom_field_def(session, merchant_id, def_id)
    if row is None:
        raise not_found("自定义字段", "Custom field")
    session.delete(row)


def field_def_out(d: CustomFieldDef) -> dict[str, Any]:
    return {"id": d.id, "key": d.key, "label": d.label, "type": d.type, "options": list(d.options or []),
            "required": d.required, "position": d.position, **(d.constraints or {})}


def _defs(session: Session, merchant_id: int) -> list[FieldDef]:
    return [
        FieldDef.model_validate({k: v for k, v in field_def_out(d).items() if k not in ("id", "position")})
        for d in repo.custom_field_defs(session, merchant_id)
    ]


# -- profile ----------------------------------------------------------------------------------------


def profile_out(member: Member, today: dt.date) -> ProfileOut:
    return ProfileOut(
        id=member.id, nickname=member.nickname, avatar_url=member.avatar_url, phone=member.phone,
        gender=member.gender, birthday=member.birthday, age_band=age_band(member.birthday, today),
        province=member.province, city=member.city, occupation=member.occupation, income_band=member.income_band,
        interests=list(member.interests or []), custom_fields=dict(member.custom_fields or {}),
        registered_at=member.registered_at, registration_channel=member.registration_channel,
        staff_id=member.staff_id, status=member.status,
    )


def get_profile(session: Session, merchant_id: int, member_id: int) -> ProfileOut:
    from siyu.members.service import get_member

    return profile_out(get_member(session, merchant_id, member_id), _merchant_today(session, merchant_id))


def patch_profile(session: Session, merchant_id: int, member_id: int, patch: ProfilePatch) -> ProfileOut:
    """Validate everything first, then write: a bad value leaves the member unchanged."""
    from siyu.members.service import get_member

    member = get_member(session, merchant_id, member_id)
    fields = patch.model_dump(exclude_unset=True)
    custom = fields.pop("custom_fields", None)
    new_custom: dict[str, Any] | None = None
    if custom is not None:
        defs = _defs(session, merchant_id)
        merged = dict(member.custom_fields or {})
        to_check = {k: v for k, v in custom.items() if v is not None}
        clean, errors = check_values(defs, to_check, prefix="custom_fields", check_required=False)
        for k, v in custom.items():
            if v is None:
                merged.pop(k, None)
        merged.update(clean)
        if not errors:
            errors = [required_error(f"custom_fields.{d.key}") for d in defs
                      if d.required and merged.get(d.key) in (None, "", [])]
        if errors:
            raise DomainError("custom_field_invalid", fields=errors)
        new_custom = merged
    for key, value in fields.items():
        setattr(member, key, value)
    if new_custom is not None:
        member.custom_fields = new_custom
    session.flush()
    enqueue(session, merchant_id, "members.reevaluate_member", {"member_id": member.id})
    note_completion(session, merchant_id, member)
    return profile_out(member, _merchant_today(session, merchant_id))


# -- profile completion --------------------------------------------------------------------------


def is_complete(member: Member) -> bool:
    """A complete profile: gender (male or female, not "unknown"), birthday, city and phone set."""
    return member.gender in ("male", "female") and member.birthday is not None and bool(member.city) and bool(
        member.phone
    )


def note_completion(session: Session, merchant_id: int, member: Member) -> bool:
    """Emit ``member.profile_completed`` when the profile is complete (once per member: the
    event's job key is per member), whose job completes the loyalty task ``complete_profile``.
    Called from every path that fills the profile: profile update, phone binding, merge."""
    if not is_complete(member):
        return False
    from siyu.kit.events import emit

    emit(session, merchant_id, "member.profile_completed", {"member_id": member.id}, key=f"member:{member.id}")
    return True


def complete_profile_task(session: Session, merchant_id: int, member_id: int) -> Any:
    """The loyalty task ``complete_profile`` (ref ``profile``: once per member), if the profile is
    still complete; nothing for a merchant whose loyalty rules lack the task."""
    from siyu.loyalty import service as loyalty

    member = repo.by_id(session, merchant_id, member_id)
    if member is None or not is_complete(member):
        return None
    try:
        with session.begin_nested():
            return loyalty.complete_task(session, merchant_id, member_id, "complete_profile", ref="profile")
    except DomainError as exc:
        if exc.code != "task_unknown":
            raise
        return None


# -- member 360 --------------------------------------------------------------------------------------


def _optional(module: str, attr: str) -> Callable[..., Any] | None:
    """``module.attr`` when the module is installed and has it; otherwise None (section skipped)."""
    try:
        if importlib.util.find_spec(module.rsplit(".", 1)[0]) is None or importlib.util.find_spec(module) is None:
            return None
        fn = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    return fn if callable(fn) else None


def _stats(session: Session, merchant_id: int, member_id: int) -> dict[str, Any] | None:
    if importlib.util.find_spec("siyu.audience") is None:
        return None
    from siyu.audience.models import MemberStats

    st = session.scalar(select(MemberStats).where(MemberStats.merchant_id == merchant_id, MemberStats.member_id == member_id))
    if st is None:
        return None
    keys = ("paid_orders", "paid_total", "refunded_total", "first_order_at", "last_order_at", "last_visit_at",
            "lifecycle_stage", "rfm_tier", "predicted_clv", "product_views", "cart_adds", "favorites")
    out = {k: getattr(st, k) for k in keys}
    out["aov"] = st.aov
    return out


def _recent_orders(session: Session, merchant_id: int, member_id: int, limit: int = 5) -> list[dict[str, Any]]:
    from siyu.orders.models import Order

    rows = session.scalars(
        select(Order).where(Order.merchant_id == merchant_id, Order.member_id == member_id)
        .order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
    )
    return [
        {"id": o.id, "order_no": o.order_no, "status": o.status, "payable_amount": o.payable_amount,
         "paid_amount": o.paid_amount, "refunded_amount": o.refunded_amount, "created_at": o.created_at,
         "paid_at": o.paid_at}
        for o in rows
    ]


def member_360(session: Session, merchant_id: int, member_id: int) -> dict[str, Any]:
    from siyu.members import privacy, records, staff_owner, tags
    from siyu.members.service import get_member, merges_of

    member = get_member(session, merchant_id, member_id)
    out: dict[str, Any] = {"profile": profile_out(member, _merchant_today(session, merchant_id)).model_dump()}
    out["stats"] = _stats(session, merchant_id, member_id)
    loyalty = _optional("siyu.loyalty.service", "member_summary")
    if loyalty is not None:
        out["loyalty"] = loyalty(session, merchant_id, member_id)
    coupons = _optional("siyu.coupons.service", "member_coupon_count")
    if coupons is not None:
        out["coupons"] = {"count": coupons(session, merchant_id, member_id)}
    out["recent_orders"] = _recent_orders(session, merchant_id, member_id)
    out["tags"] = [t.model_dump() for t in tags.member_tag_list(session, merchant_id, member_id)]
    out["staff_owner"] = staff_owner.owner_summary(session, merchant_id, member)
    out["records"] = [r.model_dump() for r in records.latest(session, merchant_id, member_id)]
    out["consent"] = [c.model_dump() for c in privacy.list_consents(session, merchant_id, member_id)]
    out["merges"] = [
        {"kept_member_id": m.kept_member_id, "merged_member_id": m.merged_member_id, "reason": m.reason, "at": m.at}
        for m in merges_of(session, merchant_id, member_id)
    ]
    for name, fn in _SECTIONS.items():
        value = fn(session, merchant_id, member_id)
        if value is not None:
            out[name] = value
    return out
