"""Event ingestion.

A batch of up to 500 events is validated event by event: a bad event is rejected with its
reason (stable code, field paths) while the rest are stored. Registered names
(``catalog.REGISTERED``) have their properties validated; unknown names are stored as they are
and reported back so the integrator sees them. Events more than ``FUTURE_TOLERANCE`` ahead of
the server clock are refused. The body is parsed once (pydantic-core, ``endpoints.raw_events``)
and the batch's envelopes validated in one call of the compiled validator (event by event only
when one is bad). Storage is one ``INSERT ... SELECT FROM <rows as one JSON document> ON CONFLICT
DO NOTHING RETURNING`` per batch (``db.bulk.insert_ignore_json``), idempotent by the client's
``event_id``. The members' counters (last visit, views, cart adds ...) are not touched by the
request: the audience listener enqueues one job per batch in the same transaction, which adds
the batch's per-member sums exactly once (``audience.service.apply_activity_batch``).

Who the event is about: a customer token decides the member (a different ``member_id`` in the
body is rejected); an API key (server-to-server) may name any member of its merchant; an
anonymous event carries ``anonymous_id`` and joins its member once they log in
(``link_anonymous``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from siyu.events import repository as repo
from siyu.events.catalog import PROPERTIES, REGISTERED
from siyu.events.models import SOURCES
from siyu.events.schemas import MAX_BATCH, BatchOut, EventIn, Rejected
from siyu.kit.errors import DomainError, register_messages

FUTURE_TOLERANCE = dt.timedelta(minutes=10)
MAX_AGE = dt.timedelta(days=400)

register_messages(
    {
        "event_batch_too_large": (
            413,
            "每批最多 {max} 条事件，本批 {count} 条",
            "At most {max} events per batch, got {count}",
        ),
        "event_batch_empty": (422, "事件批次为空", "The batch has no events"),
        "event_invalid": (422, "事件格式不正确", "The event is not valid"),
        "event_in_future": (422, "事件时间晚于服务器时间", "The event's timestamp is in the future"),
        "event_too_old": (422, "事件时间过早（超过 400 天）", "The event is older than 400 days"),
        "event_timestamp_naive": (422, "事件时间必须带时区", "The timestamp needs a time zone offset"),
        "event_source_invalid": (422, "未知的事件来源", "Unknown event source"),
        "event_properties_invalid": (422, "事件属性不符合 {name} 的定义", "Properties do not match the schema of {name}"),
        "event_member_mismatch": (
            422,
            "事件的 member_id 与登录会员不一致",
            "member_id differs from the logged-in member",
        ),
        "event_member_unknown": (422, "会员不存在", "No such member"),
        "event_subject_missing": (
            422,
            "事件必须指明 member_id 或 anonymous_id",
            "An event needs a member_id or an anonymous_id",
        ),
        "event_duplicate_in_batch": (422, "同一批次中 event_id 重复", "Duplicate event_id in the batch"),
    }
)


@dataclass(frozen=True)
class Caller:
    """Who sends the batch: a customer (``member_id`` fixed), a trusted server (may name any
    member) or an anonymous visitor (``anonymous_id`` only)."""

    merchant_id: int
    member_id: int | None
    trusted: bool = False


def _reject(index: int, raw: dict[str, Any], code: str, fields: list[dict[str, str]] | None = None, **params: Any) -> Rejected:
    err = DomainError(code, **params)
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    return Rejected(
        index=index,
        event_id=str(event_id) if event_id is not None else None,
        code=code,
        message=err.message("en"),
        fields=fields or [],
    )


def _field_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    return [
        {"path": prefix + ".".join(str(p) for p in e["loc"]), "code": e["type"], "message": e["msg"]}
        for e in exc.errors()
    ]


_BATCH: TypeAdapter[list[EventIn]] = TypeAdapter(list[EventIn])


def ingest(session: Session, caller: Caller, raw_events: list[Any], *, now: dt.datetime) -> BatchOut:
    if len(raw_events) > MAX_BATCH:
        raise DomainError("event_batch_too_large", max=MAX_BATCH, count=len(raw_events))
    if not raw_events:
        raise DomainError("event_batch_empty")
    rejected: list[Rejected] = []
    # Fast path: every envelope of the batch valid, checked in one call of the compiled
    # validator. Otherwise each event on its own, so each bad one gets its own reason.
    try:
        parsed: list[tuple[int, EventIn]] = list(enumerate(_BATCH.validate_python(raw_events)))
    except ValidationError:
        parsed = []
        for index, raw in enumerate(raw_events):
            if not isinstance(raw, dict):
                rejected.append(_reject(index, {}, "event_invalid"))
                continue
            try:
                parsed.append((index, EventIn.model_validate(raw)))
            except ValidationError as exc:
                rejected.append(_reject(index, raw, "event_invalid", _field_errors(exc)))
    valid: list[tuple[int, EventIn]] = []
    seen_ids: set[str] = set()
    latest, earliest = now + FUTURE_TOLERANCE, now - MAX_AGE
    for index, event in parsed:
        problem = _check_one(index, raw_events[index], event, caller, latest, earliest)
        if problem is not None:
            rejected.append(problem)
            continue
        if event.event_id in seen_ids:
            rejected.append(_reject(index, raw_events[index], "event_duplicate_in_batch"))
            continue
        seen_ids.add(event.event_id)
        valid.append((index, event))

    # Server callers may name members: they must belong to this merchant.
    named = {e.member_id for _, e in valid if e.member_id is not None}
    known = repo.existing_members(session, caller.merchant_id, named) if caller.trusted else named
    anonymous = {e.anonymous_id for _, e in valid if e.anonymous_id}
    links = repo.linked_members(session, caller.merchant_id, anonymous) if anonymous else {}
    rows: list[dict[str, Any]] = []
    unknown_names: set[str] = set()
    merchant_id = caller.merchant_id
    for index, event in valid:
        if event.member_id is not None and event.member_id not in known:
            rejected.append(_reject(index, event.model_dump(), "event_member_unknown"))
            continue
        member_id = event.member_id or (links.get(event.anonymous_id) if event.anonymous_id else None)
        if event.name not in REGISTERED:
            unknown_names.add(event.name)
        rows.append(
            {
                "merchant_id": merchant_id,
                "event_id": event.event_id,
                "name": event.name,
                "member_id": member_id,
                "anonymous_id": event.anonymous_id,
                "source": event.source,
                "occurred_at": event.timestamp.astimezone(dt.UTC),
                "received_at": now,
                "properties": event.properties,
            }
        )
    inserted = repo.insert_events(session, rows)
    if inserted:
        from siyu.events import hooks

        if len(inserted) == len(rows):
            hooks.after_insert(session, merchant_id, rows)
        else:
            stored = set(inserted)
            hooks.after_insert(session, merchant_id, [r for r in rows if r["event_id"] in stored])
    rejected.sort(key=lambda r: r.index)
    return BatchOut(
        accepted=len(inserted),
        duplicates=len(rows) - len(inserted),
        rejected=rejected,
        unknown_names=sorted(unknown_names),
    )


def _check_one(
    index: int, raw: Any, event: EventIn, caller: Caller, latest: dt.datetime, earliest: dt.datetime
) -> Rejected | None:
    """The checks after the envelope's own validation; fixes ``member_id`` and the properties."""
    timestamp = event.timestamp
    if timestamp.tzinfo is None:
        return _reject(index, raw, "event_timestamp_naive", [{"path": "timestamp", "code": "naive", "message": "add an offset"}])
    if timestamp > latest:
        return _reject(index, raw, "event_in_future")
    if timestamp < earliest:
        return _reject(index, raw, "event_too_old")
    if event.source not in SOURCES:
        return _reject(index, raw, "event_source_invalid")
    if caller.member_id is not None:
        if event.member_id is not None and event.member_id != caller.member_id:
            return _reject(index, raw, "event_member_mismatch")
        event.member_id = caller.member_id
    elif not caller.trusted and event.member_id is not None:
        return _reject(index, raw, "event_member_mismatch")
    if event.member_id is None and event.anonymous_id is None:
        return _reject(index, raw, "event_subject_missing")
    check = PROPERTIES.get(event.name)
    if check is not None:
        try:
            event.properties = check(event.properties)
        except ValidationError as exc:
            return _reject(index, raw, "event_properties_invalid", _field_errors(exc, "properties."), name=event.name)
    return None


def link_anonymous(session: Session, merchant_id: int, anonymous_id: str, member_id: int, *, now: dt.datetime) -> int:
    """Join an anonymous device's history to the member who just logged in."""
    return repo.link_anonymous(session, merchant_id, anonymous_id, member_id, now)


def record_server_event(
    session: Session,
    merchant_id: int,
    member_id: int | None,
    name: str,
    properties: dict[str, Any],
    *,
    event_id: str,
    occurred_at: dt.datetime,
) -> None:
    """Write an event that happened on the server (order paid, refund ...), idempotent by ``event_id``."""
    row = {
        "merchant_id": merchant_id,
        "event_id": event_id,
        "name": name,
        "member_id": member_id,
        "anonymous_id": None,
        "source": "server",
        "occurred_at": occurred_at,
        "received_at": occurred_at,
        "properties": properties,
    }
    inserted = repo.insert_events(session, [row])
    if inserted:
        from siyu.events import hooks

        hooks.after_insert(session, merchant_id, [row])
