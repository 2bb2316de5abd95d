"""Event ingestion: per-event validation, idempotency, anonymous join, HTTP auth modes."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.events import service
from siyu.events.models import Event
from siyu.kit.errors import DomainError
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from tests.conftest import Tenant, customer_login


def ev(name: str = "page_view", **kw: object) -> dict:
    base: dict = {
        "event_id": uuid.uuid4().hex,
        "name": name,
        "timestamp": utcnow().isoformat(),
        "properties": {"page": "/home"} if name == "page_view" else {},
    }
    base.update(kw)
    return base


def count(factory: sessionmaker[Session], merchant_id: int) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(Event).where(Event.merchant_id == merchant_id)) or 0)


def make_member(factory: sessionmaker[Session], merchant_id: int) -> int:
    with unit_of_work(factory) as s:
        m = Member(merchant_id=merchant_id, openid=f"o-{uuid.uuid4().hex[:12]}")
        s.add(m)
        s.flush()
        return m.id


def test_bad_events_are_rejected_with_reasons_and_the_rest_stored(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member_id = make_member(session_factory, tenant.id)
    caller = service.Caller(merchant_id=tenant.id, member_id=member_id)
    now = utcnow()
    batch = [
        ev(),
        ev("product_view", properties={"product_id": 7, "price": 19900}),
        ev("product_view", properties={"product_id": "seven"}),  # bad property type
        ev(timestamp=(now + dt.timedelta(hours=2)).isoformat()),  # future
        ev(timestamp="2026-01-01T00:00:00"),  # naive
        {"name": "page_view"},  # no id / timestamp
        ev("custom_thing", properties={"x": 1}),  # unknown name: accepted, listed
        ev(source="carrier_pigeon"),
        "not an object",
    ]
    with unit_of_work(session_factory) as s:
        out = service.ingest(s, caller, batch, now=now)
    assert out.accepted == 3
    assert out.duplicates == 0
    codes = {r.index: r.code for r in out.rejected}
    assert codes == {
        2: "event_properties_invalid",
        3: "event_in_future",
        4: "event_timestamp_naive",
        5: "event_invalid",
        7: "event_source_invalid",
        8: "event_invalid",
    }
    assert any(f["path"] == "properties.product_id" for r in out.rejected if r.index == 2 for f in r.fields)
    assert out.unknown_names == ["custom_thing"]
    assert count(session_factory, tenant.id) == 3


def test_retried_batch_is_idempotent(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member_id = make_member(session_factory, tenant.id)
    caller = service.Caller(merchant_id=tenant.id, member_id=member_id)
    batch = [ev() for _ in range(5)]
    with unit_of_work(session_factory) as s:
        first = service.ingest(s, caller, batch, now=utcnow())
    with unit_of_work(session_factory) as s:
        again = service.ingest(s, caller, batch, now=utcnow())
    assert (first.accepted, first.duplicates) == (5, 0)
    assert (again.accepted, again.duplicates) == (0, 5)
    assert count(session_factory, tenant.id) == 5


def test_oversized_and_empty_batches_are_refused(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    caller = service.Caller(merchant_id=tenant.id, member_id=None, trusted=True)
    with unit_of_work(session_factory) as s, pytest.raises(DomainError) as err:
        service.ingest(s, caller, [ev(anonymous_id="a") for _ in range(501)], now=utcnow())
    assert err.value.code == "event_batch_too_large" and err.value.status == 413
    with unit_of_work(session_factory) as s, pytest.raises(DomainError) as err:
        service.ingest(s, caller, [], now=utcnow())
    assert err.value.code == "event_batch_empty"
    assert count(session_factory, tenant.id) == 0


def test_customer_cannot_send_events_for_another_member(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    me, other = make_member(session_factory, tenant.id), make_member(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        out = service.ingest(s, service.Caller(tenant.id, me), [ev(member_id=other), ev()], now=utcnow())
    assert out.accepted == 1 and out.rejected[0].code == "event_member_mismatch"


def test_server_caller_may_name_members_of_its_merchant_only(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    mine = make_member(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        out = service.ingest(
            s, service.Caller(tenant.id, None, trusted=True), [ev(member_id=mine), ev(member_id=10**9)], now=utcnow()
        )
    assert out.accepted == 1 and out.rejected[0].code == "event_member_unknown"


def test_anonymous_history_joins_the_member_on_login(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    anon = f"anon-{uuid.uuid4().hex[:8]}"
    with unit_of_work(session_factory) as s:
        service.ingest(s, service.Caller(tenant.id, None), [ev(anonymous_id=anon), ev(anonymous_id=anon)], now=utcnow())
    member_id = make_member(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        assert service.link_anonymous(s, tenant.id, anon, member_id, now=utcnow()) == 2
    # later anonymous events from the same device are attributed at once
    with unit_of_work(session_factory) as s:
        service.ingest(s, service.Caller(tenant.id, None), [ev(anonymous_id=anon)], now=utcnow())
    with session_factory() as s:
        owners = set(s.scalars(select(Event.member_id).where(Event.merchant_id == tenant.id)))
    assert owners == {member_id}


def test_http_batch_with_customer_token_and_anonymous(client: TestClient, tenant: Tenant) -> None:
    headers = customer_login(client, tenant)
    r = client.post("/api/events/v1/batch", json={"events": [ev(), ev("search", properties={"keyword": "镜框"})]}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    r = client.post("/api/events/v1/batch", json={"events": [ev(anonymous_id="dev-1")]}, headers=tenant.store_headers)
    assert r.json()["accepted"] == 1
    r = client.post("/api/events/v1/batch", json={"events": [ev(anonymous_id="dev-1")]})
    assert r.status_code == 400 and r.json()["code"] == "merchant_required"
    names = client.get("/api/admin/v1/events/names", headers=tenant.admin_headers).json()
    assert {n["name"]: n["count"] for n in names}["page_view"] == 2


def test_an_event_with_a_nul_character_is_rejected_alone(client: TestClient, tenant: Tenant) -> None:
    """PostgreSQL cannot store U+0000 (text or JSONB); SQLite could. Both now reject that event
    with its field paths and store the rest of the batch."""
    headers = customer_login(client, tenant)
    events = [ev(), ev("search", properties={"keyword": "镜\u0000框"}), ev(properties={"k\u0000": "v"})]
    r = client.post("/api/events/v1/batch", json={"events": events}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1
    assert [(x["index"], x["code"], [f["path"] for f in x["fields"]]) for x in body["rejected"]] == [
        (1, "event_text_nul", ["properties.keyword"]), (2, "event_text_nul", ["properties.k\u0000"])
    ]
    assert body["rejected"][0]["message"] == "事件的文本包含 NUL（\\u0000）字符"
    names = client.get("/api/admin/v1/events/names", headers=tenant.admin_headers).json()
    assert {n["name"]: n["count"] for n in names}.get("search") == 0
