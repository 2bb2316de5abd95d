"""Event queries and bulk writes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from siyu.db.bulk import in_ints, insert_ignore_json
from siyu.db.dialect import insert_ignore
from siyu.events.models import AnonymousLink, Event
from siyu.members.models import Member


def existing_members(session: Session, merchant_id: int, member_ids: set[int]) -> set[int]:
    if not member_ids:
        return set()
    stmt = select(Member.id).where(Member.merchant_id == merchant_id, in_ints(session, Member.id, member_ids))
    return set(session.scalars(stmt))


def linked_members(session: Session, merchant_id: int, anonymous_ids: set[str]) -> dict[str, int]:
    if not anonymous_ids:
        return {}
    stmt = select(AnonymousLink.anonymous_id, AnonymousLink.member_id).where(
        AnonymousLink.merchant_id == merchant_id, AnonymousLink.anonymous_id.in_(anonymous_ids)
    )
    return {a: m for a, m in session.execute(stmt).all()}


def insert_events(session: Session, rows: list[dict[str, Any]]) -> list[str]:
    """Insert, skipping event ids already stored; returns the event ids actually inserted."""
    return insert_ignore_json(session, Event.__table__, rows, ["merchant_id", "event_id"], "event_id")  # type: ignore[arg-type]


def link_anonymous(session: Session, merchant_id: int, anonymous_id: str, member_id: int, at: dt.datetime) -> int:
    """Record the link and attach the anonymous history to the member; returns events attached."""
    insert_ignore(
        session,
        AnonymousLink.__table__,  # type: ignore[arg-type]
        {"merchant_id": merchant_id, "anonymous_id": anonymous_id, "member_id": member_id, "linked_at": at},
        ["merchant_id", "anonymous_id"],
    )
    result = session.execute(
        update(Event)
        .where(Event.merchant_id == merchant_id, Event.anonymous_id == anonymous_id, Event.member_id.is_(None))
        .values(member_id=member_id)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def list_events(
    session: Session, merchant_id: int, *, member_id: int | None, name: str | None, since: dt.datetime | None
) -> Select[Any]:
    stmt = select(Event).where(Event.merchant_id == merchant_id)
    if member_id is not None:
        stmt = stmt.where(Event.member_id == member_id)
    if name:
        stmt = stmt.where(Event.name == name)
    if since:
        stmt = stmt.where(Event.occurred_at >= since)
    return stmt


def name_counts(session: Session, merchant_id: int, since: dt.datetime) -> list[tuple[str, int, dt.datetime]]:
    stmt = (
        select(Event.name, func.count(), func.max(Event.occurred_at))
        .where(Event.merchant_id == merchant_id, Event.occurred_at >= since)
        .group_by(Event.name)
        .order_by(func.count().desc())
    )
    return [(n, int(c), t) for n, c, t in session.execute(stmt).all()]
