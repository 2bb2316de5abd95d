"""The orders domain's pricing stage: freight (last stage before the payable)."""

from __future__ import annotations

from siyu.orders import freight
from siyu.orders.pricing import FREIGHT, PricingContext, StageEntry, register_stage


@register_stage(FREIGHT, "freight")
def freight_stage(ctx: PricingContext) -> None:
    result = freight.compute(ctx.session, ctx.merchant_id, ctx.lines, ctx.province, free_shipping=ctx.free_shipping)
    ctx.freight = result.amount
    if ctx.province is None and any(not ln.flags.get(freight.VIRTUAL) for ln in ctx.lines):  # something ships
        ctx.note(FREIGHT, code="address_missing", message="freight estimated without a destination")
    ctx.entries.append(StageEntry(FREIGHT, "freight", "运费", result.amount, {"templates": result.details}))
