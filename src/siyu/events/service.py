"""Event ingestion.

A batch of up to 500 events is validated event by event: a bad event is rejected with its
reason (stable code, field paths, each field's code and message in the request's language:
``events.messages``) while the rest are stored. Registered names
(``catalog.REGISTERED``) have their properties validated (the server-only ones,
``catalog.SERVER_ONLY``, are refused: ``event_name_reserved``); unknown names are stored as they are
and reported back so the integrator sees them. Events more than ``FUTURE_TOLERANCE`` ahead of
the server clock are refused. The body is parsed once (pydantic-core, ``endpoints.raw_events``)
and the batch's envelopes validated in one call of the compiled validator (event by event only
when one is bad). One pass over the validated events checks them and turns each dict into its
row in place. Storage is one ``INSERT ... SELECT FROM <events as one JSON document> ON CONFLICT
DO NOTHING RETURNING`` per batch (``repository.insert_events``: the merchant and receipt time are
parameters, not repeated per event), idempotent by the client's ``event_id``. The members' counters (last visit, views, cart adds ...) are not touched by the
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

from pydantic import ValidationError
from sqlalchemy import Select
from sqlalchemy.orm import Session

from siyu.events import repository as repo
from siyu.events.catalog import PROPERTIES, SERVER_ONLY, without_none
from siyu.events.messages import field_errors, naive_timestamp
from siyu.events.models import SOURCES
from siyu.events.schemas import BATCH, DEFAULT_SOURCE, ENVELOPE, MAX_BATCH, BatchOut, Rejected
from siyu.kit.errors import DomainError, register_messages
from siyu.kit.nul_text import nul_paths
from siyu.kit.validation_messages import field_message

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
        "event_text_nul": (422, "事件的文本包含 NUL（\\u0000）字符", "The event's text holds a NUL (\\u0000) character"),
        "event_properties_invalid": (422, "事件属性不符合 {name} 的定义", "Properties do not match the schema of {name}"),
        "event_member_mismatch": (
            422,
            "事件的 member_id 与登录会员不一致",
            "member_id differs from the logged-in member",
        ),
        "event_member_unknown": (422, "会员不存在", "No such member"),
        "event_name_reserved": (
            422,
            "事件 {name} 由系统写入，不能上报",
            "The event {name} is written by the server and cannot be sent",
        ),
        "event_subject_missing": (
            422,
            "事件必须指明 member_id 或 anonymous_id",
            "An event needs a member_id or an anonymous_id",
        ),
        "event_duplicate_in_batch": (422, "同一批次中 event_id 重复", "Duplicate event_id in the batch"),
        "event_identify_needs_member": (
            422,
            "关联匿名记录需要会员登录凭证",
            "Joining an anonymous history needs the logged-in customer's token",
        ),
    }
)


@dataclass(frozen=True)
class Caller:
    """Who sends the batch: a customer (``member_id`` fixed), a trusted server (may name any
    member) or an anonymous visitor (``anonymous_id`` only)."""

    merchant_id: int
    member_id: int | None
    trusted: bool = False


def _reject(
    index: int, raw: Any, code: str, lang: str, fields: list[dict[str, str]] | None = None, **params: Any
) -> Rejected:
    """A rejected event: its stable ``code`` and the message in the request's language."""
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    return Rejected(
        index=index,
        event_id=str(event_id) if event_id is not None else None,
        code=code,
        message=DomainError(code, **params).message(lang),
        fields=fields or [],
    )


