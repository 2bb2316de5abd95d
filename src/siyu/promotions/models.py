"""Promotion tables.

- ``Promotion``: one row per activity. ``kind`` picks the shape of ``rules`` (a typed JSON
  document validated on write by ``schemas.RULES[kind]``); the stacking settings are columns,
  stated before the activity starts and fixed once it has started.
- ``PromotionUsage``: the ROI ledger, one row per promotion and order: ``reserved`` at submit,
  ``paid`` on ``order.paid``, ``released`` on ``order.cancelled`` (each transition exactly once,
  by conditional update); refunds of the order are added to ``refunded`` (each refund once) so
  the stats can show the net GMV, and free the refunded units of the member's limit
  (``units_freed``: a full refund all of them, a partial one the refunded quantity of its lines).
- ``PromotionMemberCounter``: units (item kinds) or orders (order kinds) a member holds of a
  promotion, reserved or paid; moved only by conditional updates (``units + q <= limit``).
- ``PromotionSkuCounter``: add-on units sold of a promotion's item, against its total stock
  (``CHECK (sold <= stock)``).
- ``FirstOrderClaim``: at most one per member (unique): the guard that two concurrent first
  orders cannot both get a first-order special. Deleted when its order is cancelled.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime

LIMITED_DISCOUNT = "limited_discount"
FIRST_ORDER = "first_order"
SPEND_SAVE = "spend_save"
SPEND_GIFT = "spend_gift"
ADD_ON = "add_on"
KINDS = (LIMITED_DISCOUNT, FIRST_ORDER, SPEND_SAVE, SPEND_GIFT, ADD_ON)
ITEM_KINDS = (LIMITED_DISCOUNT, FIRST_ORDER)
ORDER_KINDS = (SPEND_SAVE, SPEND_GIFT, ADD_ON)

# Stored status; the effective one adds "scheduled" and "ended" from the clock.
DRAFT = "draft"
ACTIVE = "active"
STOPPED = "stopped"
SCHEDULED = "scheduled"
ENDED = "ended"

RESERVED = "reserved"
PAID = "paid"
RELEASED = "released"


class Promotion(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "promotions"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="window_valid"),
        CheckConstraint("per_member_limit IS NULL OR per_member_limit >= 1", name="limit_pos"),
        Index("ix_promotions_live", "merchant_id", "status", "kind", "ends_at"),
    )

    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(16), default=DRAFT)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    rules: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    # Stacking settings (叠加规则), stated before the start.
    allows_coupons: Mapped[bool] = mapped_column(Boolean, default=True)
    allows_points: Mapped[bool] = mapped_column(Boolean, default=True)
    allows_order_promotions: Mapped[bool] = mapped_column(Boolean, default=True)  # item kinds
    free_shipping: Mapped[bool] = mapped_column(Boolean, default=False)
    per_member_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exclusive: Mapped[bool] = mapped_column(Boolean, default=True)  # spend-and-save: 互斥 vs 可叠加
    activated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PromotionUsage(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "promotion_usages"
    __table_args__ = (
        UniqueConstraint("merchant_id", "promotion_id", "order_id"),
        CheckConstraint("discount >= 0 AND gmv >= 0 AND units >= 0 AND refunded >= 0 AND refunded <= gmv", name="amounts_valid"),
        CheckConstraint("units_freed >= 0 AND units_freed <= units", name="units_freed_valid"),
        Index("ix_promotion_usages_order", "merchant_id", "order_id"),
        Index("ix_promotion_usages_promotion", "merchant_id", "promotion_id", "status"),
    )

    promotion_id: Mapped[int] = mapped_column(BigId, ForeignKey("promotions.id"))
    order_id: Mapped[int] = mapped_column(BigId)
    member_id: Mapped[int] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(20))
    units: Mapped[int] = mapped_column(Integer, default=0)  # counted against the per-member limit
    discount: Mapped[int] = mapped_column(Integer, default=0)  # fen this promotion took off the order
    gmv: Mapped[int] = mapped_column(Integer, default=0)  # the order's payable, fen
    refunded: Mapped[int] = mapped_column(Integer, default=0)  # fen refunded on the order since (≤ gmv)
    refund_ids: Mapped[list[int]] = mapped_column(JSONDoc, default=list)  # refunds counted, once each
    add_on: Mapped[list[list[int]]] = mapped_column(JSONDoc, default=list)  # [[sku_id, qty]] taken
    first_order: Mapped[bool] = mapped_column(Boolean, default=False)
    # Item kinds: the order lines the units sit on, ``[[line_index, sku_id, units, freed,
    # line_quantity, refunded]]`` (the line's position in the order, which is its rank by id; units:
    # the discounted units of the line, fewer than its quantity for a ``full_price`` limited-time
    # discount over the limit; refunded: the line's units refunded so far), so a refund of those
    # lines frees exactly the discounted units the member no longer keeps (discounted units are
    # refunded last). Rows from before have the first four numbers only (every unit discounted).
    # ``units_freed``: units already given back to the member by refunds.
    lines: Mapped[list[list[int]]] = mapped_column(JSONDoc, default=list)
    units_freed: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=RESERVED)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    released_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PromotionMemberCounter(IdMixin, TenantMixin, Base):
    __tablename__ = "promotion_member_counters"
    __table_args__ = (
        UniqueConstraint("promotion_id", "member_id"),
        CheckConstraint("units >= 0", name="units_nonneg"),
    )

    promotion_id: Mapped[int] = mapped_column(BigId, ForeignKey("promotions.id"))
    member_id: Mapped[int] = mapped_column(BigId)
    units: Mapped[int] = mapped_column(Integer, default=0)


class PromotionSkuCounter(IdMixin, TenantMixin, Base):
    __tablename__ = "promotion_sku_counters"
    __table_args__ = (
        UniqueConstraint("promotion_id", "sku_id"),
        CheckConstraint("sold >= 0 AND sold <= stock", name="sold_within_stock"),
    )

    promotion_id: Mapped[int] = mapped_column(BigId, ForeignKey("promotions.id"))
    sku_id: Mapped[int] = mapped_column(BigId)
    stock: Mapped[int] = mapped_column(Integer)
    sold: Mapped[int] = mapped_column(Integer, default=0)


class FirstOrderClaim(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "promotion_first_order_claims"
    __table_args__ = (UniqueConstraint("merchant_id", "member_id"),)

    member_id: Mapped[int] = mapped_column(BigId)
    order_id: Mapped[int] = mapped_column(BigId)
    promotion_id: Mapped[int] = mapped_column(BigId)
