"""Append-only audit events for every state change on a money path (orders, payments, refunds...).

Written in the same transaction as the change. Rows are never updated or deleted by the app.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from siyu.db.base import Base, IdMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime
from siyu.kit.timeutil import utcnow


class AuditEvent(IdMixin, Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_subject", "merchant_id", "subject_type", "subject_id"),)

    merchant_id: Mapped[int] = mapped_column(BigId, nullable=False)
    subject_type: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[int] = mapped_column(BigId)
    action: Mapped[str] = mapped_column(String(60))
    from_state: Mapped[str | None] = mapped_column(String(40), nullable=True)
    to_state: Mapped[str | None] = mapped_column(String(40), nullable=True)
    actor_type: Mapped[str] = mapped_column(String(20), default="system")
    actor_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


def record(
    session: Session,
    merchant_id: int,
    subject_type: str,
    subject_id: int,
    action: str,
    *,
    from_state: str | None = None,
    to_state: str | None = None,
    actor: tuple[str, int | None] = ("system", None),
    data: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEvent(
            merchant_id=merchant_id,
            subject_type=subject_type,
            subject_id=subject_id,
            action=action,
            from_state=from_state,
            to_state=to_state,
            actor_type=actor[0],
            actor_id=actor[1],
            data=data or {},
            created_at=utcnow(),
        )
    )
