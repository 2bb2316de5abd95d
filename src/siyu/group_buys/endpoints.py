"""Admin API (area ``promotions``): group-buy activities and their teams.
Store API: activity detail with open teams, open a team, join a team, the team's share page."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Response, status

from siyu.activities.routes import AdminRoutes, ChildList, add_admin_routes, mark_replayed, order_detail
from siyu.api.deps import AppSettings, Customer, DbSession, StaffPrincipal, StoreMerchant, require
from siyu.group_buys import repository as repo
from siyu.group_buys import service
from siyu.group_buys.models import GroupBuy, GroupTeam
from siyu.group_buys.schemas import (
    GroupBuyAdminOut,
    GroupBuyIn,
    GroupBuyOrderIn,
    GroupBuyStatsOut,
    GroupBuyUpdate,
    StoreGroupBuyOut,
    StoreTeamOut,
    TeamAdminOut,
)
from siyu.orders.schemas import OrderDetailOut

admin = APIRouter(tags=["admin: group buys"])
store = APIRouter(tags=["store: group buys"])

TeamStatus = Literal["pending", "open", "success", "failed", "cancelled"]


# -- admin ----------------------------------------------------------------------------------------------


add_admin_routes(admin, AdminRoutes(
    path="/group-buys", id_param="group_buy_id", model=GroupBuy, search=repo.search_group_buys,
    sortable=("id", "starts_at", "created_at"), create_in=GroupBuyIn, update_in=GroupBuyUpdate,
    admin_out=GroupBuyAdminOut, create=service.create_group_buy, get=service.get_group_buy,
    update=service.update_group_buy, disable=service.disable, delete=service.delete_group_buy, out=service.admin_out,
    names={"list": "list_group_buys", "create": "create_group_buy", "get": "get_group_buy",
           "update": "update_group_buy", "disable": "disable_group_buy", "delete": "delete_group_buy"},
    summaries={
        "create": "Create a group-buy activity on one SKU",
        "update": "Change the name or the end any time; every other rule only before the start",
        "disable": "Stop now: no new teams or joins; open teams run to their deadline",
        "delete": "Delete an activity nobody joined (else 409: disable it instead)",
    },
    status_param="gb_status",
    children=ChildList(
        segment="teams", name="list_teams", summary="Teams of the activity with their seats and state",
        model=GroupTeam, search=repo.search_teams, statuses=TeamStatus, status_param="team_status",
        sortable=("id", "expires_at"), item=TeamAdminOut, items=service.teams_with_seats,
    ),
))


@admin.get("/group-buys/{group_buy_id}/stats", response_model=GroupBuyStatsOut,
           summary="Usage for ROI: teams by outcome, seats by state, GMV and discount given")
def group_buy_stats(
    group_buy_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))
) -> GroupBuyStatsOut:
    return service.stats(session, p.merchant_id, group_buy_id)


@admin.get("/group-buys/teams/{team_id}", response_model=TeamAdminOut)
def get_team(team_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))) -> TeamAdminOut:
    return service.teams_with_seats(session, p.merchant_id, [service.get_team(session, p.merchant_id, team_id)])[0]


# -- store ----------------------------------------------------------------------------------------------


@store.get("/group-buys/{group_buy_id}", response_model=StoreGroupBuyOut,
           summary="Activity detail with the teams still waiting for members")
def store_group_buy(group_buy_id: int, session: DbSession, merchant: StoreMerchant) -> StoreGroupBuyOut:
    return service.store_detail(session, merchant.id, group_buy_id)


@store.get("/group-buys/teams/{team_id}", response_model=StoreTeamOut,
           summary="A team's share page (members' nicknames masked); status pending: not open until its leader pays")
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
    mark_replayed(response, created)
    return order_detail(session, order)


@store.post("/group-buys/{group_buy_id}/teams", response_model=OrderDetailOut, status_code=status.HTTP_201_CREATED,
            summary="Open a team as its leader: an order at the leader/group price; the team opens (others can "
                    "join) once this order is paid (Idempotency-Key required)")
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
            summary="Join a team from its share link: an order at the group price; 409 group_team_not_open "
                    "before its leader paid (Idempotency-Key required)")
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
