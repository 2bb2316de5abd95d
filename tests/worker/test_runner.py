"""The outbox worker: jobs commit with their change, run once, retry with backoff, survive crashes."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.outbox import Job, Schedule, enqueue
from siyu.kit.timeutil import utcnow
from siyu.worker.registry import JobContext, job_handler
from siyu.worker.runner import Worker, add_schedule, next_cron_time
from tests.conftest import Tenant

CALLS: list[tuple[int, dict]] = []
FAILS_LEFT: dict[int, int] = {}


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    # merchant ids repeat across the SQLite and PostgreSQL runs; start each test clean
    CALLS.clear()
    FAILS_LEFT.clear()


@job_handler("test.record")
def _record(ctx: JobContext) -> None:
    CALLS.append((ctx.merchant_id, ctx.payload))


@job_handler("test.flaky")
def _flaky(ctx: JobContext) -> None:
    left = FAILS_LEFT.get(ctx.merchant_id, 0)
    if left:
        FAILS_LEFT[ctx.merchant_id] = left - 1
        raise RuntimeError("provider timeout")
    CALLS.append((ctx.merchant_id, {"flaky": "ok"}))


def _jobs(factory: sessionmaker[Session], merchant_id: int) -> list[Job]:
    with factory() as s:
        return list(s.scalars(select(Job).where(Job.merchant_id == merchant_id).order_by(Job.id)))


def test_job_rolled_back_with_its_transaction_never_runs(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    try:
        with unit_of_work(session_factory) as s:
            enqueue(s, tenant.id, "test.record", {"n": 1})
            raise RuntimeError("the change failed")
    except RuntimeError:
        pass
    assert _jobs(session_factory, tenant.id) == []


def test_job_runs_once_and_is_marked_done(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    with unit_of_work(session_factory) as s:
        enqueue(s, tenant.id, "test.record", {"n": 2})
    worker = Worker(session_factory, settings, merchant_id=tenant.id)
    assert worker.drain() == 1
    assert worker.drain() == 0
    assert [p for m, p in CALLS if m == tenant.id] == [{"n": 2}]
    (job,) = _jobs(session_factory, tenant.id)
    assert job.status == "done" and job.attempts == 1


def test_dedupe_key_makes_enqueue_idempotent(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    for _ in range(3):
        with unit_of_work(session_factory) as s:
            enqueue(s, tenant.id, "test.record", {"n": 3}, dedupe_key="order:1:cancel")
    assert len(_jobs(session_factory, tenant.id)) == 1


def test_failures_retry_with_backoff_then_succeed(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    FAILS_LEFT[tenant.id] = 2
    with unit_of_work(session_factory) as s:
        enqueue(s, tenant.id, "test.flaky")
    worker = Worker(session_factory, settings, merchant_id=tenant.id)
    worker.run_once()
    (job,) = _jobs(session_factory, tenant.id)
    assert job.status == "pending" and job.attempts == 1 and "provider timeout" in (job.last_error or "")
    assert job.run_at > utcnow()  # backed off: not due now
    assert worker.run_once() == 0
    later = utcnow() + dt.timedelta(hours=2)
    worker.run_once(now=later)
    worker.run_once(now=later + dt.timedelta(hours=2))
    (job,) = _jobs(session_factory, tenant.id)
    assert job.status == "done" and job.attempts == 3


def test_job_goes_dead_after_max_attempts(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    FAILS_LEFT[tenant.id] = 99
    with unit_of_work(session_factory) as s:
        enqueue(s, tenant.id, "test.flaky", max_attempts=2)
    worker = Worker(session_factory, settings, merchant_id=tenant.id)
    t = utcnow()
    for i in range(4):
        worker.run_once(now=t + dt.timedelta(hours=2 * i))
    (job,) = _jobs(session_factory, tenant.id)
    assert job.status == "dead" and job.attempts == 2


def test_expired_lease_is_taken_over(session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant) -> None:
    with unit_of_work(session_factory) as s:
        enqueue(s, tenant.id, "test.record", {"n": "lease"})
    crashed = Worker(session_factory, settings, merchant_id=tenant.id, worker_id="crashed")
    assert len(crashed.claim()) == 1  # claimed, then the process "dies"
    other = Worker(session_factory, settings, merchant_id=tenant.id, worker_id="other")
    assert other.claim() == []  # lease still valid
    later = utcnow() + dt.timedelta(seconds=settings.worker_lease_seconds + 1)
    assert other.drain(now=later) == 1
    assert crashed.run_job(_jobs(session_factory, tenant.id)[0].id) == "skipped"
    assert [p for m, p in CALLS if m == tenant.id] == [{"n": "lease"}]


def test_parallel_workers_never_run_a_job_twice(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    with unit_of_work(session_factory) as s:
        for i in range(60):
            enqueue(s, tenant.id, "test.record", {"i": i})
    workers = [Worker(session_factory, settings, merchant_id=tenant.id, worker_id=f"w{i}") for i in range(4)]
    threads = [threading.Thread(target=w.drain) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = sorted(p["i"] for m, p in CALLS if m == tenant.id)
    assert seen == list(range(60))
    with session_factory() as s:
        done = s.scalar(select(func.count()).select_from(Job).where(Job.merchant_id == tenant.id, Job.status == "done"))
    assert done == 60


def test_cron_schedule_uses_the_merchant_zone_and_fires_once_per_slot(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    after = dt.datetime(2026, 3, 1, 15, 0, tzinfo=dt.UTC)  # 23:00 in Shanghai
    nxt = next_cron_time("0 0 * * *", "Asia/Shanghai", after)
    assert nxt == dt.datetime(2026, 3, 1, 16, 0, tzinfo=dt.UTC)  # local midnight
    with unit_of_work(session_factory) as s:
        add_schedule(s, tenant.id, "nightly", "test.record", "0 0 * * *", "Asia/Shanghai", {"job": "nightly"})
    with session_factory() as s:
        due = s.scalar(select(Schedule.next_run_at).where(Schedule.merchant_id == tenant.id))
    assert due is not None
    worker = Worker(session_factory, settings, merchant_id=tenant.id)
    assert worker.fire_schedules(now=due) == 1
    assert worker.fire_schedules(now=due) == 0  # next slot is tomorrow
    worker.drain(now=due)
    assert [p["job"] for m, p in CALLS if m == tenant.id] == ["nightly"]
