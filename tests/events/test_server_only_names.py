"""The per-member events the server writes from the audience module's change rows
(``segment_entered`` / ``segment_left`` / ``stage_changed``) are registered (listed, their
properties typed) but refused from the ingestion API, even from a trusted server: journeys and
segments trust them. The rest of the batch is stored. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.events import service
from siyu.events.catalog import PROPERTIES, REGISTERED, SERVER_ONLY
from siyu.events.models import Event
from siyu.kit.timeutil import utcnow
from tests.conftest import Tenant, customer_login


def ev(name: str, **props: Any) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "name": name, "anonymous_id": "dev-1",
            "timestamp": (utcnow() - dt.timedelta(minutes=5)).isoformat(), "properties": props}


def test_the_server_only_names_are_registered_with_typed_properties() -> None:
    assert set(REGISTERED) >= SERVER_ONLY
    assert PROPERTIES["segment_entered"]({"segment_id": "7"}) == {"segment_id": 7}
    assert PROPERTIES["stage_changed"]({"from": "active", "to": "silent"}) == {"from": "active", "to": "silent"}


def test_a_customer_batch_naming_them_has_them_refused_and_the_rest_stored(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    batch = [ev("page_view", page="home"), ev("segment_entered", segment_id=7),
             ev("stage_changed", **{"from": "never_purchased", "to": "active"})]
    r = client.post("/api/events/v1/batch", json={"events": batch},
                    headers={**customer_login(client, tenant), "Accept-Language": "en"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1
    assert [(x["index"], x["code"]) for x in body["rejected"]] == [(1, "event_name_reserved"), (2, "event_name_reserved")]
    assert body["rejected"][0]["message"] == "The event segment_entered is written by the server and cannot be sent"
    with session_factory() as s:
        names = set(s.scalars(select(Event.name).where(Event.merchant_id == tenant.id)))
        assert "segment_entered" not in names and "stage_changed" not in names


def test_a_trusted_server_may_not_send_them_either(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    with unit_of_work(session_factory) as s:
        out = service.ingest(s, service.Caller(tenant.id, None, trusted=True), [ev("segment_left", segment_id=3)],
                             now=utcnow())
    assert out.accepted == 0
    assert [x.code for x in out.rejected] == ["event_name_reserved"]
    assert out.rejected[0].message == "事件 segment_left 由系统写入，不能上报"
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Event).where(Event.merchant_id == tenant.id)) == 0
