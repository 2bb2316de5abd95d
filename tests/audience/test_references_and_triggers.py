"""What a segment names is checked against the store (unknown tag: error with its path; event
name never seen: a warning), a tag change re-evaluates the saved segments naming the tag at
once, and stage transitions are announced as ``member.stage_changed``. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import repository as repo
from siyu.audience import segments, service
from siyu.audience.models import Segment, SegmentChange, SegmentMember
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.events.models import Event
from siyu.kit.errors import DomainError
from siyu.kit.events import subscribe
from siyu.kit.outbox import Job
from siyu.kit.timeutil import utcnow
from siyu.members import tags
from siyu.members.models import Member, Tag, TagGroup
from siyu.worker.registry import JobContext
from siyu.worker.runner import Worker
from tests.conftest import Tenant

STAGE_CHANGES: list[dict[str, Any]] = []


@subscribe("member.stage_changed", "tests.audience.stage_changed_probe")
def _stage_changed_probe(ctx: JobContext) -> None:
    STAGE_CHANGES.append({"merchant_id": ctx.merchant_id, **ctx.payload})


def _members(factory: sessionmaker[Session], merchant_id: int, n: int) -> list[int]:
    with unit_of_work(factory) as s:
        rows = [Member(merchant_id=merchant_id, openid=f"o-{uuid.uuid4().hex[:12]}") for _ in range(n)]
        s.add_all(rows)
        s.flush()
        return [m.id for m in rows]


def _tag(factory: sessionmaker[Session], merchant_id: int, name: str = "VIP") -> int:
    with unit_of_work(factory) as s:
        group = TagGroup(merchant_id=merchant_id, name=f"g-{uuid.uuid4().hex[:6]}")
        s.add(group)
        s.flush()
        tag = Tag(merchant_id=merchant_id, group_id=group.id, name=name)
        s.add(tag)
        s.flush()
        return tag.id


def _saved(factory: sessionmaker[Session], merchant_id: int, name: str, definition: dict[str, Any]) -> int:
    with unit_of_work(factory) as s:
        return segments.save_segment(s, merchant_id, name=name, description=None,
                                     definition=segments.parse_definition(definition)).id


def _membership(factory: sessionmaker[Session], merchant_id: int, segment_id: int) -> set[int]:
    with factory() as s:
        return set(s.scalars(select(SegmentMember.member_id).where(
            SegmentMember.merchant_id == merchant_id, SegmentMember.segment_id == segment_id)))


def _changes(factory: sessionmaker[Session], merchant_id: int, segment_id: int) -> list[tuple[int, str]]:
    with factory() as s:
        return [(r.member_id, r.change) for r in s.scalars(select(SegmentChange).where(
            SegmentChange.merchant_id == merchant_id, SegmentChange.segment_id == segment_id).order_by(SegmentChange.id))]


# -- references ------------------------------------------------------------------------------------


def test_a_tag_of_no_store_or_another_store_is_refused_with_its_path(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    from siyu.tenancy import service as tenancy_service

    with unit_of_work(session_factory) as s:
        other_id = tenancy_service.create_merchant(s, code=f"o-{uuid.uuid4().hex[:8]}", name="other").id
    mine, theirs = _tag(session_factory, tenant.id), _tag(session_factory, other_id)
    definition = segments.parse_definition({"type": "and", "nodes": [
        {"type": "stage", "in": ["active"]},
        {"type": "not", "node": {"type": "tag", "op": "has", "tag_ids": [mine, theirs, 987654321]}},
    ]})
    with session_factory() as s, pytest.raises(DomainError) as err:
        segments.check_references(s, tenant.id, definition)
    assert err.value.code == "segment_invalid"
    assert [(f.path, f.code) for f in err.value.fields] == [
        ("definition.and.nodes.1.not.node.tag.tag_ids.1", "segment_unknown_tag"),
        ("definition.and.nodes.1.not.node.tag.tag_ids.2", "segment_unknown_tag"),
    ]
    assert str(theirs) in err.value.fields[0].message and err.value.fields[0].message_zh
    with session_factory() as s:  # the store's own tag passes
        assert segments.check_references(s, tenant.id, segments.parse_definition(
            {"type": "tag", "tag_ids": [mine]})) == []


def test_an_event_name_neither_registered_nor_received_is_a_warning_not_an_error(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """Ingestion accepts unknown names (an app may send a new event before it is registered),
    so a segment on one is allowed; the operator is warned it matches no one yet."""
    (member_id,) = _members(session_factory, tenant.id, 1)
    with unit_of_work(session_factory) as s:
        s.add(Event(merchant_id=tenant.id, event_id=uuid.uuid4().hex, name="try_on", member_id=member_id,
                    source="mini_program", occurred_at=utcnow(), received_at=utcnow(), properties={}))
    definition = segments.parse_definition({"type": "or", "nodes": [
        {"type": "behavior", "event": "product_view", "within_days": 30},  # registered
        {"type": "behavior", "event": "try_on", "within_days": 30},  # unregistered, received
        {"type": "sequence", "first": "lens_quiz", "then_not": "add_to_cart", "within_hours": 24},  # never seen
    ]})
    with session_factory() as s:
        warnings = segments.check_references(s, tenant.id, definition)
    assert [(w.path, w.code) for w in warnings] == [("definition.or.nodes.2.sequence.first", "segment_event_unseen")]
    assert "lens_quiz" in warnings[0].message and "lens_quiz" in (warnings[0].message_zh or "")


def test_over_http_an_unknown_tag_is_a_422_that_saves_nothing_and_an_unseen_event_warns(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    bad = {"type": "tag", "tag_ids": [987654321]}
    r = client.post("/api/admin/v1/segments/preview", json={"definition": bad}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["code"] == "segment_invalid", r.text
    assert r.json()["fields"][0]["path"] == "definition.tag.tag_ids.0"
    assert r.json()["fields"][0]["code"] == "segment_unknown_tag"
    r = client.post("/api/admin/v1/segments", json={"name": "bad", "definition": bad}, headers=tenant.admin_headers)
    assert r.status_code == 422
    with session_factory() as s:
        assert s.scalar(select(Segment.id).where(Segment.merchant_id == tenant.id)) is None

    unseen = {"type": "behavior", "event": "lens_quiz", "within_days": 7}
    r = client.post("/api/admin/v1/segments/preview", json={"definition": unseen},
                    headers={**tenant.admin_headers, "Accept-Language": "en"})
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 0
    assert [(w["path"], w["code"]) for w in r.json()["warnings"]] == [("definition.behavior.event", "segment_event_unseen")]
    assert "lens_quiz" in r.json()["warnings"][0]["message"]
    r = client.post("/api/admin/v1/segments", json={"name": "quiz", "definition": unseen}, headers=tenant.admin_headers)
    assert r.status_code == 201 and r.json()["warnings"][0]["code"] == "segment_event_unseen"
    r = client.get(f"/api/admin/v1/segments/{r.json()['id']}", headers=tenant.admin_headers)
    assert r.json()["warnings"] == []


# -- a tag change ------------------------------------------------------------------------------------


def test_giving_and_taking_a_tag_moves_the_member_in_and_out_of_saved_segments_at_once(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    a, b = _members(session_factory, tenant.id, 2)
    vip = _tag(session_factory, tenant.id)
    other = _tag(session_factory, tenant.id, "other")
    tagged = _saved(session_factory, tenant.id, "vip", {"type": "tag", "tag_ids": [vip]})
    untagged = _saved(session_factory, tenant.id, "not vip", {"type": "tag", "op": "has_not", "tag_ids": [vip]})
    unrelated = _saved(session_factory, tenant.id, "everyone", {"type": "random_bucket", "percent": 100})
    assert _membership(session_factory, tenant.id, untagged) == {a, b}

    with unit_of_work(session_factory) as s:  # one transaction: the segments change with the tag
        assert tags.add_tag(s, tenant.id, a, vip, source="manual")
        assert set(s.scalars(select(SegmentMember.member_id).where(SegmentMember.segment_id == tagged))) == {a}
    assert _membership(session_factory, tenant.id, tagged) == {a}
    assert _membership(session_factory, tenant.id, untagged) == {b}
    assert _changes(session_factory, tenant.id, tagged) == [(a, "entered")]
    assert _changes(session_factory, tenant.id, untagged)[2:] == [(a, "left")]  # after both entered on save

    with unit_of_work(session_factory) as s:
        tags.add_tag(s, tenant.id, b, other, source="manual")  # a tag no segment names: nothing moves
    assert _changes(session_factory, tenant.id, tagged) == [(a, "entered")]

    with unit_of_work(session_factory) as s:
        assert tags.remove_tag(s, tenant.id, a, vip)
    assert _membership(session_factory, tenant.id, tagged) == set()
    assert _membership(session_factory, tenant.id, untagged) == {a, b}
    assert _changes(session_factory, tenant.id, tagged) == [(a, "entered"), (a, "left")]
    assert len(_changes(session_factory, tenant.id, unrelated)) == 2  # both entered on save, nothing since


def test_a_bulk_tag_change_re_evaluates_several_members_at_once_or_queues_a_recompute(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = _members(session_factory, tenant.id, 3)
    vip = _tag(session_factory, tenant.id)
    seg = _saved(session_factory, tenant.id, "vip", {"type": "tag", "tag_ids": [vip]})
    with unit_of_work(session_factory) as s:  # two members in one call: both re-evaluated at the same instant
        tags._bulk_apply(s, tenant.id, vip, members[:2], action="add", source="csv", actor=("system", None))
    assert _membership(session_factory, tenant.id, seg) == set(members[:2])
    assert sorted(_changes(session_factory, tenant.id, seg)) == sorted((m, "entered") for m in members[:2])

    monkeypatch.setattr(segments, "TAG_CHANGE_AT_ONCE", 0)  # larger than "at once": one job per segment
    with unit_of_work(session_factory) as s:
        tags._bulk_apply(s, tenant.id, vip, members, action="remove", source="csv", actor=("system", None))
        queued = list(s.scalars(select(Job).where(Job.merchant_id == tenant.id, Job.kind == service.SEGMENT_RECOMPUTE_JOB)))
        assert [j.payload["segment_id"] for j in queued] == [seg]
    assert _membership(session_factory, tenant.id, seg) == set(members[:2])  # not yet
    Worker(session_factory, settings, merchant_id=tenant.id).drain()
    assert _membership(session_factory, tenant.id, seg) == set()


# -- stage transitions -----------------------------------------------------------------------------


def test_stage_transitions_are_announced_for_a_payment_and_for_the_daily_recompute(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    a, b = _members(session_factory, tenant.id, 2)
    now = utcnow()
    with unit_of_work(session_factory) as s:
        repo.ensure_rows(s, tenant.id, {a, b})
        repo.apply_payment(s, tenant.id, b, 1000, now - dt.timedelta(days=200), now)
        assert service.recompute_lifecycle(s, tenant.id, now=now) == 1  # b: never purchased -> sleeping
        assert service.recompute_lifecycle(s, tenant.id, now=now + dt.timedelta(seconds=1)) == 0  # nothing moved
    with unit_of_work(session_factory) as s:
        service.record_payment(s, tenant.id, a, 5000, now)  # a: never purchased -> active, at once
    with unit_of_work(session_factory) as s:
        service.record_payment(s, tenant.id, a, 5000, now)  # still active: no announcement
    STAGE_CHANGES.clear()
    Worker(session_factory, settings, merchant_id=tenant.id).drain()
    mine = sorted((c for c in STAGE_CHANGES if c["merchant_id"] == tenant.id), key=lambda c: c["member_id"] or 0)
    assert [(c["member_id"], c["changed"], c.get("from_stage"), c.get("to_stage")) for c in mine] == [
        (None, 1, None, None), (a, 1, "never_purchased", "active"),
    ]
    with session_factory() as s:  # the daily one points at its transitions
        moved = repo.transitions_for(s, tenant.id, b)
    assert [(t.to_stage, t.at) for t in moved] == [("sleeping", dt.datetime.fromisoformat(mine[0]["at"]))]
