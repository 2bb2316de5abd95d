"""``idempotent_requests``: one row per admin create made under an ``Idempotency-Key``.

The row is claimed in the same transaction as the create and holds that create's answer, so a
create that fails leaves no key behind and one that commits always leaves its key. ``scope`` is
the route (method and path template) and the principal (``staff:<id>`` or ``api_key:<id>``):
two staff members, or one member on two routes, never share a key. Rows are kept for
``service.RETENTION`` and then purged (``tasks``).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin
from siyu.db.types import BigId, UTCDateTime
from siyu.kit.timeutil import utcnow


class IdempotentRequest(IdMixin, Base):
    __tablename__ = "idempotent_requests"
    __table_args__ = (
        UniqueConstraint("merchant_id", "scope", "key"),
        Index("ix_idempotent_requests_merchant_created", "merchant_id", "created_at"),  # the purge
    )

    merchant_id: Mapped[int] = mapped_column(BigId, nullable=False)
    scope: Mapped[str] = mapped_column(String(255))  # "POST /api/admin/v1/products staff:12"
    key: Mapped[str] = mapped_column(String(120))
    request_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 of the path, query and body values
    # The first answer: its status and its exact JSON body, sealed (AES-GCM bound to the row) since
    # a create may answer a secret once (an API key, redeem codes). NULL only inside the claiming
    # transaction: no other transaction ever sees a row without them.
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
