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
    people = [f.paying_customer(session_factory, tenant.id) for _ in range(5)]
    # team 1: both seats paid -> succeeded
    first, team_ok = h.lead(client, session_factory, settings, tenant.id, people[0], sku, gb)
    second = h.submit(session_factory, tenant.id, people[1][0], sku, gb, team_ok)
    h.pay(client, second, people[1][1])
    # team 2: the leader pays 2 units, nobody joins -> fails at its deadline and is refunded
    _, team_failed = h.lead(client, session_factory, settings, tenant.id, people[2], sku, gb, quantity=2)
    deadline = h.team(session_factory, team_failed).expires_at
    # team 3: opened by a leader who has not paid yet: pending, not counted as opened
    # (its pay-by deadline is later than team 2's deadline)
    pending = h.submit(session_factory, tenant.id, people[3][0], sku, gb, now=deadline - dt.timedelta(minutes=1))
    # team 4: opened at the same time, its leader paid: open, waiting for members
    h.lead_marked_paid(session_factory, tenant.id, people[4][0], sku, gb, now=deadline - dt.timedelta(minutes=1))
    h.drain(session_factory, settings, tenant.id, now=deadline + dt.timedelta(seconds=1))
    assert h.team(session_factory, team_failed).status == "failed"

    r = client.get(f"{ADMIN}/group-buys/{gb}/stats", headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    body = r.json()
    keys = ("teams_opened", "teams_pending", "teams_cancelled", "teams_open", "teams_succeeded", "teams_virtual",
            "teams_failed")
    assert {k: body[k] for k in keys} == {
        "teams_opened": 3, "teams_pending": 1, "teams_cancelled": 0, "teams_open": 1, "teams_succeeded": 1,
        "teams_virtual": 0, "teams_failed": 1}
    paid = [f.order(session_factory, tenant.id, o) for o in (first, second)]
    assert (body["paid_seats"], body["paid_units"]) == (3, 3)  # team 4's leader paid too
    assert body["gmv"] - 6000 == sum(o.paid_amount - o.freight_amount for o in paid) == 2 * 6000
    assert body["discount_given"] == 3 * (10000 - 6000)
    assert (body["refunded_seats"], body["refunded_amount"]) == (1, 2 * 6000)
    assert (body["pending_seats"], body["released_seats"]) == (1, 0)
    assert f.order(session_factory, tenant.id, pending).status == "pending_payment"


def test_another_merchants_group_buy_stats_are_404(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    r = client.get(f"{ADMIN}/group-buys/987654321/stats", headers=tenant.admin_headers)
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
