"""Admin API (area ``promotions``): bargain activities and the bargains started in them.
Store API: activity detail, start a bargain, a bargain's share page, help, buy."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response, status

from siyu.api.deps import AppSettings, Customer, DbSession, StaffPrincipal, StoreMerchant, require
from siyu.bargains import repository as repo
from siyu.bargains import service
from siyu.bargains.models import Bargain, BargainActivity
from siyu.bargains.schemas import (
    BargainActivityAdminOut,
    BargainActivityIn,
    BargainActivityUpdate,
    BargainAdminOut,
    BargainBuyIn,
    BargainOut,
    HelpOut,
    HelpResultOut,
    StoreActivityOut,
    StoreBargainOut,
)
from siyu.kit.pagination import Page, PageParams, apply_sort, page_params, paginate
from siyu.orders import service as orders_service
from siyu.orders.schemas import OrderDetailOut, OrderLineOut, OrderOut

admin = APIRouter(tags=["admin: bargains"])
store = APIRouter(tags=["store: bargains"])

BargainStatus = Literal["active", "floor_reached", "ordered", "expired"]


class BargainDetailOut(BargainAdminOut):
    helps: list[HelpOut]


# -- admin ----------------------------------------------------------------------------------------------


@admin.get("/bargain-activities", response_model=Page[BargainActivityAdminOut])
def list_activities(
    session: DbSession,
    act_status: Literal["active", "disabled"] | None = Query(None, alias="status"),
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("promotions:read")),
) -> Page[BargainActivityAdminOut]:
    stmt = repo.search_activities(p.merchant_id, act_status)
    sortable: dict[str, Any] = {"id": BargainActivity.id, "starts_at": BargainActivity.starts_at}
    rows, total = paginate(session, apply_sort(stmt, params.sort, sortable, BargainActivity.id.desc()), params)
    return Page(
        items=[service.admin_out(session, p.merchant_id, r) for r in rows], total=total, page=params.page,
        page_size=params.page_size,
    )


@admin.post("/bargain-activities", response_model=BargainActivityAdminOut, status_code=status.HTTP_201_CREATED,
            summary="Create a bargain activity on one SKU")
def create_activity(
    body: BargainActivityIn, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> BargainActivityAdminOut:
    return service.admin_out(session, p.merchant_id, service.create_activity(session, p.merchant_id, body, actor=p.actor))


@admin.get("/bargain-activities/{activity_id}", response_model=BargainActivityAdminOut)
def get_activity(
    activity_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))
) -> BargainActivityAdminOut:
    return service.admin_out(session, p.merchant_id, service.get_activity(session, p.merchant_id, activity_id))


@admin.patch("/bargain-activities/{activity_id}", response_model=BargainActivityAdminOut)
def update_activity(
    activity_id: int, body: BargainActivityUpdate, session: DbSession,
    p: StaffPrincipal = Depends(require("promotions:write")),
) -> BargainActivityAdminOut:
    act = service.update_activity(session, p.merchant_id, activity_id, body, actor=p.actor)
    return service.admin_out(session, p.merchant_id, act)


@admin.post("/bargain-activities/{activity_id}/disable", response_model=BargainActivityAdminOut,
            summary="Stop new bargains; started ones run to their deadline")
def disable_activity(
    activity_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> BargainActivityAdminOut:
    return service.admin_out(session, p.merchant_id, service.disable(session, p.merchant_id, activity_id, actor=p.actor))


@admin.delete("/bargain-activities/{activity_id}", status_code=status.HTTP_204_NO_CONTENT,
              summary="Delete an activity nobody started a bargain in (else 409: disable it instead)")
def delete_activity(
    activity_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> None:
    service.delete_activity(session, p.merchant_id, activity_id, actor=p.actor)


@admin.get("/bargain-activities/{activity_id}/bargains", response_model=Page[BargainOut],
           summary="Bargains started in the activity, with their state")
def list_bargains(
    activity_id: int,
    session: DbSession,
    b_status: BargainStatus | None = Query(None, alias="status"),
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("promotions:read")),
) -> Page[BargainOut]:
    service.get_activity(session, p.merchant_id, activity_id)
    stmt = repo.search_bargains(p.merchant_id, activity_id, b_status)
    sortable: dict[str, Any] = {"id": Bargain.id, "expires_at": Bargain.expires_at}
    rows, total = paginate(session, apply_sort(stmt, params.sort, sortable, Bargain.id.desc()), params)
    return Page(
        items=[BargainOut.model_validate(r) for r in rows], total=total, page=params.page, page_size=params.page_size
    )


@admin.get("/bargains/{bargain_id}", response_model=BargainDetailOut, summary="A bargain with its cuts and helps")
def get_bargain(
    bargain_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))
) -> BargainDetailOut:
    bargain = service.get_bargain(session, p.merchant_id, bargain_id)
    return BargainDetailOut(
        **BargainAdminOut.model_validate(bargain).model_dump(),
        helps=[HelpOut.model_validate(h) for h in repo.helps(session, p.merchant_id, bargain.id)],
    )


# -- store ----------------------------------------------------------------------------------------------


@store.get("/bargains/activities/{activity_id}", response_model=StoreActivityOut)
def store_activity(activity_id: int, session: DbSession, merchant: StoreMerchant) -> StoreActivityOut:
    return service.store_activity(session, merchant.id, activity_id)


@store.post("/bargains/activities/{activity_id}/start", response_model=BargainOut, status_code=status.HTTP_201_CREATED,
            summary="Start a bargain (cuts are generated now); with Idempotency-Key a retry returns it with 200")
def start_bargain(
    activity_id: int,
    customer: Customer,
    session: DbSession,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> BargainOut:
    bargain, created = service.start_with_key(
        session, customer.merchant_id, customer.member_id, activity_id, idempotency_key
    )
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return BargainOut.model_validate(bargain)


@store.get("/bargains/{bargain_id}", response_model=StoreBargainOut,
           summary="A bargain's share page (helpers' nicknames masked)")
def store_bargain(bargain_id: int, customer: Customer, session: DbSession) -> StoreBargainOut:
    return service.store_bargain(session, customer.merchant_id, bargain_id, customer.member_id)


@store.post("/bargains/{bargain_id}/help", response_model=HelpResultOut,
            summary="Help a friend's bargain (once; a repeat answers with the first help's result)")
def help_bargain(bargain_id: int, customer: Customer, session: DbSession, response: Response) -> HelpResultOut:
    result, created = service.help_bargain_once(session, customer.merchant_id, bargain_id, customer.member_id)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return result


@store.post("/bargains/{bargain_id}/buy", response_model=OrderDetailOut, status_code=status.HTTP_201_CREATED,
            summary="Buy at the current price (Idempotency-Key required; a retry returns the same order with 200)")
def buy(
    bargain_id: int,
    body: BargainBuyIn,
    customer: Customer,
    session: DbSession,
    settings: AppSettings,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> OrderDetailOut:
    order, created = service.buy(
        session, customer.merchant_id, customer.member_id, bargain_id, body, idempotency_key=idempotency_key,
        payment_timeout=dt.timedelta(minutes=settings.order_payment_timeout_minutes),
    )
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return OrderDetailOut(
        **OrderOut.model_validate(order).model_dump(),
        lines=[OrderLineOut.model_validate(ln) for ln in orders_service.order_lines(session, order.merchant_id, order.id)],
        shipments=[],
    )
