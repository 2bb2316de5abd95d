"""The COUPONS pricing stage and its submit hook; see ``service.apply_to_pricing``."""

from __future__ import annotations

from siyu.coupons import service
from siyu.orders.pricing import COUPONS, PricingContext, register_stage, register_submit_hook


@register_stage(COUPONS, "coupons")
def coupon_stage(ctx: PricingContext) -> None:
    """``coupon_ids=None``: the best combination of the member's wallet, with a note on why each
    other coupon does not apply; explicit ids: each must apply, else a specific error."""
    service.apply_to_pricing(ctx)


@register_submit_hook("coupons")
def coupon_submit(ctx: PricingContext, order_id: int) -> None:
    """Lock the chosen coupons to the order (``coupon_locked`` if another pending order holds one)."""
    service.lock_for_order(ctx, order_id)
