"""Real parallel connections on PostgreSQL: no double spend, one entry per key, one check-in a day."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import make_session_factory, unit_of_work
from siyu.loyalty import points, service
from siyu.loyalty.models import CheckIn
from tests.conftest import Tenant
from tests.factories.concurrency import race
from tests.factories.orders import make_member
from tests.loyalty import helpers as h

PG_ONLY = "SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL"
RACE_CONNECTIONS = 16  # the PostgreSQL server allows 100 clients, shared with other test runs


def _connect_patiently(url: str) -> Callable[[], Any]:
    """A DB-API connect that waits (up to 60 s) while the shared server is at max_connections."""
    import psycopg

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    def connect() -> Any:
        deadline = time.monotonic() + 60
        while True:
            try:
                return psycopg.connect(dsn)
            except psycopg.OperationalError as exc:
                if "too many clients" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    return connect


@pytest.fixture
def race_factory(db_url: str, engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions over a bounded pool: every thread has its own session; at most 16 hold a
    connection at a time and the rest queue for one (the spends still interleave freely).
    The pool is filled before the race, waiting while other test runs hold every server slot."""
    if make_url(db_url).get_backend_name() != "postgresql":
        yield make_session_factory(engine)
        return
    eng = create_engine("postgresql+psycopg://", creator=_connect_patiently(db_url), pool_size=RACE_CONNECTIONS,
                        max_overflow=0, pool_timeout=120)
    held = [eng.connect() for _ in range(RACE_CONNECTIONS)]
    for conn in held:
        conn.close()
    try:
        yield make_session_factory(eng)
    finally:
        eng.dispose()


def _spend(factory: sessionmaker[Session], tenant: Tenant, member: int, amount: int, key: str) -> str:
    with unit_of_work(factory) as s:
        return f"entry:{points.spend(s, tenant.id, member, amount, reason='race', idempotency_key=key).id}"


