"""Tag groups, tags, and who carries them.

Ways a member gets a tag (``member_tags.source``):

- ``manual`` — an operator (``members:write``) tags or untags one member;
- ``csv`` — bulk from a CSV (column ``member_id`` or ``phone``). ``dry_run`` reports what would
  happen with per-row errors; a real run with any bad row is refused as a whole (422
  ``bulk_tag_rows_invalid``, one field error per row) and changes nothing;
- ``segment`` — bulk from a segment definition (``siyu.audience``'s compiler selects members);
- ``rule`` — a *rule tag* carries a segment definition (``tags.rule``); the daily job
  ``members.daily_tag_rules`` and every member change (``members.reevaluate_member``, enqueued
  after a profile change, a payment, a merge) bring its members in line: matching members are
  added, rule-sourced members who no longer match are removed. Rule tags cannot be set by hand;
- ``template:<id>`` — a *tag template* ("bought a frame in month M → tag 'cleaning due M+3'"):
  for each paid order with a matching product/category, the purchase month M is taken in the
  merchant's time zone, the due month is M + ``offset_months``, and the member gets the tag
  named by ``tag_name_template`` with ``{month}`` = ``YYYY-MM`` of the due month (created in the
  template's group on first use). It runs on each payment (for that member) and daily over the
  last ``lookback_days`` of purchases; it only adds, so a journey can pick "cleaning due
  2025-03" on the 1st of March. Idempotent: a tag is never added twice;
- ``channel_code:<id>`` — a channel code's tags at registration;
- anything else — other modules call ``add_tag(session, merchant_id, member_id, tag_id,
  source="activity:<...>")`` (idempotent; returns whether the tag was new).

Every add and remove is appended to ``member_tag_log``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field
from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.db.dialect import insert_ignore, insert_ignore_many
from siyu.kit.errors import DomainError, FieldError, not_found, register_messages
from siyu.kit.timeutil import utcnow
from siyu.members import repository as repo
from siyu.members.models import (
    MEMBER_ACTIVE,
    Member,
    MemberTag,
    MemberTagLog,
    Tag,
    TagGroup,
    TagTemplate,
)
from siyu.members.schemas import (
    BulkCsvIn,
    BulkSegmentIn,
    BulkTagOut,
    MemberTagOut,
    RowError,
    TagGroupIn,
    TagIn,
    TagPatch,
    TagTemplateIn,
)


class _RowError(RowError):
    """A bad CSV row, its message in zh-CN too: a refused bulk change's field errors pick the
    language; the dry run shows ``RowError``'s fields only (``message`` in English)."""

    message_zh: str = Field(exclude=True)


register_messages(
    {
        "tag_group_name_taken": (409, "标签组 {name} 已存在", "Tag group {name} already exists"),
        "tag_group_not_empty": (409, "标签组下还有标签，不能删除", "The tag group still has tags"),
        "tag_name_taken": (409, "该标签组中已有标签 {name}", "The group already has a tag named {name}"),
        "tag_is_rule": (
            409, "规则标签由规则自动维护，不能手动打标或移除", "A rule tag is maintained by its rule; it cannot be set by hand",
        ),
        "bulk_tag_rows_invalid": (
            422, "CSV 中有 {count} 行无效，未做任何更改", "{count} row(s) of the CSV are invalid; nothing was changed",
        ),
        "bulk_tag_csv_header": (
            422, "CSV 首行需包含 member_id 或 phone 列", "The CSV header needs a member_id or a phone column",
        ),
        "tag_template_name_taken": (409, "标签模板 {name} 已存在", "Tag template {name} already exists"),
    }
)

SCHEDULE_NAME = "members.tag_rules"
SCHEDULE_KIND = "members.daily_tag_rules"
SCHEDULE_CRON = "30 2 * * *"  # 02:30 in the merchant's zone


# -- groups --------------------------------------------------------------------------------------------


def get_group(session: Session, merchant_id: int, group_id: int) -> TagGroup:
    g = repo.tag_group(session, merchant_id, group_id)
    if g is None:
        raise not_found("标签组", "Tag group")
    return g


