"""What a key is and is not: claimed with the create (a refused or failed create keeps no key, so a
corrected retry with the same key succeeds), scoped to the merchant, the principal and the route,
compared on the request's values, trimmed and bounded, sealed at rest, kept 24 hours."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.idempotency import service
from siyu.idempotency.models import IdempotentRequest
from siyu.kit.outbox import Job, Schedule
from siyu.kit.timeutil import utcnow
from siyu.loyalty.models import Level
from siyu.tenancy import service as tenancy
from siyu.tenancy.models import Staff
from siyu.worker.runner import Worker
from tests.api_idempotency.cases import ADMIN, count, keyed, keys
from tests.conftest import Tenant, staff_headers, unique
from tests.coupons.helpers import make_template

Factory = sessionmaker[Session]
LEVELS = f"{ADMIN}/loyalty/levels"


def test_a_refused_create_keeps_no_key_and_the_corrected_retry_with_it_succeeds(
    client: TestClient, session_factory: Factory, tenant: Tenant
) -> None:
    h = keyed(tenant.admin_headers, "level-1")
    assert client.post(LEVELS, json={"rank": 1, "name": "金卡"}, headers=tenant.admin_headers).status_code == 201
    taken = client.post(LEVELS, json={"rank": 1, "name": "钻石"}, headers=h)  # a domain refusal (409)
    assert taken.status_code == 409 and taken.json()["code"] == "level_rank_taken", taken.text
    assert keys(session_factory, tenant.id) == []
    invalid = client.post(LEVELS, json={"rank": 2, "name": "钻石", "coupon_template_ids": [987654]}, headers=h)
    assert invalid.status_code == 422, invalid.text  # refused by the service, after the claim
    assert keys(session_factory, tenant.id) == []
    schema = client.post(LEVELS, json={"rank": -1, "name": "钻石"}, headers=h)  # refused before the endpoint runs
    assert schema.status_code == 422, schema.text

    fixed = client.post(LEVELS, json={"rank": 2, "name": "钻石"}, headers=h)
    assert fixed.status_code == 201, fixed.text
    again = client.post(LEVELS, json={"rank": 2, "name": "钻石"}, headers=h)
    assert (again.status_code, again.headers.get("Idempotent-Replayed"), again.json()) == (200, "true", fixed.json())
    assert count(session_factory, Level, tenant.id) == 2
    assert [k.key for k in keys(session_factory, tenant.id)] == ["level-1"]


def test_a_create_whose_commit_fails_keeps_no_key(
    app: Any, session_factory: Factory, tenant: Tenant
) -> None:
    """The key row rides in the create's transaction: the commit that loses the create loses the key."""
    factory = app.state.session_factory

    def refuse(session: Session) -> None:
        if any(isinstance(o, IdempotentRequest) for o in session.identity_map.values()):
            raise RuntimeError("the database refused the commit")

    h = keyed(tenant.admin_headers, "level-commit")
    with TestClient(app, raise_server_exceptions=False) as client:
        event.listen(factory, "before_commit", refuse)
        try:
            r = client.post(LEVELS, json={"rank": 1, "name": "金卡"}, headers=h)
        finally:
            event.remove(factory, "before_commit", refuse)
        assert r.status_code == 500, r.text
        assert keys(session_factory, tenant.id) == [] and count(session_factory, Level, tenant.id) == 0
        r = client.post(LEVELS, json={"rank": 1, "name": "金卡"}, headers=h)
        assert r.status_code == 201, r.text
    assert count(session_factory, Level, tenant.id) == 1