def ingest(
    session: Session, caller: Caller, raw_events: list[Any], *, now: dt.datetime, lang: str = "zh-CN",
    may_hold_nul: bool = True,
) -> BatchOut:
    """Validate and store a batch; ``lang`` (``kit.i18n.pick_language``) is the language of the
    rejection messages. An event with a NUL character (U+0000) in any text is rejected
    (``event_text_nul``, PostgreSQL cannot store it); the HTTP boundary passes ``may_hold_nul``
    False when the body has no ``\\u0000`` escape, which spares the walk over every event."""
    if len(raw_events) > MAX_BATCH:
        raise DomainError("event_batch_too_large", max=MAX_BATCH, count=len(raw_events))
    if not raw_events:
        raise DomainError("event_batch_empty")
    rejected: list[Rejected] = []
    # Fast path: the whole batch, envelopes and registered properties, in one call of the
    # compiled validator, plain dicts out. Otherwise event by event (``_validate_each``), so
    # each bad one gets its own reason.
    try:
        events: list[dict[str, Any] | None] = list(BATCH.validate_python(raw_events))
        checked = False
    except ValidationError:
        events = _validate_each(raw_events, rejected, lang)
        checked = True
    # One pass over the events: the checks, the properties, duplicates in the batch, and the
    # validated dict turned into its row in place (``repo.insert_events``: ``occurred_at``,
    # the member filled in), so no second dict is built per event.
    latest, earliest = now + FUTURE_TOLERANCE, now - MAX_AGE
    own_member, trusted = caller.member_id, caller.trusted
    rows: list[dict[str, Any]] = []
    indexes: list[int] = []  # each row's place in the batch
    seen_ids: set[str] = set()
    named: set[int] = set()  # members a trusted caller names
    anonymous: set[str] = set()  # devices of events without a member
    unknown_names: set[str] = set()
    for index, event in enumerate(events):
        if event is None:  # rejected by _validate_each
            continue
        if may_hold_nul and (paths := list(nul_paths(raw_events[index], ""))):
            nul = field_message("text_nul_character", lang)
            rejected.append(_reject(index, raw_events[index], "event_text_nul", lang,
                                    [{"path": p, "code": "text_nul_character", "message": nul} for p in paths]))
            continue
        code = _problem(event, own_member, trusted, latest, earliest)
        if code is not None:
            fields = [naive_timestamp(lang)] if code == "event_timestamp_naive" else None
            rejected.append(_reject(index, raw_events[index], code, lang, fields))
            continue
        name = event["name"]
        if name in SERVER_ONLY:
            rejected.append(_reject(index, raw_events[index], "event_name_reserved", lang, name=name))
            continue
        check = PROPERTIES.get(name)
        if check is None:
            unknown_names.add(name)
        elif checked:  # the slow path validates the properties now, after the checks above
            try:
                event["properties"] = check(event.get("properties", _EMPTY))
            except ValidationError as exc:
                fields = field_errors(exc, lang, "properties.")
                rejected.append(_reject(index, raw_events[index], "event_properties_invalid", lang, fields, name=name))
                continue
        elif (props := event.get("properties")) and None in props.values():  # validated with the batch
            event["properties"] = without_none(props)
        event_id = event["event_id"]
        if event_id in seen_ids:
            rejected.append(_reject(index, raw_events[index], "event_duplicate_in_batch", lang))
            continue
        seen_ids.add(event_id)
        member_id = event.get("member_id")
        if member_id is not None:
            if trusted:
                named.add(member_id)
        else:
            anonymous.add(event["anonymous_id"])  # _problem: an event without a member has one
        event["occurred_at"] = event.pop("timestamp")  # aware; stored in UTC
        rows.append(event)
        indexes.append(index)

    merchant_id = caller.merchant_id
    # Server callers may name members: they must belong to this merchant.
    if named and len(known := repo.existing_members(session, merchant_id, named)) < len(named):
        kept = []
        for index, event in zip(indexes, rows, strict=True):
            if event.get("member_id") is None or event["member_id"] in known:
                kept.append(event)
            else:
                rejected.append(_reject(index, raw_events[index], "event_member_unknown", lang))
        rows = kept
        unknown_names = {e["name"] for e in rows if e["name"] not in PROPERTIES}
    # An anonymous device already linked to its member (``link_anonymous``) names the member.
    if anonymous and (links := repo.linked_members(session, merchant_id, anonymous)):
        for event in rows:
            if event.get("member_id") is None:
                event["member_id"] = links.get(event["anonymous_id"])
    inserted = repo.insert_events(session, merchant_id, rows, now)
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


