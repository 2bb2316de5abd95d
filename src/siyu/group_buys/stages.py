"""Group-buy pricing stage, submit hook and ship guard (see ``service`` for the flow)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from siyu.group_buys import service
from siyu.orders.models import Order
from siyu.orders.pricing import (
    ITEM_PROMOTIONS,
    PricingContext,
    register_ship_guard,
    register_stage,
    register_submit_hook,
)
from siyu.orders.schemas import register_checkout_option

register_checkout_option(service.OPTION, '{"activity_id": N, "team_id": T}: the group price; team_id joins team T')


@register_stage(ITEM_PROMOTIONS, "group_buys")
def group_buy_price(ctx: PricingContext) -> None:
    """Price the line at the group (or leader) price when ``options.group_buy`` is given."""
    service.apply_to_pricing(ctx)


@register_submit_hook("group_buys")
def group_buy_submit(ctx: PricingContext, order_id: int) -> None:
    """Take the member's units and the seat (a refusal aborts the submit)."""
    service.take_seat(ctx, order_id)


@register_ship_guard("group_buys")
def group_buy_ship_guard(session: Session, order: Order) -> None:
    """A group-buy order ships only once its team succeeded (409 ``group_buy_not_succeeded``)."""
    service.check_shippable(session, order)
