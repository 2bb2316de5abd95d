"""Redis and the database reconcile: a crash between the Lua gate and the database commit loses
no unit for good and sells none twice; a rolled-back order gives its Redis units back at once;
a Redis restart reloads from the database; an overstated Redis is caught by the database gate;
an unreachable Redis leaves the database to decide alone."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.flash_sales import gate, service
from siyu.kit.errors import DomainError
from siyu.kit.timeutil import utcnow
from siyu.orders import checkout
from siyu.orders.schemas import CheckoutIn
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.factories.orders import make_sku
from tests.flash_sales.helpers import counters, item_row, ledger, make_sale, many_buyers, redis_state

TIMEOUT = dt.timedelta(minutes=30)


def _buy(factory: sessionmaker[Session], tenant: Tenant, member: int, sku: int, item: int, client: redis.Redis | None,
         prefix: str, qty: int = 1) -> str:
    try:
        with unit_of_work(factory) as s:
            gate.use_redis(s, client, prefix=prefix)
            body = CheckoutIn.model_validate({"items": [{"sku_id": sku, "quantity": qty}],
                                              "options": {"flash_sale": {"item_id": item}}})
            checkout.submit(s, tenant.id, member, body, idempotency_key=f"k-{member}-{utcnow().timestamp()}",
                                       payment_timeout=TIMEOUT)
            return "order"
    except DomainError as exc:
        return exc.code


def _sale(factory: sessionmaker[Session], tenant: Tenant, units: int, limit: int = 1) -> tuple[int, int]:
    sku = make_sku(factory, tenant.id, price=10000, stock=units + 10)
    _, (item,) = make_sale(factory, tenant.id, [{"sku_id": sku, "flash_price": 990, "activity_stock": units}],
                           per_member_limit=limit)
    return sku, item


def _snapshot(rclient: redis.Redis, prefix: str, tenant: Tenant, item: int) -> Any:
    return redis_state(rclient, prefix, tenant.id, item)


def test_a_crash_between_the_redis_gate_and_the_commit_is_repaired_by_the_reconcile_job(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant, redis_bound: redis.Redis,
    fs_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process 'dies' after the Lua script took the unit: the database write never happens and
    no compensation runs. Redis understates (a unit is stranded) until ``flash_sales.reconcile``
    rewrites it from the ledger; then every unit sells exactly once."""
    rclient = redis_bound
    sku, item = _sale(session_factory, tenant, units=3)
    members = many_buyers(session_factory, tenant.id, 6)

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("process killed between the Redis gate and the database")

    with monkeypatch.context() as m:
        m.setattr(gate, "on_rollback", lambda session, fn: None)  # a dead process runs no compensation
        m.setattr(gate.DatabaseGate, "try_acquire", killed)
        with pytest.raises(RuntimeError):
            _buy(session_factory, tenant, members[0], sku, item, rclient, fs_prefix)
    assert item_row(session_factory, item).sold == 0 and ledger(session_factory, item) == {}
    assert _snapshot(rclient, fs_prefix, tenant, item) == (2, {members[0]: 1})  # stranded in Redis

    # Redis's "limit reached" is confirmed by the database, which knows members[0] holds nothing:
    # he buys, and Redis mirrors the grant.
    assert _buy(session_factory, tenant, members[0], sku, item, rclient, fs_prefix) == "order"
    assert _snapshot(rclient, fs_prefix, tenant, item) == (1, {members[0]: 2})
    # Before the reconcile Redis is stricter than the truth, never looser: the stranded unit is
    # refused as "sold out" although the database still has it.
    assert _buy(session_factory, tenant, members[1], sku, item, rclient, fs_prefix) == "order"
    assert _buy(session_factory, tenant, members[2], sku, item, rclient, fs_prefix) == "flash_sale_sold_out"
    assert item_row(session_factory, item).sold == 2

    # The minutely schedule fires the reconcile job, which rewrites Redis from the database.
    ran = Worker(session_factory, settings, merchant_id=tenant.id, redis=rclient).drain(
        now=utcnow() + dt.timedelta(minutes=2))
    assert ran >= 1
    assert _snapshot(rclient, fs_prefix, tenant, item) == (1, {members[0]: 1, members[1]: 1})
    assert _buy(session_factory, tenant, members[2], sku, item, rclient, fs_prefix) == "order"  # the unit is back
    assert _buy(session_factory, tenant, members[3], sku, item, rclient, fs_prefix) == "flash_sale_sold_out"
    row = item_row(session_factory, item)
    assert (row.sold, row.activity_stock) == (3, 3) and ledger(session_factory, item) == {"reserved": 3}
    assert _snapshot(rclient, fs_prefix, tenant, item) == (0, counters(session_factory, item))
    assert len(counters(session_factory, item)) == 3  # three different members, one unit each: none twice