def create_group(session: Session, merchant_id: int, data: TagGroupIn) -> TagGroup:
    if repo.tag_group_by_name(session, merchant_id, data.name):
        raise DomainError("tag_group_name_taken", name=data.name)
    g = TagGroup(merchant_id=merchant_id, name=data.name, description=data.description)
    session.add(g)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise DomainError("tag_group_name_taken", name=data.name) from exc
    return g


def update_group(session: Session, merchant_id: int, group_id: int, data: TagGroupIn) -> TagGroup:
    g = get_group(session, merchant_id, group_id)
    clash = repo.tag_group_by_name(session, merchant_id, data.name)
    if clash is not None and clash.id != g.id:
        raise DomainError("tag_group_name_taken", name=data.name)
    g.name, g.description = data.name, data.description
    return g


def delete_group(session: Session, merchant_id: int, group_id: int) -> None:
    g = get_group(session, merchant_id, group_id)
    if repo.tags(session, merchant_id, g.id):
        raise DomainError("tag_group_not_empty")
    session.delete(g)


# -- tags --------------------------------------------------------------------------------------------------


def get_tag(session: Session, merchant_id: int, tag_id: int) -> Tag:
    t = repo.tag(session, merchant_id, tag_id)
    if t is None:
        raise not_found("标签", "Tag")
    return t


def _parse_rule(rule: dict[str, Any]) -> dict[str, Any]:
    from siyu.audience.segments import parse_definition

    definition = parse_definition(rule)
    dumped: dict[str, Any] = definition.model_dump(mode="json", by_alias=True, exclude_none=True)["root"]
    return dumped


def create_tag(session: Session, merchant_id: int, data: TagIn, *, template_id: int | None = None) -> Tag:
    get_group(session, merchant_id, data.group_id)
    rule = _parse_rule(data.rule) if data.rule is not None else None
    if repo.tag_by_name(session, merchant_id, data.group_id, data.name):
        raise DomainError("tag_name_taken", name=data.name)
    t = Tag(merchant_id=merchant_id, group_id=data.group_id, name=data.name, description=data.description, rule=rule,
            template_id=template_id)
    session.add(t)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise DomainError("tag_name_taken", name=data.name) from exc
    if rule is not None:
        ensure_schedule(session, merchant_id)
        evaluate_rule_tag(session, merchant_id, t)
    return t


def update_tag(session: Session, merchant_id: int, tag_id: int, data: TagPatch) -> Tag:
    t = get_tag(session, merchant_id, tag_id)
    fields = data.model_dump(exclude_unset=True)
    rule = _parse_rule(data.rule) if data.rule is not None else None
    if fields.get("name") and fields["name"] != t.name:
        if repo.tag_by_name(session, merchant_id, t.group_id, fields["name"]):
            raise DomainError("tag_name_taken", name=fields["name"])
        t.name = fields["name"]
    if "description" in fields:
        t.description = fields["description"]
    if "rule" in fields:
        was_rule = t.rule is not None
        t.rule = rule
        if rule is not None:
            ensure_schedule(session, merchant_id)
            evaluate_rule_tag(session, merchant_id, t)
        elif was_rule:
            # the rule-made memberships become plain manual ones the operator can edit
            for mt in session.scalars(select(MemberTag).where(MemberTag.merchant_id == merchant_id, MemberTag.tag_id == t.id)):
                mt.source = "manual"
    return t


def delete_tag(session: Session, merchant_id: int, tag_id: int, *, actor: tuple[str, int | None] = ("system", None)) -> None:
    t = get_tag(session, merchant_id, tag_id)
    ids = repo.tagged_member_ids(session, merchant_id, t.id)
    now = utcnow()
    for mid in ids:
        session.add(MemberTagLog(merchant_id=merchant_id, member_id=mid, tag_id=t.id, action="removed",
                                 source="tag_deleted", actor_type=actor[0], actor_id=actor[1], at=now))
    session.execute(delete(MemberTag).where(MemberTag.merchant_id == merchant_id, MemberTag.tag_id == t.id))
    session.delete(t)


