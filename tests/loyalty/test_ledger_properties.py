"""Property test: any sequence of awards, spends, reversals and expiries keeps the ledger
consistent — the balance never goes negative and equals the sum of the entries and the sum of
the open lots, and every refused operation changes nothing."""

from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.loyalty import service
from tests.conftest import Tenant
from tests.factories.orders import make_member
from tests.loyalty import helpers as h

_counter = itertools.count()

op = st.one_of(
    st.tuples(st.just("award"), st.integers(1, 500), st.integers(1, 60)),  # points, expires in N days
    st.tuples(st.just("spend"), st.integers(1, 700), st.just(0)),
    st.tuples(st.just("reverse"), st.integers(0, 30), st.integers(1, 400)),  # which earlier entry, points
    st.tuples(st.just("expire"), st.integers(1, 70), st.just(0)),  # days from t0
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=14))
def test_any_sequence_keeps_balance_equal_to_entries_and_lots(
    session_factory: sessionmaker[Session], tenant: Tenant, ops: list[tuple[str, int, int]]
) -> None:
    member = make_member(session_factory, tenant.id)
    run = next(_counter)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    keys: list[str] = []
    for i, (kind, a, b) in enumerate(ops):
        key = f"p{run}:{i}"
        before = h.balance(session_factory, tenant.id, member)
        try:
            with unit_of_work(session_factory) as s:
                if kind == "award":
                    service.award(s, tenant.id, member, a, reason="p", idempotency_key=key, now=t0,
                                  expires_at=t0 + dt.timedelta(days=b))
                    keys.append(key)
                elif kind == "spend":
                    service.spend(s, tenant.id, member, a, reason="p", idempotency_key=key, now=t0)
                    keys.append(key)
                elif kind == "reverse" and keys:
                    service.reverse(s, tenant.id, keys[a % len(keys)], b, reason="p", idempotency_key=key,
                                    now=t0 + dt.timedelta(days=1))
                elif kind == "expire":
                    service.expire_due(s, tenant.id, t0 + dt.timedelta(days=a))
        except DomainError as exc:
            assert exc.code == "points_insufficient" and kind == "spend" and a > before
            assert h.balance(session_factory, tenant.id, member) == before
        bal = h.balance(session_factory, tenant.id, member)
        assert bal >= 0
        assert bal == h.entries_sum(session_factory, tenant.id, member) == h.open_lots_sum(session_factory, tenant.id, member)
