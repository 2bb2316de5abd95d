"""Admin API (area ``loyalty``): rules, levels, card plans, member points (statement, adjust),
member loyalty summary and level history.
Store API: my points and statement, my level and progress, check-in (+ make-up, calendar),
tasks, card plans and buying a card, the points mall (coupons for points)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status

from siyu.activities.routes import mark_replayed
from siyu.api.deps import AppSettings, Customer, DbSession, StaffPrincipal, StoreMerchant, require
from siyu.api.idempotency import idempotent
from siyu.loyalty import points, service
from siyu.loyalty import repository as repo
from siyu.loyalty.schemas import (
    AdjustIn,
    BuyCardIn,
    CalendarOut,
    CardPlanIn,
    CardPlanOut,
    CheckInOut,
    LevelHistoryOut,
    LevelIn,
    LevelOut,
    LevelProgressOut,
    LoyaltyRules,
    MakeupIn,
    MallItemOut,
    MallProductOut,
    MallRedemptionOut,
    MemberCardOut,
    MemberLoyaltyOut,
    PointsEntryOut,
    PointsOut,
    StatementOut,
    TaskIn,
    TaskOut,
)
from siyu.orders import service as orders_service
from siyu.orders.schemas import OrderDetailOut, OrderLineOut, OrderOut

admin = APIRouter(tags=["admin: loyalty"])
store = APIRouter(tags=["store: loyalty"])

Limit = Annotated[int, Query(ge=1, le=100)]


def _statement(rows: list, next_before: int | None) -> StatementOut:  # type: ignore[type-arg]
    return StatementOut(items=[PointsEntryOut.model_validate(r) for r in rows], next_before=next_before)


# -- admin ----------------------------------------------------------------------------------------------


@admin.get("/loyalty/rules", response_model=LoyaltyRules)
def get_rules(session: DbSession, p: StaffPrincipal = Depends(require("loyalty:read"))) -> LoyaltyRules:
    return service.get_rules(session, p.merchant_id)


@admin.put("/loyalty/rules", response_model=LoyaltyRules, summary="Replace the earn / expiry / deduction / check-in rules")
def put_rules(body: LoyaltyRules, session: DbSession, p: StaffPrincipal = Depends(require("loyalty:write"))) -> LoyaltyRules:
    return service.put_rules(session, p.merchant_id, body, actor=p.actor)


@admin.get("/loyalty/levels", response_model=list[LevelOut])
def list_levels(session: DbSession, p: StaffPrincipal = Depends(require("loyalty:read"))) -> list[LevelOut]:
    return [LevelOut.model_validate(lv) for lv in service.list_levels(session, p.merchant_id)]


@admin.post("/loyalty/levels", response_model=LevelOut, status_code=status.HTTP_201_CREATED)
@idempotent
def create_level(body: LevelIn, session: DbSession, p: StaffPrincipal = Depends(require("loyalty:write"))) -> LevelOut:
    return LevelOut.model_validate(service.save_level(session, p.merchant_id, body, level_id=None, actor=p.actor))


@admin.put("/loyalty/levels/{level_id}", response_model=LevelOut)
def update_level(
    level_id: int, body: LevelIn, session: DbSession, p: StaffPrincipal = Depends(require("loyalty:write"))
) -> LevelOut:
    return LevelOut.model_validate(service.save_level(session, p.merchant_id, body, level_id=level_id, actor=p.actor))


@admin.delete("/loyalty/levels/{level_id}", status_code=status.HTTP_204_NO_CONTENT,
              summary="Delete a level no member, card, card plan or coupon template holds (409 level_in_use otherwise)")
def delete_level(level_id: int, session: DbSession, p: StaffPrincipal = Depends(require("loyalty:write"))) -> None:
    service.delete_level(session, p.merchant_id, level_id, actor=p.actor)


@admin.get("/loyalty/cards", response_model=list[CardPlanOut])
def list_card_plans(session: DbSession, p: StaffPrincipal = Depends(require("loyalty:read"))) -> list[CardPlanOut]:
    return [CardPlanOut.model_validate(c) for c in repo.card_plans(session, p.merchant_id)]


@admin.post("/loyalty/cards", response_model=CardPlanOut, status_code=status.HTTP_201_CREATED)
@idempotent
def create_card_plan(body: CardPlanIn, session: DbSession, p: StaffPrincipal = Depends(require("loyalty:write"))) -> CardPlanOut:
    return CardPlanOut.model_validate(service.save_card_plan(session, p.merchant_id, body, plan_id=None, actor=p.actor))


@admin.put("/loyalty/cards/{plan_id}", response_model=CardPlanOut)
def update_card_plan(
    plan_id: int, body: CardPlanIn, session: DbSession, p: StaffPrincipal = Depends(require("loyalty:write"))
) -> CardPlanOut:
    return CardPlanOut.model_validate(service.save_card_plan(session, p.merchant_id, body, plan_id=plan_id, actor=p.actor))


@admin.get("/loyalty/members/{member_id}", response_model=MemberLoyaltyOut,
           summary="Level, points balance, growth and check-in streak of a member")
def member_loyalty(member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("loyalty:read"))) -> MemberLoyaltyOut:
    points.check_member(session, p.merchant_id, member_id)
    return service.summary(session, p.merchant_id, member_id)


@admin.get("/loyalty/members/{member_id}/points", response_model=StatementOut,
           summary="Points statement, newest first (keyset: pass next_before as ?before=)")
def member_statement(
    member_id: int, session: DbSession, before: int | None = None, limit: Limit = 20,
    p: StaffPrincipal = Depends(require("loyalty:read")),
) -> StatementOut:
    points.check_member(session, p.merchant_id, member_id)
    return _statement(*points.statement(session, p.merchant_id, member_id, before=before, limit=limit))


@admin.post("/loyalty/members/{member_id}/points/adjust", response_model=PointsEntryOut,
            status_code=status.HTTP_201_CREATED, summary="Manual adjustment with a reason (Idempotency-Key required)",
            description="A correction: it moves the balance and the statement but not the points earned that "
                        "the `min_points` level rule reads, unless `counts_as_earned` is true (positive points "
                        "only; a negative one is 422 `adjust_earned_needs_positive`).")
def adjust_points(
    member_id: int, body: AdjustIn, session: DbSession, response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    p: StaffPrincipal = Depends(require("loyalty:write")),
) -> PointsEntryOut:
    entry, created = points.adjust_once(session, p.merchant_id, member_id, body.points, reason=body.reason,
                                        idempotency_key=idempotency_key, actor=p.actor,
                                        counts_as_earned=body.counts_as_earned)
    mark_replayed(response, created)
    return PointsEntryOut.model_validate(entry)


@admin.get("/loyalty/members/{member_id}/level-history", response_model=list[LevelHistoryOut])
def member_level_history(
    member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("loyalty:read"))
) -> list[LevelHistoryOut]:
    points.check_member(session, p.merchant_id, member_id)
    return [LevelHistoryOut.model_validate(h) for h in repo.level_history(session, p.merchant_id, member_id)]


@admin.get("/loyalty/members/{member_id}/cards", response_model=list[MemberCardOut])
def member_cards(member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("loyalty:read"))) -> list[MemberCardOut]:
    points.check_member(session, p.merchant_id, member_id)
    return [MemberCardOut.model_validate(c) for c in repo.cards_of_member(session, p.merchant_id, member_id)]


# -- store ----------------------------------------------------------------------------------------------


@store.get("/loyalty/me", response_model=MemberLoyaltyOut)
def my_loyalty(customer: Customer, session: DbSession) -> MemberLoyaltyOut:
    return service.summary(session, customer.merchant_id, customer.member_id)


@store.get("/loyalty/me/points", response_model=PointsOut)
def my_points(customer: Customer, session: DbSession) -> PointsOut:
    return points.points_summary(session, customer.merchant_id, customer.member_id)


@store.get("/loyalty/me/points/statement", response_model=StatementOut)
def my_statement(customer: Customer, session: DbSession, before: int | None = None, limit: Limit = 20) -> StatementOut:
    return _statement(*points.statement(session, customer.merchant_id, customer.member_id, before=before, limit=limit))


@store.get("/loyalty/me/level", response_model=LevelProgressOut, summary="My level and progress to the next")
def my_level(customer: Customer, session: DbSession) -> LevelProgressOut:
    return service.level_progress(session, customer.merchant_id, customer.member_id)


@store.post("/loyalty/me/check-in", response_model=CheckInOut, status_code=status.HTTP_201_CREATED,
            summary="Check in today (with an Idempotency-Key a repeat the same day returns it with 200)")
def check_in(
    customer: Customer, session: DbSession, response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> CheckInOut:
    row, created = service.check_in_once(session, customer.merchant_id, customer.member_id,
                                         idempotency_key=idempotency_key)
    mark_replayed(response, created)
    return CheckInOut.model_validate(row)


@store.post("/loyalty/me/check-in/makeup", response_model=CheckInOut, status_code=status.HTTP_201_CREATED,
            summary="Make up a missed day (with an Idempotency-Key a repeat returns it with 200)")
def makeup(
    body: MakeupIn, customer: Customer, session: DbSession, response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> CheckInOut:
    row, created = service.makeup_once(session, customer.merchant_id, customer.member_id, body.day,
                                       idempotency_key=idempotency_key)
    mark_replayed(response, created)
    return CheckInOut.model_validate(row)


@store.get("/loyalty/me/check-ins", response_model=CalendarOut, summary="Check-in calendar of a month (YYYY-MM)")
def my_calendar(customer: Customer, session: DbSession, month: str | None = None) -> CalendarOut:
    return service.calendar(session, customer.merchant_id, customer.member_id, month)


@store.post("/loyalty/me/tasks/share", response_model=TaskOut, summary="Report a share (rewarded within the daily cap)")
def share(body: TaskIn, customer: Customer, session: DbSession) -> TaskOut:
    return service.complete_task(session, customer.merchant_id, customer.member_id, "share", ref=body.ref)


@store.get("/loyalty/mall", response_model=list[MallItemOut | MallProductOut],
           summary="Coupons (kind coupon: level-exclusive ones with level_required / can_redeem) and products "
                   "(kind product: points + cash, remaining limit; exchanged at checkout with "
                   "options.points_mall) in the points mall")
def mall(
    session: DbSession, merchant: StoreMerchant, authorization: Annotated[str | None, Header()] = None,
) -> list[MallItemOut | MallProductOut]:
    """Anonymous with the merchant header; with a customer token (``store_merchant`` checked it)
    ``can_redeem`` is judged for that member."""
    from siyu.tenancy import service as tenancy_service

    member_id = None
    if authorization:
        token = tenancy_service.authenticate(session, authorization.partition(" ")[2].strip(), kinds=("customer",))
        member_id = token.subject_id
    return service.mall_items(session, merchant.id, member_id)


@store.post("/loyalty/mall/{template_id}/redeem", response_model=MallRedemptionOut,
            status_code=status.HTTP_201_CREATED,
            summary="Buy a points-mall coupon with points (Idempotency-Key required; a retry returns it with 200)")
def redeem(
    template_id: int, customer: Customer, session: DbSession, response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> MallRedemptionOut:
    out, created = service.redeem_coupon(session, customer.merchant_id, customer.member_id, template_id,
                                         idempotency_key=idempotency_key)
    mark_replayed(response, created)
    return out


@store.get("/loyalty/cards", response_model=list[CardPlanOut], summary="Membership cards on sale")
def card_plans(session: DbSession, merchant: StoreMerchant) -> list[CardPlanOut]:
    return [CardPlanOut.model_validate(c) for c in repo.card_plans(session, merchant.id, active_only=True)]


@store.get("/loyalty/me/cards", response_model=list[MemberCardOut])
def my_cards(customer: Customer, session: DbSession) -> list[MemberCardOut]:
    return [MemberCardOut.model_validate(c) for c in repo.cards_of_member(session, customer.merchant_id, customer.member_id)]


@store.post("/loyalty/cards/{plan_id}/buy", response_model=OrderDetailOut, status_code=status.HTTP_201_CREATED,
            summary="Order a membership card (Idempotency-Key required); it is granted when the order is paid")
def buy_card(
    plan_id: int, body: BuyCardIn, customer: Customer, session: DbSession, settings: AppSettings, response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> OrderDetailOut:
    order, created = service.buy_card(
        session, customer.merchant_id, customer.member_id, plan_id, address_id=body.address_id,
        idempotency_key=idempotency_key, payment_timeout=dt.timedelta(minutes=settings.order_payment_timeout_minutes),
    )
    mark_replayed(response, created)
    return OrderDetailOut(
        **OrderOut.model_validate(order).model_dump(),
        lines=[OrderLineOut.model_validate(ln) for ln in orders_service.order_lines(session, order.merchant_id, order.id)],
        shipments=[],
    )
