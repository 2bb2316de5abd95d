"""Admin rules for bargain activities: update what may change, disable, delete only when unused;
the store activity page; the checkout preview of a bargain and its stacking flags."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.kit.timeutil import utcnow
from tests.bargains import helpers as h
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import buyer, make_sku

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"


def test_update_disable_delete(client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    used = h.make_activity(session_factory, tenant.id, sku)
    unused = h.make_activity(session_factory, tenant.id, sku)
    h.start(session_factory, tenant.id, buyer(session_factory, tenant.id), used)

    r = client.patch(f"{ADMIN}/bargain-activities/{used}", json={"name": "砍一刀", "per_member_limit": 2},
                     headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["name"] == "砍一刀" and r.json()["per_member_limit"] == 2
    assert r.json()["bargains"] == {"active": 1}
    r = client.patch(f"{ADMIN}/bargain-activities/{used}", json={"floor_price": 1}, headers=tenant.admin_headers)
    assert r.status_code == 422  # prices and H are fixed once created
    r = client.patch(f"{ADMIN}/bargain-activities/{used}", json={"ends_at": (utcnow() - dt.timedelta(days=2)).isoformat()},
                     headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "window_invalid"

    r = client.delete(f"{ADMIN}/bargain-activities/{used}", headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "bargain_state_invalid"
    assert client.delete(f"{ADMIN}/bargain-activities/{unused}", headers=tenant.admin_headers).status_code == 204
    assert client.get(f"{ADMIN}/bargain-activities/{unused}", headers=tenant.admin_headers).status_code == 404

    page = client.get(f"{STORE}/bargains/activities/{used}", headers=tenant.store_headers)
    assert page.status_code == 200 and page.json()["status"] == "active" and page.json()["start_price"] == 10000
    r = client.post(f"{ADMIN}/bargain-activities/{used}/disable", headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["effective_status"] == "disabled"
    assert client.get(f"{STORE}/bargains/activities/{used}", headers=tenant.store_headers).status_code == 404
    _, headers = f.paying_customer(session_factory, tenant.id)
    r = client.post(f"{STORE}/bargains/activities/{used}/start", headers=headers)
    assert r.status_code == 404
    listed = client.get(f"{ADMIN}/bargain-activities?status=disabled", headers=tenant.admin_headers).json()
    assert [a["id"] for a in listed["items"]] == [used]


def test_preview_prices_one_unit_at_the_current_price_with_flags(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    act = h.make_activity(session_factory, tenant.id, sku, helpers_needed=2, allows_coupons=True)
    member, headers = f.paying_customer(session_factory, tenant.id)
    bargain_id = h.start(session_factory, tenant.id, member, act)
    cut = h.help_(session_factory, tenant.id, bargain_id, buyer(session_factory, tenant.id))
    body = {"items": [{"sku_id": sku, "quantity": 1}], "options": {"bargain": {"bargain_id": bargain_id}}}
    r = client.post(f"{STORE}/checkout/preview", json=body, headers=headers)
    assert r.status_code == 200, r.text
    (line,) = r.json()["lines"]
    assert line["payable_amount"] == 10000 - cut
    assert line["flags"]["activity"] == f"bargain:{bargain_id}"
    assert line["flags"]["no_coupon"] is False and line["flags"]["no_points"] is True
    r = client.post(f"{STORE}/checkout/preview", json={**body, "items": [{"sku_id": sku, "quantity": 2}]}, headers=headers)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "bargain_quantity_one"
    # another member cannot use it
    _, other = f.paying_customer(session_factory, tenant.id)
    r = client.post(f"{STORE}/checkout/preview", json=body, headers=other)
    assert r.status_code == 404
