"""The anonymous history joins the member at login (``POST /api/events/v1/identify``) and counts
in their statistics once; other domains' happenings (coupon claimed, check-in, level change)
are stored as server events. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import siyu.audience.service  # noqa: F401  (registers the stats hook, as the app does)
from siyu.audience import repository as audience_repo
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.events import tasks
from siyu.events.catalog import REGISTERED
from siyu.events.models import Event
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.worker.registry import JobContext
from siyu.worker.runner import Worker
from tests.conftest import Tenant, customer_login


def ev(name: str, anonymous_id: str, **props: Any) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "name": name, "anonymous_id": anonymous_id,
            "timestamp": (utcnow() - dt.timedelta(minutes=5)).isoformat(), "properties": props}


def test_identify_joins_the_devices_history_and_counts_it_once(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    anon = f"dev-{uuid.uuid4().hex[:8]}"
    batch = [ev("product_view", anon, product_id=3), ev("product_view", anon, product_id=4),
             ev("add_to_cart", anon, product_id=3, sku_id=5, quantity=1)]
    r = client.post("/api/events/v1/batch", json={"events": batch}, headers=tenant.store_headers)
    assert r.status_code == 200 and r.json()["accepted"] == 3, r.text

    headers = customer_login(client, tenant)
    r = client.post("/api/events/v1/identify", json={"anonymous_id": anon}, headers=headers)
    assert r.status_code == 200 and r.json() == {"linked": 3}, r.text
    again = client.post("/api/events/v1/identify", json={"anonymous_id": anon}, headers=headers)
    assert again.json() == {"linked": 0}
    Worker(session_factory, settings, merchant_id=tenant.id).drain()

    with session_factory() as s:
        owners = set(s.scalars(select(Event.member_id).where(Event.merchant_id == tenant.id)))
        assert len(owners) == 1 and None not in owners
        member_id = owners.pop()
        stats = audience_repo.stats_row(s, tenant.id, member_id)
        assert stats is not None and (stats.product_views, stats.cart_adds) == (2, 1)
        assert stats.last_visit_at is not None

    # a later anonymous event of the device is the member's at once
    r = client.post("/api/events/v1/batch", json={"events": [ev("favorite", anon, product_id=3)]},
                    headers=tenant.store_headers)
    assert r.json()["accepted"] == 1
    with session_factory() as s:
        assert set(s.scalars(select(Event.member_id).where(Event.merchant_id == tenant.id))) == {member_id}


def test_identify_needs_a_customer_token(client: TestClient, tenant: Tenant) -> None:
    r = client.post("/api/events/v1/identify", json={"anonymous_id": "x"}, headers=tenant.store_headers)
    assert r.status_code == 422 and r.json()["code"] == "event_identify_needs_member", r.text
    r = client.post("/api/events/v1/identify", json={"anonymous_id": "x"}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["code"] == "event_identify_needs_member"
    r = client.post("/api/events/v1/identify", json={"anonymous_id": ""}, headers=customer_login(client, tenant))
    assert r.status_code == 422


def _ctx(session: Session, settings: Settings, merchant_id: int, payload: dict[str, Any], job_id: int) -> JobContext:
    return JobContext(session=session, merchant_id=merchant_id, payload=payload, settings=settings, job_id=job_id,
                      attempt=1)


def test_coupon_check_in_and_level_changes_are_stored_as_server_events(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    with unit_of_work(session_factory) as s:
        member = Member(merchant_id=tenant.id, openid=f"o-{uuid.uuid4().hex[:12]}")
        s.add(member)
        s.flush()
        member_id = member.id
        audience_repo.ensure_rows(s, tenant.id, {member_id})
    with unit_of_work(session_factory) as s:
        sent = {"coupon_id": 11, "template_id": 7, "member_id": member_id, "source": "operator"}
        tasks.record_coupon_claimed(_ctx(s, settings, tenant.id, sent, 1))
        tasks.record_coupon_claimed(_ctx(s, settings, tenant.id, sent, 2))  # a repeat: stored once
        tasks.record_level_changed(_ctx(s, settings, tenant.id, {"member_id": member_id, "from_level_id": None,
                                                                 "to_level_id": 3, "reason": "growth"}, 3))
    with session_factory() as s:  # neither was the member's doing: no visit recorded
        stats = audience_repo.stats_row(s, tenant.id, member_id)
        assert stats is not None and stats.last_visit_at is None
    with unit_of_work(session_factory) as s:
        tasks.record_coupon_claimed(_ctx(s, settings, tenant.id, {**sent, "coupon_id": 12, "source": "claim"}, 4))
        tasks.record_check_in(_ctx(s, settings, tenant.id, {"member_id": member_id, "day": "2026-12-05", "streak": 3,
                                                            "points": 5}, 5))
    with session_factory() as s:
        rows = s.execute(select(Event.name, Event.source, Event.properties).where(
            Event.merchant_id == tenant.id, Event.member_id == member_id).order_by(Event.id)).all()
        stats = audience_repo.stats_row(s, tenant.id, member_id)
        assert stats is not None and stats.last_visit_at is not None
    assert [(n, src) for n, src, _ in rows] == [
        ("coupon_claimed", "server"), ("level_changed", "server"), ("coupon_claimed", "server"), ("check_in", "server"),
    ]
    assert rows[0][2] == {"template_id": 7, "coupon_id": 11, "source": "operator"}
    assert rows[1][2] == {"to_level_id": 3, "reason": "growth"}
    assert rows[3][2] == {"streak": 3, "day": "2026-12-05", "points": 5}
    assert {"coupon_claimed", "check_in", "level_changed"} <= REGISTERED.keys()  # listed as registered names


def test_login_with_the_devices_anonymous_id_joins_its_history(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    anon = f"dev-{uuid.uuid4().hex[:8]}"
    r = client.post("/api/events/v1/batch", json={"events": [ev("product_view", anon, product_id=3)]},
                    headers=tenant.store_headers)
    assert r.json()["accepted"] == 1
    r = client.post("/api/store/v1/auth/wechat-login", json={"code": "sandbox-dev-owner", "anonymous_id": anon},
                    headers=tenant.store_headers)
    assert r.status_code == 200, r.text
    member_id = r.json()["member_id"]
    with session_factory() as s:
        assert set(s.scalars(select(Event.member_id).where(Event.merchant_id == tenant.id))) == {member_id}
    # a second login with it links nothing more; an empty one is a 422 and logs nobody in
    r = client.post("/api/store/v1/auth/wechat-login", json={"code": "sandbox-dev-owner", "anonymous_id": anon},
                    headers=tenant.store_headers)
    assert r.status_code == 200 and r.json()["member_id"] == member_id
    r = client.post("/api/store/v1/auth/wechat-login", json={"code": "sandbox-other", "anonymous_id": ""},
                    headers=tenant.store_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["path"] == "body.anonymous_id", r.text
