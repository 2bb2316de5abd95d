"""Cart, address, freight template, order, order line and shipment tables.

Order money columns are integer fen. Each order line keeps the discount allocated to it by
each pipeline stage (largest remainder), so the lines sum exactly to the order and a refund of
a line returns exactly its paid share.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime

# Order status (the fulfilment state machine)
PENDING_PAYMENT = "pending_payment"
PAID = "paid"
SHIPPED = "shipped"
COMPLETED = "completed"
CANCELLED = "cancelled"  # never paid: cancelled by the customer, an operator or the payment timeout
CLOSED = "closed"  # paid, then fully refunded before completion
#: The statuses of an order that counts as bought (paid and not fully refunded away).
PAID_STATUSES = (PAID, SHIPPED, COMPLETED)
_PAID_PREDICATE = "status IN ({})".format(", ".join(f"'{s}'" for s in PAID_STATUSES))
ORDER_STATUSES = (PENDING_PAYMENT, PAID, SHIPPED, COMPLETED, CANCELLED, CLOSED)

# Refund status (orthogonal to the fulfilment state)
REFUND_NONE = "none"
REFUND_PARTIAL = "partial"
REFUND_FULL = "full"


class CartItem(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "cart_items"
    __table_args__ = (
        UniqueConstraint("merchant_id", "member_id", "sku_id"),
        CheckConstraint("quantity > 0", name="quantity_pos"),
    )

    member_id: Mapped[int] = mapped_column(BigId)
    sku_id: Mapped[int] = mapped_column(BigId, ForeignKey("skus.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    selected: Mapped[bool] = mapped_column(Boolean, default=True)


class Address(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "addresses"
    __table_args__ = (Index("ix_addresses_member", "merchant_id", "member_id"),)

    member_id: Mapped[int] = mapped_column(BigId)
    name: Mapped[str] = mapped_column(String(32))
    phone: Mapped[str] = mapped_column(String(20))
    province: Mapped[str] = mapped_column(String(32))
    city: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32), default="")
    detail: Mapped[str] = mapped_column(String(200))
    postal_code: Mapped[str | None] = mapped_column(String(10), nullable=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class FreightTemplate(IdMixin, TenantMixin, TimestampMixin, Base):
    """Shipping fee rules.

    ``mode``: ``count`` (units are pieces) or ``weight`` (units are grams). ``rules`` is a list
    of ``{"regions": ["浙江省", ...] or ["*"], "first_units", "first_fee", "extra_units",
    "extra_fee"}`` (fees in fen); the first rule whose regions contain the province applies, a
    ``"*"`` rule is the fallback. ``free_threshold`` (fen, optional): free when the goods amount
    after discounts reaches it. ``unreachable_regions``: provinces not shipped to.
    """

    __tablename__ = "freight_templates"

    name: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(8), default="count")
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    free_threshold: Mapped[int | None] = mapped_column(Integer, nullable=True)
    unreachable_regions: Mapped[list[str]] = mapped_column(JSONDoc, default=list)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)


class Order(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("merchant_id", "order_no"),
        UniqueConstraint("merchant_id", "member_id", "idempotency_key"),
        Index("ix_orders_member", "merchant_id", "member_id", "created_at"),
        Index("ix_orders_status", "merchant_id", "status", "created_at"),
        # Purchase conditions of segments ("≥ 3 paid orders and ≥ ¥1000 in the last 365 days",
        # "bought in the last 30 days", "never bought") read paid orders per member in a window.
        # This partial index holds exactly the paid orders with everything those conditions read,
        # in member order: PostgreSQL answers with an index-only scan (over ``ix_orders_member``
        # every order row came from the heap: 24 s at 200k members). ``id`` serves the join to the
        # lines of product / category conditions. Amounts are key columns, not INCLUDE, so that it
        # covers on SQLite as well. ``audience.compiler`` writes the status list as literals so the
        # planner matches the predicate with generic (prepared) plans too.
        Index(
            "ix_orders_paid_member", "merchant_id", "member_id", "paid_at", "paid_amount", "refunded_amount", "id",
            postgresql_where=text(_PAID_PREDICATE), sqlite_where=text(_PAID_PREDICATE),
        ),
        CheckConstraint(
            "goods_amount >= 0 AND discount_amount >= 0 AND freight_amount >= 0 AND payable_amount >= 0 "
            "AND paid_amount >= 0 AND refunded_amount >= 0 AND refunded_amount <= paid_amount",
            name="amounts_valid",
        ),
    )

    order_no: Mapped[str] = mapped_column(String(32))
    member_id: Mapped[int] = mapped_column(BigId)
    status: Mapped[str] = mapped_column(String(20), default=PENDING_PAYMENT)
    refund_status: Mapped[str] = mapped_column(String(10), default=REFUND_NONE)
    idempotency_key: Mapped[str] = mapped_column(String(80))
    request_hash: Mapped[str] = mapped_column(String(64))  # same key + different body -> error
    goods_amount: Mapped[int] = mapped_column(Integer)  # sum of the lines' sale_price x quantity
    discount_amount: Mapped[int] = mapped_column(Integer, default=0)  # all stages' discounts
    points_used: Mapped[int] = mapped_column(Integer, default=0)
    freight_amount: Mapped[int] = mapped_column(Integer, default=0)
    payable_amount: Mapped[int] = mapped_column(Integer)
    paid_amount: Mapped[int] = mapped_column(Integer, default=0)
    refunded_amount: Mapped[int] = mapped_column(Integer, default=0)
    # The pipeline's breakdown: [{"stage", "label", "amount", "details"}...], as shown to the customer.
    pricing: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    address: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)  # snapshot at submit
    remark: Mapped[str | None] = mapped_column(String(200), nullable=True)
    channel: Mapped[str] = mapped_column(String(20), default="mini_program")
    pay_deadline: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    shipped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The status the order had when a full refund closed it, so a refund that fails at the
    # provider (``release_refund``) can reopen the order where it was.
    closed_from: Mapped[str | None] = mapped_column(String(20), nullable=True)


class OrderLine(IdMixin, TenantMixin, Base):
    __tablename__ = "order_lines"
    __table_args__ = (
        # An order's lines (merchant_id, order_id), and for segments' product / category purchase
        # conditions the product and amounts too, read from the index only.
        Index("ix_order_lines_order_cover", "merchant_id", "order_id", "product_id", "payable_amount", "refunded_amount"),
        # Segments' product / category purchase conditions read only this index: the lines of orders
        # that count as bought, by product and paid time, with the member, order and amounts as keys
        # (so it covers on SQLite too). ``bought_at`` is kept by ``siyu.audience.purchase_facts``.
        Index(
            "ix_order_lines_bought", "merchant_id", "product_id", "bought_at", "member_id", "order_id",
            "payable_amount", "refunded_amount",
            postgresql_where=text("bought_at IS NOT NULL"), sqlite_where=text("bought_at IS NOT NULL"),
        ),
        CheckConstraint("quantity > 0", name="quantity_pos"),
        CheckConstraint("payable_amount >= 0", name="payable_nonneg"),
        CheckConstraint("refunded_quantity >= 0 AND refunded_quantity <= quantity", name="refunded_qty_valid"),
        CheckConstraint("refunded_amount >= 0 AND refunded_amount <= payable_amount", name="refunded_amt_valid"),
    )

    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"))
    product_id: Mapped[int] = mapped_column(BigId)
    sku_id: Mapped[int] = mapped_column(BigId)
    title: Mapped[str] = mapped_column(String(120))
    spec_text: Mapped[str] = mapped_column(String(120), default="")
    image_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    quantity: Mapped[int] = mapped_column(Integer)
    list_price: Mapped[int] = mapped_column(Integer)  # unit 原价, fen (shown struck through)
    sale_price: Mapped[int] = mapped_column(Integer)  # unit mini-program price, fen: the pipeline's base
    cost_price: Mapped[int] = mapped_column(Integer, default=0)  # unit, fen (for gross margin)
    goods_amount: Mapped[int] = mapped_column(Integer)  # sale_price x quantity
    # Discount allocated to this line by each stage: {"member_price": 0, "item_promotions": 0, ...}
    discounts: Mapped[dict[str, int]] = mapped_column(JSONDoc, default=dict)
    discount_amount: Mapped[int] = mapped_column(Integer, default=0)  # sum of ``discounts``
    payable_amount: Mapped[int] = mapped_column(Integer)  # goods_amount - discount_amount (freight excluded)
    bonus_points: Mapped[int] = mapped_column(Integer, default=0)
    refunded_quantity: Mapped[int] = mapped_column(Integer, default=0)
    refunded_amount: Mapped[int] = mapped_column(Integer, default=0)
    # The activity that sold this line from its own stock (e.g. "flash_sale:12"), from the
    # pricing stage's ``flags["activity"]``. Such lines take and return no normal SKU stock:
    # the activity module manages its units itself.
    activity: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The product was virtual at submit (``Product.kind``): nothing to ship for this line. An
    # order whose lines are all virtual asks no address, pays no freight and completes on payment.
    is_virtual: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Copies of the order's facts for segments (``siyu.audience.purchase_facts`` keeps them, in the
    # same flush as the order): its member, and its ``paid_at`` while the order counts as bought
    # (status in PAID_STATUSES), else NULL.
    member_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    bought_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Shipment(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "shipments"
    __table_args__ = (Index("ix_shipments_order", "merchant_id", "order_id"),)

    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"))
    carrier: Mapped[str] = mapped_column(String(32))  # e.g. SF, ZTO, YTO, JD
    tracking_no: Mapped[str] = mapped_column(String(64))
    shipped_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # [{"order_line_id": .., "quantity": ..}]; empty means the whole order
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
