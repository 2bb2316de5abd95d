"""The database gate's sharded stock: an item's unsold units live in ``SHARDS`` rows; a buyer
takes from their own row, and only when it is short do all rows together decide. Never a false
"sold out" while another shard holds units, never more than the stock, the per-member limit
exact; a sold-out item is refused without a statement (the per-process memo), and a release
gives the unit back at once."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.flash_sales import gate, service
from siyu.flash_sales.models import SHARDS, FlashSaleStockShard
from tests.conftest import Tenant
from tests.factories.concurrency import race
from tests.factories.orders import make_sku
from tests.flash_sales.helpers import SYSTEM, counters, item_row, make_sale


def _shards(factory: sessionmaker[Session], item: int) -> list[int]:
    with factory() as s:
        rows = s.execute(
            select(FlashSaleStockShard.remaining).where(FlashSaleStockShard.item_id == item)
            .order_by(FlashSaleStockShard.shard)
        ).all()
    return [int(r[0]) for r in rows]


def _only_in_shard(factory: sessionmaker[Session], item: int, shard: int, units: int) -> None:
    """Move every unsold unit of the item into one shard (the activity stock stays as it is)."""
    with unit_of_work(factory) as s:
        s.execute(update(FlashSaleStockShard).where(FlashSaleStockShard.item_id == item)
                  .values(remaining=0))
        s.execute(update(FlashSaleStockShard)
                  .where(FlashSaleStockShard.item_id == item, FlashSaleStockShard.shard == shard)
                  .values(remaining=units))


def _item(factory: sessionmaker[Session], tenant: Tenant, units: int, limit: int) -> int:
    sku = make_sku(factory, tenant.id, stock=units + 10)
    _, (item,) = make_sale(factory, tenant.id, [{"sku_id": sku, "flash_price": 1, "activity_stock": units}],
                           per_member_limit=limit)
    return item


def _acquire(factory: sessionmaker[Session], merchant: int, item: int, member: int, qty: int, limit: int) -> gate.Outcome:
    with unit_of_work(factory) as s:
        return gate.DatabaseGate(s).try_acquire(merchant, item, member, qty, limit)


def test_the_activity_stock_is_split_over_the_shards(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    item = _item(session_factory, tenant, 19, 1)
    assert len(_shards(session_factory, item)) == SHARDS
    assert sum(_shards(session_factory, item)) == 19 and max(_shards(session_factory, item)) == 3
    assert item_row(session_factory, item).sold == 0


def test_units_left_in_one_shard_are_sold_to_members_of_every_other_shard(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    item = _item(session_factory, tenant, 16, 3)
    _only_in_shard(session_factory, item, 5, 4)
    members = [8 * k + s for k, s in enumerate([0, 1, 2, 3, 4, 6, 7])]  # none hashes to shard 5
    assert all(gate.shard_of(m) != 5 for m in members)
    # Two units at once from a shard that is not the member's own.
    assert isinstance(_acquire(session_factory, tenant.id, item, members[0], 2, 3), gate.Acquired)
    assert isinstance(_acquire(session_factory, tenant.id, item, members[1], 1, 3), gate.Acquired)
    assert isinstance(_acquire(session_factory, tenant.id, item, members[2], 1, 3), gate.Acquired)
    refused = _acquire(session_factory, tenant.id, item, members[3], 1, 3)
    assert refused == gate.Refused(gate.SOLD_OUT)
    assert _shards(session_factory, item) == [0] * SHARDS
    assert item_row(session_factory, item).sold == 16
    assert counters(session_factory, item) == {members[0]: 2, members[1]: 1, members[2]: 1}  # the refusal undid its count


def test_a_quantity_spread_over_two_shards_is_not_sold_out(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    item = _item(session_factory, tenant, 16, 3)
    with unit_of_work(session_factory) as s:  # one unit in shard 2, one in shard 6, none elsewhere
        s.execute(update(FlashSaleStockShard).where(FlashSaleStockShard.item_id == item).values(remaining=0))
        s.execute(update(FlashSaleStockShard).where(FlashSaleStockShard.item_id == item,
                                                    FlashSaleStockShard.shard.in_([2, 6])).values(remaining=1))
    assert isinstance(_acquire(session_factory, tenant.id, item, 3, 2, 3), gate.Acquired)
    assert _shards(session_factory, item) == [0] * SHARDS


class _Statements:
    def __init__(self, engine: Engine) -> None:
        self.engine, self.seen = engine, 0

    def __call__(self, *args: Any) -> None:
        self.seen += 1

    def __enter__(self) -> _Statements:
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self)


def test_sold_out_is_refused_without_a_statement_until_a_release_gives_a_unit_back(
    engine: Engine, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    item = _item(session_factory, tenant, 2, 1)
    assert isinstance(_acquire(session_factory, tenant.id, item, 101, 1, 1), gate.Acquired)
    assert isinstance(_acquire(session_factory, tenant.id, item, 102, 1, 1), gate.Acquired)
    assert _acquire(session_factory, tenant.id, item, 103, 1, 1) == gate.Refused(gate.SOLD_OUT)  # all shards seen empty
    with _Statements(engine) as spy:
        for member in range(200, 220):
            assert _acquire(session_factory, tenant.id, item, member, 1, 1) == gate.Refused(gate.SOLD_OUT)
    assert spy.seen == 0
    with unit_of_work(session_factory) as s:
        assert gate.DatabaseGate(s).release_units(tenant.id, item, 101, 1) is not None
    assert isinstance(_acquire(session_factory, tenant.id, item, 103, 1, 1), gate.Acquired)
    assert item_row(session_factory, item).sold == 2


def test_a_released_unit_is_seen_by_another_process_once_the_memo_lapses(
    engine: Engine, session_factory: sessionmaker[Session], tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's release does not reach this process's memo: the memo lapses (here at
    once) and the next attempt asks the database."""
    item = _item(session_factory, tenant, 1, 1)
    assert isinstance(_acquire(session_factory, tenant.id, item, 101, 1, 1), gate.Acquired)
    assert _acquire(session_factory, tenant.id, item, 102, 1, 1) == gate.Refused(gate.SOLD_OUT)
    with unit_of_work(session_factory) as s:  # "another process": units back without this memo knowing
        s.execute(update(FlashSaleStockShard).where(FlashSaleStockShard.item_id == item,
                                                    FlashSaleStockShard.shard == 0).values(remaining=1))
    assert _acquire(session_factory, tenant.id, item, 102, 1, 1) == gate.Refused(gate.SOLD_OUT)  # memo: not asked
    monkeypatch.setitem(gate._SOLD_OUT, gate.memo_key(engine), {})  # the memo lapsed
    assert isinstance(_acquire(session_factory, tenant.id, item, 102, 1, 1), gate.Acquired)


