"""Bargain pricing stage and submit hook (see ``service`` for the flow)."""

from __future__ import annotations

from siyu.bargains import service
from siyu.orders.pricing import ITEM_PROMOTIONS, PricingContext, register_stage, register_submit_hook
from siyu.orders.schemas import register_checkout_option

register_checkout_option(service.OPTION, '{"bargain_id": N}: one unit at the bargain\'s current price')


@register_stage(ITEM_PROMOTIONS, "bargains")
def bargain_price(ctx: PricingContext) -> None:
    """One unit at the bargain's current price when ``options.bargain`` is given."""
    service.apply_to_pricing(ctx)


@register_submit_hook("bargains")
def bargain_submit(ctx: PricingContext, order_id: int) -> None:
    """Mark the bargain ordered, once (a refusal aborts the submit)."""
    service.mark_ordered(ctx, order_id)
