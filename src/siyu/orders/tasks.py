"""Order timers: cancel unpaid orders at their payment deadline, complete shipped ones later.

Both jobs are idempotent and re-check the order under its row lock, so a job that runs late,
twice, or after the customer paid / confirmed receipt does nothing.
"""

from __future__ import annotations

import datetime as dt

from siyu.kit.outbox import Job
from siyu.kit.timeutil import utcnow
from siyu.orders import service
from siyu.worker.registry import JobContext, job_handler


def _job_clock(ctx: JobContext) -> dt.datetime:
    """Now, as the worker that claimed the job sees it.

    A worker claims a job only once its ``run_at`` has passed on the worker's clock, so
    ``run_at`` is a lower bound of that clock (this also keeps ``Worker.drain(now=...)``
    deterministic in tests).
    """
    job = ctx.session.get(Job, ctx.job_id)
    now = utcnow()
    return max(now, job.run_at) if job is not None else now


@job_handler("orders.auto_cancel")
def auto_cancel(ctx: JobContext) -> None:
    service.auto_cancel_if_due(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]), _job_clock(ctx))


@job_handler("orders.auto_complete")
def auto_complete(ctx: JobContext) -> None:
    service.auto_complete_if_due(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]))
