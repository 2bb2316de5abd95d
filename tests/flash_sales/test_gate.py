"""The two gates against a model: for any sequence of acquires and releases by a handful of
members, the Redis Lua gate and the database gate grant exactly what the model grants (never
past the stock, never past a member's limit), refuse with the right reason, and end in the
same state. Property-based (hypothesis)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.flash_sales import gate
from tests.conftest import Tenant
from tests.factories.orders import make_sku
from tests.flash_sales.helpers import counters, item_row, make_sale

Op = tuple[str, int, int]  # ("acquire" | "release", member, qty)

ops_strategy = st.lists(
    st.tuples(st.sampled_from(["acquire", "acquire", "acquire", "release"]), st.integers(1, 4), st.integers(1, 3)),
    min_size=1, max_size=25,
)


@dataclass
class Model:
    units: int
    limit: int
    held: dict[int, int] = field(default_factory=dict)

    @property
    def remaining(self) -> int:
        return self.units - sum(self.held.values())

    def acquire(self, member: int, qty: int) -> tuple[bool, set[str]]:
        """(granted, acceptable refusal reasons): when both rules refuse, either reason is right."""
        reasons: set[str] = set()
        if self.held.get(member, 0) + qty > self.limit:
            reasons.add(gate.LIMIT_REACHED)
        if qty > self.remaining:
            reasons.add(gate.SOLD_OUT)
        if reasons:
            return False, reasons
        self.held[member] = self.held.get(member, 0) + qty
        return True, set()

    def release(self, member: int, qty: int) -> int:
        """Units given back: only what the member holds (a release never invents units)."""
        back = min(qty, self.held.get(member, 0))
        if back:
            self.held[member] -= back
            if not self.held[member]:
                del self.held[member]
        return back


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_strategy, units=st.integers(1, 8), limit=st.integers(1, 4))
def test_the_redis_gate_grants_exactly_what_the_model_grants(
    rclient: redis.Redis, fs_prefix: str, ops: list[Op], units: int, limit: int
) -> None:
    rg = gate.RedisGate(rclient, prefix=fs_prefix)
    item = uuid.uuid4().int % 10**9
    rg.load(1, item, units, {})
    model = Model(units, limit)
    try:
        for kind, member, qty in ops:
            if kind == "acquire":
                granted, reasons = model.acquire(member, qty)
                outcome = rg.try_acquire(1, item, member, qty, limit)
                assert isinstance(outcome, gate.Acquired) == granted, (kind, member, qty, outcome)
                if granted:
                    assert isinstance(outcome, gate.Acquired) and outcome.remaining == model.remaining
                else:
                    assert isinstance(outcome, gate.Refused) and outcome.reason in reasons
            else:
                back = model.release(member, qty)
                if back:
                    rg.release(1, item, member, back)
            snapshot = rg.snapshot(1, item)
            assert snapshot == (model.remaining, model.held)
            assert snapshot[0] >= 0 and snapshot[0] + sum(snapshot[1].values()) == units
    finally:
        rg.clear(1, item)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_strategy, units=st.integers(1, 8), limit=st.integers(1, 4))
def test_the_database_gate_grants_exactly_what_the_model_grants_and_a_refusal_changes_nothing(
    session_factory: sessionmaker[Session], tenant: Tenant, ops: list[Op], units: int, limit: int
) -> None:
    sku = make_sku(session_factory, tenant.id, stock=units)
    _, (item,) = make_sale(session_factory, tenant.id, [{"sku_id": sku, "flash_price": 1, "activity_stock": units}],
                           per_member_limit=limit)
    model = Model(units, limit)
    for kind, member, qty in ops:
        with unit_of_work(session_factory) as s:
            db = gate.DatabaseGate(s)
            if kind == "acquire":
                granted, reasons = model.acquire(member, qty)
                outcome = db.try_acquire(tenant.id, item, member, qty, limit)
                assert isinstance(outcome, gate.Acquired) == granted, (kind, member, qty, outcome)
                if not granted:
                    assert isinstance(outcome, gate.Refused) and outcome.reason in reasons
            else:
                back = model.release(member, qty)
                if back:
                    assert db.release_units(tenant.id, item, member, back) is not None
        row = item_row(session_factory, item)
        assert (row.sold, row.activity_stock) == (units - model.remaining, units)
        assert counters(session_factory, item) == model.held
