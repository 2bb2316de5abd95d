"""The award/spend hot path: rules and zone changes reach the next award (the per-process rules
cache is validated by the award statement itself), a key reused inside one transaction returns
the first entry, and on PostgreSQL an award and an uncontended spend are one statement each."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.loyalty import points, service
from tests.conftest import Tenant
from tests.factories.orders import make_member
from tests.loyalty import helpers as h


def _lot_expiry(factory: sessionmaker[Session], tenant: Tenant, member: int, entry_id: int) -> object:
    (lot,) = [lt for lt in h.lots(factory, tenant.id, member) if lt.entry_id == entry_id]
    return lot.expires_at


def test_changed_expiry_rules_apply_to_the_next_award(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = make_member(session_factory, tenant.id)
    earned = h.utc(2026, 5, 1, 12, 0)
    h.set_rules(session_factory, tenant.id, expiry={"mode": "days", "days": 30})
    first = h.award(session_factory, tenant.id, member, 10, "r1", now=earned)  # caches the 30-day rules
    assert _lot_expiry(session_factory, tenant, member, first) == earned + (h.utc(2026, 1, 31) - h.utc(2026, 1, 1))
    h.set_rules(session_factory, tenant.id, expiry={"mode": "days", "days": 10})
    second = h.award(session_factory, tenant.id, member, 10, "r2", now=earned)
    assert _lot_expiry(session_factory, tenant, member, second) == earned + (h.utc(2026, 1, 11) - h.utc(2026, 1, 1))
    h.set_rules(session_factory, tenant.id, expiry={"mode": "never"})
    third = h.award(session_factory, tenant.id, member, 10, "r3", now=earned)
    assert _lot_expiry(session_factory, tenant, member, third) is None


def test_changed_time_zone_applies_to_the_next_award(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = make_member(session_factory, tenant.id)
    earned = h.utc(2026, 12, 31, 17, 0)  # 2027 in Shanghai, still 2026 in UTC
    first = h.award(session_factory, tenant.id, member, 5, "z1", now=earned)
    assert _lot_expiry(session_factory, tenant, member, first) == h.utc(2028, 12, 31, 16, 0)
    h.set_timezone(session_factory, tenant.id, "UTC")
    second = h.award(session_factory, tenant.id, member, 5, "z2", now=earned)
    assert _lot_expiry(session_factory, tenant, member, second) == h.utc(2028, 1, 1, 0, 0)


def test_rules_changed_in_the_same_transaction_apply(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = make_member(session_factory, tenant.id)
    earned = h.utc(2026, 5, 1, 12, 0)
    h.award(session_factory, tenant.id, member, 1, "warm", now=earned)  # default rules cached
    with unit_of_work(session_factory) as s:
        rules = service.get_rules(s, tenant.id).model_copy(deep=True)
        rules.expiry.mode = "days"
        rules.expiry.days = 3
        service.put_rules(s, tenant.id, rules, actor=h.SYSTEM)
        entry_id = points.award(s, tenant.id, member, 7, reason="t", idempotency_key="same-tx", now=earned).id
    assert _lot_expiry(session_factory, tenant, member, entry_id) == earned + (h.utc(2026, 1, 4) - h.utc(2026, 1, 1))


def test_a_key_reused_in_one_transaction_returns_the_first_entry(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = make_member(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        a = points.award(s, tenant.id, member, 40, reason="t", idempotency_key="one")
        b = points.award(s, tenant.id, member, 40, reason="t", idempotency_key="one")
        c = points.spend(s, tenant.id, member, 15, reason="t", idempotency_key="two")
        d = points.spend(s, tenant.id, member, 15, reason="t", idempotency_key="two")
        assert (a.id, c.id) == (b.id, d.id)
        assert points.points_summary(s, tenant.id, member).balance == 25
    assert h.balance(session_factory, tenant.id, member) == 25
    assert h.open_lots_sum(session_factory, tenant.id, member) == 25
    assert len(h.entries(session_factory, tenant.id, member)) == 2


def test_postgres_award_and_uncontended_spend_are_one_statement_each(
    engine: Engine, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the single-statement path is PostgreSQL's; SQLite runs the portable statements")
    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 100, "warm-a")  # rules cached, statements prepared
    h.spend(session_factory, tenant.id, member, 1, "warm-s")
    sent: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        h.award(session_factory, tenant.id, member, 30, "hot-a")
        awards = len(sent)
        h.spend(session_factory, tenant.id, member, 50, "hot-s")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert awards == 1
    assert len(sent) - awards == 1
    assert h.balance(session_factory, tenant.id, member) == 79
    assert h.entries_sum(session_factory, tenant.id, member) == h.open_lots_sum(session_factory, tenant.id, member) == 79


def test_a_spend_that_waited_for_an_award_takes_the_award_lot_first(
    engine: Engine, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """The spend statement's snapshot predates the award it waited for: it must not miss the
    award's lot (which expires soonest, so it has to be taken first)."""
    import threading
    import time

    from sqlalchemy import text

    if engine.dialect.name != "postgresql":
        pytest.skip("needs two real concurrent transactions (SQLite serialises writers)")
    member = make_member(session_factory, tenant.id)
    far, soon = h.utc(2030, 1, 1), h.utc(2027, 1, 1)
    h.award(session_factory, tenant.id, member, 100, "far", expires_at=far)
    holder = session_factory()
    result: dict[str, object] = {}
    try:
        holder.begin()
        points.award(holder, tenant.id, member, 50, reason="t", idempotency_key="soon", expires_at=soon)

        def spender() -> None:
            try:
                result["id"] = h.spend(session_factory, tenant.id, member, 30, "waits")
            except Exception as exc:  # surfaced by the assertion below
                result["error"] = exc

        thread = threading.Thread(target=spender)
        thread.start()
        deadline = time.monotonic() + 30
        with engine.connect() as probe:  # wait until the spend is blocked on the account row
            while time.monotonic() < deadline:
                waiting = probe.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'")).scalar_one()
                if waiting:
                    break
                time.sleep(0.02)
            assert waiting, f"the spend never waited for the award lock: {result}"
        holder.commit()
        thread.join(30)
    finally:
        holder.close()
    assert "error" not in result, result
    lots = {lt.expires_at: lt.remaining for lt in h.lots(session_factory, tenant.id, member)}
    assert lots == {far: 100, soon: 20}
    assert h.balance(session_factory, tenant.id, member) == 120 == h.entries_sum(session_factory, tenant.id, member)


