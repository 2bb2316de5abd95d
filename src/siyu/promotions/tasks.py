"""Promotion jobs, driven by order events; each is idempotent (a rerun finds nothing to do).

- ``order.paid`` → ``promotions.mark_paid``: the order's usage rows become paid (counted in stats).
- ``order.cancelled`` → ``promotions.release_order``: usage rows released; per-member counters,
  add-on stock and the first-order claim given back, exactly once.
- ``order.refunded`` → ``promotions.record_refund``: the refund is added to the order's paid usage
  rows (once per refund id), for the net GMV in the stats, and the refunded units go back to the
  member's purchase limit: a full refund frees all of them, a partial refund the refunded quantity
  of the promotion's lines (an order kind, one use per order, only with the full refund).
"""

from __future__ import annotations

from siyu.kit.events import subscribe
from siyu.promotions import service
from siyu.worker.registry import JobContext


@subscribe("order.paid", "promotions.mark_paid")
def mark_paid(ctx: JobContext) -> None:
    service.mark_paid(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]))


@subscribe("order.cancelled", "promotions.release_order")
def release_order(ctx: JobContext) -> None:
    service.release_order(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]))


@subscribe("order.refunded", "promotions.record_refund")
def record_refund(ctx: JobContext) -> None:
    p = ctx.payload
    service.record_refund(
        ctx.session, ctx.merchant_id, int(p["order_id"]), int(p["refund_id"]), int(p["amount"]),
        lines=list(p.get("lines") or []), full=bool(p.get("full")),
    )
