"""Order timers: cancel unpaid orders at their payment deadline, complete shipped ones later.

Both jobs are idempotent and re-check the order under its row lock, so a job that runs late,
twice, or after the customer paid / confirmed receipt does nothing.
"""

from __future__ import annotations

from siyu.orders import service
from siyu.worker.registry import JobContext, job_handler


@job_handler("orders.auto_cancel")
def auto_cancel(ctx: JobContext) -> None:
    service.auto_cancel_if_due(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]), ctx.now())


@job_handler("orders.auto_complete")
def auto_complete(ctx: JobContext) -> None:
    service.auto_complete_if_due(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]))