def test_postgres_accounts_leave_room_for_hot_updates(engine: Engine) -> None:
    """Every award and spend rewrites the member's account row: half-empty pages keep those
    updates HOT (no new index entries, page pruning instead of bloat)."""
    from sqlalchemy import text

    if engine.dialect.name != "postgresql":
        pytest.skip("fillfactor is a PostgreSQL storage parameter")
    with engine.connect() as conn:
        options = conn.execute(text("SELECT reloptions FROM pg_class WHERE relname = 'points_accounts'")).scalar_one()
    assert "fillfactor=50" in (options or [])


def test_rules_cache_is_per_engine_and_goes_with_it(
    engine: Engine, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """The award's rules cache is keyed by the engine object (not its URL, which is costly to
    hash): another engine on the same database reads its own, and a dropped engine's entries go."""
    import gc
    import weakref

    from siyu.db.engine import make_engine
    from siyu.db.session import make_session_factory

    if engine.dialect.name != "postgresql":
        pytest.skip("only the PostgreSQL award statement caches the rules")
    other = make_engine(engine.url.render_as_string(hide_password=False), pool_size=1, max_overflow=0)
    try:
        factory = make_session_factory(other)
        member = make_member(factory, tenant.id)
        h.award(factory, tenant.id, member, 3, "other-engine")
        assert tenant.id in points._EXPIRY_CACHE[other]
        assert h.balance(factory, tenant.id, member) == 3
    finally:
        other.dispose()
    gone = weakref.ref(other)
    del other, factory
    gc.collect()
    assert gone() is None  # the cache did not keep the engine alive
    h.award(session_factory, tenant.id, make_member(session_factory, tenant.id), 1, "own-engine")
    assert tenant.id in points._EXPIRY_CACHE[engine]
