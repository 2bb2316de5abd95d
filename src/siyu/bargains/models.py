"""Bargain (砍价) tables.

- ``BargainActivity``: one SKU with its start price (the SKU's sale price when created), floor
  price, helpers needed (H), hours a bargain lasts, new-users-only helpers, per-member limit
  (bargains a member may start), window and stacking rules.
- ``Bargain``: one member's bargain. The H cuts are generated at start (seeded random, stored
  in ``cuts`` with the ``seed``) and sum exactly to ``start_price - floor_price``, each ≥ 1 fen.
  ``helped_count`` moves only by the conditional update ``helped_count < helpers_needed``, so
  concurrent helps never exceed H; the i-th help takes ``cuts[i-1]``. ``status``:
  ``active → floor_reached`` (last help) and ``active / floor_reached → ordered`` (the checkout
  submit, once; back on a cancelled order) or ``→ expired`` (deadline job).
- ``BargainHelp``: one row per help, ``UNIQUE (bargain_id, helper_member_id)`` (a friend helps
  once) and ``UNIQUE (bargain_id, seq)`` (each cut taken once).
- ``BargainMemberCounter``: bargains a member started in an activity (the per-member limit),
  moved only by ``started < limit``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime

ACTIVE = "active"
DISABLED = "disabled"

FLOOR_REACHED = "floor_reached"
ORDERED = "ordered"
EXPIRED = "expired"
BARGAIN_STATUSES = (ACTIVE, FLOOR_REACHED, ORDERED, EXPIRED)


class BargainActivity(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "bargain_activities"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="window_valid"),
        CheckConstraint("floor_price >= 0", name="floor_nonneg"),
        CheckConstraint("helpers_needed >= 1", name="helpers_pos"),
        CheckConstraint("start_price - floor_price >= helpers_needed", name="cut_per_helper"),
        CheckConstraint("valid_hours >= 1", name="valid_hours_pos"),
        CheckConstraint("per_member_limit >= 1", name="limit_pos"),
        Index("ix_bargain_activities_status", "merchant_id", "status", "ends_at"),
    )

    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=ACTIVE)
    product_id: Mapped[int] = mapped_column(BigId)
    sku_id: Mapped[int] = mapped_column(BigId, ForeignKey("skus.id"))
    start_price: Mapped[int] = mapped_column(Integer)  # fen
    floor_price: Mapped[int] = mapped_column(Integer)  # fen
    helpers_needed: Mapped[int] = mapped_column(Integer)
    valid_hours: Mapped[int] = mapped_column(Integer, default=24)
    new_users_only: Mapped[bool] = mapped_column(Boolean, default=False)
    per_member_limit: Mapped[int] = mapped_column(Integer, default=1)
    allows_coupons: Mapped[bool] = mapped_column(Boolean, default=False)
    allows_points: Mapped[bool] = mapped_column(Boolean, default=False)
    # Its lines count toward (and take) spend-and-save / spend-and-gift / add-on thresholds.
    allows_order_promotions: Mapped[bool] = mapped_column(Boolean, default=False)
    free_shipping: Mapped[bool] = mapped_column(Boolean, default=False)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Bargain(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "bargains"
    __table_args__ = (
        CheckConstraint("helped_count >= 0 AND helped_count <= helpers_needed", name="helped_within_needed"),
        CheckConstraint("cut_total >= 0 AND cut_total <= start_price - floor_price", name="cut_within_range"),
        Index("ix_bargains_activity", "merchant_id", "activity_id", "status"),
        Index("ix_bargains_member", "merchant_id", "member_id"),
        UniqueConstraint("merchant_id", "member_id", "start_key"),
    )

    activity_id: Mapped[int] = mapped_column(BigId, ForeignKey("bargain_activities.id"))
    member_id: Mapped[int] = mapped_column(BigId)
    sku_id: Mapped[int] = mapped_column(BigId)
    start_price: Mapped[int] = mapped_column(Integer)
    floor_price: Mapped[int] = mapped_column(Integer)
    helpers_needed: Mapped[int] = mapped_column(Integer)
    helped_count: Mapped[int] = mapped_column(Integer, default=0)
    cut_total: Mapped[int] = mapped_column(Integer, default=0)
    seed: Mapped[int] = mapped_column(BigInteger)
    cuts: Mapped[list[int]] = mapped_column(JSONDoc, default=list)  # pre-generated, fen each
    status: Mapped[str] = mapped_column(String(16), default=ACTIVE)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    floor_reached_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    order_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    ordered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    start_key: Mapped[str | None] = mapped_column(String(80), nullable=True)  # the start's Idempotency-Key

    @property
    def current_price(self) -> int:
        return self.start_price - self.cut_total


class BargainHelp(IdMixin, TenantMixin, Base):
    __tablename__ = "bargain_helps"
    __table_args__ = (
        UniqueConstraint("bargain_id", "helper_member_id"),
        UniqueConstraint("bargain_id", "seq"),
        CheckConstraint("amount >= 1", name="amount_pos"),
    )

    bargain_id: Mapped[int] = mapped_column(BigId, ForeignKey("bargains.id"))
    helper_member_id: Mapped[int] = mapped_column(BigId)
    seq: Mapped[int] = mapped_column(Integer)  # 1-based: the seq-th pre-generated cut
    amount: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class BargainMemberCounter(IdMixin, TenantMixin, Base):
    __tablename__ = "bargain_member_counters"
    __table_args__ = (
        UniqueConstraint("activity_id", "member_id"),
        CheckConstraint("started >= 0", name="started_nonneg"),
    )

    activity_id: Mapped[int] = mapped_column(BigId, ForeignKey("bargain_activities.id"))
    member_id: Mapped[int] = mapped_column(BigId)
    started: Mapped[int] = mapped_column(Integer, default=0)
