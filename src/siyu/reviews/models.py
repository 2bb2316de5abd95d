"""Review tables.

- ``product_reviews``: one review per order line (a customer reviews an item they bought once),
  rating 1-5, text, image URLs; ``status`` ``visible`` | ``hidden`` (moderation); the
  merchant's ``reply``. The product's average rating is computed over visible reviews.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime

REVIEW_VISIBLE = "visible"
REVIEW_HIDDEN = "hidden"
REVIEW_STATUSES = (REVIEW_VISIBLE, REVIEW_HIDDEN)


class ProductReview(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "product_reviews"
    __table_args__ = (
        UniqueConstraint("merchant_id", "order_line_id"),
        CheckConstraint("rating >= 1 AND rating <= 5", name="rating_range"),
        Index("ix_product_reviews_product", "merchant_id", "product_id", "status", "id"),
        Index("ix_product_reviews_member", "merchant_id", "member_id", "id"),
    )

    member_id: Mapped[int] = mapped_column(BigId)
    order_id: Mapped[int] = mapped_column(BigId)
    order_line_id: Mapped[int] = mapped_column(BigId)
    product_id: Mapped[int] = mapped_column(BigId)
    sku_id: Mapped[int] = mapped_column(BigId)
    spec_text: Mapped[str] = mapped_column(String(120), default="")  # the SKU bought, as shown
    rating: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text, default="")
    images: Mapped[list[str]] = mapped_column(JSONDoc, default=list)
    status: Mapped[str] = mapped_column(String(10), default=REVIEW_VISIBLE)
    reply: Mapped[str | None] = mapped_column(Text, nullable=True)
    replied_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    replied_by: Mapped[int | None] = mapped_column(BigId, nullable=True)
    moderated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    moderated_by: Mapped[int | None] = mapped_column(BigId, nullable=True)
