"""Time helpers. Storage is always aware UTC; calendar logic uses the merchant's zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_date(moment: dt.datetime, tz: str) -> dt.date:
    """The calendar date of ``moment`` in the zone ``tz`` (e.g. a check-in day)."""
    return moment.astimezone(ZoneInfo(tz)).date()


def start_of_local_day(day: dt.date, tz: str) -> dt.datetime:
    """The UTC instant at which ``day`` begins in ``tz``."""
    return dt.datetime.combine(day, dt.time.min, tzinfo=ZoneInfo(tz)).astimezone(dt.UTC)
