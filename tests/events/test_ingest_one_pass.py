"""The one pass over a batch (``service.ingest``): a server feed mixing named members, an
unknown member, linked and unlinked devices, a duplicate and unregistered names stores each
event with the right member and reports exactly the right rejections and names."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.events import service
from siyu.events.models import Event
from siyu.kit.timeutil import utcnow
from tests.conftest import Tenant
from tests.events.test_ingest import ev, make_member


def test_a_mixed_server_batch_stores_each_event_with_its_member(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    mine = make_member(session_factory, tenant.id)
    linked_device, new_device = f"d-{uuid.uuid4().hex[:8]}", f"d-{uuid.uuid4().hex[:8]}"
    owner = make_member(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        service.link_anonymous(s, tenant.id, linked_device, owner, now=utcnow())
    tag = uuid.uuid4().hex[:8]
    batch = [
        ev(event_id=f"a-{tag}", member_id=mine),
        ev("only_for_the_stranger", event_id=f"b-{tag}", member_id=10**9),  # not a member of this merchant
        ev("custom_kept", event_id=f"c-{tag}", anonymous_id=linked_device),
        ev(event_id=f"d-{tag}", anonymous_id=new_device),
        ev(event_id=f"a-{tag}", member_id=mine),  # the same event id again
        ev("product_view", event_id=f"e-{tag}", member_id=mine, properties={"product_id": 3, "sku_id": None}),
    ]
    with unit_of_work(session_factory) as s:
        out = service.ingest(s, service.Caller(tenant.id, None, trusted=True), batch, now=utcnow(), lang="en")
    assert out.accepted == 4 and out.duplicates == 0
    assert [(r.index, r.code) for r in out.rejected] == [(1, "event_member_unknown"), (4, "event_duplicate_in_batch")]
    assert out.unknown_names == ["custom_kept"]  # not the rejected event's name
    with session_factory() as s:
        stored = {
            e: (m, a, src, p)
            for e, m, a, src, p in s.execute(
                select(Event.event_id, Event.member_id, Event.anonymous_id, Event.source, Event.properties).where(
                    Event.merchant_id == tenant.id
                )
            )
        }
    assert stored == {
        f"a-{tag}": (mine, None, "mini_program", {"page": "/home"}),
        f"c-{tag}": (owner, linked_device, "mini_program", {}),
        f"d-{tag}": (None, new_device, "mini_program", {"page": "/home"}),
        f"e-{tag}": (mine, None, "mini_program", {"product_id": 3}),
    }
    # the retry is all duplicates, nothing stored twice
    with unit_of_work(session_factory) as s:
        again = service.ingest(s, service.Caller(tenant.id, None, trusted=True), batch, now=utcnow())
    assert (again.accepted, again.duplicates) == (0, 4)
