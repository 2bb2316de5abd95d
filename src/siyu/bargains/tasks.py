"""Bargain jobs.

- ``bargains.expire`` (at the bargain's ``expires_at``): active / floor_reached → expired.
- ``order.cancelled`` → ``bargains.reopen``: the bargain can be bought again, its unit back.

Both are conditional updates: running twice changes nothing more.
"""

from __future__ import annotations

from siyu.bargains import service
from siyu.kit.events import subscribe
from siyu.worker.registry import JobContext, job_handler


@job_handler("bargains.expire")
def expire(ctx: JobContext) -> None:
    service.expire(ctx.session, ctx.merchant_id, int(ctx.payload["bargain_id"]), ctx.now())


@subscribe("order.cancelled", "bargains.reopen")
def reopen(ctx: JobContext) -> None:
    service.on_order_cancelled(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]), now=ctx.now())
