"""Flash-sale tables.

- ``FlashSale``: the activity (window, per-day session slots in the merchant's zone, stacking
  rules, default per-member limit).
- ``FlashSaleItem``: one SKU in an activity with its flash price and *activity stock*. The
  activity stock is carved out of the SKU's normal stock when the item is created or raised
  (``catalog.stock.reserve``) and the unsold rest goes back when the activity ends, so normal
  and activity stock never count the same unit twice. The units not handed out yet live
  in ``FlashSaleStockShard`` rows, so a purchase never writes the item row; ``sold`` is read as
  ``activity_stock - sum(shards.remaining)``.
- ``FlashSaleStockShard``: an item's unsold activity units split over ``SHARDS`` rows, so
  concurrent buyers update different rows; moved only by conditional updates
  (``remaining >= q``), ``CHECK (remaining >= 0)`` backs them up.
- ``FlashSaleMemberCounter``: units a member holds of an item (reserved or paid), moved only by
  conditional updates (``bought + q <= limit``); the database half of the per-member limit.
- ``FlashSalePurchase``: the durable ledger, one row per order and item; ``reserved`` →
  ``paid`` or ``released`` (cancelled unpaid), ``paid`` → ``refunded`` (a full refund before
  shipping), each exactly once by conditional update. Redis is rebuilt from it.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import Mapped, column_property, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime

DRAFT = "draft"
SCHEDULED = "scheduled"
ACTIVE = "active"
ENDED = "ended"
STATUSES = (DRAFT, SCHEDULED, ACTIVE, ENDED)

RESERVED = "reserved"
PAID = "paid"
RELEASED = "released"
REFUNDED = "refunded"


class FlashSale(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "flash_sales"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="window_valid"),
        CheckConstraint("per_member_limit >= 1", name="limit_pos"),
        Index("ix_flash_sales_status", "merchant_id", "status", "ends_at"),
    )

    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=DRAFT)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # Per-day sessions in the merchant's zone: [{"start": "10:00", "end": "10:30"}, ...];
    # empty means the whole window is one session.
    slots: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    # Stacking rules (stated before the activity starts): off by default.
    allows_coupons: Mapped[bool] = mapped_column(Boolean, default=False)
    allows_points: Mapped[bool] = mapped_column(Boolean, default=False)
    allows_order_promotions: Mapped[bool] = mapped_column(Boolean, default=False)
    free_shipping: Mapped[bool] = mapped_column(Boolean, default=False)
    per_member_limit: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class FlashSaleItem(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "flash_sale_items"
    __table_args__ = (
        UniqueConstraint("merchant_id", "flash_sale_id", "sku_id"),
        CheckConstraint("activity_stock >= 0", name="stock_nonneg"),
        CheckConstraint("flash_price >= 0", name="price_nonneg"),
        CheckConstraint("returned_stock >= 0", name="returned_nonneg"),
        CheckConstraint("per_member_limit IS NULL OR per_member_limit >= 1", name="limit_pos"),
        Index("ix_flash_sale_items_sale", "merchant_id", "flash_sale_id"),
    )

    flash_sale_id: Mapped[int] = mapped_column(BigId, ForeignKey("flash_sales.id"))
    sku_id: Mapped[int] = mapped_column(BigId, ForeignKey("skus.id"))
    product_id: Mapped[int] = mapped_column(BigId)
    flash_price: Mapped[int] = mapped_column(Integer)  # fen
    activity_stock: Mapped[int] = mapped_column(Integer)
    per_member_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)  # overrides the activity's
    sort: Mapped[int] = mapped_column(Integer, default=0)
    # Set once when the activity ends and the unsold units went back to the SKU.
    closed: Mapped[bool] = mapped_column(Boolean, default=False)
    returned_stock: Mapped[int] = mapped_column(Integer, default=0)
    if TYPE_CHECKING:
        sold: int  # a column_property (below): activity_stock - sum(shards.remaining)


# Stock rows per item: enough that 32 concurrent buyers rarely queue on one row, few enough that
# the slow path (all rows locked, when a buyer's own row is empty) stays cheap.
SHARDS = 8


class FlashSaleStockShard(IdMixin, TenantMixin, Base):
    __tablename__ = "flash_sale_stock_shards"
    __table_args__ = (
        UniqueConstraint("item_id", "shard"),
        CheckConstraint("remaining >= 0", name="remaining_nonneg"),
    )

    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("flash_sale_items.id"))
    shard: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer, default=0)


_shards = FlashSaleStockShard.__table__
# Units reserved or paid: what the activity stock holds beyond the units still in its shards
# (a closed item's shards are empty, so it sold its whole, shrunk, activity stock).
FlashSaleItem.sold = column_property(  # type: ignore[assignment]
    FlashSaleItem.activity_stock
    - select(func.coalesce(func.sum(_shards.c.remaining), 0))
    .where(_shards.c.item_id == FlashSaleItem.id)
    .correlate_except(_shards)
    .scalar_subquery()
)


class FlashSaleMemberCounter(IdMixin, TenantMixin, Base):
    __tablename__ = "flash_sale_member_counters"
    __table_args__ = (
        UniqueConstraint("item_id", "member_id"),
        CheckConstraint("bought >= 0", name="bought_nonneg"),
    )

    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("flash_sale_items.id"))
    member_id: Mapped[int] = mapped_column(BigId)
    bought: Mapped[int] = mapped_column(Integer, default=0)


class FlashSalePurchase(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "flash_sale_purchases"
    __table_args__ = (
        UniqueConstraint("merchant_id", "order_id", "item_id"),
        CheckConstraint("quantity > 0", name="quantity_pos"),
        Index("ix_flash_sale_purchases_item", "merchant_id", "item_id", "status"),
    )

    flash_sale_id: Mapped[int] = mapped_column(BigId, ForeignKey("flash_sales.id"))
    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("flash_sale_items.id"))
    member_id: Mapped[int] = mapped_column(BigId)
    order_id: Mapped[int] = mapped_column(BigId)
    quantity: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(Integer, default=0)  # the line's payable, fen (GMV when paid)
    status: Mapped[str] = mapped_column(String(16), default=RESERVED)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    released_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