def test_another_merchant_staff_member_api_key_or_route_uses_the_same_key_independently(
    client: TestClient, session_factory: Factory, tenant: Tenant
) -> None:
    other_tenant = _tenant(session_factory)
    clerk = staff_headers(session_factory, tenant, "owner")
    with session_factory() as s:
        clerk_id = s.scalars(select(Staff.id).where(Staff.merchant_id == tenant.id, Staff.username != "owner")).one()
    r = client.post(f"{ADMIN}/api-keys", json={"name": "ERP", "role": "owner"}, headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    erp, erp_id = {"Authorization": f"Bearer {r.json()['key']}"}, r.json()["id"]
    gold = {"rank": 1, "name": "金卡"}

    first = client.post(LEVELS, json=gold, headers=keyed(tenant.admin_headers, "same"))
    assert first.status_code == 201, first.text
    for headers in (clerk, erp):  # the same key and body from someone else: run, not replayed (the rank is taken)
        r = client.post(LEVELS, json=gold, headers=keyed(headers, "same"))
        assert r.status_code == 409 and r.json()["code"] == "level_rank_taken", r.text
    assert client.post(LEVELS, json={"rank": 2, "name": "钻石"}, headers=keyed(clerk, "same")).status_code == 201
    assert client.post(LEVELS, json={"rank": 3, "name": "黑卡"}, headers=keyed(erp, "same")).status_code == 201
    elsewhere = client.post(LEVELS, json=gold, headers=keyed(other_tenant.admin_headers, "same"))
    assert elsewhere.status_code == 201 and elsewhere.json()["id"] != first.json()["id"], elsewhere.text
    slot = client.post(f"{ADMIN}/home-slots", json={"kind": "banner", "title": "新品"},
                       headers=keyed(tenant.admin_headers, "same"))  # the same staff member, another route
    assert slot.status_code == 201, slot.text

    assert sorted(k.scope for k in keys(session_factory, tenant.id)) == sorted([
        f"POST {LEVELS} staff:{tenant.owner_id}",
        f"POST {LEVELS} staff:{clerk_id}",
        f"POST {LEVELS} api_key:{erp_id}",
        f"POST {ADMIN}/home-slots staff:{tenant.owner_id}",
    ])
    assert [k.scope for k in keys(session_factory, other_tenant.id)] == [f"POST {LEVELS} staff:{other_tenant.owner_id}"]
    assert count(session_factory, Level, tenant.id) == 3 and count(session_factory, Level, other_tenant.id) == 1


def test_a_staff_member_logged_in_again_still_gets_the_replay(
    client: TestClient, session_factory: Factory, tenant: Tenant
) -> None:
    """The scope is the staff member, not the token: a console that re-logs in after a timeout retries safely."""
    body = {"rank": 1, "name": "金卡"}
    first = client.post(LEVELS, json=body, headers=keyed(tenant.admin_headers, "relogin"))
    assert first.status_code == 201, first.text
    r = client.post(f"{ADMIN}/auth/login", json={"merchant": tenant.code, "username": "owner", "password": "owner-pass-1"})
    assert r.status_code == 200, r.text
    again = client.post(LEVELS, json=body, headers={"Authorization": f"Bearer {r.json()['token']}",
                                                    "Idempotency-Key": "relogin"})
    assert (again.status_code, again.content) == (200, first.content)


def test_the_request_is_compared_on_its_values_path_parameters_included(
    client: TestClient, session_factory: Factory, tenant: Tenant
) -> None:
    a = make_template(session_factory, tenant.id, "fixed", amount=300, channels=["code"])
    b = make_template(session_factory, tenant.id, "fixed", amount=300, channels=["code"])
    h = keyed(tenant.admin_headers, "codes")
    first = client.post(f"{ADMIN}/coupon-templates/{a}/codes", json={"count": 2}, headers=h)
    assert first.status_code == 201, first.text
    # the same values written differently (spacing, a default sent explicitly) are the same request
    raw = client.post(f"{ADMIN}/coupon-templates/{a}/codes", content=b'{ "count" : 2 }',
                      headers={**h, "Content-Type": "application/json"})
    assert (raw.status_code, raw.content) == (200, first.content)
    level = {"rank": 1, "name": "金卡"}
    r1 = client.post(LEVELS, json=level, headers=keyed(tenant.admin_headers, "lv"))
    r2 = client.post(LEVELS, content=json.dumps({"name": "金卡", "rank": 1, "free_shipping": False}).encode(),
                     headers={**keyed(tenant.admin_headers, "lv"), "Content-Type": "application/json"})
    assert (r1.status_code, r2.status_code, r2.content) == (201, 200, r1.content)
    # another template in the path is another request
    other = client.post(f"{ADMIN}/coupon-templates/{b}/codes", json={"count": 2}, headers=h)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused", other.text


@pytest.mark.parametrize(
    ("key", "code"), [("", "blank"), ("   ", "blank"), ("k" * 121, "too_long"), (" " + "k" * 121 + " ", "too_long")]
)
def test_a_blank_or_too_long_key_is_refused_and_creates_nothing(
    client: TestClient, session_factory: Factory, tenant: Tenant, key: str, code: str
) -> None:
    r = client.post(LEVELS, json={"rank": 1, "name": "金卡"}, headers=keyed(tenant.admin_headers, key))
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "idempotency_key_invalid"
    assert [(f["path"], f["code"]) for f in problem["fields"]] == [("header.Idempotency-Key", code)]
    assert count(session_factory, Level, tenant.id) == 0 and keys(session_factory, tenant.id) == []


def test_a_key_is_trimmed_and_may_be_120_characters(
    client: TestClient, session_factory: Factory, tenant: Tenant
) -> None:
    key = "k" * 120
    first = client.post(LEVELS, json={"rank": 1, "name": "金卡"}, headers=keyed(tenant.admin_headers, f"  {key} "))
    assert first.status_code == 201, first.text
    again = client.post(LEVELS, json={"rank": 1, "name": "金卡"}, headers=keyed(tenant.admin_headers, key))
    assert (again.status_code, again.content) == (200, first.content)
    assert [k.key for k in keys(session_factory, tenant.id)] == [key]


def test_the_answer_is_sealed_at_rest_yet_replayed_exactly(
    client: TestClient, app: Any, session_factory: Factory, tenant: Tenant
) -> None:
    """An API key's plaintext is shown once: the retry shows that key again, the table never holds it."""
    h = keyed(tenant.admin_headers, "erp-key")
    first = client.post(f"{ADMIN}/api-keys", json={"name": "ERP"}, headers=h)
    assert first.status_code == 201, first.text
    plaintext = first.json()["key"]
    (row,) = keys(session_factory, tenant.id)
    assert row.response_enc is not None and plaintext not in row.response_enc and row.response_enc.startswith("v2:")
    again = client.post(f"{ADMIN}/api-keys", json={"name": "ERP"}, headers=h)
    assert again.status_code == 200 and again.json()["key"] == plaintext
    with session_factory() as s:  # bound to its row: copied into another row, it does not open
        s.execute(update(IdempotentRequest).where(IdempotentRequest.id == row.id).values(id=row.id + 10**9))
        s.commit()
    with TestClient(app, raise_server_exceptions=False) as quiet:
        moved = quiet.post(f"{ADMIN}/api-keys", json={"name": "ERP"}, headers=h)
    # an answer no key opens is the stable 409 (test_answer_unavailable), not a 500 nor the key again
    assert moved.status_code == 409 and moved.json()["code"] == "idempotency_answer_unavailable"
    assert plaintext not in moved.text


def test_a_key_past_its_retention_is_free_again_and_the_nightly_purge_deletes_the_expired_keys(
    client: TestClient, session_factory: Factory, settings: Settings, tenant: Tenant
) -> None:
    body = {"kind": "banner", "title": "新品"}
    slots = f"{ADMIN}/home-slots"
    first = client.post(slots, json=body, headers=keyed(tenant.admin_headers, "old"))
    assert first.status_code == 201, first.text
    kept = client.post(slots, json=body, headers=keyed(tenant.admin_headers, "kept"))
    assert kept.status_code == 201, kept.text

    def age(key: str) -> None:  # as if ``key`` had been used 25 hours ago
        with unit_of_work(session_factory) as s:
            s.execute(update(IdempotentRequest).where(IdempotentRequest.merchant_id == tenant.id,
                                                      IdempotentRequest.key == key)
                      .values(created_at=utcnow() - service.RETENTION - dt.timedelta(hours=1)))

    age("old")
    again = client.post(slots, json={"kind": "banner", "title": "另一个"}, headers=keyed(tenant.admin_headers, "old"))
    assert again.status_code == 201, again.text  # a new request, not 409: the old key expired
    assert sorted(k.key for k in keys(session_factory, tenant.id)) == ["kept", "old"]

    age("kept")
    worker = Worker(session_factory, settings, merchant_id=tenant.id)
    assert worker.ensure_schedules() >= 1  # a long-running worker keeps the nightly purge in place
    with session_factory() as s:
        purge = s.scalars(select(Schedule).where(Schedule.merchant_id == tenant.id,
                                                 Schedule.name == service.PURGE_JOB)).one()
    assert purge.cron == "40 3 * * *"
    assert worker.drain(now=purge.next_run_at) >= 1
    assert [k.key for k in keys(session_factory, tenant.id)] == ["old"]  # the fresh one stays
    with session_factory() as s:
        runs = s.scalars(select(Job).where(Job.merchant_id == tenant.id, Job.kind == service.PURGE_JOB)).all()
    assert [j.status for j in runs] == ["done"]


def _tenant(factory: Factory) -> Tenant:
    code = unique("m")
    with unit_of_work(factory) as s:
        merchant = tenancy.create_merchant(s, code=code, name=f"Test store {code}")
        owner = tenancy.create_staff(s, merchant.id, username="owner", password="owner-pass-1", role="owner")
        token, _ = tenancy.login_staff(s, merchant_code=code, username="owner", password="owner-pass-1",
                                       ttl=dt.timedelta(hours=1))
        return Tenant(id=merchant.id, code=code, owner_id=owner.id, owner_token=token)
