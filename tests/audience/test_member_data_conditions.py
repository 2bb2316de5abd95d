"""Segment conditions on the member's own data: custom fields, member records (latest version),
marketing consent and level; unknown field keys, record types and levels are refused with their path.
SQLite and PostgreSQL."""

from __future__ import annotations

import typing
import uuid
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import segments
from siyu.audience.definitions import ConsentNode
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.kit.timeutil import utcnow
from siyu.members.models import CustomFieldDef, Member, MemberConsent, MemberRecord, RecordType
from siyu.members.schemas import CONSENT_CHANNELS
from tests.conftest import Tenant


class World:
    def __init__(self, factory: sessionmaker[Session], merchant_id: int) -> None:
        self.merchant_id = merchant_id
        with unit_of_work(factory) as s:
            s.add_all([CustomFieldDef(merchant_id=merchant_id, key="shoe_size", label="鞋码", type="number"),
                       CustomFieldDef(merchant_id=merchant_id, key="style", label="风格", type="text")])
            exam = RecordType(merchant_id=merchant_id, key="eye_exam", label="验光", fields=[])
            s.add(exam)
            s.flush()
            custom = {"ann": {"shoe_size": 42, "style": "round"}, "bob": {"shoe_size": 38}, "cat": {}}
            self.ids: dict[str, int] = {}
            for name, fields in custom.items():
                m = Member(merchant_id=merchant_id, openid=f"{name}-{uuid.uuid4().hex[:8]}", nickname=name,
                           custom_fields=fields)
                s.add(m)
                s.flush()
                self.ids[name] = m.id
            for name, version, sphere in (("ann", 1, -2.5), ("ann", 2, -3.0), ("bob", 1, -1.0)):
                s.add(MemberRecord(merchant_id=merchant_id, member_id=self.ids[name], record_type_id=exam.id,
                                   version=version, data={"sphere": sphere, "eye": "both"}))
            s.add(MemberConsent(merchant_id=merchant_id, member_id=self.ids["ann"], channel="sms", granted=True,
                                source="profile", granted_at=utcnow()))
            s.add(MemberConsent(merchant_id=merchant_id, member_id=self.ids["bob"], channel="sms", granted=False,
                                source="profile", revoked_at=utcnow()))
            s.add(MemberConsent(merchant_id=merchant_id, member_id=self.ids["cat"], channel="email", granted=True,
                                source="profile", granted_at=utcnow()))


@pytest.fixture
def world(session_factory: sessionmaker[Session], tenant: Tenant) -> World:
    return World(session_factory, tenant.id)


def match(factory: sessionmaker[Session], world: World, definition: dict[str, Any]) -> set[str]:
    parsed = segments.parse_definition(definition)
    with factory() as s:
        assert segments.check_references(s, world.merchant_id, parsed) == []
        result = segments.preview(s, world.merchant_id, parsed, sample=100)
    by_id = {v: k for k, v in world.ids.items()}
    return {by_id[r["member_id"]] for r in result.sample}


@pytest.mark.parametrize(("node", "expected"), [
    ({"op": "gte", "value": 40, "key": "shoe_size"}, {"ann"}),
    ({"op": "lt", "value": 40, "key": "shoe_size"}, {"bob"}),
    ({"op": "in", "value": [38, 40], "key": "shoe_size"}, {"bob"}),
    ({"op": "ne", "value": 42, "key": "shoe_size"}, {"bob", "cat"}),  # no value counts as "not 42"
    ({"op": "eq", "value": "round", "key": "style"}, {"ann"}),
    ({"op": "is_set", "key": "style"}, {"ann"}),
    ({"op": "is_not_set", "key": "shoe_size"}, {"cat"}),
])
def test_custom_field_conditions(session_factory: sessionmaker[Session], world: World, node: dict[str, Any],
                                 expected: set[str]) -> None:
    assert match(session_factory, world, {"type": "custom_field", **node}) == expected


def test_member_record_conditions_read_the_latest_version(session_factory: sessionmaker[Session], world: World) -> None:
    assert match(session_factory, world, {"type": "record", "record_type": "eye_exam"}) == {"ann", "bob"}
    assert match(session_factory, world, {"type": "record", "record_type": "eye_exam", "has": False}) == {"cat"}
    strong = {"type": "record", "record_type": "eye_exam", "where": [{"property": "sphere", "op": "lte", "value": -2.75}]}
    assert match(session_factory, world, strong) == {"ann"}
    superseded = {"type": "record", "record_type": "eye_exam", "where": [{"property": "sphere", "op": "eq", "value": -2.5}]}
    assert match(session_factory, world, superseded) == set()  # ann's first exam, corrected since
    both = {"type": "record", "record_type": "eye_exam", "where": [
        {"property": "eye", "op": "eq", "value": "both"}, {"property": "sphere", "op": "gt", "value": -2.0}]}
    assert match(session_factory, world, both) == {"bob"}


