"""Refunds give group-buy units back to the member's per-member limit: after a team succeeded, a
partial refund frees the refunded quantity and a full refund the rest; never more than the seat held."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.group_buys import repository as repo
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.aftersales import ADMIN, admin_order, request_aftersale
from tests.factories.orders import make_sku
from tests.group_buys import helpers as h


def _units(factory: sessionmaker[Session], merchant_id: int, group_buy_id: int, member_id: int) -> int:
    with factory() as s:
        return repo.member_units(s, merchant_id, group_buy_id, member_id)


def _refund(
    client: TestClient, tenant: Tenant, settings: Settings, factory: sessionmaker[Session], headers: dict[str, str],
    order_id: int, quantity: int,
) -> None:
    line_id = admin_order(client, tenant, order_id)["lines"][0]["id"]
    r = request_aftersale(client, headers, order_id, "refund_only", [(line_id, quantity)], reason_code="changed_mind")
    assert r.status_code == 201, r.text
    r = client.post(f"{ADMIN}/aftersales/{r.json()['id']}/approve", json={}, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    h.drain(factory, settings, tenant.id)


def test_refunds_after_success_give_the_units_back(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2, per_member_limit=2)
    (leader, leader_h), (friend, friend_h) = (f.paying_customer(session_factory, tenant.id) for _ in range(2))
    leader_order, team_id = h.lead(client, session_factory, settings, tenant.id, (leader, leader_h), sku, gb, quantity=2)
    friend_order = h.submit(session_factory, tenant.id, friend, sku, gb, team_id)
    h.pay(client, friend_order, friend_h)
    h.drain(session_factory, settings, tenant.id)
    assert h.team(session_factory, team_id).status == "success"
    assert (_units(session_factory, tenant.id, gb, leader), _units(session_factory, tenant.id, gb, friend)) == (2, 1)

    _refund(client, tenant, settings, session_factory, leader_h, leader_order, 1)
    assert _units(session_factory, tenant.id, gb, leader) == 1  # the refunded unit is free again
    _refund(client, tenant, settings, session_factory, leader_h, leader_order, 1)
    assert f.order(session_factory, tenant.id, leader_order).refund_status == "full"
    assert _units(session_factory, tenant.id, gb, leader) == 0
    _refund(client, tenant, settings, session_factory, friend_h, friend_order, 1)
    assert _units(session_factory, tenant.id, gb, friend) == 0

    seats = {s.member_id: s for s in h.seats(session_factory, tenant.id, team_id)}
    assert (seats[leader].units_freed, seats[friend].units_freed) == (2, 1)
    assert h.team(session_factory, team_id).status == "success"  # the team's outcome stands
