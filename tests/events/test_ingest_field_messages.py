"""A rejected event's field details (``fields``) in the request's language, with stable codes."""

from __future__ import annotations

import datetime as dt
import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.events import service
from siyu.events.messages import _FALLBACK, FIELD_MESSAGES
from siyu.kit.timeutil import utcnow
from tests.conftest import Tenant, customer_login
from tests.events.test_ingest import ev, make_member

_CJK = re.compile(r"[\u4e00-\u9fff]")


def _bad_events() -> list[object]:
    """One event per kind of field error an envelope or a registered property schema raises."""
    naive = (utcnow() - dt.timedelta(minutes=1)).replace(tzinfo=None).isoformat()
    events = [
        {k: v for k, v in ev().items() if k != "event_id"},  # missing
        ev(colour="red"),  # extra_forbidden
        ev(event_id=12345678),  # string_type
        ev(event_id="short"),  # string_too_short
        ev(event_id="x" * 65),  # string_too_long
        ev(name="Page View"),  # string_pattern_mismatch
        ev(timestamp="yesterday"),  # datetime_from_date_parsing
        ev(timestamp=[2026]),  # datetime_type
        ev(member_id="seven"),  # int_parsing
        ev(member_id=[7]),  # int_type
        ev(member_id=1.5),  # int_from_float
        ev(member_id=0),  # greater_than
        ev(properties="page=/home"),  # dict_type
        ev(timestamp=naive),  # naive (ours)
        ev("product_view", properties={"product_id": 7, "price": -1}),  # greater_than_equal
        ev("add_to_cart", properties={"product_id": 7, "sku_id": 8, "quantity": 1000}),  # less_than_equal
        ev("page_view", properties={"page": ""}),  # string_too_short in a property
        ev("search", properties={"keyword": 5}),  # string_type in a property
        ev("favorite", properties={}),  # missing property
    ]
    # an anonymous visitor's events, so that only the field errors reject them
    return [{**e, "anonymous_id": "device-1"} if "member_id" not in e else e for e in events]


def test_every_field_detail_has_a_translated_message_and_a_stable_code(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    make_member(session_factory, tenant.id)
    caller = service.Caller(tenant.id, None, trusted=True)
    batch = _bad_events()
    with unit_of_work(session_factory) as s:
        zh = service.ingest(s, caller, batch, now=utcnow())
    with unit_of_work(session_factory) as s:
        en = service.ingest(s, caller, batch, now=utcnow(), lang="en")
    assert zh.accepted == en.accepted == 0
    assert [r.index for r in zh.rejected] == [r.index for r in en.rejected] == list(range(len(batch)))
    zh_fields = [f for r in zh.rejected for f in r.fields]
    en_fields = [f for r in en.rejected for f in r.fields]
    assert [(f["path"], f["code"]) for f in zh_fields] == [(f["path"], f["code"]) for f in en_fields]
    codes = {f["code"] for f in zh_fields}
    assert codes >= {
        "missing", "extra_forbidden", "string_type", "string_too_short", "string_too_long",
        "string_pattern_mismatch", "int_parsing", "int_type", "int_from_float", "greater_than",
        "greater_than_equal", "less_than_equal", "dict_type", "naive",
    }
    assert codes <= set(FIELD_MESSAGES), codes - set(FIELD_MESSAGES)  # none falls back
    for z, e in zip(zh_fields, en_fields, strict=True):
        assert _CJK.search(z["message"]), z
        assert not _CJK.search(e["message"]), e
        assert z["message"] != _FALLBACK[0] and e["message"] != _FALLBACK[1]
    by_path = {(r.index, f["path"]): (f["code"], f["message"]) for r in en.rejected for f in r.fields}
    assert by_path[(3, "event_id")] == ("string_too_short", "At least 8 characters")
    assert by_path[(11, "member_id")] == ("greater_than", "Must be greater than 0")
    assert by_path[(15, "properties.quantity")] == ("less_than_equal", "Must be at most 999")
    assert by_path[(18, "properties.product_id")] == ("missing", "This field is required")
    by_path_zh = {(r.index, f["path"]): f["message"] for r in zh.rejected for f in r.fields}
    assert by_path_zh[(3, "event_id")] == "至少 8 个字符"
    assert by_path_zh[(13, "timestamp")] == "时间必须带时区偏移（如 +08:00）"


def test_field_details_follow_accept_language_over_http(client: TestClient, tenant: Tenant) -> None:
    headers = customer_login(client, tenant)
    batch = {"events": [ev(event_id="short")]}
    zh = client.post("/api/events/v1/batch", json=batch, headers=headers).json()["rejected"][0]["fields"]
    en = client.post("/api/events/v1/batch", json=batch, headers={**headers, "Accept-Language": "en"}).json()
    assert zh == [{"path": "event_id", "code": "string_too_short", "message": "至少 8 个字符"}]
    assert en["rejected"][0]["fields"] == [{"path": "event_id", "code": "string_too_short", "message": "At least 8 characters"}]
