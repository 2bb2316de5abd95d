"""Member counters from event batches: one worker job per batch, new members, concurrent
batches, a job that runs twice."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import siyu.audience.service  # noqa: F401  (registers the stats hook, as the app does)
from siyu.audience import service as audience_service
from siyu.audience.models import MemberStats
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.events import service
from siyu.kit.outbox import Job
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.worker.runner import Worker
from tests.conftest import Tenant

NAMES = ("page_view", "product_view", "add_to_cart", "favorite", "share")


def _members(factory: sessionmaker[Session], merchant_id: int, n: int) -> list[int]:
    with unit_of_work(factory) as s:
        rows = [Member(merchant_id=merchant_id, openid=f"o-{uuid.uuid4().hex[:12]}") for _ in range(n)]
        s.add_all(rows)
        s.flush()
        return [m.id for m in rows]


def _batch(members: list[int], size: int, seed: int, now: dt.datetime) -> list[dict]:
    import random

    rng = random.Random(seed)
    out = []
    for i in range(size):
        name = NAMES[rng.randrange(len(NAMES))]
        props: dict = {"page": "/p"} if name == "page_view" else {"product_id": 3}
        if name == "add_to_cart":
            props = {"product_id": 3, "sku_id": 4, "quantity": 1}
        out.append({
            "event_id": uuid.uuid4().hex, "name": name, "member_id": rng.choice(members),
            "timestamp": (now - dt.timedelta(seconds=seed * 1000 + i)).isoformat(), "properties": props,
        })
    return out


def _expected(batches: list[list[dict]]) -> dict[int, tuple[int, int, int, int, dt.datetime]]:
    counts: dict[int, Counter[str]] = {}
    last: dict[int, dt.datetime] = {}
    for batch in batches:
        for e in batch:
            counts.setdefault(e["member_id"], Counter())[e["name"]] += 1
            ts = dt.datetime.fromisoformat(e["timestamp"])
            last[e["member_id"]] = max(last.get(e["member_id"], ts), ts)
    return {
        m: (c["product_view"], c["add_to_cart"], c["favorite"], c["share"], last[m]) for m, c in counts.items()
    }


def _stored(factory: sessionmaker[Session], merchant_id: int) -> dict[int, tuple[int, int, int, int, dt.datetime | None]]:
    with factory() as s:
        rows = s.execute(
            select(MemberStats.member_id, MemberStats.product_views, MemberStats.cart_adds, MemberStats.favorites,
                   MemberStats.shares, MemberStats.last_visit_at).where(MemberStats.merchant_id == merchant_id)
        ).all()
    return {int(r[0]): (r[1], r[2], r[3], r[4], r[5]) for r in rows}


def _drain(factory: sessionmaker[Session], settings: Settings, merchant_id: int) -> int:
    return Worker(factory, settings, merchant_id=merchant_id).drain()


def _activity_jobs(factory: sessionmaker[Session], merchant_id: int) -> list[Job]:
    with factory() as s:
        return list(
            s.scalars(select(Job).where(Job.merchant_id == merchant_id, Job.kind == audience_service.ACTIVITY_JOB))
        )


def test_batch_counters_equal_the_events_for_new_and_known_members(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    members = _members(session_factory, tenant.id, 12)
    caller = service.Caller(merchant_id=tenant.id, member_id=None, trusted=True)
    now = utcnow()
    first = _batch(members[:6], 120, 1, now)  # members 0-5 get stats rows here
    second = _batch(members, 200, 2, now)  # 0-5 known, 6-11 new
    for batch in (first, second):
        with unit_of_work(session_factory) as s:
            out = service.ingest(s, caller, batch, now=now)
            assert out.accepted == len(batch)
        assert _drain(session_factory, settings, tenant.id) == 1  # one job per batch
    # a replayed batch changes nothing and enqueues nothing
    with unit_of_work(session_factory) as s:
        assert service.ingest(s, caller, second, now=now).duplicates == len(second)
    assert _drain(session_factory, settings, tenant.id) == 0
    assert _stored(session_factory, tenant.id) == _expected([first, second])


def test_concurrent_batches_on_the_same_members_count_every_event_once(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant, db_url: str
) -> None:
    if not db_url.startswith("postgresql"):
        print("SKIP: SQLite serialises writers (BEGIN IMMEDIATE); the concurrency claim is for PostgreSQL")
        pytest.skip("concurrent batches need PostgreSQL (SQLite serialises writers)")
    members = _members(session_factory, tenant.id, 30)
    caller = service.Caller(merchant_id=tenant.id, member_id=None, trusted=True)
    now = utcnow()
    batches = [_batch(members, 300, seed, now) for seed in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(batches))

    def send(batch: list[dict]) -> None:
        try:
            start.wait()
            with unit_of_work(session_factory) as s:
                assert service.ingest(s, caller, batch, now=now).accepted == len(batch)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(_activity_jobs(session_factory, tenant.id)) == len(batches)
    # two workers share the jobs (SKIP LOCKED), applying them in parallel on the same members
    ran: list[int] = []
    workers = [
        threading.Thread(target=lambda w=w: ran.append(Worker(session_factory, settings, merchant_id=tenant.id,
                                                              worker_id=f"w{w}").drain()))
        for w in range(2)
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert sum(ran) == len(batches)
    assert _stored(session_factory, tenant.id) == _expected(batches)


def test_the_request_only_enqueues_and_the_job_adds_the_counters(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    members = _members(session_factory, tenant.id, 5)
    caller = service.Caller(merchant_id=tenant.id, member_id=None, trusted=True)
    now = utcnow()
    batch = _batch(members, 50, 3, now)
    with unit_of_work(session_factory) as s:
        assert service.ingest(s, caller, batch, now=now).accepted == 50
    (job,) = _activity_jobs(session_factory, tenant.id)
    assert sorted(job.payload["member_id"]) == sorted({e["member_id"] for e in batch})
    assert _stored(session_factory, tenant.id) == {}  # nothing written to the stats yet
    assert _drain(session_factory, settings, tenant.id) == 1
    assert _stored(session_factory, tenant.id) == _expected([batch])


def test_a_job_that_runs_twice_adds_the_batch_once(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    members = _members(session_factory, tenant.id, 6)
    caller = service.Caller(merchant_id=tenant.id, member_id=None, trusted=True)
    now = utcnow()
    batch = _batch(members, 80, 4, now)
    with unit_of_work(session_factory) as s:
        service.ingest(s, caller, batch, now=now)
    (job,) = _activity_jobs(session_factory, tenant.id)
    for expected_updates in (len({e["member_id"] for e in batch}), 0):  # e.g. a second worker took the job over after a lease expired
        with unit_of_work(session_factory) as s:
            assert audience_service.apply_activity_batch(s, tenant.id, job.payload) == expected_updates
    assert _drain(session_factory, settings, tenant.id) == 1  # the job itself: already applied, adds nothing
    assert _stored(session_factory, tenant.id) == _expected([batch])


def test_a_job_run_twice_at_the_same_time_adds_the_batch_once(
    session_factory: sessionmaker[Session], tenant: Tenant, db_url: str
) -> None:
    if not db_url.startswith("postgresql"):
        print("SKIP: SQLite serialises writers (BEGIN IMMEDIATE); the concurrency claim is for PostgreSQL")
        pytest.skip("parallel runs of one job need PostgreSQL (SQLite serialises writers)")
    members = _members(session_factory, tenant.id, 20)
    caller = service.Caller(merchant_id=tenant.id, member_id=None, trusted=True)
    now = utcnow()
    batch = _batch(members, 200, 5, now)
    with unit_of_work(session_factory) as s:
        service.ingest(s, caller, batch, now=now)
    (job,) = _activity_jobs(session_factory, tenant.id)
    start = threading.Barrier(4)
    updated: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            with unit_of_work(session_factory) as s:
                updated.append(audience_service.apply_activity_batch(s, tenant.id, job.payload))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(updated) == [0, 0, 0, len({e["member_id"] for e in batch})]
    assert _stored(session_factory, tenant.id) == _expected([batch])
