"""``idempotency.purge``: every night, delete a merchant's Idempotency-Keys past their retention
(24 h). Deleting is idempotent, so a late or repeated run does no harm; a key met after its
retention is treated as unused anyway (``service.claim``)."""

from __future__ import annotations

from siyu.idempotency import service
from siyu.worker.registry import JobContext, recurring


@recurring(service.PURGE_JOB, "40 3 * * *", "delete the Idempotency-Keys past their 24 h retention, nightly")
def purge(ctx: JobContext) -> None:
    service.purge(ctx.session, ctx.merchant_id, ctx.now())