def test_consent_conditions(session_factory: sessionmaker[Session], world: World) -> None:
    assert match(session_factory, world, {"type": "consent", "channel": "sms"}) == {"ann"}
    assert match(session_factory, world, {"type": "consent", "channel": "sms", "granted": False}) == {"bob", "cat"}
    assert match(session_factory, world, {"type": "consent", "channel": "email"}) == {"cat"}
    # the condition offers exactly the channels members can consent on
    assert typing.get_args(ConsentNode.model_fields["channel"].annotation) == CONSENT_CHANNELS


def test_unknown_custom_fields_and_record_types_are_refused_with_their_path(
    session_factory: sessionmaker[Session], world: World
) -> None:
    definition = segments.parse_definition({"type": "or", "nodes": [
        {"type": "custom_field", "key": "shoe_size", "op": "is_set"},
        {"type": "custom_field", "key": "hat_size", "op": "eq", "value": 3},
        {"type": "not", "node": {"type": "record", "record_type": "hearing_test"}},
    ]})
    with session_factory() as s, pytest.raises(DomainError) as err:
        segments.check_references(s, world.merchant_id, definition)
    assert err.value.code == "segment_invalid"
    assert [(f.path, f.code) for f in err.value.fields] == [
        ("definition.or.nodes.1.custom_field.key", "segment_unknown_custom_field"),
        ("definition.or.nodes.2.not.node.record.record_type", "segment_unknown_record_type"),
    ]
    assert "shoe_size, style" in err.value.fields[0].message and "eye_exam" in (err.value.fields[1].message_zh or "")
    with pytest.raises(DomainError) as bad:  # shape errors stay validation errors with the node's path
        segments.parse_definition({"type": "custom_field", "key": "shoe_size", "op": "in", "value": 3})
    assert bad.value.fields[0].path.startswith("definition.custom_field")
    with pytest.raises(DomainError):
        segments.parse_definition({"type": "consent", "channel": "fax"})


def test_level_conditions_use_the_level_whose_benefits_apply(session_factory: sessionmaker[Session], world: World) -> None:
    """ann earned silver and holds an active gold card: gold; bob earned gold; cat's gold card
    has ended: no level."""
    import datetime as dt

    from siyu.loyalty.models import Level, MemberCard, MemberLoyalty

    now = utcnow()
    with unit_of_work(session_factory) as s:
        silver = Level(merchant_id=world.merchant_id, rank=1, name="银卡")
        gold = Level(merchant_id=world.merchant_id, rank=2, name="金卡")
        s.add_all([silver, gold])
        s.flush()
        s.add_all([
            MemberLoyalty(merchant_id=world.merchant_id, member_id=world.ids["ann"], level_id=silver.id),
            MemberLoyalty(merchant_id=world.merchant_id, member_id=world.ids["bob"], level_id=gold.id),
            MemberCard(merchant_id=world.merchant_id, member_id=world.ids["ann"], plan_id=1, order_id=1, level_id=gold.id,
                       starts_at=now - dt.timedelta(days=10), ends_at=now + dt.timedelta(days=355)),
            MemberCard(merchant_id=world.merchant_id, member_id=world.ids["cat"], plan_id=1, order_id=2, level_id=gold.id,
                       starts_at=now - dt.timedelta(days=400), ends_at=now - dt.timedelta(days=35)),
        ])
        s.flush()
        silver_id, gold_id = silver.id, gold.id
    assert match(session_factory, world, {"type": "level", "level_ids": [gold_id]}) == {"ann", "bob"}
    assert match(session_factory, world, {"type": "level", "level_ids": [silver_id]}) == set()
    assert match(session_factory, world, {"type": "level", "op": "at_least", "level_ids": [silver_id]}) == {"ann", "bob"}
    assert match(session_factory, world, {"type": "level", "op": "none"}) == {"cat"}
    definition = segments.parse_definition({"type": "level", "level_ids": [gold_id, 987654321]})
    with session_factory() as s, pytest.raises(DomainError) as err:
        segments.check_references(s, world.merchant_id, definition)
    assert [(f.path, f.code) for f in err.value.fields] == [("definition.level.level_ids.1", "segment_unknown_level")]
    with pytest.raises(DomainError):
        segments.parse_definition({"type": "level", "op": "in", "level_ids": []})
