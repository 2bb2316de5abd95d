"""Segments: preview, saved membership with entered/left changes, one-member re-evaluation, export.

A recompute is set-based: the entered members are ``compiled EXCEPT current``, the left ones
``current EXCEPT compiled``; both are written with INSERT ... SELECT / DELETE statements, and
each change is appended to ``segment_changes`` in the same transaction, so a journey reading
changes never sees a membership that did not commit. Each change row is also a behaviour event
(``segment_entered`` / ``segment_left``, one ``INSERT ... SELECT`` into the events table), which
journeys trigger on and segment definitions can name.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import String, and_, cast, delete, func, insert, literal, select
from sqlalchemy.orm import Session

from siyu.audience.compiler import Compiler
from siyu.audience.definitions import (
    AndNode,
    BehaviorNode,
    CustomFieldNode,
    LevelNode,
    Node,
    NotNode,
    OrNode,
    RecordNode,
    SegmentDefinition,
    SequenceNode,
    TagNode,
)
from siyu.audience.models import STAGE_NEVER, MemberStats, Segment, SegmentChange, SegmentMember
from siyu.db.types import JSONDoc, UTCDateTime
from siyu.events import service as events_service
from siyu.kit.errors import DomainError, FieldError, not_found, register_messages
from siyu.kit.events import emit
from siyu.kit.timeutil import utcnow
from siyu.kit.validation_messages import field_message, register_field_messages
from siyu.members.models import CustomFieldDef, Member, RecordType, Tag

register_messages(
    {
        "segment_invalid": (422, "分群定义不正确", "The segment definition is not valid"),
        "segment_name_taken": (409, "分群名称 {name} 已存在", "A segment named {name} already exists"),
    }
)
register_field_messages({
    "segment_unknown_tag": ("标签 {tag_id} 不存在", "no tag {tag_id} in this store"),
    "segment_unknown_level": ("会员等级 {level_id} 不存在", "no member level {level_id} in this store"),
    "segment_unknown_custom_field": ("未定义的自定义字段 {key}；已定义：{known}", "no custom field {key}; defined: {known}"),
    "segment_unknown_record_type": ("未定义的档案类型 {key}；已定义：{known}", "no record type {key}; defined: {known}"),
    "segment_event_unseen": ("事件 {name} 未登记，且本店尚未收到过：条件暂时不会匹配任何人",
                             "event {name} is not registered and none has been received yet: the condition "
                             "matches no one until it is"),
})


def parse_definition(raw: Any) -> SegmentDefinition:
    """Validate a definition; errors carry the JSON path of the bad node."""
    try:
        return SegmentDefinition.model_validate({"root": raw} if not (isinstance(raw, dict) and "root" in raw) else raw)
    except ValidationError as exc:
        fields = [
            FieldError(
                path="definition." + ".".join(str(p) for p in e["loc"][1:] if not str(p).endswith("Node")),
                code=e["type"],
                message=field_message(e["type"], "en", e.get("ctx")),
                message_zh=field_message(e["type"], "zh-CN", e.get("ctx")),
            )
            for e in exc.errors()
        ]
        raise DomainError("segment_invalid", fields=fields) from exc


def _references(node: Node, path: str, found: dict[str, list[tuple[str, Any]]] | None = None) -> dict[str, list[tuple[str, Any]]]:
    """What a definition names in the store, by kind (``tag``, ``event``, ``custom_field``,
    ``record_type``), each with the path of its field (the same form as a validation error's:
    ``definition.and.nodes.1.tag.tag_ids.0``)."""
    if found is None:
        found = {"tag": [], "event": [], "custom_field": [], "record_type": [], "level": []}
    here = f"{path}.{node.type}"
    if isinstance(node, AndNode | OrNode):
        for i, child in enumerate(node.nodes):
            _references(child, f"{here}.nodes.{i}", found)
    elif isinstance(node, NotNode):
        _references(node.node, f"{here}.node", found)
    elif isinstance(node, TagNode):
        found["tag"] += [(f"{here}.tag_ids.{i}", tag_id) for i, tag_id in enumerate(node.tag_ids)]
    elif isinstance(node, BehaviorNode):
        found["event"].append((f"{here}.event", node.event))
    elif isinstance(node, SequenceNode):
        found["event"] += [(f"{here}.first", node.first), (f"{here}.then_not", node.then_not)]
    elif isinstance(node, CustomFieldNode):
        found["custom_field"].append((f"{here}.key", node.key))
    elif isinstance(node, RecordNode):
        found["record_type"].append((f"{here}.record_type", node.record_type))
    elif isinstance(node, LevelNode):
        found["level"] += [(f"{here}.level_ids.{i}", level_id) for i, level_id in enumerate(node.level_ids)]
    return found


def _reference_error(path: str, code: str, **ctx: Any) -> FieldError:
    return FieldError(path=path, code=code, message=field_message(code, "en", ctx),
                      message_zh=field_message(code, "zh-CN", ctx))


def check_references(session: Session, merchant_id: int, definition: SegmentDefinition) -> list[FieldError]:
    """What a definition names, checked against the store (preview and save; not the nightly
    recompute, which must not fail on a tag deleted since).

    - A tag, level, custom field or record type that is not the merchant's is an error
      (``segment_invalid`` with each one's path, codes ``segment_unknown_tag``,
      ``segment_unknown_level``, ``segment_unknown_custom_field``,
      ``segment_unknown_record_type``): the condition could never be what the operator meant.
    - An event name that is neither registered (``events.catalog``) nor among the merchant's
      received events is a *warning* (returned, code ``segment_event_unseen``): unknown names
      are accepted by ingestion, so a segment may be built before the app sends the new event;
      the operator is told it matches no one yet. One index probe per name
      (``ix_events_name_time_member``).
    """
    from siyu.events.catalog import REGISTERED
    from siyu.events.models import Event

    refs = _references(definition.root, "definition")
    bad: list[FieldError] = []
    if refs["tag"]:
        wanted = {t for _, t in refs["tag"]}
        known = set(session.scalars(select(Tag.id).where(Tag.merchant_id == merchant_id, Tag.id.in_(wanted))))
        bad += [_reference_error(path, "segment_unknown_tag", tag_id=t) for path, t in refs["tag"] if t not in known]
    if refs["custom_field"]:
        keys = set(session.scalars(select(CustomFieldDef.key).where(CustomFieldDef.merchant_id == merchant_id)))
        bad += [_reference_error(path, "segment_unknown_custom_field", key=k, known=", ".join(sorted(keys)) or "-")
                for path, k in refs["custom_field"] if k not in keys]
    if refs["record_type"]:
        kinds = set(session.scalars(select(RecordType.key).where(RecordType.merchant_id == merchant_id)))
        bad += [_reference_error(path, "segment_unknown_record_type", key=k, known=", ".join(sorted(kinds)) or "-")
                for path, k in refs["record_type"] if k not in kinds]
    if refs["level"]:
        from siyu.loyalty.models import Level

        wanted = {t for _, t in refs["level"]}
        known = set(session.scalars(select(Level.id).where(Level.merchant_id == merchant_id, Level.id.in_(wanted))))
        bad += [_reference_error(path, "segment_unknown_level", level_id=v) for path, v in refs["level"] if v not in known]
    if bad:
        raise DomainError("segment_invalid", fields=bad)
    warnings: list[FieldError] = []
    seen: dict[str, bool] = {}
    for path, name in refs["event"]:
        if name in REGISTERED:
            continue
        if name not in seen:
            seen[name] = bool(session.scalar(select(
                select(Event.id).where(Event.merchant_id == merchant_id, Event.name == name).exists()
            )))
        if not seen[name]:
            warnings.append(_reference_error(path, "segment_event_unseen", name=name))
    return warnings


@dataclass
class Preview:
    count: int
    sample: list[dict[str, Any]]


def preview(session: Session, merchant_id: int, definition: SegmentDefinition, *, sample: int = 20, now: dt.datetime | None = None) -> Preview:
    compiler = Compiler(session, merchant_id, now or utcnow())
    # One evaluation of the definition gives both the count (a window count over all matches)
    # and the first ids of the sample; the details are then read for those ids only.
    # OFFSET 0 keeps the definition a subquery of its own, planned for all its rows: pulled up,
    # PostgreSQL (15) costs the window count as if it could stream and lets the sample's LIMIT
    # choose a fast-start plan (for "did NOT buy category C" at a million members a per-member
    # nested-loop anti join: minutes instead of under a second).
    ids = compiler.members(definition.root).offset(0).subquery()
    first = session.execute(
        select(ids.c.id, func.count().over()).order_by(ids.c.id).limit(max(sample, 1))
    ).all()
    count = int(first[0][1]) if first else 0
    sample_ids = [int(r[0]) for r in first[:sample]]
    rows = session.execute(
        select(
            Member.id, Member.nickname, Member.gender, Member.city, Member.registered_at,
            func.coalesce(MemberStats.lifecycle_stage, STAGE_NEVER), MemberStats.paid_orders, MemberStats.paid_total,
            MemberStats.last_order_at,
        )
        .outerjoin(MemberStats, and_(MemberStats.merchant_id == Member.merchant_id, MemberStats.member_id == Member.id))
        .where(Member.merchant_id == merchant_id, Member.id.in_(sample_ids))
        .order_by(Member.id)
    ).all()
    keys = ("member_id", "nickname", "gender", "city", "registered_at", "lifecycle_stage", "paid_orders", "paid_total", "last_order_at")
    return Preview(count=int(count), sample=[dict(zip(keys, r, strict=True)) for r in rows])


def get_segment(session: Session, merchant_id: int, segment_id: int) -> Segment:
    seg = session.scalar(select(Segment).where(Segment.merchant_id == merchant_id, Segment.id == segment_id))
    if seg is None:
        raise not_found("分群", "Segment")
    return seg


def list_segments(session: Session, merchant_id: int) -> list[Segment]:
    return list(session.scalars(select(Segment).where(Segment.merchant_id == merchant_id).order_by(Segment.id)))


def save_segment(
    session: Session, merchant_id: int, *, name: str, description: str | None, definition: SegmentDefinition,
    segment_id: int | None = None,
) -> Segment:
    clash = session.scalar(select(Segment.id).where(Segment.merchant_id == merchant_id, Segment.name == name))
    if clash is not None and clash != segment_id:
        raise DomainError("segment_name_taken", name=name)
    now = utcnow()
    if segment_id is None:
        seg = Segment(merchant_id=merchant_id, name=name, description=description,
                      definition=definition.model_dump(mode="json", by_alias=True)["root"], created_at=now, updated_at=now)
        session.add(seg)
        session.flush()
    else:
        seg = get_segment(session, merchant_id, segment_id)
        seg.name, seg.description = name, description
        seg.definition = definition.model_dump(mode="json", by_alias=True)["root"]
        seg.updated_at = now
    recompute(session, merchant_id, seg.id, now=now, announce=segment_id is not None)
    return seg


def delete_segment(session: Session, merchant_id: int, segment_id: int) -> None:
    seg = get_segment(session, merchant_id, segment_id)
    session.execute(delete(SegmentMember).where(SegmentMember.merchant_id == merchant_id, SegmentMember.segment_id == seg.id))
    session.delete(seg)


@dataclass
class RecomputeResult:
    entered: int
    left: int
    members: int


def recompute(
    session: Session, merchant_id: int, segment_id: int, *, now: dt.datetime | None = None, member_id: int | None = None,
    announce: bool = True,
) -> RecomputeResult:
    """Bring the saved membership in line with the definition (all members, or just one).

    Each member who entered or left is a behaviour event (``_record_change_events``), except
    with ``announce`` False: a new segment's first fill (``save_segment``) is its definition
    taking effect, not members moving, and would write one event per member of the store for a
    broad segment inside the save request."""
    now = now or utcnow()
    seg = get_segment(session, merchant_id, segment_id)
    definition = SegmentDefinition.model_validate({"root": seg.definition})
    matching = Compiler(session, merchant_id, now).members(definition.root)
    if member_id is not None:
        matching = matching.where(Member.id == member_id)
    current = select(SegmentMember.member_id).where(
        SegmentMember.merchant_id == merchant_id, SegmentMember.segment_id == seg.id
    )
    if member_id is not None:
        current = current.where(SegmentMember.member_id == member_id)
    entered_q = matching.except_(current)
    left_q = current.except_(matching)
    change_cols = ["merchant_id", "segment_id", "member_id", "change", "at"]
    # the changes written by THIS call: several one-member calls may share ``now``, and a re-run
    # of the same recompute (a segment job retried with its ``at``) finds the first run's rows at
    # ``now``; this call's rows are those above the highest change id before it (its own
    # transaction's inserts, the id ascending)
    floor = session.scalar(select(func.max(SegmentChange.id))) or 0
    this_call = [SegmentChange.id > floor]
    if member_id is not None:
        this_call.append(SegmentChange.member_id == member_id)

    def _changes(q: Any, change: str) -> int:
        sub = q.subquery()
        session.execute(
            insert(SegmentChange).from_select(
                change_cols,
                select(literal(merchant_id), literal(seg.id), sub.c[0], literal(change), literal(now, type_=SegmentChange.at.type)),
            )
        )
        # rowcount of INSERT ... SELECT is not reliable across drivers: count what was written
        return int(
            session.scalar(
                select(func.count()).select_from(SegmentChange).where(
                    SegmentChange.merchant_id == merchant_id, SegmentChange.segment_id == seg.id,
                    SegmentChange.at == now, SegmentChange.change == change, *this_call,
                )
            ) or 0
        )

    left = _changes(left_q, "left")
    entered = _changes(entered_q, "entered")
    if (entered or left) and announce:
        _record_change_events(session, merchant_id, seg.id, now, this_call)
    if left:
        gone = select(SegmentChange.member_id).where(
            SegmentChange.merchant_id == merchant_id, SegmentChange.segment_id == seg.id,
            SegmentChange.at == now, SegmentChange.change == "left", *this_call,
        )
        session.execute(
            delete(SegmentMember).where(
                SegmentMember.merchant_id == merchant_id, SegmentMember.segment_id == seg.id,
                SegmentMember.member_id.in_(gone),
            )
        )
    if entered:
        new = select(
            literal(merchant_id), literal(seg.id), SegmentChange.member_id, literal(now, type_=SegmentMember.entered_at.type)
        ).where(
            SegmentChange.merchant_id == merchant_id, SegmentChange.segment_id == seg.id,
            SegmentChange.at == now, SegmentChange.change == "entered", *this_call,
        )
        session.execute(insert(SegmentMember).from_select(["merchant_id", "segment_id", "member_id", "entered_at"], new))
    seg.member_count = int(
        session.scalar(
            select(func.count()).select_from(SegmentMember).where(
                SegmentMember.merchant_id == merchant_id, SegmentMember.segment_id == seg.id
            )
        ) or 0
    )
    if member_id is None:
        seg.computed_at = now
    if entered or left:
        emit(session, merchant_id, "segment.changed",
             {"segment_id": seg.id, "entered": entered, "left": left, "at": now.isoformat()},
             key=f"segment:{seg.id}:{now.isoformat()}:{member_id or 'all'}")
    return RecomputeResult(entered=entered, left=left, members=seg.member_count)


def _record_change_events(
    session: Session, merchant_id: int, segment_id: int, now: dt.datetime, this_call: list[Any]
) -> None:
    """This recompute's change rows as behaviour events, ONE ``INSERT ... SELECT``: one
    ``segment_entered`` / ``segment_left`` (properties ``segment_id``) per member, at ``now``,
    source ``server``, so journeys and segments ("did segment_entered with segment_id = 7 in
    the last 7 days") see each member's move. The event id is the change row's
    (``srv:seg:<segment_changes.id>``): writing them again skips them (the events' unique key).
    Not the member's doing: last visit and counters are not touched."""
    c = SegmentChange
    ts = UTCDateTime()
    properties: Any = literal({"segment_id": segment_id}, type_=JSONDoc)
    rows = select(
        literal(merchant_id), literal("srv:seg:") + cast(c.id, String), literal("segment_") + c.change, c.member_id,
        literal("server"), literal(now, type_=ts), literal(now, type_=ts),
        properties,
    ).where(c.merchant_id == merchant_id, c.segment_id == segment_id, c.at == now, *this_call)
    events_service.record_server_events_from(session, rows)


def reevaluate_member(session: Session, merchant_id: int, member_id: int) -> dict[int, RecomputeResult]:
    """Re-check one member against every saved segment (after a payment, a tag ...)."""
    return {seg.id: recompute(session, merchant_id, seg.id, member_id=member_id) for seg in list_segments(session, merchant_id)}


#: a tag change of up to this many members re-evaluates them in the same transaction; a larger
#: (bulk) change queues one full recompute per segment instead
TAG_CHANGE_AT_ONCE = 100


def on_tags_changed(session: Session, merchant_id: int, tag_id: int, member_ids: list[int]) -> int:
    """A tag given to or taken from members (``members.tags``): the saved segments that name the
    tag see it at once. Up to ``TAG_CHANGE_AT_ONCE`` members are re-evaluated here, in the
    transaction of the change (their entered / left rows and ``segment.changed`` commit with
    it); a bulk change queues each such segment's recompute as a job. Segments that do not
    name the tag are not touched. Returns the segments affected."""
    if not member_ids:
        return 0
    naming = []
    for seg in list_segments(session, merchant_id):
        definition = SegmentDefinition.model_validate({"root": seg.definition})
        if any(t == tag_id for _, t in _references(definition.root, "definition")["tag"]):
            naming.append(seg)
    if not naming:
        return 0
    now = utcnow()
    for seg in naming:
        if len(member_ids) <= TAG_CHANGE_AT_ONCE:
            for member_id in sorted(set(member_ids)):
                recompute(session, merchant_id, seg.id, now=now, member_id=member_id)
        else:
            from siyu.audience.service import SEGMENT_RECOMPUTE_JOB
            from siyu.kit.outbox import enqueue

            enqueue(session, merchant_id, SEGMENT_RECOMPUTE_JOB, {"segment_id": seg.id, "at": now.isoformat()},
                    dedupe_key=f"segment:{seg.id}:tag:{tag_id}:{now.isoformat()}")
    return len(naming)


def export_rows(session: Session, merchant_id: int, segment_id: int) -> Any:
    seg = get_segment(session, merchant_id, segment_id)
    return session.execute(
        select(
            Member.id, Member.nickname, Member.phone, Member.gender, Member.province, Member.city,
            func.coalesce(MemberStats.lifecycle_stage, STAGE_NEVER), MemberStats.paid_orders, MemberStats.paid_total,
            MemberStats.last_order_at, SegmentMember.entered_at,
        )
        .join(SegmentMember, and_(SegmentMember.member_id == Member.id, SegmentMember.segment_id == seg.id))
        .outerjoin(MemberStats, and_(MemberStats.merchant_id == Member.merchant_id, MemberStats.member_id == Member.id))
        .where(Member.merchant_id == merchant_id, SegmentMember.merchant_id == merchant_id)
        .order_by(Member.id)
        .execution_options(yield_per=2000)
    )