def test_lowering_and_ending_move_units_out_of_every_shard(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    from siyu.flash_sales.schemas import FlashSaleItemUpdate

    sku = make_sku(session_factory, tenant.id, stock=40)
    sale, (item,) = make_sale(session_factory, tenant.id, [{"sku_id": sku, "flash_price": 1, "activity_stock": 20}],
                              per_member_limit=5)
    assert isinstance(_acquire(session_factory, tenant.id, item, 7, 3, 5), gate.Acquired)
    with unit_of_work(session_factory) as s:  # 17 unsold: lower to 5 sold + 4 → takes 13 over the shards
        service.update_item(s, tenant.id, sale, item, FlashSaleItemUpdate(activity_stock=7), actor=SYSTEM)
    row = item_row(session_factory, item)
    assert (row.activity_stock, row.sold, sum(_shards(session_factory, item))) == (7, 3, 4)
    with unit_of_work(session_factory) as s:
        service.end(s, tenant.id, sale, actor=SYSTEM)
    row = item_row(session_factory, item)
    assert (row.activity_stock, row.sold, row.returned_stock, row.closed) == (3, 3, 4, True)
    assert _shards(session_factory, item) == [0] * SHARDS


def test_parallel_buyers_of_other_shards_take_exactly_the_units_of_the_one_shard_that_has_them(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    """Real parallel PostgreSQL connections: 12 units all in shard 3, 40 distinct members (none
    of shard 3) at once, limit 1. Exactly 12 granted (no oversell, and no false "sold out" while
    units remain), then every shard empty."""
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    gate._SOLD_OUT.clear()
    item = _item(session_factory, tenant, 16, 1)
    _only_in_shard(session_factory, item, 3, 12)
    members = [1000 + k for k in range(48) if (1000 + k) % SHARDS != 3][:40]

    def attempt(i: int) -> str:
        outcome = _acquire(session_factory, tenant.id, item, members[i], 1, 1)
        return "granted" if isinstance(outcome, gate.Acquired) else outcome.reason

    outcomes = race(len(members), attempt)
    assert outcomes.count("granted") == 12 and outcomes.count(gate.SOLD_OUT) == 28, outcomes
    assert _shards(session_factory, item) == [0] * SHARDS
    held = counters(session_factory, item)
    assert sum(held.values()) == 12 and max(held.values()) == 1


def test_parallel_buyers_and_releases_on_sharded_stock_stay_exact(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    """Real parallel PostgreSQL connections: 10 units over 8 shards, 30 buyers (limit 2, two
    units each) racing 5 releases of units bought before. Units sold never exceed the stock, the
    counters equal what was granted minus released, shards + sold = stock."""
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    item = _item(session_factory, tenant, 10, 2)
    early = [5000 + k for k in range(5)]
    for m in early:
        assert isinstance(_acquire(session_factory, tenant.id, item, m, 1, 2), gate.Acquired)
    buyers = [6000 + k for k in range(30)]

    def attempt(i: int) -> str:
        if i < len(early):
            with unit_of_work(session_factory) as s:
                gate.DatabaseGate(s).release_units(tenant.id, item, early[i], 1)
            return "released"
        outcome = _acquire(session_factory, tenant.id, item, buyers[i - len(early)], 2, 2)
        return "granted" if isinstance(outcome, gate.Acquired) else outcome.reason

    outcomes = race(len(early) + len(buyers), attempt)
    assert all(o in ("released", "granted", gate.SOLD_OUT) for o in outcomes), outcomes
    granted = outcomes.count("granted")
    row = item_row(session_factory, item)
    assert 2 * granted <= 10 and row.sold == 2 * granted and sum(_shards(session_factory, item)) == 10 - 2 * granted
    assert sum(counters(session_factory, item).values()) == 2 * granted
    assert granted >= 2  # 5 units were free from the start: at least two buyers of two got theirs
