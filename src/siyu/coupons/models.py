"""Coupon tables.

- ``CouponTemplate``: what a coupon is (kind, amounts, scope, validity, quantity, limits, the
  channels that may issue it). ``issued`` moves only by the conditional update
  ``issued = issued + 1 WHERE issued < total_quantity``; ``CHECK (issued <= total_quantity)``
  backs it up.
- ``CouponMemberCounter``: coupons of a template a member has received, moved only by
  ``received = received + 1 WHERE received < per_member_limit`` (the row is created with
  ``INSERT ... ON CONFLICT DO NOTHING`` first, so concurrent first claims meet on one row).
- ``MemberCoupon``: one coupon in a member's wallet. ``unused → locked`` (a pending order,
  conditional on ``status = 'unused'``) ``→ used`` (order paid) or back ``→ unused`` (order
  cancelled / fully refunded while still valid; ``expired`` after its validity). ``unused →
  expired`` by the expiry job, ``unused → voided`` by an operator. ``idempotency_key`` is unique
  per merchant: a retried issue returns the first coupon.
- ``CouponTemplate.level_ids``: a level-exclusive coupon (等级专属券) is received only by members
  whose effective level is one of these (``service.check_level``); ``[]``: everyone.
- ``CouponCode``: one-time redeem codes of a template; redeemed once by a conditional update.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime

# Template kinds
FIXED = "fixed"  # 立减: amount off (optionally with a minimum spend)
PERCENT = "percent"  # 折扣: percent_off_bp of the eligible amount, capped at max_discount
THRESHOLD = "threshold"  # 满减: spend ``threshold`` on eligible lines, save ``amount``
FREE_SHIPPING = "free_shipping"  # 包邮
KINDS = (FIXED, PERCENT, THRESHOLD, FREE_SHIPPING)

# Scope
SCOPE_ALL = "all"
SCOPE_CATEGORIES = "categories"
SCOPE_PRODUCTS = "products"
SCOPES = (SCOPE_ALL, SCOPE_CATEGORIES, SCOPE_PRODUCTS)

# Validity
VALID_FIXED = "fixed"  # valid_from .. valid_until
VALID_RELATIVE = "relative"  # valid_days after receipt
VALIDITY_MODES = (VALID_FIXED, VALID_RELATIVE)

# Template status
DRAFT = "draft"
ACTIVE = "active"
STOPPED = "stopped"
TEMPLATE_STATUSES = (DRAFT, ACTIVE, STOPPED)

# Issue channels (``CouponTemplate.channels``)
CH_CLAIM = "claim"  # self-claim in the store (领券中心)
CH_REGISTRATION = "registration"  # on member registration
CH_AFTER_PAYMENT = "after_payment"  # next-order coupon on order.paid
CH_CODE = "code"  # redeem code
CH_OPERATOR = "operator"  # bulk issue by an operator
CH_API = "api"  # other modules (lottery, journeys, referral...) via ``service.issue_to_member``
CHANNELS = (CH_CLAIM, CH_REGISTRATION, CH_AFTER_PAYMENT, CH_CODE, CH_OPERATOR, CH_API)

# Wallet states
UNUSED = "unused"
LOCKED = "locked"
USED = "used"
EXPIRED = "expired"
VOIDED = "voided"
COUPON_STATUSES = (UNUSED, LOCKED, USED, EXPIRED, VOIDED)


class CouponTemplate(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "coupon_templates"
    __table_args__ = (
        CheckConstraint("issued >= 0", name="issued_nonneg"),
        CheckConstraint("total_quantity IS NULL OR issued <= total_quantity", name="issued_within_total"),
        CheckConstraint("amount >= 0 AND threshold >= 0", name="amounts_nonneg"),
        CheckConstraint("max_discount IS NULL OR max_discount >= 0", name="cap_nonneg"),
        CheckConstraint("percent_off_bp >= 0 AND percent_off_bp <= 10000", name="percent_valid"),
        CheckConstraint("per_member_limit >= 1", name="limit_pos"),
        Index("ix_coupon_templates_status", "merchant_id", "status"),
    )

    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(500), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Integer, default=0)  # fen off (fixed, threshold)
    threshold: Mapped[int] = mapped_column(Integer, default=0)  # minimum eligible spend, fen (0: none)
    percent_off_bp: Mapped[int] = mapped_column(Integer, default=0)  # 1500 = 15% off (八五折)
    max_discount: Mapped[int | None] = mapped_column(Integer, nullable=True)  # cap for percent, fen
    scope: Mapped[str] = mapped_column(String(16), default=SCOPE_ALL)
    scope_ids: Mapped[list[int]] = mapped_column(JSONDoc, default=list)  # category or product ids
    excluded_product_ids: Mapped[list[int]] = mapped_column(JSONDoc, default=list)
    stackable: Mapped[bool] = mapped_column(Boolean, default=False)
    validity_mode: Mapped[str] = mapped_column(String(16), default=VALID_FIXED)
    valid_from: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    valid_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    valid_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # When members may receive it (claim/code/registration/...); None = open.
    issue_starts_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    issue_ends_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    total_quantity: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: unlimited
    issued: Mapped[int] = mapped_column(Integer, default=0)
    per_member_limit: Mapped[int] = mapped_column(Integer, default=1)
    channels: Mapped[list[str]] = mapped_column(JSONDoc, default=list)
    after_payment_min_amount: Mapped[int] = mapped_column(Integer, default=0)  # fen paid to earn it
    expiry_reminder_days: Mapped[int] = mapped_column(Integer, default=3)  # 0: no reminder
    # Level-exclusive coupon (等级专属券): loyalty level ids whose members may receive it; [] = everyone.
    # Checked at receipt (``service.check_level``), never at checkout.
    level_ids: Mapped[list[int]] = mapped_column(JSONDoc, default=list, server_default="[]")
    status: Mapped[str] = mapped_column(String(16), default=DRAFT)


class CouponMemberCounter(IdMixin, TenantMixin, Base):
    __tablename__ = "coupon_member_counters"
    __table_args__ = (
        UniqueConstraint("merchant_id", "template_id", "member_id"),
        CheckConstraint("received >= 0", name="received_nonneg"),
    )

    template_id: Mapped[int] = mapped_column(BigId, ForeignKey("coupon_templates.id"))
    member_id: Mapped[int] = mapped_column(BigId)
    received: Mapped[int] = mapped_column(Integer, default=0)


class MemberCoupon(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "member_coupons"
    __table_args__ = (
        UniqueConstraint("merchant_id", "idempotency_key"),
        UniqueConstraint("merchant_id", "code"),
        CheckConstraint("discount_amount >= 0 AND order_amount >= 0", name="amounts_nonneg"),
        CheckConstraint("valid_until > valid_from", name="validity_valid"),
        Index("ix_member_coupons_wallet", "merchant_id", "member_id", "status"),
        Index("ix_member_coupons_template", "merchant_id", "template_id", "status"),
        Index("ix_member_coupons_order", "merchant_id", "order_id"),
        Index("ix_member_coupons_due", "merchant_id", "status", "valid_until"),
        Index("ix_member_coupons_remind", "merchant_id", "status", "remind_at"),
    )

    template_id: Mapped[int] = mapped_column(BigId, ForeignKey("coupon_templates.id"))
    member_id: Mapped[int] = mapped_column(BigId)
    code: Mapped[str] = mapped_column(String(20))  # shown to the customer and staff
    status: Mapped[str] = mapped_column(String(12), default=UNUSED)
    source: Mapped[str] = mapped_column(String(40))  # claim | registration | after_payment | code | operator | api:...
    idempotency_key: Mapped[str] = mapped_column(String(120))
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    remind_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reminded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    order_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # locking / using order
    discount_amount: Mapped[int] = mapped_column(Integer, default=0)  # fen the order took off with it
    order_amount: Mapped[int] = mapped_column(Integer, default=0)  # paid amount of that order (GMV)
    locked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    returned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    voided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)


class CouponCode(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "coupon_codes"
    __table_args__ = (
        UniqueConstraint("merchant_id", "code"),
        Index("ix_coupon_codes_template", "merchant_id", "template_id"),
    )

    template_id: Mapped[int] = mapped_column(BigId, ForeignKey("coupon_templates.id"))
    code: Mapped[str] = mapped_column(String(32))
    redeemed_by: Mapped[int | None] = mapped_column(BigId, nullable=True)
    redeemed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    member_coupon_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