def list_tags(session: Session, merchant_id: int, group_id: int | None = None) -> list[tuple[Tag, int]]:
    counts = repo.tag_counts(session, merchant_id)
    return [(t, counts.get(t.id, 0)) for t in repo.tags(session, merchant_id, group_id)]


# -- one member ------------------------------------------------------------------------------------------


def _log(session: Session, merchant_id: int, member_ids: list[int], tag_id: int, action: str, source: str,
         actor: tuple[str, int | None], at: dt.datetime) -> None:
    for mid in member_ids:
        session.add(MemberTagLog(merchant_id=merchant_id, member_id=mid, tag_id=tag_id, action=action, source=source,
                                 actor_type=actor[0], actor_id=actor[1], at=at))
    from siyu.audience.segments import on_tags_changed  # saved segments naming the tag see it at once

    on_tags_changed(session, merchant_id, tag_id, member_ids)


def add_tag(
    session: Session, merchant_id: int, member_id: int, tag_id: int, *, source: str,
    actor: tuple[str, int | None] = ("system", None),
) -> bool:
    """Give a member a tag; idempotent (returns False when the member already had it).

    The service other modules call (activities, journeys ...). A merged member is followed to
    the member it was merged into. Unknown member or tag of the merchant → 404.
    """
    from siyu.members.service import follow_merged, get_member

    member = follow_merged(session, get_member(session, merchant_id, member_id))
    get_tag(session, merchant_id, tag_id)
    if member.status != MEMBER_ACTIVE:
        return False
    now = utcnow()
    values = {"merchant_id": merchant_id, "member_id": member.id, "tag_id": tag_id, "source": source[:40], "tagged_at": now}
    inserted = insert_ignore(session, MemberTag.__table__, values, ["merchant_id", "member_id", "tag_id"])  # type: ignore[arg-type]
    if inserted:
        _log(session, merchant_id, [member.id], tag_id, "added", source[:40], actor, now)
    return inserted


def remove_tag(
    session: Session, merchant_id: int, member_id: int, tag_id: int, *, source: str = "manual",
    actor: tuple[str, int | None] = ("system", None),
) -> bool:
    from siyu.members.service import get_member

    get_member(session, merchant_id, member_id)
    get_tag(session, merchant_id, tag_id)
    result = session.execute(
        delete(MemberTag).where(MemberTag.merchant_id == merchant_id, MemberTag.member_id == member_id, MemberTag.tag_id == tag_id)
    )
    removed = bool(result.rowcount)  # type: ignore[attr-defined]
    if removed:
        _log(session, merchant_id, [member_id], tag_id, "removed", source, actor, utcnow())
    return removed


def manual_tag(session: Session, merchant_id: int, member_id: int, tag_ids: list[int], actor: tuple[str, int | None]) -> None:
    """Operator tagging: every id is checked before anything is written."""
    from siyu.members.service import get_member

    get_member(session, merchant_id, member_id)
    found = {t.id: t for t in (repo.tag(session, merchant_id, i) for i in set(tag_ids)) if t is not None}
    if len(found) != len(set(tag_ids)):
        raise not_found("标签", "Tag")
    if any(t.rule is not None for t in found.values()):
        raise DomainError("tag_is_rule")
    for tid in dict.fromkeys(tag_ids):
        add_tag(session, merchant_id, member_id, tid, source="manual", actor=actor)


def manual_untag(session: Session, merchant_id: int, member_id: int, tag_id: int, actor: tuple[str, int | None]) -> bool:
    if get_tag(session, merchant_id, tag_id).rule is not None:
        raise DomainError("tag_is_rule")
    return remove_tag(session, merchant_id, member_id, tag_id, source="manual", actor=actor)


def member_tag_list(session: Session, merchant_id: int, member_id: int) -> list[MemberTagOut]:
    return [
        MemberTagOut(tag_id=t.id, name=t.name, group_id=t.group_id, source=mt.source, tagged_at=mt.tagged_at)
        for mt, t in repo.member_tags(session, merchant_id, member_id)
    ]


