"""Promotion jobs, driven by order events; each is idempotent (a rerun finds nothing to do).

- ``order.paid`` → ``promotions.mark_paid``: the order's usage rows become paid (counted in stats).
- ``order.cancelled`` → ``promotions.release_order``: usage rows released; per-member counters,
  add-on stock and the first-order claim given back, exactly once.
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
