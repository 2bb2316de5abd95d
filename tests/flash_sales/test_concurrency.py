"""Real parallel connections against PostgreSQL: 500 purchase attempts from 300 members for 50
flash-sale units, with the Redis gate in front of the database and with the database alone.

Each attempt is a thread of a 16-wide pool with its own session (its own connection), running the
whole checkout submit (or the buy-now service) in its own transaction. Whatever the
interleaving: exactly 50 units sold, nobody past the per-member limit, activity stock at 0 and
never below, the SKU's normal stock untouched, and the Redis counters equal to the database's.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.flash_sales import service
from siyu.flash_sales.models import FlashSalePurchase
from siyu.flash_sales.schemas import BuyIn
from siyu.kit.errors import DomainError
from siyu.orders import checkout
from siyu.orders.models import Order, OrderLine
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.factories.orders import buyer, make_sku, sku_stock
from tests.flash_sales.helpers import counters, item_row, make_sale, many_buyers, redis_state

# 16 threads, not more: the PostgreSQL server (max_connections=100) is shared with other runs.
UNITS, MEMBERS, ATTEMPTS, LIMIT, THREADS = 50, 300, 500, 2, 16
TIMEOUT = dt.timedelta(minutes=30)


def _attempts(members: list[int]) -> list[int]:
    """500 attempts from 300 members: the first 100 members try three times (past the limit of 2),
    the other 200 once; shuffled with a fixed seed."""
    out = [m for m in members[:100] for _ in range(3)] + members[100:]
    assert len(out) == ATTEMPTS and len(set(out)) == MEMBERS
    random.Random(20261123).shuffle(out)
    return out


def _run(factory: sessionmaker[Session], tenant: Tenant, sku: int, item: int, attempts: list[int], path: str,
         client: redis.Redis | None, prefix: str) -> list[str]:
    start = threading.Barrier(THREADS)

    def attempt(i: int) -> str:
        if i < THREADS:
            start.wait()  # the first wave leaves together
        try:
            with unit_of_work(factory) as s:
                if client is not None:
                    from siyu.flash_sales import gate

                    gate.use_redis(s, client, prefix=prefix)
                if path == "buy":
                    service.buy(s, tenant.id, attempts[i], item, BuyIn(quantity=1), idempotency_key=f"a-{i}",
                                payment_timeout=TIMEOUT)
                else:
                    body = CheckoutIn.model_validate({"items": [{"sku_id": sku, "quantity": 1}],
                                                      "options": {"flash_sale": {"item_id": item}}})
                    checkout.submit(s, tenant.id, attempts[i], body, idempotency_key=f"a-{i}",
                                               payment_timeout=TIMEOUT)
                return "order"
        except DomainError as exc:
            return exc.code
        except Exception as exc:  # surfaced in the assertion message
            return f"crash: {type(exc).__name__}: {exc}"

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(attempt, range(len(attempts))))
    finally:
        factory.kw["bind"].pool.dispose()  # hand the idle connections back to the shared server


def _check(factory: sessionmaker[Session], tenant: Tenant, sku: int, item: int, outcomes: list[str],
           sku_stock_before: int) -> dict[int, int]:
    tally = Counter(outcomes)
    assert set(tally) <= {"order", "flash_sale_sold_out", "flash_sale_limit_reached"}, tally
    assert tally["order"] == UNITS, tally
    row = item_row(factory, item)
    assert (row.sold, row.activity_stock) == (UNITS, UNITS)
    held = counters(factory, item)
    assert sum(held.values()) == UNITS and max(held.values()) <= LIMIT, held
    with factory() as s:
        orders = s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == tenant.id))
        units = s.scalar(select(func.sum(OrderLine.quantity)).where(OrderLine.merchant_id == tenant.id))
        per_member = Counter(
            m for (m,) in s.execute(select(Order.member_id).where(Order.merchant_id == tenant.id)).all()
        )
        ledger_rows = s.execute(
            select(FlashSalePurchase.member_id, func.sum(FlashSalePurchase.quantity))
            .where(FlashSalePurchase.item_id == item).group_by(FlashSalePurchase.member_id)
        ).all()
    assert orders == UNITS and units == UNITS
    assert max(per_member.values()) <= LIMIT
    assert {int(m): int(q) for m, q in ledger_rows} == held == dict(per_member)
    assert sku_stock(factory, sku) == sku_stock_before  # the normal stock is not touched by the sale
    return held


def _arrange(factory: sessionmaker[Session], tenant: Tenant) -> tuple[int, int, list[int], int]:
    sku = make_sku(factory, tenant.id, price=10000, stock=UNITS + 100)
    _, (item,) = make_sale(factory, tenant.id, [{"sku_id": sku, "flash_price": 990, "activity_stock": UNITS}],
                           per_member_limit=LIMIT)
    members = many_buyers(factory, tenant.id, MEMBERS)
    return sku, item, members, sku_stock(factory, sku)


@pytest.mark.parametrize("path", ["checkout", "buy"])
def test_500_attempts_300_members_50_units_with_redis_in_front(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant, rclient: redis.Redis, fs_prefix: str,
    path: str,
) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    sku, item, members, before = _arrange(session_factory, tenant)
    outcomes = _run(session_factory, tenant, sku, item, _attempts(members), path, rclient, fs_prefix)
    held = _check(session_factory, tenant, sku, item, outcomes, before)
    snapshot = redis_state(rclient, fs_prefix, tenant.id, item)
    assert snapshot is not None
    remaining, redis_members = snapshot
    assert remaining == 0 and redis_members == held  # Redis agrees with the database, unit for unit


@pytest.mark.parametrize("path", ["checkout", "buy"])
def test_500_attempts_300_members_50_units_database_alone(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant, path: str
) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    sku, item, members, before = _arrange(session_factory, tenant)
    outcomes = _run(session_factory, tenant, sku, item, _attempts(members), path, None, "")
    _check(session_factory, tenant, sku, item, outcomes, before)


def test_one_member_racing_itself_never_passes_the_limit(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant, rclient: redis.Redis, fs_prefix: str,
) -> None:
    """32 parallel attempts by one member, with and without Redis: exactly the limit is sold."""
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    results: dict[str, Any] = {}
    for mode, client in (("redis", rclient), ("database", None)):
        sku = make_sku(session_factory, tenant.id, price=10000, stock=100)
        _, (item,) = make_sale(session_factory, tenant.id, [{"sku_id": sku, "flash_price": 990, "activity_stock": 20}],
                               per_member_limit=3)
        member = buyer(session_factory, tenant.id)
        outcomes = _run(session_factory, tenant, sku, item, [member] * THREADS, "checkout", client, fs_prefix)
        results[mode] = (Counter(outcomes), item_row(session_factory, item).sold, counters(session_factory, item))
        assert results[mode] == (Counter({"order": 3, "flash_sale_limit_reached": THREADS - 3}), 3, {member: 3}), mode


@pytest.mark.parametrize("limit", [1, 2])
def test_parallel_retries_of_one_buy_key_make_one_order_and_hold_one_unit_in_redis(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant, rclient: redis.Redis, fs_prefix: str,
    limit: int,
) -> None:
    """Eight retries of one buy-now request race: every one answers with the same order (none is
    refused by the Redis limit that its twin's unit filled), and Redis holds exactly one unit."""
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    from siyu.flash_sales import gate

    sku = make_sku(session_factory, tenant.id, price=10000, stock=100)
    _, (item,) = make_sale(session_factory, tenant.id, [{"sku_id": sku, "flash_price": 990, "activity_stock": 10}],
                           per_member_limit=limit)
    (member,) = many_buyers(session_factory, tenant.id, 1)
    barrier = threading.Barrier(8)

    def retry(_: int) -> str:
        barrier.wait()
        try:
            with unit_of_work(session_factory) as s:
                gate.use_redis(s, rclient, prefix=fs_prefix)
                order, _ = service.buy(s, tenant.id, member, item, BuyIn(quantity=1), idempotency_key="same-key",
                                       payment_timeout=TIMEOUT)
                return f"order:{order.id}"
        except DomainError as exc:
            return exc.code

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(retry, range(8)))
    session_factory.kw["bind"].pool.dispose()
    assert len(set(outcomes)) == 1 and outcomes[0].startswith("order:"), outcomes
    assert item_row(session_factory, item).sold == 1 and counters(session_factory, item) == {member: 1}
    assert redis_state(rclient, fs_prefix, tenant.id, item) == (9, {member: 1})


