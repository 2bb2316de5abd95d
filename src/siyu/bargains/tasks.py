"""Bargain jobs.

- ``bargains.expire`` (at the bargain's ``expires_at``): active / floor_reached → expired.
- ``order.cancelled`` → ``bargains.reopen``: the bargain can be bought again, its unit back.

Both are conditional updates: running twice changes nothing more.
"""

from __future__ import annotations

import datetime as dt

from siyu.bargains import service
from siyu.kit.events import subscribe
from siyu.kit.outbox import Job
from siyu.kit.timeutil import utcnow
from siyu.worker.registry import JobContext, job_handler


def _job_clock(ctx: JobContext) -> dt.datetime:
    """Now as the worker sees it; never before the job's ``run_at`` (see ``orders.tasks``)."""
    job = ctx.session.get(Job, ctx.job_id)
    now = utcnow()
    return max(now, job.run_at) if job is not None else now


@job_handler("bargains.expire")
def expire(ctx: JobContext) -> None:
    service.expire(ctx.session, ctx.merchant_id, int(ctx.payload["bargain_id"]), _job_clock(ctx))


@subscribe("order.cancelled", "bargains.reopen")
def reopen(ctx: JobContext) -> None:
    service.on_order_cancelled(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]), now=_job_clock(ctx))
