"""Marketing consent and a member's data rights. Admin: a member's consents, JSON export
(``members:export``), anonymising deletion (``members:erase``: owners only; body
``{"confirm": true}``). Store: my consents (read, change), my data export, deleting my data
(the same anonymisation, confirmed; my login tokens are revoked with it)."""

from __future__ import annotations

from enum import Enum
from typing import Any

from fastapi import Depends

from siyu.api.deps import Customer, DbSession, StaffPrincipal, require
from siyu.members import privacy
from siyu.members.routers import admin, store
from siyu.members.schemas import ConsentIn, ConsentOut, DeleteIn, DeleteOut

TAGS: list[str | Enum] = ["admin: member privacy"]
STORE_TAGS: list[str | Enum] = ["store: privacy"]


@admin.get("/members/{member_id}/consents", response_model=list[ConsentOut], tags=TAGS,
           summary="The member's decision per channel (no decision: not granted)")
def member_consents(member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:read"))) -> list[ConsentOut]:
    from siyu.members.service import get_member

    get_member(session, p.merchant_id, member_id)
    return privacy.list_consents(session, p.merchant_id, member_id)


@admin.get("/members/{member_id}/export", response_model=dict[str, Any], tags=TAGS,
           summary="Everything about the member as JSON: profile, consents, tags, records, orders, points ...")
def export_member(member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:export"))) -> dict[str, Any]:
    return privacy.export(session, p.merchant_id, member_id)


@admin.post("/members/{member_id}/delete", response_model=DeleteOut, tags=TAGS,
            summary="Anonymise the member (owners only; cannot be undone); orders and payments keep their amounts",
            description="Body `{\"confirm\": true}`. Personal data is nulled, records and tags deleted, consents "
                        "revoked, tokens revoked; orders, lines, payments, refunds and points entries stay. "
                        "A second deletion is 409 `member_already_deleted`.")
def delete_member(
    member_id: int, body: DeleteIn, session: DbSession, p: StaffPrincipal = Depends(require("members:erase"))
) -> DeleteOut:
    member, summary = privacy.delete_member_data(session, p.merchant_id, member_id)
    assert member.anonymised_at is not None
    return DeleteOut(member_id=member.id, status=member.status, anonymised_at=member.anonymised_at, summary=summary)


@store.get("/me/consents", response_model=list[ConsentOut], tags=STORE_TAGS)
def my_consents(customer: Customer, session: DbSession) -> list[ConsentOut]:
    return privacy.list_consents(session, customer.merchant_id, customer.member_id)


@store.put("/me/consents", response_model=list[ConsentOut], tags=STORE_TAGS,
           summary="Grant or revoke per channel (channels not named are left alone); every change is logged")
def set_my_consents(body: ConsentIn, customer: Customer, session: DbSession) -> list[ConsentOut]:
    return privacy.set_consents(session, customer.merchant_id, customer.member_id, {str(k): v for k, v in body.consents.items()},
                                source=body.source or "mini_program")


@store.get("/me/export", response_model=dict[str, Any], tags=STORE_TAGS, summary="My data as JSON")
def export_my_data(customer: Customer, session: DbSession) -> dict[str, Any]:
    return privacy.export(session, customer.merchant_id, customer.member_id)


@store.post("/me/delete", response_model=DeleteOut, tags=STORE_TAGS,
            summary="Delete my data (anonymisation, cannot be undone; body {\"confirm\": true}); logs me out")
def delete_my_data(body: DeleteIn, customer: Customer, session: DbSession) -> DeleteOut:
    member, summary = privacy.delete_member_data(session, customer.merchant_id, customer.member_id)
    assert member.anonymised_at is not None
    return DeleteOut(member_id=member.id, status=member.status, anonymised_at=member.anonymised_at, summary=summary)
