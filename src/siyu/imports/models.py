"""Which external ids an import created, so a re-run skips them and orders find their member."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin
from siyu.db.types import BigId, UTCDateTime


class ImportedMember(IdMixin, TenantMixin, Base):
    __tablename__ = "imported_members"
    __table_args__ = (UniqueConstraint("merchant_id", "external_id"),)

    external_id: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(BigId)
    imported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ImportedOrder(IdMixin, TenantMixin, Base):
    __tablename__ = "imported_orders"
    __table_args__ = (UniqueConstraint("merchant_id", "external_id"),)

    external_id: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[int] = mapped_column(BigId)
    imported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
