"""Issue 3: an activity's rules are decided before it starts. Once a bargain activity runs, its
validity, ``new_users_only`` and per-member limit are 409 ``bargain_state_invalid`` (with the
status) and nothing changes; the name and the end still change. Before the start they all change.
The store's start and help endpoints take no fields: an unknown key is 422 at its path and
changes nothing; no body, or ``{}``, works as before."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.bargains.models import Bargain, BargainHelp
from siyu.kit.timeutil import utcnow
from tests.bargains import helpers as h
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import make_sku

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"


def _get(client: TestClient, tenant: Tenant, act: int) -> dict[str, Any]:
    r = client.get(f"{ADMIN}/bargain-activities/{act}", headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_limits_and_validity_lock_at_the_start_name_and_end_do_not(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    running = h.make_activity(session_factory, tenant.id, sku)
    upcoming = h.make_activity(session_factory, tenant.id, sku, starts_in=dt.timedelta(hours=2))
    before = _get(client, tenant, running)
    for change in ({"valid_hours": 48}, {"new_users_only": True}, {"per_member_limit": 2},
                   {"name": "改名", "per_member_limit": 5}):
        r = client.patch(f"{ADMIN}/bargain-activities/{running}", json=change, headers=tenant.admin_headers)
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "bargain_state_invalid" and "active" in r.json()["message"], r.text
    after = _get(client, tenant, running)
    assert {k: after[k] for k in ("name", "valid_hours", "new_users_only", "per_member_limit")} == {
        k: before[k] for k in ("name", "valid_hours", "new_users_only", "per_member_limit")}

    new_end = (utcnow() + dt.timedelta(days=3)).replace(microsecond=0)
    r = client.patch(f"{ADMIN}/bargain-activities/{running}",
                     json={"name": "砍到底", "ends_at": new_end.isoformat()}, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "砍到底" and dt.datetime.fromisoformat(r.json()["ends_at"]) == new_end

    change = {"valid_hours": 48, "new_users_only": True, "per_member_limit": 2}
    r = client.patch(f"{ADMIN}/bargain-activities/{upcoming}", json=change, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in change} == change


def test_the_update_body_documents_which_fields_lock_at_the_start(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    props = schemas["BargainActivityUpdate"]["properties"]
    for name in ("valid_hours", "new_users_only", "per_member_limit", "allows_coupons"):
        assert props[name]["description"] == "before the start only", name
    assert props["name"]["description"] == "any time"


def test_start_and_help_refuse_unknown_keys_at_their_path(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    act = h.make_activity(session_factory, tenant.id, sku)
    _, owner = f.paying_customer(session_factory, tenant.id)
    _, friend = f.paying_customer(session_factory, tenant.id)

    def counts() -> tuple[int, int]:
        with session_factory() as s:
            return (int(s.scalar(select(func.count()).select_from(Bargain).where(Bargain.merchant_id == tenant.id)) or 0),
                    int(s.scalar(select(func.count()).select_from(BargainHelp)
                                 .where(BargainHelp.merchant_id == tenant.id)) or 0))

    url = f"{STORE}/bargains/activities/{act}/start"
    r = client.post(url, json={"price": 1}, headers={**owner, "Idempotency-Key": "s-1"})
    assert r.status_code == 422, r.text
    assert [(x["path"], x["code"]) for x in r.json()["fields"]] == [("body.price", "extra_forbidden")]
    assert counts() == (0, 0)
    r = client.post(url, json={}, headers={**owner, "Idempotency-Key": "s-2"})
    assert r.status_code == 201, r.text
    bargain_id = r.json()["id"]

    help_url = f"{STORE}/bargains/{bargain_id}/help"
    r = client.post(help_url, json={"cut": 9999}, headers=friend)
    assert r.status_code == 422, r.text
    assert [(x["path"], x["code"]) for x in r.json()["fields"]] == [("body.cut", "extra_forbidden")]
    assert counts() == (1, 0)
    r = client.post(help_url, headers=friend)  # no body, as before
    assert r.status_code == 200, r.text
    assert counts() == (1, 1)