# -- bulk -----------------------------------------------------------------------------------------------------


def _bulk_apply(
    session: Session, merchant_id: int, tag_id: int, member_ids: list[int], *, action: str, source: str,
    actor: tuple[str, int | None],
) -> int:
    now = utcnow()
    changed: list[int] = []
    for start in range(0, len(member_ids), 500):
        chunk = member_ids[start:start + 500]
        if action == "add":
            rows = [{"merchant_id": merchant_id, "member_id": m, "tag_id": tag_id, "source": source, "tagged_at": now}
                    for m in chunk]
            changed += insert_ignore_many(session, MemberTag.__table__, rows,  # type: ignore[arg-type]
                                          ["merchant_id", "member_id", "tag_id"], returning="member_id")
        else:
            have = repo.tagged_member_ids(session, merchant_id, tag_id) & set(chunk)
            session.execute(delete(MemberTag).where(
                MemberTag.merchant_id == merchant_id, MemberTag.tag_id == tag_id, MemberTag.member_id.in_(have)))
            changed += sorted(have)
    _log(session, merchant_id, changed, tag_id, "added" if action == "add" else "removed", source, actor, now)
    return len(changed)


def bulk_csv(session: Session, merchant_id: int, tag_id: int, body: BulkCsvIn, actor: tuple[str, int | None]) -> BulkTagOut:
    tag = get_tag(session, merchant_id, tag_id)
    if tag.rule is not None:
        raise DomainError("tag_is_rule")
    reader = csv.reader(io.StringIO(body.csv.lstrip("\ufeff")))
    rows = [r for r in reader]
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "member_id" not in header and "phone" not in header:
        raise DomainError("bulk_tag_csv_header")
    id_col = header.index("member_id") if "member_id" in header else None
    phone_col = header.index("phone") if "phone" in header else None
    data = [(n, r) for n, r in enumerate(rows[1:], start=2) if any(c.strip() for c in r)]
    wanted_ids: set[int] = set()
    wanted_phones: set[str] = set()
    parsed: list[tuple[int, int | None, str | None]] = []
    errors: list[_RowError] = []
    for n, r in data:
        raw_id = r[id_col].strip() if id_col is not None and id_col < len(r) else ""
        raw_phone = r[phone_col].strip() if phone_col is not None and phone_col < len(r) else ""
        if raw_id:
            if not raw_id.isdigit():
                errors.append(_RowError(row=n, code="member_id_invalid", message=f"member_id {raw_id!r} is not a number",
                                        message_zh=f"member_id {raw_id!r} 不是数字"))
                continue
            wanted_ids.add(int(raw_id))
            parsed.append((n, int(raw_id), None))
        elif raw_phone:
            wanted_phones.add(raw_phone)
            parsed.append((n, None, raw_phone))
        else:
            errors.append(_RowError(row=n, code="row_empty", message="the row has neither member_id nor phone",
                                    message_zh="该行既没有 member_id 也没有手机号"))
    known = repo.active_ids(session, merchant_id, wanted_ids)
    by_phone = repo.active_ids_by_phones(session, merchant_id, wanted_phones)
    targets: list[int] = []
    for n, mid, phone in parsed:
        if mid is not None:
            if mid not in known:
                errors.append(_RowError(row=n, code="member_not_found", message=f"no member {mid}",
                                        message_zh=f"会员 {mid} 不存在"))
            else:
                targets.append(mid)
        else:
            assert phone is not None
            ids = by_phone.get(phone, [])
            if not ids:
                errors.append(_RowError(row=n, code="member_not_found", message=f"no member with phone {phone}",
                                        message_zh=f"没有手机号为 {phone} 的会员"))
            elif len(ids) > 1:
                errors.append(_RowError(row=n, code="phone_ambiguous", message=f"{len(ids)} members have phone {phone}",
                                        message_zh=f"有 {len(ids)} 位会员的手机号都是 {phone}"))
            else:
                targets.append(ids[0])
    errors.sort(key=lambda e: e.row)
    unique_targets = list(dict.fromkeys(targets))
    if body.dry_run:
        have = repo.tagged_member_ids(session, merchant_id, tag_id)
        would = [m for m in unique_targets if (m not in have) == (body.action == "add")]
        return BulkTagOut(dry_run=True, rows=len(data), matched=len(unique_targets), changed=len(would), errors=list(errors))
    if errors:
        raise DomainError(
            "bulk_tag_rows_invalid", count=len(errors),
            fields=[FieldError(f"csv.rows[{e.row}]", e.code, e.message, e.message_zh) for e in errors],
        )
    changed = _bulk_apply(session, merchant_id, tag_id, unique_targets, action=body.action, source="csv", actor=actor)
    return BulkTagOut(dry_run=False, rows=len(data), matched=len(unique_targets), changed=changed, errors=[])


