"""The submit's stock is taken with the COMMIT (``db.final_write``), and that changes nothing
about *what* is committed:

* a shortage found at the commit (another buyer took the last units after this submit priced)
  rolls the whole order back and raises ``insufficient_stock`` for the first short SKU;
* a commit that does not go through ``final_write.commit`` still takes the stock (ordinary
  statement), a rollback drops the pending take, and a take cannot be deferred in a savepoint;
* many parallel buyers of one hot SKU sell exactly its stock (real connections on PostgreSQL).

On SQLite ``reserve_at_commit`` is ``reserve`` (nothing is deferred); the tests that are about
the deferral say so and run on PostgreSQL only.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog import stock
from siyu.catalog.models import Sku
from siyu.config import Settings
from siyu.db import final_write
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.orders import checkout
from siyu.orders.models import Order
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.factories.concurrency import race
from tests.factories.orders import buyer, make_sku, sku_stock

TIMEOUT = dt.timedelta(minutes=30)
PG_ONLY = "SQLite takes the stock at once (reserve); only PostgreSQL defers it to the commit"


def _body(items: list[tuple[int, int]]) -> CheckoutIn:
    return CheckoutIn.model_validate({"items": [{"sku_id": k, "quantity": q} for k, q in items]})


def _orders(factory: sessionmaker[Session], merchant_id: int) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == merchant_id)) or 0)


def _set_stock(session: Session, sku_id: int, units: int) -> None:
    session.execute(update(Sku).where(Sku.id == sku_id).values(stock=units))


def test_a_shortage_found_at_commit_rolls_the_order_back(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip(PG_ONLY)
    plenty = make_sku(session_factory, tenant.id, stock=10)
    later_short = make_sku(session_factory, tenant.id, stock=5)
    member = buyer(session_factory, tenant.id)
    with pytest.raises(DomainError) as err, unit_of_work(session_factory) as s:
        _order, created = checkout.submit(s, tenant.id, member, _body([(plenty, 2), (later_short, 3)]),
                                         idempotency_key="late-short", payment_timeout=TIMEOUT)
        assert created and final_write.pending(s)  # priced with 5 in stock; the take waits for the commit
        with unit_of_work(session_factory) as other:  # another buyer takes units meanwhile
            _set_stock(other, later_short, 2)
    assert err.value.code == "insufficient_stock"
    assert err.value.params == {"sku_id": later_short, "requested": 3}
    assert _orders(session_factory, tenant.id) == 0
    assert (sku_stock(session_factory, plenty), sku_stock(session_factory, later_short)) == (10, 2)


def test_an_ordinary_commit_still_takes_the_stock_and_a_rollback_drops_it(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, stock=10)
    with session_factory() as s:
        stock.reserve_at_commit(s, tenant.id, {sku: 3})
        assert len(final_write.pending(s)) == (0 if settings.is_sqlite else 1)
        s.commit()  # not final_write.commit: the before_commit hook runs the take
        assert final_write.pending(s) == []
    assert sku_stock(session_factory, sku) == 7
    with session_factory() as s:
        stock.reserve_at_commit(s, tenant.id, {sku: 4})
        s.rollback()
        assert final_write.pending(s) == []
        s.commit()
    assert sku_stock(session_factory, sku) == 7
    with unit_of_work(session_factory) as s:
        stock.reserve_at_commit(s, tenant.id, {sku: 1})
    assert sku_stock(session_factory, sku) == 6


def test_a_take_cannot_be_deferred_inside_a_savepoint(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip(PG_ONLY)
    sku = make_sku(session_factory, tenant.id, stock=10)
    with session_factory() as s, s.begin_nested(), pytest.raises(RuntimeError):
        stock.reserve_at_commit(s, tenant.id, {sku: 1})


def test_a_shortage_at_an_ordinary_commit_still_refuses_and_writes_nothing(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip(PG_ONLY)
    sku = make_sku(session_factory, tenant.id, stock=2)
    with session_factory() as s:
        stock.reserve_at_commit(s, tenant.id, {sku: 3})
        with pytest.raises(Exception) as err:
            s.commit()
        assert getattr(err.value, "sqlstate", None) == "23514"  # the CHECK (stock >= 0), untranslated
        s.rollback()
    assert sku_stock(session_factory, sku) == 2


def test_parallel_buyers_of_a_hot_sku_sell_exactly_its_stock(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    hot = make_sku(session_factory, tenant.id, stock=15)
    cold = make_sku(session_factory, tenant.id, stock=1000)
    members = [buyer(session_factory, tenant.id) for _ in range(40)]

    def submit(i: int) -> str:
        with unit_of_work(session_factory) as s:
            checkout.submit(s, tenant.id, members[i], _body([(cold, 1), (hot, 1 + i % 2)]),
                            idempotency_key=f"hot-{i}", payment_timeout=TIMEOUT)
        return "order"

    results = race(40, submit)
    assert set(results) <= {"order", "insufficient_stock"}, results
    with session_factory() as s:
        left = s.scalar(
            select(func.coalesce(func.sum(Sku.stock), 0)).where(Sku.id == hot)
        )
    assert left is not None and 0 <= left <= 1  # a 2-unit order may find 1 left
    orders = _orders(session_factory, tenant.id)
    assert orders == results.count("order")
    assert sku_stock(session_factory, cold) == 1000 - orders
    units = sum(1 + i % 2 for i, r in enumerate(results) if r == "order")
    assert units == 15 - left  # every unit taken belongs to exactly one committed order
