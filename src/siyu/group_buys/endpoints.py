"""Admin API (area ``promotions``): group-buy activities and their teams.
Store API: activity detail with open teams, open a team, join a team, the team's share page."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response, status

from siyu.api.deps import AppSettings, Customer, DbSession, StaffPrincipal, StoreMerchant, require
from siyu.group_buys import repository as repo
from siyu.group_buys import service
from siyu.group_buys.models import GroupBuy, GroupTeam
from siyu.group_buys.schemas import (
    GroupBuyAdminOut,
    GroupBuyIn,
    GroupBuyOrderIn,
    GroupBuyUpdate,
    StoreGroupBuyOut,
    StoreTeamOut,
    TeamAdminOut,
)
from siyu.kit.pagination import Page, PageParams, apply_sort, page_params, paginate
from siyu.orders import service as orders_service
from siyu.orders.models import Order
from siyu.orders.schemas import OrderDetailOut, OrderLineOut, OrderOut

admin = APIRouter(tags=["admin: group buys"])
store = APIRouter(tags=["store: group buys"])

TeamStatus = Literal["open", "success", "failed"]


# -- admin ----------------------------------------------------------------------------------------------


@admin.get("/group-buys", response_model=Page[GroupBuyAdminOut])
def list_group_buys(
    session: DbSession,
    gb_status: Literal["active", "disabled"] | None = Query(None, alias="status"),
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("promotions:read")),
) -> Page[GroupBuyAdminOut]:
    stmt = repo.search_group_buys(p.merchant_id, gb_status)
    sortable: dict[str, Any] = {"id": GroupBuy.id, "starts_at": GroupBuy.starts_at, "created_at": GroupBuy.created_at}
    rows, total = paginate(session, apply_sort(stmt, params.sort, sortable, GroupBuy.id.desc()), params)
    return Page(
        items=[service.admin_out(session, p.merchant_id, r) for r in rows], total=total, page=params.page,
        page_size=params.page_size,
    )


@admin.post("/group-buys", response_model=GroupBuyAdminOut, status_code=status.HTTP_201_CREATED,
            summary="Create a group-buy activity on one SKU")
def create_group_buy(
    body: GroupBuyIn, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> GroupBuyAdminOut:
    return service.admin_out(session, p.merchant_id, service.create_group_buy(session, p.merchant_id, body, actor=p.actor))


@admin.get("/group-buys/{group_buy_id}", response_model=GroupBuyAdminOut)
def get_group_buy(
    group_buy_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))
) -> GroupBuyAdminOut:
    return service.admin_out(session, p.merchant_id, service.get_group_buy(session, p.merchant_id, group_buy_id))


@admin.patch("/group-buys/{group_buy_id}", response_model=GroupBuyAdminOut,
             summary="Change the rules (prices and stacking only before the start)")
def update_group_buy(
    group_buy_id: int, body: GroupBuyUpdate, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> GroupBuyAdminOut:
    gb = service.update_group_buy(session, p.merchant_id, group_buy_id, body, actor=p.actor)
    return service.admin_out(session, p.merchant_id, gb)


@admin.post("/group-buys/{group_buy_id}/disable", response_model=GroupBuyAdminOut,
            summary="Stop now: no new teams or joins; open teams run to their deadline")
def disable_group_buy(
    group_buy_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> GroupBuyAdminOut:
    return service.admin_out(session, p.merchant_id, service.disable(session, p.merchant_id, group_buy_id, actor=p.actor))


@admin.delete("/group-buys/{group_buy_id}", status_code=status.HTTP_204_NO_CONTENT,
              summary="Delete an activity nobody joined (else 409: disable it instead)")
def delete_group_buy(
    group_buy_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> None:
    service.delete_group_buy(session, p.merchant_id, group_buy_id, actor=p.actor)


@admin.get("/group-buys/{group_buy_id}/teams", response_model=Page[TeamAdminOut],
           summary="Teams of the activity with their seats and state")
def list_teams(
    group_buy_id: int,
    session: DbSession,
    team_status: TeamStatus | None = Query(None, alias="status"),
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("promotions:read")),
) -> Page[TeamAdminOut]:
    service.get_group_buy(session, p.merchant_id, group_buy_id)
    stmt = repo.search_teams(p.merchant_id, group_buy_id, team_status)
    sortable: dict[str, Any] = {"id": GroupTeam.id, "expires_at": GroupTeam.expires_at}
    rows, total = paginate(session, apply_sort(stmt, params.sort, sortable, GroupTeam.id.desc()), params)
    return Page(
        items=service.teams_with_seats(session, p.merchant_id, list(rows)), total=total, page=params.page,
        page_size=params.page_size,
    )


@admin.get("/group-buys/teams/{team_id}", response_model=TeamAdminOut)
def get_team(team_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))) -> TeamAdminOut:
    return service.teams_with_seats(session, p.merchant_id, [service.get_team(session, p.merchant_id, team_id)])[0]


# -- store ----------------------------------------------------------------------------------------------


def _order_out(session: DbSession, order: Order) -> OrderDetailOut:
    return OrderDetailOut(
        **OrderOut.model_validate(order).model_dump(),
        lines=[OrderLineOut.model_validate(ln) for ln in orders_service.order_lines(session, order.merchant_id, order.id)],
        shipments=[],
    )


@store.get("/group-buys/{group_buy_id}", response_model=StoreGroupBuyOut,
           summary="Activity detail with the teams still waiting for members")
def store_group_buy(group_buy_id: int, session: DbSession, merchant: StoreMerchant) -> StoreGroupBuyOut:
    return service.store_detail(session, merchant.id, group_buy_id)


@store.get("/group-buys/teams/{team_id}", response_model=StoreTeamOut,
           summary="A team's share page (members' nicknames masked)")
def store_team(team_id: int, session: DbSession, merchant: StoreMerchant) -> StoreTeamOut:
    return service.store_team(session, merchant.id, team_id)


def _place(
    session: DbSession, customer: Customer, settings: AppSettings, response: Response, group_buy_id: int,
    team_id: int | None, body: GroupBuyOrderIn, idempotency_key: str | None,
) -> OrderDetailOut:
    order, created = service.order(
        session, customer.merchant_id, customer.member_id, group_buy_id, team_id, body,
        idempotency_key=idempotency_key, payment_timeout=dt.timedelta(minutes=settings.order_payment_timeout_minutes),
    )
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return _order_out(session, order)


@store.post("/group-buys/{group_buy_id}/teams", response_model=OrderDetailOut, status_code=status.HTTP_201_CREATED,
            summary="Open a team as its leader: an order at the leader/group price (Idempotency-Key required)")
def open_team(
    group_buy_id: int,
    body: GroupBuyOrderIn,
    customer: Customer,
    session: DbSession,
    settings: AppSettings,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> OrderDetailOut:
    return _place(session, customer, settings, response, group_buy_id, None, body, idempotency_key)


@store.post("/group-buys/teams/{team_id}/join", response_model=OrderDetailOut, status_code=status.HTTP_201_CREATED,
            summary="Join a team from its share link: an order at the group price (Idempotency-Key required)")
def join_team(
    team_id: int,
    body: GroupBuyOrderIn,
    customer: Customer,
    session: DbSession,
    settings: AppSettings,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> OrderDetailOut:
    team = service.get_team(session, customer.merchant_id, team_id)
    return _place(session, customer, settings, response, team.group_buy_id, team.id, body, idempotency_key)
