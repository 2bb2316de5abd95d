"""The promotions' pricing stages (ITEM_PROMOTIONS, ORDER_PROMOTIONS) and submit hook; see ``service``."""

from __future__ import annotations

from siyu.orders.pricing import (
    ITEM_PROMOTIONS,
    ORDER_PROMOTIONS,
    PricingContext,
    register_stage,
    register_submit_hook,
)
from siyu.promotions import service


@register_stage(ITEM_PROMOTIONS, "promotions.items")
def item_promotions_stage(ctx: PricingContext) -> None:
    """Limited-time discounts and first-order specials (``options={"first_order": {"promotion_id": N}}``
    makes a first-order special mandatory: refused rather than silently dropped)."""
    service.item_stage(ctx)


@register_stage(ORDER_PROMOTIONS, "promotions.orders")
def order_promotions_stage(ctx: PricingContext) -> None:
    """Spend-and-save, spend-and-gift and add-on deals (``options={"add_on": [...]}``)."""
    service.order_stage(ctx)


@register_submit_hook("promotions")
def promotions_submit(ctx: PricingContext, order_id: int) -> None:
    """Claims, per-member counters, add-on stock and usage rows (a refusal aborts the submit)."""
    service.take(ctx, order_id)
