"""Member records with a merchant-defined schema (e.g. the eyewear prescription).

A ``RecordType`` names the fields (same field types as custom profile fields, with optional
min/max for numbers). ``MemberRecord`` rows are append-only versions per member and type: a
correction or a new eye test is a new version, the latest is what the member, the 360 view and
the staff see; the history keeps every earlier version with who wrote it and when. Changing a
type's fields affects new versions only; old versions keep the data they were written with.

Example type::

    {"key": "prescription", "label": "配镜数据", "fields": [
        {"key": "exam_date", "label": "验光日期", "type": "date", "required": true},
        {"key": "od_sphere", "label": "右眼球镜", "type": "number", "min": -30, "max": 30},
        {"key": "od_cylinder", "label": "右眼柱镜", "type": "number", "min": -10, "max": 10},
        {"key": "od_axis", "label": "右眼轴位", "type": "number", "min": 0, "max": 180},
        {"key": "os_sphere", ...}, {"key": "os_cylinder", ...}, {"key": "os_axis", ...},
        {"key": "pd", "label": "瞳距", "type": "number", "min": 40, "max": 80},
        {"key": "frame", "label": "所购镜架", "type": "text"}]}
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.kit.errors import DomainError, FieldError, not_found, register_messages
from siyu.kit.timeutil import utcnow
from siyu.members import repository as repo
from siyu.members.models import MemberRecord, RecordType
from siyu.members.schemas import (
    FieldDef,
    LatestRecordOut,
    RecordIn,
    RecordTypeIn,
    RecordTypePatch,
    check_values,
)

register_messages(
    {
        "record_type_key_taken": (409, "档案类型 {key} 已存在", "Record type {key} already exists"),
        "record_type_in_use": (
            409, "该档案类型已有会员档案，不能删除（可停用）", "The record type has records; deactivate it instead",
        ),
        "record_type_inactive": (409, "该档案类型已停用", "The record type is deactivated"),
        "record_invalid": (422, "档案内容不正确", "The record is not valid"),
    }
)


def get_type(session: Session, merchant_id: int, type_id: int) -> RecordType:
    row = repo.record_type(session, merchant_id, type_id)
    if row is None:
        raise not_found("档案类型", "Record type")
    return row


def list_types(session: Session, merchant_id: int) -> list[RecordType]:
    return repo.record_types(session, merchant_id)


def create_type(session: Session, merchant_id: int, data: RecordTypeIn) -> RecordType:
    if repo.record_type_by_key(session, merchant_id, data.key):
        raise DomainError("record_type_key_taken", key=data.key)
    row = RecordType(
        merchant_id=merchant_id, key=data.key, label=data.label, description=data.description,
        fields=[f.model_dump() for f in data.fields], active=True,
    )
    session.add(row)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise DomainError("record_type_key_taken", key=data.key) from exc
    return row


def update_type(session: Session, merchant_id: int, type_id: int, data: RecordTypePatch) -> RecordType:
    row = get_type(session, merchant_id, type_id)
    fields = data.model_dump(exclude_unset=True)
    if "fields" in fields and data.fields is not None:
        keys = [f.key for f in data.fields]
        if len(set(keys)) != len(keys):
            raise DomainError("validation_error", fields=[FieldError("body.fields", "duplicate_key", "field keys must be unique",
                                                                     "字段 key 不能重复")])
        row.fields = [f.model_dump() for f in data.fields]
    for key in ("label", "description", "active"):
        if key in fields and fields[key] is not None:
            setattr(row, key, fields[key])
    return row


def delete_type(session: Session, merchant_id: int, type_id: int) -> None:
    row = get_type(session, merchant_id, type_id)
    if repo.record_count(session, merchant_id, type_id):
        raise DomainError("record_type_in_use")
    session.delete(row)


def add_version(
    session: Session, merchant_id: int, member_id: int, type_id: int, body: RecordIn,
    *, actor: tuple[str, int | None] = ("staff", None),
) -> MemberRecord:
    from siyu.members.service import get_member

    get_member(session, merchant_id, member_id)
    rtype = get_type(session, merchant_id, type_id)
    if not rtype.active:
        raise DomainError("record_type_inactive")
    defs = [FieldDef.model_validate(f) for f in rtype.fields]
    clean, errors = check_values(defs, body.data, prefix="data")
    if errors:
        raise DomainError("record_invalid", fields=errors)
    version = repo.record_max_version(session, merchant_id, member_id, type_id) + 1
    row = MemberRecord(
        merchant_id=merchant_id, member_id=member_id, record_type_id=type_id, version=version, data=clean,
        note=body.note, actor_type=actor[0], actor_id=actor[1], created_at=utcnow(),
    )
    session.add(row)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:  # two writers took the same version number
        raise DomainError("conflict") from exc
    return row


def history(session: Session, merchant_id: int, member_id: int, type_id: int) -> list[MemberRecord]:
    from siyu.members.service import get_member

    get_member(session, merchant_id, member_id)
    get_type(session, merchant_id, type_id)
    return repo.record_history(session, merchant_id, member_id, type_id)


def latest(session: Session, merchant_id: int, member_id: int) -> list[LatestRecordOut]:
    out = []
    for rec, rtype in repo.latest_records(session, merchant_id, member_id):
        data: dict[str, Any] = {
            "id": rec.id, "member_id": rec.member_id, "record_type_id": rec.record_type_id, "version": rec.version,
            "data": rec.data, "note": rec.note, "actor_type": rec.actor_type, "actor_id": rec.actor_id,
            "created_at": rec.created_at, "record_type_key": rtype.key, "record_type_label": rtype.label,
        }
        out.append(LatestRecordOut.model_validate(data))
    return out
