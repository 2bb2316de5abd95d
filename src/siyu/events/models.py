"""Event storage.

One row per behaviour event, idempotent by the client's event id (unique per merchant). The
indexes serve the segment queries: "did E at least N times in the last D days" by member, and
funnels by name and time. One table, not partitioned: at 21.3M events (1M members) the segment
conditions on it answer in about a second (README, Performance). Month partitions on PostgreSQL
would make dropping old months cheap, but the client event id's unique key would then have to
include the time; not done.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime

SOURCES = ("mini_program", "official_account", "wecom", "offline", "server")


class Event(IdMixin, TenantMixin, Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("merchant_id", "event_id"),
        Index("ix_events_member_name_time", "merchant_id", "member_id", "name", "occurred_at"),
        # member_id trails so "who did E in the window" is an index-only scan (segments, funnels)
        Index("ix_events_name_time_member", "merchant_id", "name", "occurred_at", "member_id"),
        # only anonymous events need it (joining the member at login): most events carry a
        # member id, and a partial index costs them nothing on insert
        Index(
            "ix_events_anonymous", "merchant_id", "anonymous_id",
            postgresql_where=text("anonymous_id IS NOT NULL"), sqlite_where=text("anonymous_id IS NOT NULL"),
        ),
    )

    # No index of its own (TenantMixin's default): the unique (merchant_id, event_id) and the
    # two compound indexes all lead with merchant_id, and a fifth index on every insert of the
    # hottest table bought nothing.
    merchant_id: Mapped[int] = mapped_column(BigId, nullable=False)

    event_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    anonymous_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source: Mapped[str] = mapped_column(String(20))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)


class AnonymousLink(IdMixin, TenantMixin, Base):
    """An anonymous device id that turned out to be a member (joined at login)."""

    __tablename__ = "event_anonymous_links"
    __table_args__ = (UniqueConstraint("merchant_id", "anonymous_id"),)

    anonymous_id: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(BigId)
    linked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
