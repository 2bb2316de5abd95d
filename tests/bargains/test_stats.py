"""A bargain activity's usage for ROI (GET /bargain-activities/{id}/stats): bargains by outcome,
helps and distinct helpers, and the paid orders' GMV and discount, exactly; 404 for another merchant's."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from tests.bargains import helpers as h
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import buyer, make_sku

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"


def test_stats_count_bargains_helps_and_paid_money_exactly(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    act = h.make_activity(session_factory, tenant.id, sku, helpers_needed=4, per_member_limit=1)
    bought_by, headers = f.paying_customer(session_factory, tenant.id)
    idle = buyer(session_factory, tenant.id)
    friends = [buyer(session_factory, tenant.id) for _ in range(2)]
    bought = h.start(session_factory, tenant.id, bought_by, act)
    cuts = [h.help_(session_factory, tenant.id, bought, friend) for friend in friends]
    other = h.start(session_factory, tenant.id, idle, act)
    h.help_(session_factory, tenant.id, other, friends[0])  # the same friend helps another bargain
    r = client.post(f"{STORE}/bargains/{bought}/buy", json={}, headers={**headers, "Idempotency-Key": "stats"})
    assert r.status_code == 201, r.text
    order = r.json()
    before = client.get(f"{ADMIN}/bargain-activities/{act}/stats", headers=tenant.admin_headers).json()
    assert (before["bargains_ordered"], before["paid_orders"], before["gmv"]) == (1, 0, 0)  # not paid yet
    pay = client.post(f"{STORE}/orders/{order['id']}/pay", headers=headers)
    assert client.post(pay.json()["params"]["complete_url"], headers=headers).status_code == 200

    r = client.get(f"{ADMIN}/bargain-activities/{act}/stats", headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("bargains_started", "bargains_active", "bargains_floor_reached", "bargains_ordered",
                                 "bargains_expired", "helps", "helpers")} == {
        "bargains_started": 2, "bargains_active": 1, "bargains_floor_reached": 0, "bargains_ordered": 1,
        "bargains_expired": 0, "helps": 3, "helpers": 2}
    price = 10000 - sum(cuts)
    assert (body["paid_orders"], body["paid_units"], body["gmv"], body["discount_given"]) == (1, 1, price, sum(cuts))


def test_another_merchants_bargain_activity_stats_are_404(client: TestClient, tenant: Tenant) -> None:
    r = client.get(f"{ADMIN}/bargain-activities/987654321/stats", headers=tenant.admin_headers)
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