def _matching(session: Session, merchant_id: int, definition: dict[str, Any], *, member_id: int | None = None,
              now: dt.datetime | None = None) -> set[int]:
    from siyu.audience.compiler import Compiler
    from siyu.audience.segments import parse_definition

    parsed = parse_definition(definition)
    stmt = Compiler(session, merchant_id, now or utcnow()).members(parsed.root).where(Member.status == MEMBER_ACTIVE)
    if member_id is not None:
        stmt = stmt.where(Member.id == member_id)
    return set(session.scalars(stmt))


def bulk_segment(session: Session, merchant_id: int, tag_id: int, body: BulkSegmentIn, actor: tuple[str, int | None]) -> BulkTagOut:
    tag = get_tag(session, merchant_id, tag_id)
    if tag.rule is not None:
        raise DomainError("tag_is_rule")
    ids = sorted(_matching(session, merchant_id, body.definition))
    if body.dry_run:
        have = repo.tagged_member_ids(session, merchant_id, tag_id)
        return BulkTagOut(dry_run=True, rows=len(ids), matched=len(ids), changed=len(set(ids) - have), errors=[])
    changed = _bulk_apply(session, merchant_id, tag_id, ids, action="add", source="segment", actor=actor)
    return BulkTagOut(dry_run=False, rows=len(ids), matched=len(ids), changed=changed, errors=[])


# -- rule tags and templates ------------------------------------------------------------------------------------


def ensure_schedule(session: Session, merchant_id: int) -> None:
    from siyu.kit.outbox import Schedule
    from siyu.tenancy import service as tenancy_service
    from siyu.worker.runner import add_schedule

    have = session.scalar(select(exists().where(Schedule.merchant_id == merchant_id, Schedule.name == SCHEDULE_NAME)))
    if not have:
        tz = tenancy_service.get_merchant(session, merchant_id).timezone
        add_schedule(session, merchant_id, SCHEDULE_NAME, SCHEDULE_KIND, SCHEDULE_CRON, tz)


def evaluate_rule_tag(session: Session, merchant_id: int, tag: Tag, *, member_id: int | None = None,
                      now: dt.datetime | None = None) -> tuple[int, int]:
    """Bring a rule tag's members in line with its rule (everyone, or one member). (added, removed)"""
    if tag.rule is None:
        return 0, 0
    now = now or utcnow()
    matching = _matching(session, merchant_id, tag.rule, member_id=member_id, now=now)
    current = repo.tagged_member_ids(session, merchant_id, tag.id)
    if member_id is not None:
        current &= {member_id}
    added = _bulk_apply(session, merchant_id, tag.id, sorted(matching - current), action="add", source="rule",
                        actor=("system", None))
    removed = _bulk_apply(session, merchant_id, tag.id, sorted(current - matching), action="remove", source="rule",
                          actor=("system", None))
    if member_id is None:
        tag.rule_evaluated_at = now
    return added, removed