def test_200_parallel_spends_end_exactly_at_zero_or_refuse(
    session_factory: sessionmaker[Session], race_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip(PG_ONLY)
    member = make_member(session_factory, tenant.id)
    # 3 lots with different expiries, 1,000 points; 200 spends of 7 points: 142 fit (994), 58 refused.
    now = dt.datetime.now(dt.UTC)
    for i, pts in enumerate((300, 300, 400)):
        h.award(session_factory, tenant.id, member, pts, f"lot{i}", expires_at=now + dt.timedelta(days=10 * (i + 1)))
    results = race(200, lambda i: _spend(race_factory, tenant, member, 7, f"spend-{i}"))
    outcomes = Counter("ok" if r.startswith("entry:") else r for r in results)
    assert outcomes == Counter({"ok": 142, "points_insufficient": 58}), results
    assert h.balance(session_factory, tenant.id, member) == 6
    assert h.entries_sum(session_factory, tenant.id, member) == 6
    assert h.open_lots_sum(session_factory, tenant.id, member) == 6
    # The last 6 points go, then the balance is exactly zero and a further spend is refused.
    assert _spend(session_factory, tenant, member, 6, "last").startswith("entry:")
    assert h.balance(session_factory, tenant.id, member) == 0 == h.entries_sum(session_factory, tenant.id, member)


def test_200_parallel_spends_of_the_whole_balance_end_at_zero(
    session_factory: sessionmaker[Session], race_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip(PG_ONLY)
    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 150, "all")
    results = race(200, lambda i: _spend(race_factory, tenant, member, 1, f"one-{i}"))
    outcomes = Counter("ok" if r.startswith("entry:") else r for r in results)
    assert outcomes == Counter({"ok": 150, "points_insufficient": 50}), results
    assert h.balance(session_factory, tenant.id, member) == 0 == h.entries_sum(session_factory, tenant.id, member)
    assert h.open_lots_sum(session_factory, tenant.id, member) == 0


def test_parallel_awards_with_one_key_make_one_entry(
    session_factory: sessionmaker[Session], race_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip(PG_ONLY)
    member = make_member(session_factory, tenant.id)

    def award(i: int) -> str:
        with unit_of_work(race_factory) as s:
            return f"entry:{points.award(s, tenant.id, member, 50, reason='race', idempotency_key='one-key').id}"

    results = race(16, award)
    assert len(set(results)) == 1 and results[0].startswith("entry:"), results
    assert len(h.entries(session_factory, tenant.id, member)) == 1
    assert h.balance(session_factory, tenant.id, member) == 50 == h.open_lots_sum(session_factory, tenant.id, member)


def test_parallel_spends_with_one_key_take_once(
    session_factory: sessionmaker[Session], race_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip(PG_ONLY)
    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 100, "base")
    results = race(16, lambda i: _spend(race_factory, tenant, member, 60, "same-spend"))
    assert len(set(results)) == 1 and results[0].startswith("entry:"), results
    assert h.balance(session_factory, tenant.id, member) == 40 == h.entries_sum(session_factory, tenant.id, member)


def test_parallel_check_ins_on_one_day_make_one(
    session_factory: sessionmaker[Session], race_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip(PG_ONLY)
    member = make_member(session_factory, tenant.id)
    at = dt.datetime.now(dt.UTC)

    def check(i: int) -> str:
        with unit_of_work(race_factory) as s:
            return f"day:{service.check_in(s, tenant.id, member, at).day}"

    results = race(12, check)
    outcomes = Counter("ok" if r.startswith("day:") else r for r in results)
    assert outcomes == Counter({"ok": 1, "checkin_already": 11}), results
    assert h.count(session_factory, CheckIn, tenant.id) == 1
    assert h.balance(session_factory, tenant.id, member) == 5  # the default check-in points, once


def test_expiry_racing_spends_keeps_the_ledger_consistent(
    session_factory: sessionmaker[Session], race_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip(PG_ONLY)
    member = make_member(session_factory, tenant.id)
    t0 = dt.datetime.now(dt.UTC)
    h.award(session_factory, tenant.id, member, 500, "due", now=t0 - dt.timedelta(days=2), expires_at=t0 - dt.timedelta(days=1))
    h.award(session_factory, tenant.id, member, 300, "later", expires_at=t0 + dt.timedelta(days=30))

    def act(i: int) -> str:
        with unit_of_work(race_factory) as s:
            if i % 10 == 0:
                return f"expired:{points.expire_due(s, tenant.id, t0)}"
            return f"entry:{points.spend(s, tenant.id, member, 20, reason='race', idempotency_key=f'x{i}').id}"

    results = race(60, act)
    assert not [r for r in results if r.startswith("crash")], results
    spent = 20 * sum(r.startswith("entry:") for r in results)
    assert sum(int(r.split(":")[1]) for r in results if r.startswith("expired:")) == 1  # the lot expired once
    expired = -sum(e.delta for e in h.entries(session_factory, tenant.id, member) if e.kind == "expire")
    assert spent + expired + h.balance(session_factory, tenant.id, member) == 800
    assert h.balance(session_factory, tenant.id, member) == h.entries_sum(session_factory, tenant.id, member)
    assert h.balance(session_factory, tenant.id, member) == h.open_lots_sum(session_factory, tenant.id, member)


@pytest.mark.parametrize("amount", [50, -20])
def test_parallel_adjustments_with_one_key_make_one_entry_and_one_audit_event(
    amount: int, session_factory: sessionmaker[Session], race_factory: sessionmaker[Session], settings: Settings,
    tenant: Tenant,
) -> None:
    """An operator's double click: 16 adjustments with one key make one entry, one audit event
    and one balance move; every call answers with that entry."""
    if settings.is_sqlite:
        pytest.skip(PG_ONLY)
    from sqlalchemy import func, select

    from siyu.kit.audit import AuditEvent

    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 100, "base")

    def adjust(i: int) -> str:
        with unit_of_work(race_factory) as s:
            entry, _ = points.adjust_once(s, tenant.id, member, amount, reason="客诉补偿", idempotency_key="click",
                                          actor=h.SYSTEM)
            return f"entry:{entry.id}"

    results = race(16, adjust)
    assert len(set(results)) == 1 and results[0].startswith("entry:"), results
    assert h.balance(session_factory, tenant.id, member) == 100 + amount
    with session_factory() as s:
        events = s.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.merchant_id == tenant.id, AuditEvent.action == "points_adjusted"))
    assert events == 1