_EMPTY: dict[str, Any] = {}


def _validate_each(raw_events: list[Any], rejected: list[Rejected], lang: str) -> list[dict[str, Any] | None]:
    """Each envelope on its own (a batch with a bad event); ``None`` in place of a rejected one.
    The properties are checked later (``_check_properties``), after the envelope's other checks."""
    out: list[dict[str, Any] | None] = []
    for index, raw in enumerate(raw_events):
        try:
            out.append(ENVELOPE.validate_python(raw))
        except ValidationError as exc:
            fields = field_errors(exc, lang) if isinstance(raw, dict) else []
            rejected.append(_reject(index, raw, "event_invalid", lang, fields))
            out.append(None)
    return out


def _problem(
    event: dict[str, Any], own_member: int | None, trusted: bool, latest: dt.datetime, earliest: dt.datetime
) -> str | None:
    """The checks after the envelope's own validation (the rejection code, or None); fixes
    ``member_id`` for a customer's event."""
    timestamp = event["timestamp"]
    if timestamp.tzinfo is None:
        return "event_timestamp_naive"
    if timestamp > latest:
        return "event_in_future"
    if timestamp < earliest:
        return "event_too_old"
    if event.get("source", DEFAULT_SOURCE) not in SOURCES:
        return "event_source_invalid"
    member_id = event.get("member_id")
    if own_member is not None:
        if member_id is not None and member_id != own_member:
            return "event_member_mismatch"
        event["member_id"] = own_member
    elif member_id is not None and not trusted:
        return "event_member_mismatch"
    elif member_id is None and event.get("anonymous_id") is None:
        return "event_subject_missing"
    return None


def link_anonymous(session: Session, merchant_id: int, anonymous_id: str, member_id: int, *, now: dt.datetime) -> int:
    """Join an anonymous device's history to the member who just logged in
    (``POST /api/events/v1/identify``); returns the events attached (0 on a repeat).

    The attached events reach the listeners (``hooks``) as the member's, once: the member's last
    visit and counters (views, cart adds ...) then include what they did before logging in.
    Their batch is named ``link:<first event id>`` so it never collides with the ingested batch
    that stored them (whose other members' counters may already have been added under its
    own name). Later events of the device are attributed at ingestion (the link is stored)."""
    rows = repo.link_anonymous(session, merchant_id, anonymous_id, member_id, now)
    if rows:
        from siyu.events import hooks

        rows[0] = {**rows[0], "event_id": f"link:{rows[0]['event_id']}"}
        hooks.after_insert(session, merchant_id, rows)
    return len(rows)


def record_server_event(
    session: Session,
    merchant_id: int,
    member_id: int | None,
    name: str,
    properties: dict[str, Any],
    *,
    event_id: str,
    occurred_at: dt.datetime,
    by_member: bool = True,
) -> None:
    """Write an event that happened on the server (order paid, refund ...), idempotent by ``event_id``.
    ``by_member`` False: not the member's own doing (a coupon an operator sent, a level change),
    so the listeners (the member's last visit and counters) are not told."""
    row = {
        "event_id": event_id,
        "name": name,
        "member_id": member_id,
        "source": "server",
        "occurred_at": occurred_at,
        "properties": properties,
    }
    inserted = repo.insert_events(session, merchant_id, [row], occurred_at)
    if inserted and by_member:
        from siyu.events import hooks

        hooks.after_insert(session, merchant_id, [row])


def record_server_events_from(session: Session, source: Select[Any]) -> None:
    """Write many server events in ONE ``INSERT ... SELECT`` (``source`` selects
    ``repository.SELECT_COLUMNS``, source ``server``), idempotent by each row's ``event_id``:
    per-member events derived from another table's rows (a segment recompute's changes, a stage
    recompute's moves) without a Python loop or a job per member.

    Like ``record_server_event(by_member=False)`` the listeners are not told: these are not the
    member's own doing, so their last visit and activity counters stay as they are."""
    repo.insert_from_select(session, source)
