"""Queries for members and everything kept around them (tags, records, consent, ownership,
channel codes). Every query filters on ``merchant_id``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, String, cast, delete, func, or_, select, update
from sqlalchemy.orm import Session

from siyu.members.models import (
    MEMBER_ACTIVE,
    ChannelCode,
    ChannelScan,
    CustomFieldDef,
    Member,
    MemberConsent,
    MemberConsentLog,
    MemberMerge,
    MemberRecord,
    MemberTag,
    MemberTagLog,
    OwnershipLog,
    RecordType,
    Tag,
    TagGroup,
    TagTemplate,
)

# -- members ------------------------------------------------------------------------------------


def by_id(session: Session, merchant_id: int, member_id: int) -> Member | None:
    return session.scalar(select(Member).where(Member.merchant_id == merchant_id, Member.id == member_id))


def by_openid(session: Session, merchant_id: int, openid: str) -> Member | None:
    return session.scalar(select(Member).where(Member.merchant_id == merchant_id, Member.openid == openid))


def by_unionid(session: Session, merchant_id: int, unionid: str) -> Member | None:
    return active_by_unionid(session, merchant_id, unionid)


def active_by_unionid(session: Session, merchant_id: int, unionid: str, *, exclude_id: int | None = None) -> Member | None:
    stmt = select(Member).where(
        Member.merchant_id == merchant_id, Member.unionid == unionid, Member.status == MEMBER_ACTIVE
    )
    if exclude_id is not None:
        stmt = stmt.where(Member.id != exclude_id)
    return session.scalar(stmt.order_by(Member.registered_at, Member.id).limit(1))


def active_by_phone(session: Session, merchant_id: int, phone: str, *, exclude_id: int | None = None) -> Member | None:
    stmt = select(Member).where(Member.merchant_id == merchant_id, Member.phone == phone, Member.status == MEMBER_ACTIVE)
    if exclude_id is not None:
        stmt = stmt.where(Member.id != exclude_id)
    return session.scalar(stmt.order_by(Member.registered_at, Member.id).limit(1))


def active_ids_by_phones(session: Session, merchant_id: int, phones: set[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    if not phones:
        return out
    rows = session.execute(
        select(Member.phone, Member.id).where(
            Member.merchant_id == merchant_id, Member.phone.in_(phones), Member.status == MEMBER_ACTIVE
        )
    )
    for phone, mid in rows:
        if phone is not None:
            out.setdefault(phone, []).append(mid)
    return out


def active_ids(session: Session, merchant_id: int, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    return set(
        session.scalars(
            select(Member.id).where(Member.merchant_id == merchant_id, Member.id.in_(ids), Member.status == MEMBER_ACTIVE)
        )
    )


def search(session: Session, merchant_id: int, q: str | None, phone: str | None, *, staff_id: int | None = None) -> Select[Any]:
    stmt = select(Member).where(Member.merchant_id == merchant_id)
    if staff_id is not None:
        stmt = stmt.where(Member.staff_id == staff_id)
    if phone:
        stmt = stmt.where(Member.phone == phone)
    if q:
        like = f"%{q}%"
        stmt = stmt.where(or_(Member.nickname.like(like), Member.phone.like(like)))
    return stmt


def merges_of(session: Session, merchant_id: int, member_id: int) -> list[MemberMerge]:
    return list(
        session.scalars(
            select(MemberMerge).where(
                MemberMerge.merchant_id == merchant_id,
                or_(MemberMerge.kept_member_id == member_id, MemberMerge.merged_member_id == member_id),
            ).order_by(MemberMerge.id)
        )
    )


def _repoint(session: Session, merchant_id: int, model: Any, drop_id: int, keep_id: int) -> int:
    result = session.execute(
        update(model).where(model.merchant_id == merchant_id, model.member_id == drop_id).values(member_id=keep_id)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def move_member_rows(session: Session, merchant_id: int, drop_id: int, keep_id: int) -> dict[str, int]:
    """Re-point the rows that safely follow a merge (see ``service`` docs); returns counts."""
    from siyu.events.models import AnonymousLink, Event
    from siyu.orders.models import Address
    from siyu.tenancy.models import AuthToken

    moved: dict[str, int] = {}
    # tags: re-point the ones the kept member lacks, drop the duplicates
    kept_tags = select(MemberTag.tag_id).where(MemberTag.merchant_id == merchant_id, MemberTag.member_id == keep_id)
    session.execute(
        delete(MemberTag).where(
            MemberTag.merchant_id == merchant_id, MemberTag.member_id == drop_id, MemberTag.tag_id.in_(kept_tags)
        ).execution_options(synchronize_session=False)
    )
    moved["tags"] = _repoint(session, merchant_id, MemberTag, drop_id, keep_id)
    _repoint(session, merchant_id, MemberTagLog, drop_id, keep_id)
    # records: append the dropped member's versions after the kept member's, in time order
    maxes = dict(
        session.execute(
            select(MemberRecord.record_type_id, func.max(MemberRecord.version))
            .where(MemberRecord.merchant_id == merchant_id, MemberRecord.member_id == keep_id)
            .group_by(MemberRecord.record_type_id)
        ).all()
    )
    records = list(
        session.scalars(
            select(MemberRecord)
            .where(MemberRecord.merchant_id == merchant_id, MemberRecord.member_id == drop_id)
            .order_by(MemberRecord.created_at, MemberRecord.id)
        )
    )
    for rec in records:
        nxt = int(maxes.get(rec.record_type_id) or 0) + 1
        maxes[rec.record_type_id] = nxt
        rec.member_id, rec.version = keep_id, nxt
        session.flush()
    moved["records"] = len(records)
    # consents: the most recent decision per channel wins
    keep_consents = {
        c.channel: c
        for c in session.scalars(
            select(MemberConsent).where(MemberConsent.merchant_id == merchant_id, MemberConsent.member_id == keep_id)
        )
    }
    n = 0
    for c in list(
        session.scalars(
            select(MemberConsent).where(MemberConsent.merchant_id == merchant_id, MemberConsent.member_id == drop_id)
        )
    ):
        k = keep_consents.get(c.channel)
        if k is None:
            c.member_id = keep_id
        else:
            if c.updated_at > k.updated_at:
                k.granted, k.source, k.granted_at, k.revoked_at, k.updated_at = (
                    c.granted, c.source, c.granted_at, c.revoked_at, c.updated_at,
                )
            session.delete(c)
        n += 1
    moved["consents"] = n
    _repoint(session, merchant_id, MemberConsentLog, drop_id, keep_id)
    moved["addresses"] = _repoint(session, merchant_id, Address, drop_id, keep_id)
    moved["events"] = _repoint(session, merchant_id, Event, drop_id, keep_id)
    moved["anonymous_links"] = _repoint(session, merchant_id, AnonymousLink, drop_id, keep_id)
    moved["channel_scans"] = _repoint(session, merchant_id, ChannelScan, drop_id, keep_id)
    result = session.execute(
        update(AuthToken)
        .where(AuthToken.merchant_id == merchant_id, AuthToken.kind == "customer", AuthToken.subject_id == drop_id)
        .values(subject_id=keep_id)
    )
    moved["login_tokens"] = int(getattr(result, "rowcount", 0) or 0)
    session.flush()
    return moved


# -- custom fields / records ---------------------------------------------------------------------


def custom_field_defs(session: Session, merchant_id: int) -> list[CustomFieldDef]:
    return list(
        session.scalars(
            select(CustomFieldDef).where(CustomFieldDef.merchant_id == merchant_id).order_by(
                CustomFieldDef.position, CustomFieldDef.id
            )
        )
    )


def custom_field_def(session: Session, merchant_id: int, def_id: int) -> CustomFieldDef | None:
    return session.scalar(
        select(CustomFieldDef).where(CustomFieldDef.merchant_id == merchant_id, CustomFieldDef.id == def_id)
    )


def custom_field_by_key(session: Session, merchant_id: int, key: str) -> CustomFieldDef | None:
    return session.scalar(
        select(CustomFieldDef).where(CustomFieldDef.merchant_id == merchant_id, CustomFieldDef.key == key)
    )


def record_types(session: Session, merchant_id: int) -> list[RecordType]:
    return list(session.scalars(select(RecordType).where(RecordType.merchant_id == merchant_id).order_by(RecordType.id)))


def record_type(session: Session, merchant_id: int, type_id: int) -> RecordType | None:
    return session.scalar(select(RecordType).where(RecordType.merchant_id == merchant_id, RecordType.id == type_id))


def record_type_by_key(session: Session, merchant_id: int, key: str) -> RecordType | None:
    return session.scalar(select(RecordType).where(RecordType.merchant_id == merchant_id, RecordType.key == key))


def record_count(session: Session, merchant_id: int, type_id: int) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(MemberRecord).where(
                MemberRecord.merchant_id == merchant_id, MemberRecord.record_type_id == type_id
            )
        ) or 0
    )


def record_max_version(session: Session, merchant_id: int, member_id: int, type_id: int) -> int:
    return int(
        session.scalar(
            select(func.max(MemberRecord.version)).where(
                MemberRecord.merchant_id == merchant_id, MemberRecord.member_id == member_id,
                MemberRecord.record_type_id == type_id,
            )
        ) or 0
    )


def record_history(session: Session, merchant_id: int, member_id: int, type_id: int) -> list[MemberRecord]:
    return list(
        session.scalars(
            select(MemberRecord).where(
                MemberRecord.merchant_id == merchant_id, MemberRecord.member_id == member_id,
                MemberRecord.record_type_id == type_id,
            ).order_by(MemberRecord.version.desc())
        )
    )


def latest_records(session: Session, merchant_id: int, member_id: int) -> list[tuple[MemberRecord, RecordType]]:
    latest = (
        select(MemberRecord.record_type_id, func.max(MemberRecord.version).label("v"))
        .where(MemberRecord.merchant_id == merchant_id, MemberRecord.member_id == member_id)
        .group_by(MemberRecord.record_type_id)
        .subquery()
    )
    rows = session.execute(
        select(MemberRecord, RecordType)
        .join(latest, (latest.c.record_type_id == MemberRecord.record_type_id) & (latest.c.v == MemberRecord.version))
        .join(RecordType, (RecordType.merchant_id == merchant_id) & (RecordType.id == MemberRecord.record_type_id))
        .where(MemberRecord.merchant_id == merchant_id, MemberRecord.member_id == member_id)
        .order_by(RecordType.id)
    ).all()
    return [(r, t) for r, t in rows]


def all_records(session: Session, merchant_id: int, member_id: int) -> list[MemberRecord]:
    return list(
        session.scalars(
            select(MemberRecord).where(MemberRecord.merchant_id == merchant_id, MemberRecord.member_id == member_id)
            .order_by(MemberRecord.record_type_id, MemberRecord.version)
        )
    )


# -- consent -----------------------------------------------------------------------------------------


def consents(session: Session, merchant_id: int, member_id: int) -> list[MemberConsent]:
    return list(
        session.scalars(
            select(MemberConsent).where(MemberConsent.merchant_id == merchant_id, MemberConsent.member_id == member_id)
        )
    )


def consent_log(session: Session, merchant_id: int, member_id: int) -> list[MemberConsentLog]:
    return list(
        session.scalars(
            select(MemberConsentLog).where(
                MemberConsentLog.merchant_id == merchant_id, MemberConsentLog.member_id == member_id
            ).order_by(MemberConsentLog.id)
        )
    )


# -- tags ----------------------------------------------------------------------------------------------


def tag_groups(session: Session, merchant_id: int) -> list[TagGroup]:
    return list(session.scalars(select(TagGroup).where(TagGroup.merchant_id == merchant_id).order_by(TagGroup.id)))


def tag_group(session: Session, merchant_id: int, group_id: int) -> TagGroup | None:
    return session.scalar(select(TagGroup).where(TagGroup.merchant_id == merchant_id, TagGroup.id == group_id))


def tag_group_by_name(session: Session, merchant_id: int, name: str) -> TagGroup | None:
    return session.scalar(select(TagGroup).where(TagGroup.merchant_id == merchant_id, TagGroup.name == name))


def tags(session: Session, merchant_id: int, group_id: int | None = None) -> list[Tag]:
    stmt = select(Tag).where(Tag.merchant_id == merchant_id)
    if group_id is not None:
        stmt = stmt.where(Tag.group_id == group_id)
    return list(session.scalars(stmt.order_by(Tag.id)))


def tag(session: Session, merchant_id: int, tag_id: int) -> Tag | None:
    return session.scalar(select(Tag).where(Tag.merchant_id == merchant_id, Tag.id == tag_id))


def tag_by_name(session: Session, merchant_id: int, group_id: int, name: str) -> Tag | None:
    return session.scalar(
        select(Tag).where(Tag.merchant_id == merchant_id, Tag.group_id == group_id, Tag.name == name)
    )


def existing_tag_ids(session: Session, merchant_id: int, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    return set(session.scalars(select(Tag.id).where(Tag.merchant_id == merchant_id, Tag.id.in_(ids))))


def rule_tags(session: Session, merchant_id: int) -> list[Tag]:
    return list(session.scalars(select(Tag).where(Tag.merchant_id == merchant_id, Tag.rule.is_not(None)).order_by(Tag.id)))


def tag_counts(session: Session, merchant_id: int) -> dict[int, int]:
    rows = session.execute(
        select(MemberTag.tag_id, func.count()).where(MemberTag.merchant_id == merchant_id).group_by(MemberTag.tag_id)
    ).all()
    return {int(t): int(c) for t, c in rows}


def member_tags(session: Session, merchant_id: int, member_id: int) -> list[tuple[MemberTag, Tag]]:
    rows = session.execute(
        select(MemberTag, Tag)
        .join(Tag, (Tag.merchant_id == merchant_id) & (Tag.id == MemberTag.tag_id))
        .where(MemberTag.merchant_id == merchant_id, MemberTag.member_id == member_id)
        .order_by(MemberTag.tagged_at, MemberTag.id)
    ).all()
    return [(mt, t) for mt, t in rows]


def member_tag(session: Session, merchant_id: int, member_id: int, tag_id: int) -> MemberTag | None:
    return session.scalar(
        select(MemberTag).where(
            MemberTag.merchant_id == merchant_id, MemberTag.member_id == member_id, MemberTag.tag_id == tag_id
        )
    )


def tagged_member_ids(session: Session, merchant_id: int, tag_id: int, *, source: str | None = None) -> set[int]:
    stmt = select(MemberTag.member_id).where(MemberTag.merchant_id == merchant_id, MemberTag.tag_id == tag_id)
    if source is not None:
        stmt = stmt.where(MemberTag.source == source)
    return set(session.scalars(stmt))


def tag_log(session: Session, merchant_id: int, member_id: int) -> list[MemberTagLog]:
    return list(
        session.scalars(
            select(MemberTagLog).where(MemberTagLog.merchant_id == merchant_id, MemberTagLog.member_id == member_id)
            .order_by(MemberTagLog.id)
        )
    )


def tag_templates(session: Session, merchant_id: int, *, enabled_only: bool = False) -> list[TagTemplate]:
    stmt = select(TagTemplate).where(TagTemplate.merchant_id == merchant_id)
    if enabled_only:
        stmt = stmt.where(TagTemplate.enabled.is_(True))
    return list(session.scalars(stmt.order_by(TagTemplate.id)))


def tag_template(session: Session, merchant_id: int, template_id: int) -> TagTemplate | None:
    return session.scalar(select(TagTemplate).where(TagTemplate.merchant_id == merchant_id, TagTemplate.id == template_id))


def tag_template_by_name(session: Session, merchant_id: int, name: str) -> TagTemplate | None:
    return session.scalar(select(TagTemplate).where(TagTemplate.merchant_id == merchant_id, TagTemplate.name == name))


# -- ownership ------------------------------------------------------------------------------------------


def ownership_log(session: Session, merchant_id: int, member_id: int) -> list[OwnershipLog]:
    return list(
        session.scalars(
            select(OwnershipLog).where(OwnershipLog.merchant_id == merchant_id, OwnershipLog.member_id == member_id)
            .order_by(OwnershipLog.id)
        )
    )


def owned_member_ids(session: Session, merchant_id: int, staff_id: int) -> list[int]:
    return list(
        session.scalars(
            select(Member.id).where(Member.merchant_id == merchant_id, Member.staff_id == staff_id).order_by(Member.id)
        )
    )


# -- channel codes -------------------------------------------------------------------------------------


def channel_codes(session: Session, merchant_id: int) -> list[ChannelCode]:
    return list(session.scalars(select(ChannelCode).where(ChannelCode.merchant_id == merchant_id).order_by(ChannelCode.id)))


def channel_code(session: Session, merchant_id: int, code_id: int) -> ChannelCode | None:
    return session.scalar(select(ChannelCode).where(ChannelCode.merchant_id == merchant_id, ChannelCode.id == code_id))


def channel_code_by_scene(session: Session, merchant_id: int, scene: str) -> ChannelCode | None:
    return session.scalar(select(ChannelCode).where(ChannelCode.merchant_id == merchant_id, ChannelCode.scene == scene))


def channel_stats(session: Session, merchant_id: int) -> dict[str, dict[str, int]]:
    """Per scene: scans, unique scanners, registrations, members with a paid order, GMV (fen)."""
    from siyu.orders import models as om

    paid_states = (om.PAID, om.SHIPPED, om.COMPLETED)
    out: dict[str, dict[str, int]] = {}
    scans = session.execute(
        select(
            ChannelCode.scene, func.count(ChannelScan.id),
            func.count(func.distinct(func.coalesce(ChannelScan.anonymous_id, cast(ChannelScan.member_id, String)))),
        )
        .join(ChannelScan, (ChannelScan.merchant_id == merchant_id) & (ChannelScan.channel_code_id == ChannelCode.id))
        .where(ChannelCode.merchant_id == merchant_id)
        .group_by(ChannelCode.scene)
    ).all()
    for scene, n, uniq in scans:
        out.setdefault(scene, {})["scans"] = int(n)
        out[scene]["unique_scanners"] = int(uniq)
    regs = session.execute(
        select(Member.registration_channel, func.count())
        .where(Member.merchant_id == merchant_id, Member.registration_channel.is_not(None))
        .group_by(Member.registration_channel)
    ).all()
    for reg_scene, n in regs:
        if reg_scene is not None:
            out.setdefault(reg_scene, {})["registrations"] = int(n)
    o = om.Order
    buyers = session.execute(
        select(Member.registration_channel, func.count(func.distinct(o.member_id)), func.sum(o.paid_amount - o.refunded_amount))
        .join(o, (o.merchant_id == merchant_id) & (o.member_id == Member.id))
        .where(
            Member.merchant_id == merchant_id, Member.registration_channel.is_not(None), o.status.in_(paid_states),
        )
        .group_by(Member.registration_channel)
    ).all()
    for buyer_scene, n, gmv in buyers:
        if buyer_scene is not None:
            out.setdefault(buyer_scene, {})["first_orders"] = int(n)
            out[buyer_scene]["gmv"] = int(gmv or 0)
    return out
