"""The promotions' pricing stages (ITEM_PROMOTIONS, ORDER_PROMOTIONS) and submit hook; see ``service``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BindParameter, ColumnElement, bindparam, exists

from siyu.orders.pricing import (
    ITEM_PROMOTIONS,
    ORDER_PROMOTIONS,
    PricingContext,
    register_probe,
    register_stage,
    register_submit_hook,
)
from siyu.orders.schemas import register_checkout_option
from siyu.promotions import service
from siyu.promotions.models import ACTIVE, ITEM_KINDS, ORDER_KINDS, Promotion

PROBE_LIVE = "promotions_live"
register_checkout_option(service.OPTION_FIRST_ORDER, '{"promotion_id": N}: the first-order special N, refused if not met')
register_checkout_option(service.OPTION_ADD_ON, '[{"promotion_id", "sku_id", "quantity"}]: add-on deals to buy')


@register_probe(PROBE_LIVE)
def live_probe() -> ColumnElement[bool]:
    """Is any promotion of the merchant live now (the rows ``repository.live`` would return)?"""
    now: BindParameter[Any] = bindparam("now")
    return exists().where(
        Promotion.merchant_id == bindparam("merchant_id"), Promotion.status == ACTIVE,
        Promotion.kind.in_(ITEM_KINDS + ORDER_KINDS), Promotion.starts_at <= now, Promotion.ends_at > now,
    )


@register_stage(ITEM_PROMOTIONS, "promotions.items")
def item_promotions_stage(ctx: PricingContext) -> None:
    """Limited-time discounts and first-order specials (``options={"first_order": {"promotion_id": N}}``
    makes a first-order special mandatory: refused rather than silently dropped)."""
    if ctx.options.get(service.OPTION_FIRST_ORDER) is None and not ctx.may_apply(PROBE_LIVE):
        return  # nothing live, nothing requested: the stage would find nothing
    service.item_stage(ctx)


@register_stage(ORDER_PROMOTIONS, "promotions.orders")
def order_promotions_stage(ctx: PricingContext) -> None:
    """Spend-and-save, spend-and-gift and add-on deals (``options={"add_on": [...]}``)."""
    if ctx.options.get(service.OPTION_ADD_ON) is None and not ctx.may_apply(PROBE_LIVE):
        return  # nothing live, no add-on requested (an add-on request is checked, and refused, below)
    service.order_stage(ctx)


@register_submit_hook("promotions")
def promotions_submit(ctx: PricingContext, order_id: int) -> None:
    """Claims, per-member counters, add-on stock and usage rows (a refusal aborts the submit)."""
    service.take(ctx, order_id)
