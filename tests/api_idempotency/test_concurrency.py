"""A console that fires the same keyed create several times at once (a retry while the first is
still running): on PostgreSQL exactly one request creates; the others wait on the key's unique
index for its commit and replay its answer. Never a 500, never a second row."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import Product, Sku
from siyu.config import Settings
from siyu.idempotency.models import IdempotentRequest
from tests.api_idempotency.cases import ADMIN, count, keyed, keys
from tests.conftest import Tenant
from tests.factories.catalog import product_body

Factory = sessionmaker[Session]
PARALLEL = 8


def _slow_claimer_commits(app: Any) -> Any:
    """The request that claimed the key holds its transaction open a while before committing, so
    the others surely arrive at the key while it is in flight."""

    def slow(session: Session) -> None:
        if any(isinstance(o, IdempotentRequest) and o.status_code is not None for o in session.identity_map.values()):
            time.sleep(0.3)

    event.listen(app.state.session_factory, "before_commit", slow)
    return slow


def _race(app: Any, engine: Any, calls: list[tuple[str, dict[str, Any], dict[str, str]]]) -> list[Any]:
    barrier = threading.Barrier(len(calls))
    engine.pool.dispose()
    slow = _slow_claimer_commits(app)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            def call(i: int) -> Any:
                url, body, headers = calls[i]
                barrier.wait()
                return client.post(url, json=body, headers=headers)

            with ThreadPoolExecutor(len(calls)) as pool:
                return list(pool.map(call, range(len(calls)), timeout=120))
    finally:
        event.remove(app.state.session_factory, "before_commit", slow)
        app.state.engine.pool.dispose()


def test_one_key_sent_in_parallel_creates_once_and_every_other_request_replays(
    app: Any, engine: Any, session_factory: Factory, settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    body = product_body("并发 T201")
    headers = keyed(tenant.admin_headers, "parallel-product")
    responses = _race(app, engine, [(f"{ADMIN}/products", body, headers)] * PARALLEL)

    assert Counter(r.status_code for r in responses) == Counter({201: 1, 200: PARALLEL - 1}), [r.text for r in responses]
    (created,) = [r for r in responses if r.status_code == 201]
    for r in responses:
        assert r.content == created.content
        assert r.headers.get("Idempotent-Replayed") == (None if r is created else "true")
    assert count(session_factory, Product, tenant.id) == 1
    assert count(session_factory, Sku, tenant.id) == 1
    assert [k.key for k in keys(session_factory, tenant.id)] == ["parallel-product"]


def test_one_key_sent_in_parallel_with_different_requests_creates_once_and_refuses_the_rest(
    app: Any, engine: Any, session_factory: Factory, settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    headers = keyed(tenant.admin_headers, "parallel-mixed")
    calls = [(f"{ADMIN}/products", product_body(f"并发 {i}"), headers) for i in range(PARALLEL)]
    responses = _race(app, engine, calls)

    assert Counter(r.status_code for r in responses) == Counter({201: 1, 409: PARALLEL - 1}), [r.text for r in responses]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"idempotency_key_reused"}
    assert count(session_factory, Product, tenant.id) == 1
    assert len(keys(session_factory, tenant.id)) == 1
