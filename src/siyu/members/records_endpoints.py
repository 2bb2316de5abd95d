"""Admin API (area ``members``): merchant-defined record types and members' versioned records
(the eyewear prescription): add a version, the history of one type, the latest of each type."""

from __future__ import annotations

from enum import Enum

from fastapi import Depends, Response, status

from siyu.api.deps import DbSession, StaffPrincipal, require
from siyu.api.idempotency import idempotent
from siyu.members import records
from siyu.members.routers import admin
from siyu.members.schemas import (
    LatestRecordOut,
    RecordIn,
    RecordOut,
    RecordTypeIn,
    RecordTypeOut,
    RecordTypePatch,
)

TAGS: list[str | Enum] = ["admin: member records"]


@admin.get("/record-types", response_model=list[RecordTypeOut], tags=TAGS)
def list_record_types(
    session: DbSession, p: StaffPrincipal = Depends(require("members:read", "members:own"))
) -> list[RecordTypeOut]:
    return [RecordTypeOut.model_validate(t) for t in records.list_types(session, p.merchant_id)]


@admin.post("/record-types", response_model=RecordTypeOut, status_code=status.HTTP_201_CREATED, tags=TAGS)
@idempotent
def create_record_type(
    body: RecordTypeIn, session: DbSession, p: StaffPrincipal = Depends(require("members:write"))
) -> RecordTypeOut:
    return RecordTypeOut.model_validate(records.create_type(session, p.merchant_id, body))


@admin.get("/record-types/{type_id}", response_model=RecordTypeOut, tags=TAGS)
def get_record_type(type_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:read"))) -> RecordTypeOut:
    return RecordTypeOut.model_validate(records.get_type(session, p.merchant_id, type_id))


@admin.patch("/record-types/{type_id}", response_model=RecordTypeOut, tags=TAGS,
             summary="Change a record type (new fields apply to new versions only; active=false deactivates)")
def update_record_type(
    type_id: int, body: RecordTypePatch, session: DbSession, p: StaffPrincipal = Depends(require("members:write"))
) -> RecordTypeOut:
    return RecordTypeOut.model_validate(records.update_type(session, p.merchant_id, type_id, body))


@admin.delete("/record-types/{type_id}", status_code=status.HTTP_204_NO_CONTENT, tags=TAGS,
              summary="Delete a record type without records (409 record_type_in_use otherwise)")
def delete_record_type(type_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:write"))) -> Response:
    records.delete_type(session, p.merchant_id, type_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@admin.get("/members/{member_id}/records", response_model=list[LatestRecordOut], tags=TAGS,
           summary="The latest version of each of the member's record types")
def latest_member_records(
    member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:read"))
) -> list[LatestRecordOut]:
    from siyu.members.service import get_member

    get_member(session, p.merchant_id, member_id)
    return records.latest(session, p.merchant_id, member_id)


@admin.get("/members/{member_id}/records/{type_id}", response_model=list[RecordOut], tags=TAGS,
           summary="Every version of one record type of the member, newest first")
def member_record_history(
    member_id: int, type_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:read"))
) -> list[RecordOut]:
    return [RecordOut.model_validate(r) for r in records.history(session, p.merchant_id, member_id, type_id)]


@admin.post("/members/{member_id}/records/{type_id}", response_model=RecordOut, status_code=status.HTTP_201_CREATED,
            tags=TAGS, summary="Add a version (validated against the type's fields: 422 record_invalid with paths)")
@idempotent
def add_member_record(
    member_id: int, type_id: int, body: RecordIn, session: DbSession,
    p: StaffPrincipal = Depends(require("members:write")),
) -> RecordOut:
    return RecordOut.model_validate(records.add_version(session, p.merchant_id, member_id, type_id, body, actor=p.actor))
