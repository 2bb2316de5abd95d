"""Real parallel connections on PostgreSQL: the first-order special, the per-member limit and the
add-on stock hold under racing submits (exact counts)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.orders import checkout
from siyu.orders.models import Order
from siyu.orders.schemas import CheckoutIn
from siyu.promotions.models import (
    FirstOrderClaim,
    PromotionMemberCounter,
    PromotionSkuCounter,
    PromotionUsage,
)
from tests.conftest import Tenant
from tests.factories.concurrency import race
from tests.factories.orders import buyer, make_sku, sku_stock
from tests.factories.promotions import make_promotion


def _postgres_only(settings: Settings) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")


def _submit(factory: sessionmaker[Session], tenant: Tenant, member: int, items: list[tuple[int, int]],
            options: dict[str, Any], key: str) -> str:
    with unit_of_work(factory) as s:
        body = CheckoutIn.model_validate({"items": [{"sku_id": k, "quantity": q} for k, q in items], "options": options})
        order, _ = checkout.submit(s, tenant.id, member, body, idempotency_key=key,
                                   payment_timeout=dt.timedelta(minutes=30))
        return f"order:{order.payable_amount}"


def _count(factory: sessionmaker[Session], model: Any, tenant: Tenant) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(model.merchant_id == tenant.id)) or 0)


def test_twenty_racing_first_orders_of_one_member_get_the_price_once(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    _postgres_only(settings)
    sku = make_sku(session_factory, tenant.id, price=10000, stock=100, free_shipping=True)
    pid = make_promotion(session_factory, tenant.id, "first_order", {"items": [{"sku_id": sku, "price": 990}]})
    member = buyer(session_factory, tenant.id)
    options = {"first_order": {"promotion_id": pid}}
    results = race(20, lambda i: _submit(session_factory, tenant, member, [(sku, 1)], options, f"first-{i}"))
    outcomes = Counter("first_order_refused" if r in ("first_order_used", "first_order_not_eligible") else r
                       for r in results)
    assert outcomes == Counter({"order:990": 1, "first_order_refused": 19}), results
    assert _count(session_factory, Order, tenant) == 1
    assert _count(session_factory, FirstOrderClaim, tenant) == 1
    assert _count(session_factory, PromotionUsage, tenant) == 1
    assert sku_stock(session_factory, sku) == 99  # the refused submits rolled their stock back


def test_racing_orders_never_pass_the_per_member_limit(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    _postgres_only(settings)
    sku = make_sku(session_factory, tenant.id, price=10000, stock=100, free_shipping=True)
    pid = make_promotion(session_factory, tenant.id, "limited_discount", {"items": [{"sku_id": sku, "price": 5000}]},
                         per_member_limit=5)
    member = buyer(session_factory, tenant.id)
    results = race(16, lambda i: _submit(session_factory, tenant, member, [(sku, 1)], {}, f"limit-{i}"))
    outcomes = Counter(results)
    assert outcomes == Counter({"order:5000": 5, "promotion_limit_reached": 11}), results
    with session_factory() as s:
        units = s.scalar(select(PromotionMemberCounter.units).where(PromotionMemberCounter.promotion_id == pid))
    assert units == 5
    assert sku_stock(session_factory, sku) == 95


def test_racing_add_ons_never_oversell_the_add_on_stock(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    _postgres_only(settings)
    sku = make_sku(session_factory, tenant.id, price=30000, stock=100, free_shipping=True)
    extra = make_sku(session_factory, tenant.id, price=5000, stock=100, free_shipping=True)
    pid = make_promotion(session_factory, tenant.id, "add_on", {
        "threshold": 20000, "items": [{"sku_id": extra, "price": 100, "per_order_limit": 1, "stock": 7}],
    })
    members = [buyer(session_factory, tenant.id) for _ in range(20)]
    options = {"add_on": [{"promotion_id": pid, "sku_id": extra}]}
    results = race(20, lambda i: _submit(session_factory, tenant, members[i], [(sku, 1)], options, f"add-{i}"))
    assert Counter(results) == Counter({"order:30100": 7, "add_on_sold_out": 13}), results
    with session_factory() as s:
        sold = s.scalar(select(PromotionSkuCounter.sold).where(PromotionSkuCounter.promotion_id == pid))
    assert sold == 7
    assert sku_stock(session_factory, extra) == 93


def test_racing_orders_of_one_member_get_exactly_the_limit_of_discounted_units_at_full_price_over_it(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    """``over_limit: full_price`` (每人前 5 件享折扣): 12 racing submits of 2 units each. An order
    priced before a concurrent one took the allowance is refused with
    ``promotion_allowance_changed`` (nothing kept); submitted again, it is priced on what is left.
    In the end every order is placed and exactly 5 units were discounted."""
    _postgres_only(settings)
    sku = make_sku(session_factory, tenant.id, price=10000, stock=100, free_shipping=True)
    pid = make_promotion(session_factory, tenant.id, "limited_discount",
                         {"items": [{"sku_id": sku, "price": 5000}], "over_limit": "full_price"}, per_member_limit=5)
    member = buyer(session_factory, tenant.id)
    results = race(12, lambda i: _submit(session_factory, tenant, member, [(sku, 2)], {}, f"first-n-{i}"))
    allowed = {"order:10000", "order:15000", "order:20000", "promotion_allowance_changed"}
    assert set(results) <= allowed, results
    assert "promotion_limit_reached" not in results
    print("first race:", Counter(results))
    for i, outcome in enumerate(results):
        if outcome == "promotion_allowance_changed":  # the customer submits again (same key: nothing was kept)
            results[i] = _submit(session_factory, tenant, member, [(sku, 2)], {}, f"first-n-{i}")
    assert all(r.startswith("order:") for r in results), results
    payable = sum(int(r.split(":")[1]) for r in results)
    assert payable == 12 * 2 * 10000 - 5 * 5000  # exactly 5 units at ¥50 off, the other 19 at full price
    with session_factory() as s:
        units = s.scalar(select(PromotionMemberCounter.units).where(PromotionMemberCounter.promotion_id == pid))
        used = s.scalar(select(func.sum(PromotionUsage.units)).where(PromotionUsage.promotion_id == pid))
    assert (units, used) == (5, 5)
    assert _count(session_factory, Order, tenant) == 12
    assert sku_stock(session_factory, sku) == 100 - 24
