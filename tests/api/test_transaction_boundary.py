"""The request owns the transaction: committed before the response, on threads of its own."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.api.deps import DbSession
from siyu.config import Settings
from siyu.orders.models import Address, Order
from tests.conftest import Tenant, customer_login
from tests.factories.orders import make_address, make_member, make_sku, sku_stock

ADDRESS = {"name": "张三", "phone": "13800000000", "province": "浙江省", "city": "杭州市", "detail": "西湖路 1 号"}


def test_a_commit_that_fails_is_the_clients_error_and_writes_nothing(
    app: Any, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    with TestClient(app, raise_server_exceptions=False) as client:
        headers = customer_login(client, tenant)

        def refuse(session: Session) -> None:
            raise RuntimeError("the database refused the commit")

        factory = app.state.session_factory
        event.listen(factory, "before_commit", refuse)
        try:
            r = client.post("/api/store/v1/addresses", json=ADDRESS, headers=headers)
        finally:
            event.remove(factory, "before_commit", refuse)
        assert r.status_code == 500, r.text  # before this fix: 201 for a row that was rolled back
        with session_factory() as s:
            assert s.scalar(select(func.count()).select_from(Address).where(Address.merchant_id == tenant.id)) == 0
        assert client.post("/api/store/v1/addresses", json=ADDRESS, headers=headers).status_code == 201


def _hot_sku_over_http(
    app: Any, engine: Any, session_factory: sessionmaker[Session], tenant: Tenant, *, buyers: int, stock: int
) -> tuple[Counter[int], float, int]:
    """``buyers`` submits of one unit of one SKU at once through one app; (status codes, seconds, sku)."""

    from siyu.db.session import unit_of_work
    from siyu.tenancy import service as tenancy

    sku = make_sku(session_factory, tenant.id, price=10000, stock=stock)
    members = [make_member(session_factory, tenant.id) for _ in range(buyers)]
    for m in members:
        make_address(session_factory, tenant.id, m)
    with unit_of_work(session_factory) as s:
        tokens = [tenancy.issue_customer_token(s, tenant.id, m, dt.timedelta(hours=1))[0] for m in members]
    barrier = threading.Barrier(buyers)
    engine.pool.dispose()
    with TestClient(app) as client:
        def submit(i: int) -> int:
            barrier.wait()
            r = client.post("/api/store/v1/checkout/submit", json={"items": [{"sku_id": sku, "quantity": 1}]},
                            headers={"Authorization": f"Bearer {tokens[i]}", "Idempotency-Key": uuid.uuid4().hex})
            return r.status_code

        began = time.perf_counter()
        with ThreadPoolExecutor(buyers) as pool:
            outcomes = Counter(pool.map(submit, range(buyers), timeout=120))
        elapsed = time.perf_counter() - began
    app.state.engine.pool.dispose()
    return outcomes, elapsed, sku


def test_more_buyers_than_threads_queued_on_one_hot_sku_do_not_stall(
    app: Any, engine: Any, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    """42 submits at once through one app (one event loop, one 40-thread pool), all waiting for
    the same SKU row: the holder's commit must not need a thread that a waiter is holding."""
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    buyers = 42  # just past the 40 endpoint threads; the shared server allows 100 connections
    outcomes, elapsed, sku = _hot_sku_over_http(app, engine, session_factory, tenant, buyers=buyers, stock=100)
    assert outcomes == Counter({201: buyers}), outcomes
    assert elapsed < 60, f"{elapsed:.0f} s: the buyers stalled"
    assert sku_stock(session_factory, sku) == 100 - buyers
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == tenant.id)) == buyers


def test_a_hot_sku_over_http_never_oversells(
    app: Any, engine: Any, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    """40 buyers of a SKU with stock 12 through the HTTP endpoint (its own transaction boundary
    and commit thread) make exactly 12 orders; the rest are refused; stock 0."""
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    outcomes, _elapsed, sku = _hot_sku_over_http(app, engine, session_factory, tenant, buyers=40, stock=12)
    assert outcomes == Counter({201: 12, 409: 28}), outcomes
    assert sku_stock(session_factory, sku) == 0
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == tenant.id)) == 12


def test_the_commit_never_waits_for_a_thread_held_by_a_request_queued_on_its_lock(
    settings: Settings, engine: Any, tenant: Tenant
) -> None:
    """42 requests (two past the 40 endpoint threads) that each lock the same row first: with
    commits on the endpoints' own pool, the holder's commit waits for a thread that a request
    queued on the holder's lock is holding, and every request stalls."""
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    from siyu.app import create_app
    from siyu.tenancy.models import Merchant

    app = create_app(settings)

    @app.post("/test/hot-row")
    def hot_row(session: DbSession) -> dict[str, int]:
        merchant = session.scalars(select(Merchant).where(Merchant.id == tenant.id).with_for_update()).one()
        time.sleep(0.01)
        return {"id": merchant.id}

    requests = 42
    barrier = threading.Barrier(requests)
    engine.pool.dispose()
    with TestClient(app) as client:
        def call(_: int) -> int:
            barrier.wait()
            return client.post("/test/hot-row").status_code

        began = time.perf_counter()
        with ThreadPoolExecutor(requests) as pool:
            outcomes = Counter(pool.map(call, range(requests), timeout=120))
        elapsed = time.perf_counter() - began
    app.state.engine.dispose()
    assert outcomes == Counter({200: requests}), outcomes
    assert elapsed < 30, f"{elapsed:.0f} s: the requests stalled"