def test_a_rolled_back_submit_gives_its_redis_unit_back_at_once(
    session_factory: sessionmaker[Session], tenant: Tenant, rclient: redis.Redis, fs_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A step after the gate fails (here: the submit's ``order.submitted`` emission, which runs
    after the submit hooks that pass the gate): the transaction rolls back and the compensation
    returns the Redis unit, no reconcile needed."""
    sku, item = _sale(session_factory, tenant, units=2)
    (member,) = many_buyers(session_factory, tenant.id, 1)

    def fails(*args: Any, **kwargs: Any) -> None:
        raise DomainError("insufficient_stock", sku_id=sku, requested=1)

    monkeypatch.setattr(checkout, "emit", fails)
    assert _buy(session_factory, tenant, member, sku, item, rclient, fs_prefix) == "insufficient_stock"
    monkeypatch.undo()
    assert _snapshot(rclient, fs_prefix, tenant, item) == (2, {})
    assert item_row(session_factory, item).sold == 0 and ledger(session_factory, item) == {}
    assert _buy(session_factory, tenant, member, sku, item, rclient, fs_prefix) == "order"
    assert _snapshot(rclient, fs_prefix, tenant, item) == (1, {member: 1})


def test_after_a_redis_restart_the_gate_reloads_from_the_database_and_keeps_the_limits(
    session_factory: sessionmaker[Session], tenant: Tenant, rclient: redis.Redis, fs_prefix: str,
) -> None:
    sku, item = _sale(session_factory, tenant, units=3, limit=1)
    a, b, c, d = many_buyers(session_factory, tenant.id, 4)
    assert _buy(session_factory, tenant, a, sku, item, rclient, fs_prefix) == "order"
    gate.RedisGate(rclient, prefix=fs_prefix).clear(tenant.id, item)  # Redis lost everything
    assert _snapshot(rclient, fs_prefix, tenant, item) is None
    assert _buy(session_factory, tenant, a, sku, item, rclient, fs_prefix) == "flash_sale_limit_reached"
    assert _snapshot(rclient, fs_prefix, tenant, item) == (2, {a: 1})  # lazily reloaded from the ledger
    assert [_buy(session_factory, tenant, m, sku, item, rclient, fs_prefix) for m in (b, c, d)] == [
        "order", "order", "flash_sale_sold_out"]
    assert item_row(session_factory, item).sold == 3


def test_an_overstated_redis_lets_attempts_through_and_the_database_refuses_them(
    session_factory: sessionmaker[Session], tenant: Tenant, rclient: redis.Redis, fs_prefix: str,
) -> None:
    """The reconcile may race an in-flight purchase and overstate Redis for one period: the
    database gate is the truth and refuses, and the refused attempt's Redis unit is given back."""
    sku, item = _sale(session_factory, tenant, units=2)
    members = many_buyers(session_factory, tenant.id, 5)
    gate.RedisGate(rclient, prefix=fs_prefix).load(tenant.id, item, 5, {}, force=True)  # Redis: 5 left; truth: 2
    outcomes = [_buy(session_factory, tenant, m, sku, item, rclient, fs_prefix) for m in members]
    assert outcomes == ["order", "order", "flash_sale_sold_out", "flash_sale_sold_out", "flash_sale_sold_out"]
    assert item_row(session_factory, item).sold == 2
    assert _snapshot(rclient, fs_prefix, tenant, item) == (3, {members[0]: 1, members[1]: 1})
    with unit_of_work(session_factory) as s:
        gate.use_redis(s, rclient, prefix=fs_prefix)
        assert service.reconcile(s, tenant.id, rclient) >= 1
    assert _snapshot(rclient, fs_prefix, tenant, item) == (0, {members[0]: 1, members[1]: 1})


def test_an_unreachable_redis_leaves_the_database_to_decide(
    session_factory: sessionmaker[Session], tenant: Tenant, fs_prefix: str,
) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    sku, item = _sale(session_factory, tenant, units=2)
    a, b, c = many_buyers(session_factory, tenant.id, 3)
    assert _buy(session_factory, tenant, a, sku, item, dead, fs_prefix) == "order"
    assert _buy(session_factory, tenant, a, sku, item, dead, fs_prefix) == "flash_sale_limit_reached"
    assert _buy(session_factory, tenant, b, sku, item, dead, fs_prefix) == "order"
    assert _buy(session_factory, tenant, c, sku, item, dead, fs_prefix) == "flash_sale_sold_out"
    assert item_row(session_factory, item).sold == 2 and counters(session_factory, item) == {a: 1, b: 1}
