"""Member tables: the member (customer) itself and what grows around it.

- ``members``: identity (openid / unionid / phone), profile attributes, ownership, status.
  ``status``: ``active`` | ``disabled`` | ``merged`` (see ``merged_into``) | ``deleted``
  (anonymised on the member's request; the row stays so financial records keep a subject).
- ``member_merges``: one row per identity merge (which member was folded into which, and why).
- ``custom_field_defs``: merchant-defined profile fields; values live in ``members.custom_fields``.
- ``record_types`` / ``member_records``: merchant-defined member records (e.g. an eyewear
  prescription), append-only versions.
- ``member_consents`` / ``member_consent_log``: marketing consent per channel, with its history.
- ``tag_groups`` / ``tags`` / ``member_tags`` / ``member_tag_log`` / ``tag_templates``: tags.
- ``member_ownership_log``: which staff member (导购) owned a member, and when it changed.
- ``channel_codes`` / ``channel_scans``: channel codes (渠道码) and their scans.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, Date, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime
from siyu.kit.timeutil import utcnow

MEMBER_ACTIVE = "active"
MEMBER_DISABLED = "disabled"
MEMBER_MERGED = "merged"
MEMBER_DELETED = "deleted"


class Member(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "members"
    __table_args__ = (
        UniqueConstraint("merchant_id", "openid"),
        Index("ix_members_unionid", "merchant_id", "unionid"),
        Index("ix_members_phone", "merchant_id", "phone"),
        Index("ix_members_staff", "merchant_id", "staff_id"),
        Index("ix_members_channel", "merchant_id", "registration_channel"),
    )

    openid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    unionid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(20), nullable=True)
    nickname: Mapped[str | None] = mapped_column(String(64), nullable=True)
    avatar_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    gender: Mapped[str | None] = mapped_column(String(8), nullable=True)  # male | female | unknown
    province: Mapped[str | None] = mapped_column(String(32), nullable=True)
    city: Mapped[str | None] = mapped_column(String(32), nullable=True)
    registered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    registration_channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    staff_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # owning staff (导购)
    status: Mapped[str] = mapped_column(String(16), default=MEMBER_ACTIVE)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # profile
    birthday: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    occupation: Mapped[str | None] = mapped_column(String(64), nullable=True)
    income_band: Mapped[str | None] = mapped_column(String(16), nullable=True)
    interests: Mapped[list[str]] = mapped_column(JSONDoc, default=list)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    staff_bound_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # merge / privacy
    merged_into: Mapped[int | None] = mapped_column(BigId, nullable=True)
    merged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    anonymised_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MemberMerge(IdMixin, TenantMixin, Base):
    """``merged_member_id`` (the newer) was folded into ``kept_member_id`` (the older)."""

    __tablename__ = "member_merges"
    __table_args__ = (UniqueConstraint("merchant_id", "merged_member_id"),)

    kept_member_id: Mapped[int] = mapped_column(BigId, index=True)
    merged_member_id: Mapped[int] = mapped_column(BigId)
    reason: Mapped[str] = mapped_column(String(16))  # unionid | phone | operator
    moved: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)  # what was re-pointed, with counts
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CustomFieldDef(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "custom_field_defs"
    __table_args__ = (UniqueConstraint("merchant_id", "key"),)

    key: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))  # text | number | date | choice | multi_choice | bool
    options: Mapped[list[str]] = mapped_column(JSONDoc, default=list)
    required: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[int] = mapped_column(Integer, default=0)
    constraints: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)  # min / max / max_length


class RecordType(IdMixin, TenantMixin, TimestampMixin, Base):
    """A merchant-defined record kind; ``fields`` is a list of field definitions (same types)."""

    __tablename__ = "record_types"
    __table_args__ = (UniqueConstraint("merchant_id", "key"),)

    key: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(500), nullable=True)
    fields: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class MemberRecord(IdMixin, TenantMixin, Base):
    """One version of a member's record of a type. Never updated: a correction is a new version."""

    __tablename__ = "member_records"
    __table_args__ = (
        UniqueConstraint("merchant_id", "member_id", "record_type_id", "version"),
        Index("ix_member_records_member", "merchant_id", "member_id", "record_type_id"),
    )

    member_id: Mapped[int] = mapped_column(BigId)
    record_type_id: Mapped[int] = mapped_column(BigId)
    version: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    note: Mapped[str | None] = mapped_column(String(500), nullable=True)
    actor_type: Mapped[str] = mapped_column(String(20), default="staff")
    actor_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class MemberConsent(IdMixin, TenantMixin, Base):
    __tablename__ = "member_consents"
    __table_args__ = (UniqueConstraint("merchant_id", "member_id", "channel"),)

    member_id: Mapped[int] = mapped_column(BigId)
    channel: Mapped[str] = mapped_column(String(24))
    granted: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(40))
    granted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class MemberConsentLog(IdMixin, TenantMixin, Base):
    __tablename__ = "member_consent_log"
    __table_args__ = (Index("ix_member_consent_log_member", "merchant_id", "member_id", "at"),)

    member_id: Mapped[int] = mapped_column(BigId)
    channel: Mapped[str] = mapped_column(String(24))
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(40))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class TagGroup(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "tag_groups"
    __table_args__ = (UniqueConstraint("merchant_id", "name"),)

    name: Mapped[str] = mapped_column(String(40))
    description: Mapped[str | None] = mapped_column(String(200), nullable=True)


class Tag(IdMixin, TenantMixin, TimestampMixin, Base):
    """A tag. With ``rule`` (a segment definition) it is a rule tag kept in sync by a job."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("merchant_id", "group_id", "name"),)

    group_id: Mapped[int] = mapped_column(BigId)
    name: Mapped[str] = mapped_column(String(40))
    description: Mapped[str | None] = mapped_column(String(200), nullable=True)
    rule: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc, nullable=True)
    template_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # made by a tag template
    rule_evaluated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TagTemplate(IdMixin, TenantMixin, TimestampMixin, Base):
    """A rule template that makes one tag per month: "bought X in month M → tag '<name> M+offset'"."""

    __tablename__ = "tag_templates"
    __table_args__ = (UniqueConstraint("merchant_id", "name"),)

    name: Mapped[str] = mapped_column(String(40))
    group_id: Mapped[int] = mapped_column(BigId)
    config: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    evaluated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MemberTag(IdMixin, TenantMixin, Base):
    __tablename__ = "member_tags"
    __table_args__ = (
        UniqueConstraint("merchant_id", "member_id", "tag_id"),
        Index("ix_member_tags_tag", "merchant_id", "tag_id"),
    )

    member_id: Mapped[int] = mapped_column(BigId)
    tag_id: Mapped[int] = mapped_column(BigId)
    source: Mapped[str] = mapped_column(String(40))  # manual | csv | segment | rule | template | channel_code | activity:...
    tagged_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class MemberTagLog(IdMixin, TenantMixin, Base):
    __tablename__ = "member_tag_log"
    __table_args__ = (Index("ix_member_tag_log_member", "merchant_id", "member_id", "at"),)

    member_id: Mapped[int] = mapped_column(BigId)
    tag_id: Mapped[int] = mapped_column(BigId)
    action: Mapped[str] = mapped_column(String(8))  # added | removed
    source: Mapped[str] = mapped_column(String(40))
    actor_type: Mapped[str] = mapped_column(String(20), default="system")
    actor_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class OwnershipLog(IdMixin, TenantMixin, Base):
    __tablename__ = "member_ownership_log"
    __table_args__ = (Index("ix_member_ownership_log_member", "merchant_id", "member_id", "at"),)

    member_id: Mapped[int] = mapped_column(BigId)
    from_staff_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    to_staff_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    reason: Mapped[str] = mapped_column(String(20))  # channel_code | operator | handover | merge
    actor_type: Mapped[str] = mapped_column(String(20), default="system")
    actor_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChannelCode(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "channel_codes"
    __table_args__ = (UniqueConstraint("merchant_id", "scene"),)

    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(64))
    scene: Mapped[str] = mapped_column(String(32))
    staff_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    tag_ids: Mapped[list[int]] = mapped_column(JSONDoc, default=list)
    page: Mapped[str | None] = mapped_column(String(128), nullable=True)  # mini-program page of the wxacode
    landing_url: Mapped[str | None] = mapped_column(Text, nullable=True)  # URL template of the plain QR code
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class ChannelScan(IdMixin, TenantMixin, Base):
    __tablename__ = "channel_scans"
    __table_args__ = (Index("ix_channel_scans_code", "merchant_id", "channel_code_id", "scanned_at"),)

    channel_code_id: Mapped[int] = mapped_column(BigId)
    anonymous_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    member_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    scanned_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ActivityTagRule(IdMixin, TenantMixin, TimestampMixin, Base):
    """A tag a member gets by taking part in an activity (``siyu.members.activity_tags``).

    ``activity_kind``: ``coupon`` (a coupon template) | ``flash_sale`` | ``group_buy`` | ``bargain``
    (a bargain activity) | ``promotion`` (any promotion kind). ``moment`` (``on`` in the API):
    ``joined`` (took part: a coupon received, a bargain started) | ``paid`` (an order of the
    activity paid). No foreign key to ``tags``: a tag deleted later leaves the rule behind, and the
    rule is skipped.
    """

    __tablename__ = "activity_tag_rules"
    __table_args__ = (
        # the convention's name would pass PostgreSQL's 63 characters
        UniqueConstraint(
            "merchant_id", "activity_kind", "activity_id", "tag_id", "moment", name="uq_activity_tag_rules_rule"
        ),
    )

    activity_kind: Mapped[str] = mapped_column(String(20))
    activity_id: Mapped[int] = mapped_column(BigId)
    tag_id: Mapped[int] = mapped_column(BigId)
    moment: Mapped[str] = mapped_column(String(10))
