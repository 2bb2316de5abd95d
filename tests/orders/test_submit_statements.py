"""The submit's statement budget and its one-statement stock reservation.

* Pricing asks the stages' probes in ONE query: with no member level, card, live promotion or
  coupon, none of those stages reads its tables (one probe statement instead of four reads).
* The merchant's time zone comes with the SKU read (no separate merchant read), and on
  PostgreSQL the delivery address too.
* Every SKU of an order is decremented in one statement on PostgreSQL, all or nothing: a short
  SKU is reported (the first in id order, as the per-SKU loop did) and nothing is taken.
* Orders crossing the same SKUs in opposite orders never deadlock (rows are locked in id
  order) and take exactly what they sold.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog import stock
from siyu.config import Settings
from siyu.db import final_write
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.orders import checkout
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.factories.concurrency import race
from tests.factories.orders import buyer, make_sku, sku_stock
from tests.factories.promotions import make_promotion

TIMEOUT = dt.timedelta(minutes=30)
STAGE_TABLES = ("member_loyalty", "member_cards", "promotions", "member_coupons")


def _body(items: list[tuple[int, int]]) -> CheckoutIn:
    return CheckoutIn.model_validate({"items": [{"sku_id": k, "quantity": q} for k, q in items]})


def _submit_recording(
    factory: sessionmaker[Session], tenant: Tenant, member: int, items: list[tuple[int, int]], key: str
) -> list[str]:
    """The statements a submit runs, then the ones it left to ride with the COMMIT (``final_write``)."""
    statements: list[str] = []
    with unit_of_work(factory) as s:
        bind = s.connection().engine
        listener = lambda *args: statements.append(" ".join(args[2].split()))  # noqa: E731
        event.listen(bind, "before_cursor_execute", listener)
        try:
            checkout.submit(s, tenant.id, member, _body(items), idempotency_key=key, payment_timeout=TIMEOUT)
        finally:
            event.remove(bind, "before_cursor_execute", listener)
        statements += [" ".join(w.sql.split()) for w in final_write.pending(s)]
    return statements


def test_nothing_active_costs_no_stage_read_and_no_merchant_read(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    a, b = make_sku(session_factory, tenant.id), make_sku(session_factory, tenant.id)
    member = buyer(session_factory, tenant.id)
    statements = _submit_recording(session_factory, tenant, member, [(a, 1), (b, 2)], "probe-once")
    touching = [sql for sql in statements if any(re.search(rf"\b{t}\b", sql) for t in STAGE_TABLES)]
    assert len(touching) == 1, touching  # the probes, read with the SKUs; no stage read its tables
    assert touching[0].startswith("SELECT skus.id") and "EXISTS" in touching[0]
    assert all(re.search(rf"\b{t}\b", touching[0]) for t in STAGE_TABLES)
    reads = ["skus" if "FROM skus JOIN products" in sql else re.findall(r"\bFROM (\w+)", sql)[0]
             for sql in statements if sql.startswith("SELECT")]
    if settings.is_sqlite:
        assert reads[:2] == ["skus", "addresses"] and set(reads[2:]) <= {"freight_templates"}, statements
    else:  # PostgreSQL reads the delivery address with the SKUs (one json column)
        assert reads[:1] == ["skus"] and set(reads[1:]) <= {"freight_templates"}, statements
        assert "FROM addresses" in touching[0]
    assert not [sql for sql in statements if re.search(r"\bFROM merchants\b", sql) and "skus" not in sql]
    stock_writes = [sql for sql in statements if sql.startswith(("UPDATE skus", "WITH locked"))]
    assert len(stock_writes) == (2 if settings.is_sqlite else 1)
    assert sku_stock(session_factory, a) == 99 and sku_stock(session_factory, b) == 98


def test_a_live_promotion_is_found_by_its_probe_and_applied(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    make_promotion(session_factory, tenant.id, "limited_discount", {"items": [{"sku_id": sku, "price": 8000}]})
    member = buyer(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        order, created = checkout.submit(s, tenant.id, member, _body([(sku, 2)]), idempotency_key="promo",
                                         payment_timeout=TIMEOUT)
        assert created and order.goods_amount == 20000 and order.discount_amount == 4000
        assert order.payable_amount == 16000 + order.freight_amount


def test_a_short_sku_is_reported_and_nothing_is_taken(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    plenty = make_sku(session_factory, tenant.id, stock=10)
    short_1 = make_sku(session_factory, tenant.id, stock=1)
    short_2 = make_sku(session_factory, tenant.id, stock=1)
    assert plenty < short_1 < short_2
    with pytest.raises(DomainError) as err, unit_of_work(session_factory) as s:
        stock.reserve(s, tenant.id, {short_2: 2, plenty: 2, short_1: 3})
    assert err.value.code == "insufficient_stock"
    assert err.value.params == {"sku_id": short_1, "requested": 3}  # the first short one in id order
    assert [sku_stock(session_factory, k) for k in (plenty, short_1, short_2)] == [10, 1, 1]


def test_opposite_orders_over_the_same_skus_never_deadlock(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip(
            "SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL"
        )
    a, b, c = (make_sku(session_factory, tenant.id, stock=1000) for _ in range(3))
    members = [buyer(session_factory, tenant.id) for _ in range(24)]
    baskets = [[(a, 1), (b, 1), (c, 1)], [(c, 1), (b, 1), (a, 1)], [(b, 2), (a, 1)]]

    def submit(i: int) -> str:
        with unit_of_work(session_factory) as s:
            order, _ = checkout.submit(
                s,
                tenant.id,
                members[i],
                _body(baskets[i % 3]),
                idempotency_key=f"x-{i}",
                payment_timeout=TIMEOUT,
            )
            return "order" if order.id else "none"

    results = race(24, submit)
    assert Counter(results) == Counter({"order": 24}), results
    # 8 of each basket: a 8+8+8, b 8+8+16, c 8+8
    assert [sku_stock(session_factory, k) for k in (a, b, c)] == [1000 - 24, 1000 - 32, 1000 - 16]
