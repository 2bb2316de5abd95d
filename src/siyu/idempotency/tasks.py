"""``idempotency.purge``: delete a merchant's Idempotency-Keys past their retention (24 h).

Queued by the first keyed create of each UTC day (``service._schedule_purge``) to run once that
day's keys are all past it; deleting is idempotent, so a late or repeated run does no harm.
"""

from __future__ import annotations

from siyu.idempotency import service
from siyu.worker.registry import JobContext, job_handler


@job_handler(service.PURGE_JOB)
def purge(ctx: JobContext) -> None:
    service.purge(ctx.session, ctx.merchant_id, ctx.now())
