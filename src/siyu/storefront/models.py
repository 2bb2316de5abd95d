"""The home page slots of a merchant's mini-program."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import UTCDateTime

SLOT_KINDS = ("banner", "ad_slot", "category_nav", "bottom_nav", "account_section", "notice")
TARGET_TYPES = ("product", "category", "page", "url", "none")


class HomeSlot(IdMixin, TenantMixin, TimestampMixin, Base):
    """One item of the home page: a banner, an ad slot, a navigation entry, a notice...

    ``target_type``/``target_value`` say where a tap goes: ``product`` / ``category`` (an id of
    this merchant, as text), ``page`` (a mini-program page path), ``url`` (an http(s) address)
    or ``none``. The slot shows while ``enabled`` and ``starts_at <= now < ends_at`` (either
    bound optional), ordered by ``sort`` (ascending) then id.
    """

    __tablename__ = "home_slots"
    __table_args__ = (Index("ix_home_slots_kind", "merchant_id", "kind", "sort"),)

    kind: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(64), default="")
    image_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    target_type: Mapped[str] = mapped_column(String(16), default="none")
    target_value: Mapped[str | None] = mapped_column(String(500), nullable=True)
    sort: Mapped[int] = mapped_column(Integer, default=0)
    starts_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ends_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
