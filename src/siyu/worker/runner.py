"""Claiming and running jobs.

Claim: one short transaction selects due jobs (pending with ``run_at <= now``, or running with
an expired lease: their worker died) ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of
workers share the table without taking the same job; SQLite's ``BEGIN IMMEDIATE`` serialises
the claim instead (one worker on SQLite). The claim sets a lease (``locked_until``).

Run: each job gets its own unit of work; the handler's writes and ``status = done`` commit
together. A failure rolls the handler back, and a second transaction records the error and
reschedules with exponential backoff (capped), or marks the job ``dead`` after
``max_attempts``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import traceback

import redis
from croniter import croniter
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.dialect import for_update
from siyu.db.session import unit_of_work
from siyu.kit.outbox import JOB_DEAD, JOB_DONE, JOB_PENDING, JOB_RUNNING, Job, Schedule, enqueue
from siyu.kit.timeutil import utcnow
from siyu.worker.registry import JobContext, handler_for, import_all_tasks

log = logging.getLogger("siyu.worker")

BACKOFF_BASE_SECONDS = 2
BACKOFF_CAP_SECONDS = 3600


def backoff(attempt: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS ** max(1, attempt)))


def next_cron_time(cron: str, tz: str, after: dt.datetime) -> dt.datetime:
    from zoneinfo import ZoneInfo

    local = after.astimezone(ZoneInfo(tz))
    nxt: dt.datetime = croniter(cron, local).get_next(dt.datetime)
    return nxt.astimezone(dt.UTC)


def add_schedule(
    session: Session, merchant_id: int, name: str, kind: str, cron: str, tz: str, payload: dict | None = None
) -> Schedule:
    """Create or update a recurring job (idempotent by merchant and name)."""
    if not croniter.is_valid(cron):
        raise ValueError(f"invalid cron expression {cron!r}")
    existing = session.scalar(select(Schedule).where(Schedule.merchant_id == merchant_id, Schedule.name == name))
    next_at = next_cron_time(cron, tz, utcnow())
    if existing:
        existing.kind, existing.cron, existing.timezone = kind, cron, tz
        existing.payload = payload or {}
        existing.next_run_at = next_at
        return existing
    sched = Schedule(
        merchant_id=merchant_id, name=name, kind=kind, cron=cron, timezone=tz, payload=payload or {},
        next_run_at=next_at,
    )
    session.add(sched)
    session.flush()
    return sched


SCHEDULE_SYNC_SECONDS = 300  # a merchant created meanwhile gets its recurring jobs within this


class Worker:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        *,
        redis: redis.Redis | None = None,
        worker_id: str | None = None,
        merchant_id: int | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.redis = redis
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.merchant_id = merchant_id  # restrict to one merchant (tests, targeted runs)
        self._schedules_synced_at: float | None = None
        import_all_tasks()

    # -- schedules ---------------------------------------------------------------------------
    def ensure_schedules(self) -> int:
        """Give every merchant (or this worker's one) the recurring jobs it lacks: a new merchant,
        or one created before a job existed. Long-running workers call it at start and every
        ``SCHEDULE_SYNC_SECONDS`` (``poll``); ``drain`` and ``run_once`` do not, so a test's
        clock jumps fire only the schedules it made. Another worker adding the same rows first is fine."""
        from sqlalchemy.exc import IntegrityError

        from siyu.worker.schedules import ensure_merchant_schedules

        try:
            with unit_of_work(self.session_factory) as session:
                return ensure_merchant_schedules(
                    session, None if self.merchant_id is None else [self.merchant_id]
                )
        except IntegrityError:
            log.info("recurring schedules were added by another worker meanwhile")
            return 0

    def poll(self) -> int:
        """One pass of a long-running worker: keep the merchants' recurring schedules in place
        (every ``SCHEDULE_SYNC_SECONDS``), then ``run_once``."""
        clock = time.monotonic()
        if self._schedules_synced_at is None or clock - self._schedules_synced_at >= SCHEDULE_SYNC_SECONDS:
            self._schedules_synced_at = clock
            try:
                self.ensure_schedules()
            except Exception:
                log.exception("could not add the merchants' recurring schedules")
        return self.run_once()

    def fire_schedules(self, now: dt.datetime | None = None) -> int:
        now = now or utcnow()
        fired = 0
        with unit_of_work(self.session_factory) as session:
            stmt = select(Schedule).where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
            if self.merchant_id is not None:
                stmt = stmt.where(Schedule.merchant_id == self.merchant_id)
            stmt = for_update(stmt.order_by(Schedule.next_run_at).limit(100), session, skip_locked=True)
            for sched in session.scalars(stmt):
                due = sched.next_run_at
                enqueue(
                    session, sched.merchant_id, sched.kind, {**sched.payload, "scheduled_for": due.isoformat()},
                    dedupe_key=f"schedule:{sched.id}:{due.isoformat()}",
                )
                sched.last_run_at = due
                sched.next_run_at = next_cron_time(sched.cron, sched.timezone, max(now, due))
                fired += 1
        return fired

    # -- jobs --------------------------------------------------------------------------------
    def claim(self, limit: int | None = None, now: dt.datetime | None = None) -> list[int]:
        now = now or utcnow()
        limit = limit or self.settings.worker_batch_size
        with unit_of_work(self.session_factory) as session:
            due = or_(
                (Job.status == JOB_PENDING) & (Job.run_at <= now),
                (Job.status == JOB_RUNNING) & (Job.locked_until < now),
            )
            stmt = select(Job.id).where(due)
            if self.merchant_id is not None:
                stmt = stmt.where(Job.merchant_id == self.merchant_id)
            stmt = for_update(stmt.order_by(Job.run_at, Job.id).limit(limit), session, skip_locked=True)
            ids = list(session.scalars(stmt))
            if ids:
                session.execute(
                    update(Job)
                    .where(Job.id.in_(ids))
                    .values(
                        status=JOB_RUNNING,
                        locked_by=self.worker_id,
                        locked_until=now + dt.timedelta(seconds=self.settings.worker_lease_seconds),
                        attempts=Job.attempts + 1,
                    )
                )
        return ids

    def run_job(self, job_id: int) -> str:
        """Run one claimed job; returns its new status."""
        try:
            with unit_of_work(self.session_factory) as session:
                job = session.get(Job, job_id)
                if job is None or job.status != JOB_RUNNING or job.locked_by != self.worker_id:
                    return "skipped"  # lease lost to another worker
                handler = handler_for(job.kind)
                if handler is None:
                    raise LookupError(f"no handler for job kind {job.kind!r}")
                handler(
                    JobContext(
                        session=session, merchant_id=job.merchant_id, payload=dict(job.payload),
                        settings=self.settings, job_id=job.id, attempt=job.attempts, redis=self.redis,
                        run_at=job.run_at,
                    )
                )
                job.status = JOB_DONE
                job.finished_at = utcnow()
                job.locked_by = None
                job.locked_until = None
            return JOB_DONE
        except Exception as exc:
            log.warning("job %s failed: %s", job_id, exc)
            return self._record_failure(job_id, exc)

    def _record_failure(self, job_id: int, exc: Exception) -> str:
        with unit_of_work(self.session_factory) as session:
            job = session.get(Job, job_id)
            if job is None:
                return "skipped"
            job.last_error = "".join(traceback.format_exception_only(type(exc), exc))[-2000:]
            job.locked_by = None
            job.locked_until = None
            if job.attempts >= job.max_attempts:
                job.status = JOB_DEAD
                job.finished_at = utcnow()
            else:
                job.status = JOB_PENDING
                job.run_at = utcnow() + backoff(job.attempts)
            return job.status

    def run_once(self, now: dt.datetime | None = None) -> int:
        """One pass: fire due schedules, claim a batch, run it. Returns the number of jobs run."""
        self.fire_schedules(now)
        ids = self.claim(now=now)
        for job_id in ids:
            self.run_job(job_id)
        return len(ids)

    def drain(self, max_rounds: int = 100, now: dt.datetime | None = None) -> int:
        """Run until nothing is due (tests, the CLI's ``--once``)."""
        total = 0
        for _ in range(max_rounds):
            ran = self.run_once(now)
            total += ran
            if ran == 0:
                break
        return total


class BackgroundWorker:
    """The in-process worker thread that ``siyu demo`` runs next to the API."""

    def __init__(self, session_factory: sessionmaker[Session], settings: Settings, *, redis: redis.Redis | None = None):
        self.worker = Worker(session_factory, settings, redis=redis)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="siyu-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.worker.poll()
            except Exception:
                log.exception("worker pass failed")
                ran = 0
            if ran == 0:
                self._stop.wait(self.worker.settings.worker_poll_seconds)
