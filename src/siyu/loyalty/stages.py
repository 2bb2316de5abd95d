"""Loyalty pricing stages and the submit hook.

- MEMBER_PRICE ``loyalty_member_price``: the member's level (the higher of the rules level and
  an active paid card's level) takes ``100 - member_price_percent`` % off every physical line
  (the member pays ``member_price_percent`` % of those goods, rounded half up; a virtual line,
  e.g. a membership card, keeps its own price), one breakdown entry
  ``member_level:<id>``; a level with free shipping sets ``ctx.free_shipping``. An active paid
  card's own benefits (``CardPlan.member_discount_bp`` / ``free_shipping``) count too: the
  better of the level's and the cards' applies (``service.member_benefits``: the highest
  discount, free shipping if any grants it); a card's discount is the entry ``member_card:<plan id>``.
- POINTS ``loyalty_points``: ``CheckoutIn.points_to_use`` is clamped to the balance, to
  ``max_percent`` of the lines not flagged ``no_points`` and to whole fen
  (``points_per_yuan`` points = ¥1), refused below ``min_points``; every clamp is noted.
  ``ctx.points_to_use`` becomes the points actually used and the submit hook spends exactly
  those (idempotent by order; ``points_insufficient`` if the balance fell meanwhile).
- POINTS MALL ``loyalty_points_mall`` (BASE) and the POINTS stage: a points-mall product
  exchange (``options.points_mall``, see ``siyu.loyalty.mall``): flagged before every discount
  stage, so no member price, item or order promotion, coupon or points deduction touches it;
  priced at its cash part in the POINTS stage, its points spent with the order's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BindParameter, ColumnElement, bindparam, exists, or_

from siyu.loyalty import mall, service
from siyu.loyalty import repository as repo
from siyu.loyalty.models import CARD_ACTIVE, MemberCard, MemberLoyalty
from siyu.orders.freight import VIRTUAL
from siyu.orders.pricing import (
    BASE,
    MEMBER_PRICE,
    POINTS,
    PricingContext,
    register_probe,
    register_stage,
    register_submit_hook,
)
from siyu.orders.schemas import register_checkout_option

register_checkout_option(mall.OPTION, '{"sku_id": N}: exchange the points-mall product N for its points (+ cash part)')

RESERVATION = "loyalty_points"
PROBE_LEVEL = "loyalty_level"


@register_probe(PROBE_LEVEL)
def level_probe() -> ColumnElement[bool]:
    """Could the member have a level? A rules level on their state row, or an active card
    (what ``service.effective_level`` reads; without either it returns no level)."""
    merchant_id: BindParameter[Any] = bindparam("merchant_id")
    member_id: BindParameter[Any] = bindparam("member_id")
    now: BindParameter[Any] = bindparam("now")
    return or_(
        exists().where(MemberLoyalty.merchant_id == merchant_id, MemberLoyalty.member_id == member_id,
                       MemberLoyalty.level_id.is_not(None)),
        exists().where(MemberCard.merchant_id == merchant_id, MemberCard.member_id == member_id,
                       MemberCard.status == CARD_ACTIVE, MemberCard.starts_at <= now, MemberCard.ends_at > now),
    )


@register_stage(BASE, "loyalty_points_mall")
def points_mall_stage(ctx: PricingContext) -> None:
    """Check ``options.points_mall`` and flag the exchanged line before any discount stage."""
    mall.flag_line(ctx)


@register_stage(MEMBER_PRICE, "loyalty_member_price")
def member_price_stage(ctx: PricingContext) -> None:
    if ctx.member_id is None or not ctx.may_apply(PROBE_LEVEL):
        return
    benefits = service.member_benefits(ctx.session, ctx.merchant_id, ctx.member_id, ctx.now)
    level = benefits.level
    if benefits.free_shipping_from is not None:
        ctx.free_shipping = True
        if benefits.free_shipping_from.startswith("level:") and level is not None:
            ctx.note(MEMBER_PRICE, code="level_free_shipping", level_id=level.id)
        else:
            ctx.note(MEMBER_PRICE, code="card_free_shipping",
                     card_plan_id=int(benefits.free_shipping_from.split(":")[1]))
    bp = benefits.discount_bp
    if bp <= 0 or benefits.discount_from is None:
        return
    # Virtual lines (a membership card) are sold at their own price: no member price on them.
    # A points-mall exchange is its own price: no member price on it either.
    eligible = ctx.eligible(lambda line: not line.flags.get(VIRTUAL) and not mall.is_exchange(line))
    total = sum(ctx.lines[i].amount for i in eligible)
    if total <= 0:
        return
    pay = (total * (10000 - bp) + 5000) // 10000  # rounded half up; = (total * pct + 50) // 100 for a level
    label = f"会员价（{benefits.discount_name} {(10000 - bp) / 1000:g}折）"
    kind, ref = benefits.discount_from.split(":")
    if kind == "level" and level is not None:
        ctx.discount(MEMBER_PRICE, f"member_level:{level.id}", label, total - pay, eligible,
                     details={"level_id": level.id, "percent": level.member_price_percent, "source": benefits.level_source})
    else:
        ctx.discount(MEMBER_PRICE, f"member_card:{ref}", label, total - pay, eligible,
                     details={"card_plan_id": int(ref), "discount_bp": bp, "source": "card"})


@register_stage(POINTS, "loyalty_points")
def points_stage(ctx: PricingContext) -> None:
    deduction_stage(ctx)
    exchange = mall.price_line(ctx)
    if exchange:
        # The exchange's points ride the order's points: ``points_used``, one spend at submit, the
        # cancel and refund returns. (An exchange is an order of its own and flagged ``no_points``,
        # so the deduction above found nothing to take off and used no points.)
        reserved = ctx.reservations.get(RESERVATION) or {"points": 0, "amount": 0}
        ctx.reservations[RESERVATION] = {**reserved, "points": int(reserved["points"]) + exchange}
        ctx.points_to_use += exchange


def deduction_stage(ctx: PricingContext) -> None:
    requested = ctx.points_to_use
    if requested <= 0 or ctx.member_id is None:
        ctx.points_to_use = 0
        return
    ctx.points_to_use = 0
    rules = service.get_rules(ctx.session, ctx.merchant_id).deduction
    if not rules.enabled:
        ctx.note(POINTS, code="points_disabled", requested=requested)
        return
    eligible = ctx.eligible(lambda line: not line.flags.get("no_points"))
    eligible_amount = sum(ctx.lines[i].amount for i in eligible)
    acct = repo.account(ctx.session, ctx.merchant_id, ctx.member_id)
    balance = acct.balance if acct else 0
    cap_fen = eligible_amount * rules.max_percent // 100
    ratio = rules.points_per_yuan
    fen = min(min(requested, balance) * 100 // ratio, cap_fen)
    used = (fen * ratio + 99) // 100  # the fewest points worth ``fen``
    if fen <= 0 or used < rules.min_points:
        ctx.note(POINTS, code="points_not_usable", requested=requested, balance=balance, min_points=rules.min_points,
                 max_amount=cap_fen)
        return
    applied = ctx.discount(POINTS, "points", f"积分抵扣（{used} 积分）", fen, eligible,
                           details={"points": used, "points_per_yuan": ratio})
    if used != requested:
        reason = "balance" if requested > balance else ("max_percent" if fen == cap_fen else "whole_fen")
        ctx.note(POINTS, code="points_clamped", requested=requested, used=used, reason=reason)
    ctx.points_to_use = used
    ctx.reservations[RESERVATION] = {"points": used, "amount": applied}


@register_submit_hook("loyalty_points")
def points_submit(ctx: PricingContext, order_id: int) -> None:
    reserved = ctx.reservations.get(RESERVATION)
    if not reserved or ctx.member_id is None:
        return
    reason = mall.submit(ctx, order_id) or "order"
    service.record_checkout_spend(ctx.session, ctx.merchant_id, ctx.member_id, order_id, int(reserved["points"]),
                                  reason=reason)
