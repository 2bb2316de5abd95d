"""Flash-sale jobs.

- ``flash_sales.activate`` (at ``starts_at``): scheduled → active, Redis loaded from the database.
- ``flash_sales.end`` (at ``ends_at``): ended; unsold activity stock back to the SKUs.
- ``flash_sales.reconcile`` (every minute, per merchant, from ``start``): rewrite Redis from the
  ledger, so a crash between the Lua gate and the database loses no unit for long (``gate.py``).
- ``order.cancelled`` → ``flash_sales.release_order``: units of the cancelled order back, once.
- ``order.paid`` → ``flash_sales.mark_paid``: the ledger rows become paid.
- ``order.refunded`` (full, before shipping) → ``flash_sales.refund_order``: units back, once.

Each is idempotent: a job run twice finds nothing left to do.
"""

from __future__ import annotations

from siyu.flash_sales import gate, service
from siyu.kit.events import subscribe
from siyu.worker.registry import JobContext, job_handler


def _redis(ctx: JobContext) -> None:
    if ctx.redis is not None and gate.redis_for(ctx.session) is None:
        gate.use_redis(ctx.session, ctx.redis, prefix=ctx.settings.flash_sale_redis_prefix)


@job_handler("flash_sales.activate")
def activate(ctx: JobContext) -> None:
    _redis(ctx)
    service.activate_if_due(ctx.session, ctx.merchant_id, int(ctx.payload["flash_sale_id"]), ctx.now())


@job_handler("flash_sales.end")
def end(ctx: JobContext) -> None:
    _redis(ctx)
    service.end(
        ctx.session, ctx.merchant_id, int(ctx.payload["flash_sale_id"]), actor=("system", None),
        now=ctx.now(), only_if_due=True,
    )


@job_handler("flash_sales.reconcile")
def reconcile(ctx: JobContext) -> None:
    _redis(ctx)
    now = ctx.now()
    service.end_due(ctx.session, ctx.merchant_id, now)  # a missed end job is caught up here too
    service.reconcile(ctx.session, ctx.merchant_id, gate.redis_for(ctx.session))


@subscribe("order.cancelled", "flash_sales.release_order")
def release_order(ctx: JobContext) -> None:
    _redis(ctx)
    service.release_order(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]))


@subscribe("order.refunded", "flash_sales.refund_order")
def refund_order(ctx: JobContext) -> None:
    if ctx.payload.get("full"):
        _redis(ctx)
        service.refund_order(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]))


@subscribe("order.paid", "flash_sales.mark_paid")
def mark_paid(ctx: JobContext) -> None:
    service.mark_paid(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]))
