"""Real parallel connections: one order per idempotency key, and no oversell of a hot SKU."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.orders import checkout
from siyu.orders.models import Order
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.factories.concurrency import race
from tests.factories.orders import buyer, make_sku, sku_stock


def _submit(factory: sessionmaker[Session], tenant: Tenant, member: int, sku: int, key: str) -> str:
    with unit_of_work(factory) as s:
        body = CheckoutIn.model_validate({"items": [{"sku_id": sku, "quantity": 1}]})
        order, _ = checkout.submit(s, tenant.id, member, body, idempotency_key=key, payment_timeout=dt.timedelta(minutes=30))
        return f"order:{order.id}"


def test_eight_retries_of_one_key_make_one_order(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, stock=50)
    member = buyer(session_factory, tenant.id)
    results = race(8, lambda i: _submit(session_factory, tenant, member, sku, "retry-key"))
    assert len(set(results)) == 1 and results[0].startswith("order:"), results
    with session_factory() as s:
        count = s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == tenant.id))
    assert count == 1
    assert sku_stock(session_factory, sku) == 49


def test_hot_sku_never_oversells(session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    sku = make_sku(session_factory, tenant.id, stock=20)
    members = [buyer(session_factory, tenant.id) for _ in range(64)]
    results = race(64, lambda i: _submit(session_factory, tenant, members[i], sku, f"buy-{i}"))
    outcomes = Counter("order" if r.startswith("order:") else r for r in results)
    assert outcomes == Counter({"order": 20, "insufficient_stock": 44}), results
    assert sku_stock(session_factory, sku) == 0
    with session_factory() as s:
        count = s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == tenant.id))
    assert count == 20
