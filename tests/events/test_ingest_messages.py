"""Rejection reasons in the request's language, and the one-call validation path storing the
same events as the event-by-event path."""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.events import service
from siyu.events.models import Event
from siyu.kit.timeutil import utcnow
from tests.conftest import Tenant, customer_login
from tests.events.test_ingest import ev, make_member


def _future() -> str:
    return (utcnow() + dt.timedelta(hours=2)).isoformat()


def test_rejections_come_in_chinese_by_default_and_in_english_on_request(client: TestClient, tenant: Tenant) -> None:
    headers = customer_login(client, tenant)
    batch = {"events": [ev(), ev(timestamp=_future()), ev(source="carrier_pigeon")]}
    zh = client.post("/api/events/v1/batch", json=batch, headers=headers)
    assert zh.status_code == 200, zh.text
    assert zh.headers["content-language"] == "zh-CN"
    assert [(r["index"], r["code"], r["message"]) for r in zh.json()["rejected"]] == [
        (1, "event_in_future", "事件时间晚于服务器时间"),
        (2, "event_source_invalid", "未知的事件来源"),
    ]
    batch = {"events": [ev(), ev(timestamp=_future()), ev("product_view", properties={"product_id": "seven"})]}
    en = client.post("/api/events/v1/batch", json=batch, headers={**headers, "Accept-Language": "en-US,en;q=0.9"})
    assert en.headers["content-language"] == "en"
    assert [(r["code"], r["message"]) for r in en.json()["rejected"]] == [
        ("event_in_future", "The event's timestamp is in the future"),
        ("event_properties_invalid", "Properties do not match the schema of product_view"),
    ]
    assert en.json()["accepted"] == 1


def test_every_rejection_code_has_both_languages(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member_id = make_member(session_factory, tenant.id)
    batch = [ev(), ev(event_id="short"), ev("search", properties={})]
    with unit_of_work(session_factory) as s:
        zh = service.ingest(s, service.Caller(tenant.id, member_id), batch, now=utcnow())
    with unit_of_work(session_factory) as s:
        en = service.ingest(s, service.Caller(tenant.id, member_id), batch, now=utcnow(), lang="en")
    assert [(r.code, r.message) for r in zh.rejected] == [
        ("event_invalid", "事件格式不正确"),
        ("event_properties_invalid", "事件属性不符合 search 的定义"),
    ]
    assert [(r.code, r.message) for r in en.rejected] == [
        ("event_invalid", "The event is not valid"),
        ("event_properties_invalid", "Properties do not match the schema of search"),
    ]
    assert zh.rejected[0].fields[0]["path"] == "event_id"
    assert (zh.accepted, en.duplicates) == (1, 1)


def _stored(factory: sessionmaker[Session], merchant_id: int) -> dict[str, tuple[str, dict]]:
    with factory() as s:
        rows = s.execute(select(Event.event_id, Event.source, Event.properties).where(Event.merchant_id == merchant_id))
        return {e: (src, p) for e, src, p in rows}


def test_a_good_batch_and_a_batch_with_a_bad_event_store_the_same_rows(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """The batch validated in one call (all good) and event by event (one bad event) agree on
    what is stored: coerced properties, ``None`` properties left out, extra keys kept, the
    default source, optional-only properties that may be absent."""
    member_id = make_member(session_factory, tenant.id)
    caller = service.Caller(tenant.id, member_id)

    def events() -> list[dict]:
        tag = uuid.uuid4().hex[:8]
        return [
            ev("product_view", event_id=f"pv-{tag}", properties={"product_id": "7", "sku_id": None, "utm": "x"}),
            ev("checkout_start", event_id=f"co-{tag}", source="offline") | {"properties": {}},
            {k: v for k, v in ev("checkout_start", event_id=f"co2-{tag}").items() if k != "properties"},
            ev("my_custom", event_id=f"cu-{tag}", properties={"a": None}),
        ]

    good = events()
    with unit_of_work(session_factory) as s:
        out = service.ingest(s, caller, good, now=utcnow())
    assert out.accepted == 4 and not out.rejected
    with_bad = [*events(), "not an event"]
    with unit_of_work(session_factory) as s:
        out = service.ingest(s, caller, with_bad, now=utcnow())
    assert out.accepted == 4 and [r.index for r in out.rejected] == [4]
    stored = _stored(session_factory, tenant.id)
    expected = {
        "pv": ("mini_program", {"product_id": 7, "utm": "x"}),
        "co": ("offline", {}),
        "co2": ("mini_program", {}),
        "cu": ("mini_program", {"a": None}),
    }
    for kind, value in expected.items():
        assert [v for e, v in stored.items() if e.startswith(kind + "-")] == [value, value], kind


def test_a_registered_event_without_its_required_properties_is_rejected(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member_id = make_member(session_factory, tenant.id)
    bare = {k: v for k, v in ev("add_to_cart").items() if k != "properties"}
    with unit_of_work(session_factory) as s:
        out = service.ingest(s, service.Caller(tenant.id, member_id), [bare], now=utcnow(), lang="en")
    assert out.accepted == 0
    assert out.rejected[0].code == "event_properties_invalid"
    assert {f["path"] for f in out.rejected[0].fields} == {"properties.product_id", "properties.sku_id", "properties.quantity"}
