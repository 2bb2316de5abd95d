"""Payment attempts, refunds and the log of every provider notification.

``Payment``: one row per payment attempt (its own ``out_trade_no``). While an attempt is open
(``created``) ``open_order_id`` holds its order id under ``UNIQUE (merchant_id, open_order_id)``,
so an order has at most one open attempt even when two pay requests race; it is NULL once the
attempt succeeded, closed or failed (NULLs never collide on SQLite nor PostgreSQL).
``UNIQUE (merchant_id, transaction_id)`` makes a provider transaction recordable once.

``Refund``: money going back. ``reserved`` says whether the amount was booked against the order
(``orders.service.reserve_refund``); automatic refunds of a payment the order could not accept
(the order was cancelled, or already paid by another attempt) are not booked on the order.

A zero-paid order (payable 0: coupons, points-only exchange) has no payment; its line refunds
are ``Refund`` rows of amount 0 without ``payment_id`` that succeed when booked.

``PaymentNotification``: append-only; every delivery, forged ones included, with its outcome.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime
from siyu.kit.timeutil import utcnow

# Providers
SANDBOX = "sandbox"
WECHATPAY = "wechatpay"
PROVIDERS = (SANDBOX, WECHATPAY)

# Payment status
PAYMENT_CREATED = "created"
PAYMENT_SUCCEEDED = "succeeded"
PAYMENT_CLOSED = "closed"
PAYMENT_FAILED = "failed"
PAYMENT_STATUSES = (PAYMENT_CREATED, PAYMENT_SUCCEEDED, PAYMENT_CLOSED, PAYMENT_FAILED)

# Refund status
REFUND_PENDING = "pending"  # booked, waiting for the submit job
REFUND_PROCESSING = "processing"  # accepted by the provider, result not known yet
REFUND_SUCCEEDED = "succeeded"
REFUND_FAILED = "failed"
REFUND_STATUSES = (REFUND_PENDING, REFUND_PROCESSING, REFUND_SUCCEEDED, REFUND_FAILED)

# Notification outcomes
ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"


class Payment(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("merchant_id", "out_trade_no"),
        UniqueConstraint("merchant_id", "transaction_id"),
        UniqueConstraint("merchant_id", "open_order_id"),
        Index("ix_payments_order", "merchant_id", "order_id"),
        Index("ix_payments_status", "merchant_id", "status", "created_at"),
        CheckConstraint("amount > 0 AND fee_amount >= 0", name="amounts_valid"),
    )

    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"))
    member_id: Mapped[int] = mapped_column(BigId)
    out_trade_no: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=PAYMENT_CREATED)
    open_order_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    description: Mapped[str] = mapped_column(String(127), default="")
    prepay_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    transaction_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    trade_state: Mapped[str | None] = mapped_column(String(32), nullable=True)  # last state the provider reported
    payer_openid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    fee_amount: Mapped[int] = mapped_column(Integer, default=0)
    # Why a succeeded payment was not applied to its order (order_not_payable ...): it was refunded.
    unapplied_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Refund(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("merchant_id", "out_refund_no"),
        UniqueConstraint("merchant_id", "idempotency_key"),
        Index("ix_refunds_order", "merchant_id", "order_id"),
        Index("ix_refunds_status", "merchant_id", "status", "created_at"),
        CheckConstraint("amount >= 0", name="amount_nonneg"),
    )

    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"))
    # NULL for the refund of a zero-paid order (``service.request_refund``): nothing was paid, so
    # there is no payment; such a refund has amount 0 and succeeds at once without the provider.
    payment_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("payments.id"), nullable=True)
    member_id: Mapped[int] = mapped_column(BigId)
    out_refund_no: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(Integer)
    # [{"order_line_id", "quantity", "amount"}]; empty for a whole-order amount or an automatic refund
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    status: Mapped[str] = mapped_column(String(16), default=REFUND_PENDING)
    reason: Mapped[str] = mapped_column(String(80), default="")
    reserved: Mapped[bool] = mapped_column(Boolean, default=True)
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str] = mapped_column(String(80))
    request_hash: Mapped[str] = mapped_column(String(64))
    aftersale_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    requested_by_type: Mapped[str] = mapped_column(String(20), default="system")
    requested_by: Mapped[int | None] = mapped_column(BigId, nullable=True)
    provider_refund_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    provider_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    submitted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    succeeded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def freight_amount(self) -> int:
        """The part of ``amount`` that is the order's freight, given back with the last goods of an
        order not yet shipped (``service.request_refund``): ``amount`` minus the lines' amounts,
        which otherwise add up to ``amount`` exactly. 0 for a refund by amount (not split between
        goods and freight) and for an automatic refund."""
        if not self.lines:
            return 0
        return self.amount - sum(int(ln["amount"]) for ln in self.lines)


class PaymentNotification(IdMixin, TenantMixin, Base):
    """One row per delivery of a provider notification (append-only)."""

    __tablename__ = "payment_notifications"
    __table_args__ = (Index("ix_payment_notifications_id", "merchant_id", "notification_id"),)

    provider: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))  # payment | refund
    notification_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    event_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reference: Mapped[str | None] = mapped_column(String(64), nullable=True)  # out_trade_no / out_refund_no
    # SHA-256 of the decrypted resource: a replay of an id with other content is refused.
    content_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
