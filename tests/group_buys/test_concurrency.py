"""Real parallel connections on PostgreSQL: the last seat of a team goes to exactly one member."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.orders.models import Order
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.concurrency import race
from tests.factories.orders import buyer, make_sku, sku_stock
from tests.group_buys import helpers as h


def test_ten_members_race_for_the_last_seat_exactly_one_wins(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=3)
    leader, second = buyer(session_factory, tenant.id), buyer(session_factory, tenant.id)
    _, team_id = h.lead_marked_paid(session_factory, tenant.id, leader, sku, gb)
    h.submit(session_factory, tenant.id, second, sku, gb, team_id)
    racers = [buyer(session_factory, tenant.id) for _ in range(10)]
    orders_before = f.count(session_factory, Order, tenant.id)

    results = race(10, lambda i: f"order:{h.submit(session_factory, tenant.id, racers[i], sku, gb, team_id)}")

    outcomes = Counter("order" if r.startswith("order:") else r for r in results)
    assert outcomes == Counter({"order": 1, "group_team_full": 9}), results
    team = h.team(session_factory, team_id)
    assert team.filled == team.size == 3
    assert len(h.seats(session_factory, tenant.id, team_id)) == 3
    assert f.count(session_factory, Order, tenant.id) == orders_before + 1
    assert sku_stock(session_factory, sku) == 50 - 3


def test_one_member_racing_into_a_team_twice_gets_one_seat(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=5, per_member_limit=5)
    leader, member = buyer(session_factory, tenant.id), buyer(session_factory, tenant.id)
    _, team_id = h.lead_marked_paid(session_factory, tenant.id, leader, sku, gb)

    results = race(6, lambda i: f"order:{h.submit(session_factory, tenant.id, member, sku, gb, team_id)}")

    outcomes = Counter("order" if r.startswith("order:") else r for r in results)
    assert outcomes == Counter({"order": 1, "group_team_already_joined": 5}), results
    assert h.team(session_factory, team_id).filled == 2


def test_last_payment_racing_the_deadline_job_ends_in_success_either_way(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    """The order.paid job and the deadline job both lock the team row first; whichever runs first,
    the paid last seat is counted once and the team succeeds with nobody refunded."""
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    import datetime as dt

    from siyu.db.session import unit_of_work
    from siyu.group_buys import service
    from siyu.orders import service as orders_service

    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    for _ in range(3):
        gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2)
        _, team_id = h.lead_marked_paid(session_factory, tenant.id, buyer(session_factory, tenant.id), sku, gb)
        second = h.submit(session_factory, tenant.id, buyer(session_factory, tenant.id), sku, gb, team_id)
        with unit_of_work(session_factory) as s:
            order = s.get(Order, second)
            assert order is not None
            orders_service.mark_paid(s, tenant.id, second, amount=order.payable_amount,
                                     paid_at=dt.datetime.now(dt.UTC), actor=("system", None))
        deadline = h.team(session_factory, team_id).expires_at + dt.timedelta(seconds=1)

        def run(i: int, team_id: int = team_id, second: int = second, deadline: dt.datetime = deadline) -> str:
            with unit_of_work(session_factory) as s:
                if i == 0:
                    service.on_order_paid(s, tenant.id, second, now=deadline)
                    return "paid"
                return str(service.expire_team(s, tenant.id, team_id, deadline))

        results = race(2, run)
        assert not any(r.startswith("crash") for r in results), results
        team = h.team(session_factory, team_id)
        assert team.status == "success" and team.paid_count == 2, results
        assert sorted(s.status for s in h.seats(session_factory, tenant.id, team_id)) == ["paid", "paid"]
        assert f.refunds(session_factory, tenant.id) == []


def test_one_member_opening_teams_in_parallel_stays_within_the_limit(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2, per_member_limit=2)
    member = buyer(session_factory, tenant.id)

    results = race(8, lambda i: f"order:{h.submit(session_factory, tenant.id, member, sku, gb)}")

    outcomes = Counter("order" if r.startswith("order:") else r for r in results)
    assert outcomes == Counter({"order": 2, "group_buy_limit_reached": 6}), results
    assert sku_stock(session_factory, sku) == 48


def test_a_joiner_racing_the_leaders_payment_either_gets_in_or_is_refused_not_open(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    """The leader's ``order.paid`` job opens the team (``pending → open``) while a friend joins
    from the share link. Whichever goes first, the team ends open with the leader's seat paid and
    counted once; the friend either holds seat 2 (pending) or got 409 ``group_team_not_open`` and
    nothing of theirs was written (no order, no seat, no units, no stock)."""
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    import datetime as dt

    from siyu.db.session import unit_of_work
    from siyu.group_buys import service
    from siyu.orders import service as orders_service

    sku = make_sku(session_factory, tenant.id, price=10000, stock=100)
    seen: Counter[str] = Counter()
    for round_no in range(8):
        gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=3)
        leader, friend = buyer(session_factory, tenant.id), buyer(session_factory, tenant.id)
        lead = h.submit(session_factory, tenant.id, leader, sku, gb)
        team_id = h.team_of(session_factory, tenant.id, lead).id
        with unit_of_work(session_factory) as s:
            order = s.get(Order, lead)
            assert order is not None
            orders_service.mark_paid(s, tenant.id, lead, amount=order.payable_amount,
                                     paid_at=dt.datetime.now(dt.UTC), actor=("system", None))
        orders_before, stock_before = f.count(session_factory, Order, tenant.id), sku_stock(session_factory, sku)

        def run(
            i: int, lead: int = lead, friend: int = friend, gb: int = gb, team_id: int = team_id, delay: float = 0.003 * round_no
        ) -> str:
            if i == 0:
                with unit_of_work(session_factory) as s:
                    service.on_order_paid(s, tenant.id, lead)
                return "opened"
            time.sleep(delay)  # spreads the rounds over both orders; the asserts hold for either
            return f"order:{h.submit(session_factory, tenant.id, friend, sku, gb, team_id)}"

        results = race(2, run)
        assert not any(r.startswith("crash") for r in results), results
        joined = results[1].startswith("order:")
        assert joined or results[1] == "group_team_not_open", results
        seen["joined" if joined else "refused"] += 1
        team = h.team(session_factory, team_id)
        assert (team.status, team.paid_count, team.filled) == ("open", 1, 2 if joined else 1), results
        seats = h.seats(session_factory, tenant.id, team_id)
        assert [(st.member_id, st.status) for st in seats] == [(leader, "paid")] + ([(friend, "pending")] if joined else [])
        assert f.count(session_factory, Order, tenant.id) == orders_before + (1 if joined else 0)
        assert sku_stock(session_factory, sku) == stock_before - (1 if joined else 0)
    print(f"leader payment vs joiner outcomes: {dict(seen)}")