def test_42_parallel_http_buyers_queued_on_the_item_row_do_not_stall(
    app: Any, engine: Any, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant,
    rclient: redis.Redis, fs_prefix: str,
) -> None:
    """Through HTTP on one app (one event loop, one 40-thread pool), more buyers than threads at
    once, all queueing on the item row: buy-now commits in its own thread, so the holder of the
    hot row never waits for a thread that a buyer queued behind that row is holding."""
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    import time
    import uuid

    from fastapi.testclient import TestClient

    from siyu.tenancy import service as tenancy
    from tests.flash_sales.helpers import STORE, bound

    buyers = 42  # just past the 40 threads; not more: the PostgreSQL server is shared (max_connections=100)
    sku = make_sku(session_factory, tenant.id, price=10000, stock=100)
    # More units than buyers: every buyer passes Redis and queues on the item row in the database.
    _, (item,) = make_sale(session_factory, tenant.id, [{"sku_id": sku, "flash_price": 990, "activity_stock": 50}])
    members = many_buyers(session_factory, tenant.id, buyers)
    with unit_of_work(session_factory) as s:
        tokens = [tenancy.issue_customer_token(s, tenant.id, m, dt.timedelta(hours=1))[0] for m in members]
    barrier = threading.Barrier(buyers)
    engine.pool.dispose()  # leave the shared server's connections to this test's buyers
    with TestClient(app) as client, bound(app.state.engine, rclient, fs_prefix):
        def post(i: int) -> str:
            barrier.wait()
            r = client.post(f"{STORE}/flash-sales/{item}/buy", json={"quantity": 1},
                            headers={"Authorization": f"Bearer {tokens[i]}", "Idempotency-Key": uuid.uuid4().hex})
            return "order" if r.status_code == 201 else str(r.json().get("code"))

        began = time.perf_counter()
        with ThreadPoolExecutor(buyers) as pool:
            outcomes = Counter(pool.map(post, range(buyers), timeout=120))
        elapsed = time.perf_counter() - began
    app.state.engine.pool.dispose()
    assert outcomes == Counter({"order": buyers}), outcomes
    assert elapsed < 60, f"{elapsed:.0f} s: the buyers stalled"
    assert item_row(session_factory, item).sold == buyers
    assert redis_state(rclient, fs_prefix, tenant.id, item) == (50 - buyers, counters(session_factory, item))
