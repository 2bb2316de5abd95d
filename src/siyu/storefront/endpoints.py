"""Admin API (area ``storefront``): home slots CRUD and reorder. Store API: ``GET /home``."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, status

from siyu.api.deps import DbSession, StaffPrincipal, StoreMerchant, require
from siyu.api.idempotency import idempotent
from siyu.kit.pagination import Page, PageParams, sort_values, sorted_page_params
from siyu.storefront import service
from siyu.storefront.schemas import HomeOut, ReorderIn, SlotIn, SlotOut, SlotUpdate

admin = APIRouter(tags=["admin: storefront"])
store = APIRouter(tags=["store: home"])

Kind = Literal["banner", "ad_slot", "category_nav", "bottom_nav", "account_section", "notice"]


@admin.get("/home-slots", response_model=Page[SlotOut], summary="Home slots (default order: kind, sort, id)")
def list_slots(
    session: DbSession,
    kind: Kind | None = Query(None),
    enabled: bool | None = Query(None),
    params: PageParams = Depends(sorted_page_params(sort_values(service.SORTS))),
    p: StaffPrincipal = Depends(require("storefront:read")),
) -> Page[SlotOut]:
    return service.list_slots(session, p.merchant_id, params, kind=kind, enabled=enabled)


@admin.post("/home-slots", response_model=SlotOut, status_code=status.HTTP_201_CREATED)
@idempotent
def create_slot(body: SlotIn, session: DbSession, p: StaffPrincipal = Depends(require("storefront:write"))) -> SlotOut:
    return SlotOut.model_validate(service.create_slot(session, p.merchant_id, body))


@admin.post("/home-slots/reorder", response_model=list[SlotOut], summary="Set sort = position in the list")
def reorder(body: ReorderIn, session: DbSession, p: StaffPrincipal = Depends(require("storefront:write"))) -> list[SlotOut]:
    return [SlotOut.model_validate(s) for s in service.reorder(session, p.merchant_id, body.ids)]


@admin.get("/home-slots/{slot_id}", response_model=SlotOut)
def get_slot(slot_id: int, session: DbSession, p: StaffPrincipal = Depends(require("storefront:read"))) -> SlotOut:
    return SlotOut.model_validate(service.get_slot(session, p.merchant_id, slot_id))


@admin.patch("/home-slots/{slot_id}", response_model=SlotOut)
def update_slot(
    slot_id: int, body: SlotUpdate, session: DbSession, p: StaffPrincipal = Depends(require("storefront:write"))
) -> SlotOut:
    return SlotOut.model_validate(service.update_slot(session, p.merchant_id, slot_id, body))


@admin.delete("/home-slots/{slot_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_slot(slot_id: int, session: DbSession, p: StaffPrincipal = Depends(require("storefront:write"))) -> None:
    service.delete_slot(session, p.merchant_id, slot_id)


@store.get("/home", response_model=HomeOut, summary="The live home page, grouped by slot kind")
def home(merchant: StoreMerchant, session: DbSession) -> HomeOut:
    return service.home(session, merchant.id)