def _add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + (day.month - 1) + months
    return dt.date(index // 12, index % 12 + 1, 1)


def create_template(session: Session, merchant_id: int, data: TagTemplateIn) -> TagTemplate:
    get_group(session, merchant_id, data.group_id)
    if repo.tag_template_by_name(session, merchant_id, data.name):
        raise DomainError("tag_template_name_taken", name=data.name)
    tpl = TagTemplate(
        merchant_id=merchant_id, name=data.name, group_id=data.group_id, enabled=data.enabled,
        config=data.model_dump(include={"product_ids", "category_ids", "offset_months", "tag_name_template", "lookback_days"}),
    )
    session.add(tpl)
    session.flush()
    ensure_schedule(session, merchant_id)
    return tpl


def get_template(session: Session, merchant_id: int, template_id: int) -> TagTemplate:
    tpl = repo.tag_template(session, merchant_id, template_id)
    if tpl is None:
        raise not_found("标签模板", "Tag template")
    return tpl


def run_template(session: Session, merchant_id: int, tpl: TagTemplate, *, now: dt.datetime | None = None,
                 member_id: int | None = None, since: dt.datetime | None = None) -> int:
    """Apply a month-offset template to recent purchases; returns how many tags were added."""
    from siyu.catalog.models import Product
    from siyu.orders import models as om
    from siyu.tenancy import service as tenancy_service

    now = now or utcnow()
    cfg = tpl.config
    tz = ZoneInfo(tenancy_service.get_merchant(session, merchant_id).timezone)
    o, line = om.Order, om.OrderLine
    stmt = select(o.member_id, o.paid_at).where(
        o.merchant_id == merchant_id, o.status.in_((om.PAID, om.SHIPPED, om.COMPLETED)), o.paid_at.is_not(None),
        o.paid_at >= (since or now - dt.timedelta(days=int(cfg.get("lookback_days", 40)))),
    )
    if member_id is not None:
        stmt = stmt.where(o.member_id == member_id)
    product_ids, category_ids = cfg.get("product_ids") or [], cfg.get("category_ids") or []
    if product_ids or category_ids:
        conds = [line.merchant_id == merchant_id, line.order_id == o.id]
        if product_ids:
            conds.append(line.product_id.in_(product_ids))
        if category_ids:
            conds.append(line.product_id.in_(
                select(Product.id).where(Product.merchant_id == merchant_id, Product.category_id.in_(category_ids))))
        stmt = stmt.where(exists().where(*conds))
    added = 0
    cache: dict[str, int] = {}
    for mid, paid_at in session.execute(stmt).all():
        if paid_at is None:
            continue
        local = paid_at.astimezone(tz).date()
        due = _add_months(local, int(cfg["offset_months"]))
        name = str(cfg["tag_name_template"]).replace("{month}", f"{due.year:04d}-{due.month:02d}")
        tid = cache.get(name)
        if tid is None:
            existing = repo.tag_by_name(session, merchant_id, tpl.group_id, name)
            if existing is None:
                existing = create_tag(session, merchant_id, TagIn(group_id=tpl.group_id, name=name), template_id=tpl.id)
            tid = cache[name] = existing.id
        if add_tag(session, merchant_id, mid, tid, source=f"template:{tpl.id}"):
            added += 1
    if member_id is None:
        tpl.evaluated_at = now
    return added


def reevaluate_member(session: Session, merchant_id: int, member_id: int, *, now: dt.datetime | None = None) -> None:
    """Re-check one member against every rule tag and template (after a change to them)."""
    if repo.by_id(session, merchant_id, member_id) is None:
        return
    for tag in repo.rule_tags(session, merchant_id):
        evaluate_rule_tag(session, merchant_id, tag, member_id=member_id, now=now)
    for tpl in repo.tag_templates(session, merchant_id, enabled_only=True):
        run_template(session, merchant_id, tpl, member_id=member_id, now=now)


def evaluate_all(session: Session, merchant_id: int, *, now: dt.datetime | None = None) -> dict[str, int]:
    now = now or utcnow()
    added = removed = templated = 0
    for tag in repo.rule_tags(session, merchant_id):
        a, r = evaluate_rule_tag(session, merchant_id, tag, now=now)
        added, removed = added + a, removed + r
    for tpl in repo.tag_templates(session, merchant_id, enabled_only=True):
        templated += run_template(session, merchant_id, tpl, now=now)
    return {"added": added, "removed": removed, "templated": templated}
