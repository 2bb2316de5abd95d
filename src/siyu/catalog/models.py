"""Catalog tables. Prices are integer fen; stock is guarded by ``CHECK (stock >= 0)``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, JSONDoc

PRODUCT_DRAFT = "draft"
PRODUCT_ON_SALE = "on_sale"
PRODUCT_OFF_SHELF = "off_shelf"

# What a product is: ``physical`` goods are shipped (address, freight, shipment); ``virtual``
# goods (a paid membership card, a service) are delivered by the system when the order is paid:
# checkout asks no address and charges no freight for them, and an order of nothing but virtual
# lines completes on payment. A product a card plan sells is always virtual (``save_card_plan``).
KIND_PHYSICAL = "physical"
KIND_VIRTUAL = "virtual"
PRODUCT_KINDS = (KIND_PHYSICAL, KIND_VIRTUAL)


class Category(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "categories"

    parent_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("categories.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(64))
    image_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    sort: Mapped[int] = mapped_column(Integer, default=0)
    visible: Mapped[bool] = mapped_column(Boolean, default=True)


class Product(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "products"
    __table_args__ = (
        Index("ix_products_listing", "merchant_id", "status", "category_id"),
        CheckConstraint("bonus_points >= 0", name="bonus_points_nonneg"),
        CheckConstraint("kind IN ('physical', 'virtual')", name="kind_valid"),
    )

    category_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("categories.id"), nullable=True)
    title: Mapped[str] = mapped_column(String(120))
    subtitle: Mapped[str | None] = mapped_column(String(200), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    images: Mapped[list[str]] = mapped_column(JSONDoc, default=list)
    # Names of the spec dimensions, e.g. ["镜框颜色", "折射率"]; each SKU gives a value for each.
    spec_names: Mapped[list[str]] = mapped_column(JSONDoc, default=list)
    status: Mapped[str] = mapped_column(String(16), default=PRODUCT_DRAFT)
    kind: Mapped[str] = mapped_column(String(16), default=KIND_PHYSICAL, server_default=KIND_PHYSICAL)
    free_shipping: Mapped[bool] = mapped_column(Boolean, default=False)
    bonus_points: Mapped[int] = mapped_column(Integer, default=0)
    coupons_allowed: Mapped[bool] = mapped_column(Boolean, default=True)
    freight_template_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    sort: Mapped[int] = mapped_column(Integer, default=0)
    sales_count: Mapped[int] = mapped_column(Integer, default=0)


class Sku(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "skus"
    __table_args__ = (
        UniqueConstraint("merchant_id", "sku_code"),
        CheckConstraint("stock >= 0", name="stock_nonneg"),
        CheckConstraint("list_price >= 0 AND sale_price >= 0 AND cost_price >= 0", name="prices_nonneg"),
        Index("ix_skus_product", "merchant_id", "product_id"),
    )

    product_id: Mapped[int] = mapped_column(BigId, ForeignKey("products.id"))
    sku_code: Mapped[str] = mapped_column(String(64))
    specs: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)  # {"镜框颜色": "黑", "折射率": "1.60"}
    list_price: Mapped[int] = mapped_column(Integer)  # 原价, fen
    sale_price: Mapped[int] = mapped_column(Integer)  # mini-program sale price, fen
    cost_price: Mapped[int] = mapped_column(Integer, default=0)
    weight_g: Mapped[int] = mapped_column(Integer, default=0)
    stock: Mapped[int] = mapped_column(Integer, default=0)
    image_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
