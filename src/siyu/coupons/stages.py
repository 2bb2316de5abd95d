"""The COUPONS pricing stage and its submit hook; see ``service.apply_to_pricing``."""

from __future__ import annotations

from sqlalchemy import ColumnElement, bindparam, exists

from siyu.coupons import service
from siyu.coupons.models import LOCKED, UNUSED, MemberCoupon
from siyu.orders.pricing import COUPONS, PricingContext, register_probe, register_stage, register_submit_hook

PROBE_WALLET = "coupons_wallet"


@register_probe(PROBE_WALLET)
def wallet_probe() -> ColumnElement[bool]:
    """Does the member hold an unused or locked coupon (a superset of the wallet the stage loads)?"""
    return exists().where(
        MemberCoupon.merchant_id == bindparam("merchant_id"), MemberCoupon.member_id == bindparam("member_id"),
        MemberCoupon.status.in_((UNUSED, LOCKED)),
    )


@register_stage(COUPONS, "coupons")
def coupon_stage(ctx: PricingContext) -> None:
    """``coupon_ids=None``: the best combination of the member's wallet, with a note on why each
    other coupon does not apply; explicit ids: each must apply, else a specific error."""
    if ctx.coupon_ids is None and not ctx.may_apply(PROBE_WALLET):
        return  # an empty wallet: no coupon to choose, nothing to note
    service.apply_to_pricing(ctx)


@register_submit_hook("coupons")
def coupon_submit(ctx: PricingContext, order_id: int) -> None:
    """Lock the chosen coupons to the order (``coupon_locked`` if another pending order holds one)."""
    service.lock_for_order(ctx, order_id)
