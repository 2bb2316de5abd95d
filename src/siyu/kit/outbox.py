"""The transactional outbox: jobs written in the same transaction as the change they follow.

``enqueue`` adds a ``Job`` row to the caller's session; it becomes visible to workers only when
that transaction commits, and vanishes with it on rollback, so a side effect can never run for
a change that did not happen. ``dedupe_key`` (unique per merchant) makes enqueueing itself
idempotent. Workers are in ``siyu.worker``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, Session, mapped_column

from siyu.db.base import Base, IdMixin
from siyu.db.dialect import insert_ignore
from siyu.db.types import BigId, JSONDoc, UTCDateTime
from siyu.kit.timeutil import utcnow

JOB_PENDING = "pending"
JOB_RUNNING = "running"
JOB_DONE = "done"
JOB_DEAD = "dead"


class Job(IdMixin, Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("merchant_id", "dedupe_key"),
        Index("ix_jobs_claim", "status", "run_at"),
    )

    merchant_id: Mapped[int] = mapped_column(BigId, nullable=False)
    kind: Mapped[str] = mapped_column(String(80))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=JOB_PENDING)
    run_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=8)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Schedule(IdMixin, Base):
    """A recurring job: a cron expression evaluated in the merchant's time zone."""

    __tablename__ = "job_schedules"
    __table_args__ = (UniqueConstraint("merchant_id", "name"),)

    merchant_id: Mapped[int] = mapped_column(BigId, nullable=False)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(80))
    cron: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    next_run_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


def enqueue(
    session: Session,
    merchant_id: int,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    run_at: dt.datetime | None = None,
    dedupe_key: str | None = None,
    max_attempts: int = 8,
) -> None:
    """Add a job in the caller's transaction. With ``dedupe_key`` a second enqueue is a no-op."""
    values = {
        "merchant_id": merchant_id,
        "kind": kind,
        "payload": payload or {},
        "status": JOB_PENDING,
        "run_at": run_at or utcnow(),
        "attempts": 0,
        "max_attempts": max_attempts,
        "dedupe_key": dedupe_key,
        "created_at": utcnow(),
    }
    if dedupe_key is None:
        session.add(Job(**values))
        return
    insert_ignore(session, Job.__table__, values, ["merchant_id", "dedupe_key"])  # type: ignore[arg-type]
