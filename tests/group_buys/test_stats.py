"""A group buy's usage for ROI (GET /group-buys/{id}/stats): teams by outcome, seats by state,
GMV and the discount given, exactly; another merchant's activity is 404."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import make_sku
from tests.group_buys import helpers as h

ADMIN = "/api/admin/v1"


def test_stats_count_teams_seats_and_money_exactly(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=20)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2, group_price=6000, per_member_limit=2)
    people = [f.paying_customer(session_factory, tenant.id) for _ in range(4)]
    # team 1: both seats paid -> succeeded
    first = h.submit(session_factory, tenant.id, people[0][0], sku, gb)
    team_ok = h.team_of(session_factory, tenant.id, first).id
    second = h.submit(session_factory, tenant.id, people[1][0], sku, gb, team_ok)
    for order_id, (_, headers) in ((first, people[0]), (second, people[1])):
        h.pay(client, order_id, headers)
    # team 2: the leader pays 2 units, nobody joins -> fails at its deadline and is refunded
    lonely = h.submit(session_factory, tenant.id, people[2][0], sku, gb, quantity=2)
    team_failed = h.team_of(session_factory, tenant.id, lonely).id
    h.pay(client, lonely, people[2][1])
    h.drain(session_factory, settings, tenant.id)
    deadline = h.team(session_factory, team_failed).expires_at
    # team 3: opened, not paid yet (its deadline is later than team 2's)
    pending = h.submit(session_factory, tenant.id, people[3][0], sku, gb, now=deadline - dt.timedelta(minutes=1))
    h.drain(session_factory, settings, tenant.id, now=deadline + dt.timedelta(seconds=1))
    assert h.team(session_factory, team_failed).status == "failed"

    r = client.get(f"{ADMIN}/group-buys/{gb}/stats", headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("teams_opened", "teams_open", "teams_succeeded", "teams_virtual", "teams_failed")} == {
        "teams_opened": 3, "teams_open": 1, "teams_succeeded": 1, "teams_virtual": 0, "teams_failed": 1}
    paid = [f.order(session_factory, tenant.id, o) for o in (first, second)]
    assert (body["paid_seats"], body["paid_units"]) == (2, 2)
    assert body["gmv"] == sum(o.paid_amount - o.freight_amount for o in paid) == 2 * 6000
    assert body["discount_given"] == 2 * (10000 - 6000)
    assert (body["refunded_seats"], body["refunded_amount"]) == (1, 2 * 6000)
    assert (body["pending_seats"], body["released_seats"]) == (1, 0)
    assert f.order(session_factory, tenant.id, pending).status == "pending_payment"


def test_another_merchants_group_buy_stats_are_404(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    r = client.get(f"{ADMIN}/group-buys/987654321/stats", headers=tenant.admin_headers)
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
