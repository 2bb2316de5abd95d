"""Real parallel connections on PostgreSQL: concurrent helps never exceed H, a friend helps once
(the concurrent repeats answer with that one help's result)."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from tests.bargains import helpers as h
from tests.conftest import Tenant
from tests.factories.concurrency import race
from tests.factories.orders import buyer, make_sku


def test_twelve_friends_race_for_three_helps(session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    sku = make_sku(session_factory, tenant.id, price=10000)
    act = h.make_activity(session_factory, tenant.id, sku, helpers_needed=3, floor_price=1000)
    bargain_id = h.start(session_factory, tenant.id, buyer(session_factory, tenant.id), act)
    friends = [buyer(session_factory, tenant.id) for _ in range(12)]

    results = race(12, lambda i: f"cut:{h.help_(session_factory, tenant.id, bargain_id, friends[i])}")

    outcomes = Counter("cut" if r.startswith("cut:") else r for r in results)
    assert outcomes == Counter({"cut": 3, "bargain_finished": 9}), results
    b = h.bargain(session_factory, bargain_id)
    assert b.helped_count == 3 and b.status == "floor_reached"
    assert b.cut_total == 9000 and b.current_price == 1000
    helps = h.helps(session_factory, bargain_id)
    assert [x.seq for x in helps] == [1, 2, 3] and [x.amount for x in helps] == b.cuts


def test_one_friend_helping_six_times_at_once_helps_once(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    sku = make_sku(session_factory, tenant.id, price=10000)
    act = h.make_activity(session_factory, tenant.id, sku, helpers_needed=5)
    bargain_id = h.start(session_factory, tenant.id, buyer(session_factory, tenant.id), act)
    friend = buyer(session_factory, tenant.id)

    results = race(6, lambda i: f"cut:{h.help_(session_factory, tenant.id, bargain_id, friend)}")

    b = h.bargain(session_factory, bargain_id)
    assert results == [f"cut:{b.cuts[0]}"] * 6, results  # one help; the five repeats answer with its cut
    assert b.helped_count == 1 and b.cut_total == b.cuts[0]
    assert len(h.helps(session_factory, bargain_id)) == 1


def test_six_parallel_retries_of_one_start_key_make_one_bargain(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    from siyu.bargains import service
    from siyu.db.session import unit_of_work

    sku = make_sku(session_factory, tenant.id, price=10000)
    act = h.make_activity(session_factory, tenant.id, sku)
    member = buyer(session_factory, tenant.id)

    def start(_: int) -> str:
        with unit_of_work(session_factory) as s:
            bargain, _created = service.start_with_key(s, tenant.id, member, act, "start-1")
            return f"bargain:{bargain.id}"

    results = race(6, start)
    assert len(set(results)) == 1 and results[0].startswith("bargain:"), results
