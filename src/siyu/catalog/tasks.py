"""Keeps each product's sales count (the store's "sort by sales") in step with paid orders.

Each handler runs in the job's own transaction with ``status = done``, so a count moves once
per event however often the worker retries.
"""

from __future__ import annotations

from collections import defaultdict

from siyu.catalog import repository as repo
from siyu.kit.events import subscribe
from siyu.worker.registry import JobContext


@subscribe("order.paid", "catalog.count_sales")
def count_sales(ctx: JobContext) -> None:
    from siyu.orders import repository as orders_repo

    units: dict[int, int] = defaultdict(int)
    for line in orders_repo.order_lines(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"])):
        units[line.product_id] += line.quantity
    repo.add_sales(ctx.session, ctx.merchant_id, dict(units))


@subscribe("order.refunded", "catalog.uncount_refunded_sales")
def uncount_refunded_sales(ctx: JobContext) -> None:
    from siyu.orders import repository as orders_repo

    refunded = {int(r["order_line_id"]): int(r.get("quantity") or 0) for r in ctx.payload.get("lines") or []}
    if not refunded:
        return
    units: dict[int, int] = defaultdict(int)
    for line in orders_repo.order_lines(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"])):
        if line.id in refunded:
            units[line.product_id] -= refunded[line.id]
    repo.add_sales(ctx.session, ctx.merchant_id, dict(units))
