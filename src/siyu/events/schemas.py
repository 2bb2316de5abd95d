"""Ingestion request and response bodies."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from siyu.events.models import SOURCES

MAX_BATCH = 500


class EventIn(BaseModel):
    """One event. Each is validated on its own: a bad event is rejected, the rest are stored."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=8, max_length=64, description="client-generated id; retries are ignored")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.]*$")
    timestamp: dt.datetime = Field(description="when it happened on the client (ISO-8601 with offset)")
    member_id: int | None = Field(default=None, gt=0, description="server-to-server only; the token decides for customers")
    anonymous_id: str | None = Field(default=None, min_length=1, max_length=64)
    source: str = Field(default="mini_program", description=f"one of {', '.join(SOURCES)}")
    properties: dict[str, Any] = Field(default_factory=dict)


class BatchIn(BaseModel):
    events: list[dict[str, Any]] = Field(description=f"up to {MAX_BATCH} events")


class Rejected(BaseModel):
    index: int
    event_id: str | None
    code: str
    message: str
    fields: list[dict[str, str]] = []


class BatchOut(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[Rejected]
    unknown_names: list[str]


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    event_id: str
    name: str
    member_id: int | None
    anonymous_id: str | None
    source: str
    occurred_at: dt.datetime
    received_at: dt.datetime
    properties: dict[str, Any]


class EventNameOut(BaseModel):
    name: str
    registered: bool
    count: int
    last_seen: dt.datetime | None
