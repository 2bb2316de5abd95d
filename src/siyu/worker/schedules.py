"""Every merchant's recurring jobs (``worker.registry.recurring``) exist as ``job_schedules`` rows.

A new merchant gets them in the transaction that creates it (``tenancy.service.create_merchant``);
a worker, when it starts, adds the ones missing for merchants created before a job was added
(an upgrade). Both are idempotent: a row per merchant and job name (``UNIQUE (merchant_id,
name)``); a worker that loses the race to another worker's insert leaves it be.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.kit.outbox import Schedule
from siyu.tenancy.models import Merchant
from siyu.worker.registry import recurring_jobs
from siyu.worker.runner import add_schedule


def ensure_merchant_schedules(session: Session, merchant_ids: Sequence[int] | None = None) -> int:
    """Add the missing recurring schedules (all merchants, or ``merchant_ids``). Returns how many."""
    jobs = recurring_jobs()
    if not jobs:
        return 0
    merchants = select(Merchant.id, Merchant.timezone)
    have = select(Schedule.merchant_id, Schedule.name).where(Schedule.name.in_([j.kind for j in jobs]))
    if merchant_ids is not None:
        merchants = merchants.where(Merchant.id.in_(list(merchant_ids)))
        have = have.where(Schedule.merchant_id.in_(list(merchant_ids)))
    existing = {(m, n) for m, n in session.execute(have)}
    added = 0
    for merchant_id, timezone in session.execute(merchants).all():
        for job in jobs:
            if (merchant_id, job.kind) not in existing:
                add_schedule(session, merchant_id, job.kind, job.kind, job.cron, timezone)
                added += 1
    return added
