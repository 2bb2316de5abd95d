"""After-sale requests, their lines and the merchant's after-sales policy.

State machine (``status``)::

    requested ─┬─► rejected
               ├─► cancelled (customer: requested / approved / awaiting_return)
               └─► approved
    refund_only:   approved ─► refunding ─► completed            (refund succeeded)
    return_refund: approved ─► awaiting_return ─► returned ─► refunding ─► completed
    exchange:      approved ─► awaiting_return ─► returned ─► exchange_shipped ─► completed

A refund the provider refuses (``order.refund_failed``) moves the after-sale back from
``refunding`` to where it was (``approved`` / ``returned``); the operator retries it.

An order line can be in at most one *open* after-sale at a time. This is enforced by the
database, portably: ``AfterSaleLine.open_order_line_id`` holds the order line id while the
after-sale is open and NULL once it is closed, under ``UNIQUE (merchant_id,
open_order_line_id)`` (NULLs never collide on SQLite nor PostgreSQL), so two concurrent
requests for the same line cannot both succeed.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime

# Kinds
REFUND_ONLY = "refund_only"  # 仅退款
RETURN_REFUND = "return_refund"  # 退货退款
EXCHANGE = "exchange"  # 换货
KINDS = (REFUND_ONLY, RETURN_REFUND, EXCHANGE)
RETURN_KINDS = (RETURN_REFUND, EXCHANGE)

# Statuses
REQUESTED = "requested"
APPROVED = "approved"
REJECTED = "rejected"
AWAITING_RETURN = "awaiting_return"
RETURNED = "returned"
REFUNDING = "refunding"
EXCHANGE_SHIPPED = "exchange_shipped"
COMPLETED = "completed"
CANCELLED = "cancelled"
STATUSES = (
    REQUESTED,
    APPROVED,
    REJECTED,
    AWAITING_RETURN,
    RETURNED,
    REFUNDING,
    EXCHANGE_SHIPPED,
    COMPLETED,
    CANCELLED,
)
CLOSED_STATUSES = (REJECTED, COMPLETED, CANCELLED)
OPEN_STATUSES = tuple(s for s in STATUSES if s not in CLOSED_STATUSES)
CUSTOMER_CANCELLABLE = (REQUESTED, APPROVED, AWAITING_RETURN)

REASON_CODES = (
    "not_received",  # 未收到货
    "damaged",  # 商品破损
    "quality_issue",  # 质量问题
    "not_as_described",  # 与描述不符
    "wrong_item",  # 发错货
    "size_fit",  # 尺码/度数不合适
    "changed_mind",  # 不想要了 / 七天无理由
    "other",
)


class AfterSale(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "aftersales"
    __table_args__ = (
        UniqueConstraint("merchant_id", "member_id", "idempotency_key"),
        Index("ix_aftersales_status", "merchant_id", "status", "created_at"),
        Index("ix_aftersales_order", "merchant_id", "order_id"),
        Index("ix_aftersales_member", "merchant_id", "member_id", "created_at"),
        Index("ix_aftersales_refund", "merchant_id", "refund_id"),
        CheckConstraint(
            "computed_amount >= 0 AND refund_amount >= 0 AND refund_amount <= computed_amount",
            name="amounts_valid",
        ),
    )

    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"))
    member_id: Mapped[int] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(20), default=REQUESTED)
    reason_code: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    images: Mapped[list[str]] = mapped_column(JSONDoc, default=list)
    # Retried creates with the same key return the first result (optional Idempotency-Key header).
    idempotency_key: Mapped[str | None] = mapped_column(String(80), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Money (fen). computed_amount: the lines' paid share (the most that may be refunded).
    # refund_amount: what is (or was) refunded; 0 for exchanges; lowered only by the operator.
    computed_amount: Mapped[int] = mapped_column(Integer, default=0)
    refund_amount: Mapped[int] = mapped_column(Integer, default=0)
    # Policy snapshot at request time
    return_shipping_paid_by_merchant: Mapped[bool] = mapped_column(Boolean, default=False)
    # Review
    reviewer_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    review_note: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reject_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The customer's shipment back to the merchant
    return_carrier: Mapped[str | None] = mapped_column(String(32), nullable=True)
    return_tracking_no: Mapped[str | None] = mapped_column(String(64), nullable=True)
    return_shipped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    returned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    restocked: Mapped[bool] = mapped_column(Boolean, default=False)
    # The replacement shipment (exchange)
    exchange_carrier: Mapped[str | None] = mapped_column(String(32), nullable=True)
    exchange_tracking_no: Mapped[str | None] = mapped_column(String(64), nullable=True)
    exchange_shipped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The refund (payments.Refund id)
    refund_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    refund_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    refund_attempts: Mapped[int] = mapped_column(Integer, default=0)  # > 1 after a failed refund was retried
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AfterSaleLine(IdMixin, TenantMixin, Base):
    __tablename__ = "aftersale_lines"
    __table_args__ = (
        UniqueConstraint("merchant_id", "open_order_line_id"),
        UniqueConstraint("aftersale_id", "order_line_id"),
        Index("ix_aftersale_lines_order_line", "merchant_id", "order_line_id"),
        CheckConstraint("quantity > 0", name="quantity_pos"),
        CheckConstraint(
            "amount >= 0 AND refund_amount >= 0 AND refund_amount <= amount", name="amounts_valid"
        ),
    )

    aftersale_id: Mapped[int] = mapped_column(BigId, ForeignKey("aftersales.id"))
    order_line_id: Mapped[int] = mapped_column(BigId, ForeignKey("order_lines.id"))
    # = order_line_id while the after-sale is open, NULL once closed (see the module docstring)
    open_order_line_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    sku_id: Mapped[int] = mapped_column(BigId)
    title: Mapped[str] = mapped_column(String(120), default="")
    spec_text: Mapped[str] = mapped_column(String(120), default="")
    quantity: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(Integer, default=0)  # paid share of these units (fen)
    refund_amount: Mapped[int] = mapped_column(Integer, default=0)  # this line's part of the refund
    exchange_sku_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # replacement SKU (exchange)


class AftersalePolicy(IdMixin, TenantMixin, TimestampMixin, Base):
    """One row per merchant; absent means the defaults (window from settings)."""

    __tablename__ = "aftersale_policies"
    __table_args__ = (
        UniqueConstraint("merchant_id"),
        CheckConstraint("window_days >= 0", name="window_nonneg"),
    )

    window_days: Mapped[int] = mapped_column(Integer)
    refund_only_before_shipment: Mapped[bool] = mapped_column(Boolean, default=True)
    refund_only_after_shipment: Mapped[bool] = mapped_column(Boolean, default=False)
    return_refund_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    exchange_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    return_shipping_paid_by_merchant: Mapped[bool] = mapped_column(Boolean, default=False)
    return_address: Mapped[str | None] = mapped_column(String(300), nullable=True)
