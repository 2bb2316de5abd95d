"""The flash-sale pricing stage (ITEM_PROMOTIONS) and submit hook; see ``service``."""

from __future__ import annotations

from siyu.flash_sales import service
from siyu.orders.pricing import ITEM_PROMOTIONS, PricingContext, register_stage, register_submit_hook
from siyu.orders.schemas import register_checkout_option

register_checkout_option(service.FLAG, '{"item_id": N}: the flash-sale item N at its flash price')


@register_stage(ITEM_PROMOTIONS, "flash_sales")
def flash_sale_stage(ctx: PricingContext) -> None:
    """``options={"flash_sale": {"item_id": N}}``: the line at the flash price, inside a session."""
    service.apply_to_pricing(ctx)


@register_submit_hook("flash_sales")
def flash_sale_submit(ctx: PricingContext, order_id: int) -> None:
    """Take the units through the gate and write the ledger row (a refusal aborts the submit)."""
    service.take_units(ctx, order_id)
