"""Admin API: staff ownership (导购) of members — assign, hand over a departing staff member's
customers (all or some) to a successor, the ownership history — and "my customers": a staff
login's own customers and their orders (another staff member's customer is a 404)."""

from __future__ import annotations

from enum import Enum

from fastapi import Depends, Query, status

from siyu.api.deps import DbSession, StaffPrincipal, require
from siyu.api.idempotency import idempotent
from siyu.kit.errors import DomainError
from siyu.kit.pagination import Page, PageParams, apply_sort, page_params, paginate
from siyu.members import records, staff_owner
from siyu.members import repository as repo
from siyu.members.models import MEMBER_MERGED, Member
from siyu.members.routers import admin
from siyu.members.schemas import (
    CustomerOut,
    HandoverIn,
    HandoverOut,
    LatestRecordOut,
    OwnershipLogOut,
    RecordIn,
    RecordOut,
    StaffOwnerIn,
)
from siyu.orders.models import Order
from siyu.orders.repository import search_orders
from siyu.orders.schemas import OrderOut

TAGS: list[str | Enum] = ["admin: staff customers"]


@admin.put("/members/{member_id}/owner", response_model=CustomerOut, tags=TAGS,
           summary="Make a staff member of the merchant the member's owner (null unbinds); logged")
def assign_owner(
    member_id: int, body: StaffOwnerIn, session: DbSession, p: StaffPrincipal = Depends(require("members:write"))
) -> CustomerOut:
    return CustomerOut.model_validate(staff_owner.assign(session, p.merchant_id, member_id, body.staff_id, actor=p.actor))


@admin.get("/members/{member_id}/ownership-history", response_model=list[OwnershipLogOut], tags=TAGS)
def ownership_history(
    member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:read"))
) -> list[OwnershipLogOut]:
    return [OwnershipLogOut.model_validate(x) for x in staff_owner.history(session, p.merchant_id, member_id)]


@admin.post("/staff/{staff_id}/handover", response_model=HandoverOut, status_code=status.HTTP_200_OK, tags=TAGS,
            summary="Move all (member_ids omitted) or some customers of a staff member to a successor",
            description="Every check runs before any write: a staff id of another merchant is 404, a member id "
                        "that is not the staff member's customer is 422 (`not_owned` at `body.member_ids[i]`), an "
                        "inactive successor 409 `staff_owner_inactive`; then nothing changes. Each move is logged.")
def handover(
    staff_id: int, body: HandoverIn, session: DbSession, p: StaffPrincipal = Depends(require("members:write"))
) -> HandoverOut:
    moved = staff_owner.handover(session, p.merchant_id, staff_id, body.to_staff_id, body.member_ids, actor=p.actor)
    return HandoverOut(from_staff_id=staff_id, to_staff_id=body.to_staff_id, moved=moved)


def _me(p: StaffPrincipal) -> int:
    if p.staff_id is None:  # an API key has no customers of its own
        raise DomainError("staff_only")
    return p.staff_id


@admin.get("/my-customers", response_model=Page[CustomerOut], tags=TAGS,
           summary="The signed-in staff member's own customers (members merged into another are left out)")
def my_customers(
    session: DbSession, q: str | None = Query(None, max_length=64), params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("members:own")),
) -> Page[CustomerOut]:
    stmt = repo.search(session, p.merchant_id, q, None, staff_id=_me(p)).where(Member.status != MEMBER_MERGED)
    stmt = apply_sort(stmt, params.sort, {"id": Member.id, "staff_bound_at": Member.staff_bound_at}, Member.id.desc())
    rows, total = paginate(session, stmt, params)
    return Page(items=[CustomerOut.model_validate(m) for m in rows], total=total, page=params.page,
                page_size=params.page_size)


@admin.get("/my-customers/{member_id}", response_model=CustomerOut, tags=TAGS,
           summary="One of my customers (another staff member's customer: 404)")
def my_customer(member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:own"))) -> CustomerOut:
    return CustomerOut.model_validate(staff_owner.my_customer(session, p.merchant_id, _me(p), member_id))


@admin.get("/my-customers/{member_id}/orders", response_model=Page[OrderOut], tags=TAGS,
           summary="Orders of one of my customers, newest first")
def my_customer_orders(
    member_id: int, session: DbSession, params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("members:own")),
) -> Page[OrderOut]:
    staff_owner.my_customer(session, p.merchant_id, _me(p), member_id)
    stmt = apply_sort(search_orders(p.merchant_id, member_id=member_id), params.sort,
                      {"id": Order.id, "created_at": Order.created_at}, Order.id.desc())
    rows, total = paginate(session, stmt, params)
    return Page(items=[OrderOut.model_validate(o) for o in rows], total=total, page=params.page,
                page_size=params.page_size)


@admin.get("/my-customers/{member_id}/records", response_model=list[LatestRecordOut], tags=TAGS,
           summary="The latest version of each record type of one of my customers (e.g. the prescription)")
def my_customer_records(
    member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:own"))
) -> list[LatestRecordOut]:
    staff_owner.my_customer(session, p.merchant_id, _me(p), member_id)
    return records.latest(session, p.merchant_id, member_id)


@admin.get("/my-customers/{member_id}/records/{type_id}", response_model=list[RecordOut], tags=TAGS,
           summary="Every version of one record type of one of my customers, newest first")
def my_customer_record_history(
    member_id: int, type_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:own"))
) -> list[RecordOut]:
    staff_owner.my_customer(session, p.merchant_id, _me(p), member_id)
    return [RecordOut.model_validate(r) for r in records.history(session, p.merchant_id, member_id, type_id)]


@admin.post("/my-customers/{member_id}/records/{type_id}", response_model=RecordOut,
            status_code=status.HTTP_201_CREATED, tags=TAGS,
            summary="Record a new version for one of my customers (an optician's new prescription)")
@idempotent
def add_my_customer_record(
    member_id: int, type_id: int, body: RecordIn, session: DbSession,
    p: StaffPrincipal = Depends(require("members:own")),
) -> RecordOut:
    staff_owner.my_customer(session, p.merchant_id, _me(p), member_id)
    return RecordOut.model_validate(records.add_version(session, p.merchant_id, member_id, type_id, body, actor=p.actor))
