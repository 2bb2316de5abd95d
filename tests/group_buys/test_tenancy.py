"""Another merchant's group buys, teams, bargain activities and bargains are 404s, never data."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.tenancy import service as tenancy_service
from tests.bargains import helpers as bh
from tests.conftest import Tenant, unique
from tests.factories import payments as f
from tests.factories.orders import buyer, make_sku
from tests.group_buys import helpers as h

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"


def _other_tenant(factory: sessionmaker[Session]) -> Tenant:
    code = unique("m")
    with unit_of_work(factory) as s:
        merchant = tenancy_service.create_merchant(s, code=code, name=f"Other {code}")
        owner = tenancy_service.create_staff(s, merchant.id, username="owner", password="owner-pass-1", role="owner")
        token, _ = tenancy_service.login_staff(
            s, merchant_code=code, username="owner", password="owner-pass-1", ttl=dt.timedelta(hours=1)
        )
        return Tenant(id=merchant.id, code=code, owner_id=owner.id, owner_token=token)


def test_foreign_ids_are_404(client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2)
    team_id = h.team_of(
        session_factory, tenant.id, h.submit(session_factory, tenant.id, buyer(session_factory, tenant.id), sku, gb)
    ).id
    act = bh.make_activity(session_factory, tenant.id, sku)
    bargain_id = bh.start(session_factory, tenant.id, buyer(session_factory, tenant.id), act)

    other = _other_tenant(session_factory)
    _, headers = f.paying_customer(session_factory, other.id)
    for path in (f"/group-buys/{gb}", f"/group-buys/{gb}/teams", f"/group-buys/teams/{team_id}",
                 f"/bargain-activities/{act}", f"/bargain-activities/{act}/bargains", f"/bargains/{bargain_id}"):
        r = client.get(f"{ADMIN}{path}", headers=other.admin_headers)
        assert r.status_code == 404 and r.json()["code"] == "not_found", path
    for path in (f"/group-buys/{gb}", f"/group-buys/teams/{team_id}", f"/bargains/activities/{act}"):
        r = client.get(f"{STORE}{path}", headers=other.store_headers)
        assert r.status_code == 404, path
    r = client.post(f"{STORE}/group-buys/teams/{team_id}/join", json={}, headers={**headers, "Idempotency-Key": "j"})
    assert r.status_code == 404
    r = client.post(f"{STORE}/bargains/{bargain_id}/help", headers=headers)
    assert r.status_code == 404
    assert h.team(session_factory, team_id).filled == 1
    assert bh.bargain(session_factory, bargain_id).helped_count == 0
