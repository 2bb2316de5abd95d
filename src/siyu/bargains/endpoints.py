"""Admin API (area ``promotions``): bargain activities and the bargains started in them.
Store API: activity detail, start a bargain, a bargain's share page, help, buy."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Response, status

from siyu.activities.routes import AdminRoutes, ChildList, add_admin_routes, mark_replayed, order_detail
from siyu.api.deps import AppSettings, Customer, DbSession, StaffPrincipal, StoreMerchant, require
from siyu.bargains import repository as repo
from siyu.bargains import service
from siyu.bargains.models import Bargain, BargainActivity
from siyu.bargains.schemas import (
    BargainActivityAdminOut,
    BargainActivityIn,
    BargainActivityStatsOut,
    BargainActivityUpdate,
    BargainAdminOut,
    BargainBuyIn,
    BargainHelpIn,
    BargainOut,
    BargainStartIn,
    HelpOut,
    HelpResultOut,
    StoreActivityOut,
    StoreBargainOut,
)
from siyu.orders.schemas import OrderDetailOut

admin = APIRouter(tags=["admin: bargains"])
store = APIRouter(tags=["store: bargains"])

BargainStatus = Literal["active", "floor_reached", "ordered", "expired"]


class BargainDetailOut(BargainAdminOut):
    helps: list[HelpOut]


# -- admin ----------------------------------------------------------------------------------------------


add_admin_routes(admin, AdminRoutes(
    path="/bargain-activities", id_param="activity_id", model=BargainActivity, search=repo.search_activities,
    sortable=("id", "starts_at"), create_in=BargainActivityIn, update_in=BargainActivityUpdate,
    admin_out=BargainActivityAdminOut, create=service.create_activity, get=service.get_activity,
    update=service.update_activity, disable=service.disable, delete=service.delete_activity, out=service.admin_out,
    names={"list": "list_activities", "create": "create_activity", "get": "get_activity",
           "update": "update_activity", "disable": "disable_activity", "delete": "delete_activity"},
    summaries={
        "create": "Create a bargain activity on one SKU",
        "update": "Change the name or the end any time; every other rule only before the start",
        "disable": "Stop new bargains; started ones run to their deadline",
        "delete": "Delete an activity nobody started a bargain in (else 409: disable it instead)",
    },
    status_param="act_status",
    children=ChildList(
        segment="bargains", name="list_bargains", summary="Bargains started in the activity, with their state",
        model=Bargain, search=repo.search_bargains, statuses=BargainStatus, status_param="b_status",
        sortable=("id", "expires_at"), item=BargainOut,
        items=lambda _session, _merchant_id, rows: [BargainOut.model_validate(r) for r in rows],
    ),
))


@admin.get("/bargain-activities/{activity_id}/stats", response_model=BargainActivityStatsOut,
           summary="Usage for ROI: bargains by outcome, helps, paid orders, GMV and discount given")
def bargain_activity_stats(
    activity_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))
) -> BargainActivityStatsOut:
    return service.stats(session, p.merchant_id, activity_id)


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
    body: BargainStartIn | None = None,
) -> BargainOut:
    bargain, created = service.start_with_key(
        session, customer.merchant_id, customer.member_id, activity_id, idempotency_key
    )
    mark_replayed(response, created)
    return BargainOut.model_validate(bargain)


@store.get("/bargains/{bargain_id}", response_model=StoreBargainOut,
           summary="A bargain's share page (helpers' nicknames masked)")
def store_bargain(bargain_id: int, customer: Customer, session: DbSession) -> StoreBargainOut:
    return service.store_bargain(session, customer.merchant_id, bargain_id, customer.member_id)


@store.post("/bargains/{bargain_id}/help", response_model=HelpResultOut,
            summary="Help a friend's bargain (once; a repeat answers with the first help's result)")
def help_bargain(
    bargain_id: int, customer: Customer, session: DbSession, response: Response, body: BargainHelpIn | None = None
) -> HelpResultOut:
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
    mark_replayed(response, created)
    return order_detail(session, order)
