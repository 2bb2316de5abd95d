"""Member counters from event batches: set-based update, new members, concurrent batches."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import siyu.audience.service  # noqa: F401  (registers the stats hook, as the app does)
from siyu.audience.models import MemberStats
from siyu.db.session import unit_of_work
from siyu.events import service
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
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


def test_batch_counters_equal_the_events_for_new_and_known_members(
    session_factory: sessionmaker[Session], tenant: Tenant
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
    # a replayed batch changes nothing
    with unit_of_work(session_factory) as s:
        assert service.ingest(s, caller, second, now=now).duplicates == len(second)
    assert _stored(session_factory, tenant.id) == _expected([first, second])


def test_concurrent_batches_on_the_same_members_count_every_event_once(
    session_factory: sessionmaker[Session], tenant: Tenant, db_url: str
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
    assert _stored(session_factory, tenant.id) == _expected(batches)
