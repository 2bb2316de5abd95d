"""Segment conditions on generated data: the EXISTS forms used for "at least once" / "never"
select the same members as the grouped (GROUP BY ... HAVING) forms, and a preview's count and
sample agree with the full member list."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import segments
from siyu.audience.compiler import Compiler
from siyu.demo import generator

NOW = dt.datetime(2026, 11, 1, 4, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def merchant_id(session_factory: sessionmaker[Session]) -> int:
    return generator.generate(
        session_factory, members=400, merchant_code=f"seg-{uuid.uuid4().hex[:8]}", now=NOW, seed=11
    ).merchant_id


def members(factory: sessionmaker[Session], merchant_id: int, definition: dict[str, Any]) -> set[int]:
    parsed = segments.parse_definition(definition)
    with factory() as s:
        return set(s.scalars(Compiler(s, merchant_id, NOW).members(parsed.root)))


def behavior(event: str, op: str, count: int, days: int) -> dict[str, Any]:
    return {"type": "behavior", "event": event, "op": op, "count": count, "within_days": days}


@pytest.mark.parametrize("event,days", [("product_view", 30), ("add_to_cart", 7), ("checkout_start", 90)])
def test_at_least_once_and_never_match_the_grouped_forms(
    session_factory: sessionmaker[Session], merchant_id: int, event: str, days: int
) -> None:
    exists_form = members(session_factory, merchant_id, behavior(event, "gte", 1, days))
    grouped = members(session_factory, merchant_id, {"type": "or", "nodes": [
        behavior(event, "eq", 1, days), behavior(event, "gte", 2, days),
    ]})
    assert exists_form == grouped and exists_form  # generated data has such members
    never = members(session_factory, merchant_id, behavior(event, "eq", 0, days))
    at_most_zero = members(session_factory, merchant_id, behavior(event, "lte", 0, days))
    everyone = members(session_factory, merchant_id, {"type": "attribute", "field": "status", "op": "eq", "value": "active"})
    assert never == at_most_zero == everyone - grouped


@pytest.mark.parametrize("days", [30, 180, 730])
def test_bought_at_least_once_matches_the_grouped_form(
    session_factory: sessionmaker[Session], merchant_id: int, days: int
) -> None:
    exists_form = members(session_factory, merchant_id, {"type": "purchase", "within_days": days})
    # min_amount forces the GROUP BY ... HAVING form; a net paid amount is never negative
    grouped = members(session_factory, merchant_id, {"type": "purchase", "within_days": days, "min_amount": 0})
    assert exists_form == grouped and exists_form


def test_preview_count_and_sample_agree_with_the_member_list(
    session_factory: sessionmaker[Session], merchant_id: int
) -> None:
    definition = {"type": "and", "nodes": [
        {"type": "attribute", "field": "city", "op": "in", "value": ["杭州市", "上海市", "深圳市"]},
        behavior("product_view", "gte", 1, 180),
        {"type": "not", "node": {"type": "purchase", "within_days": 60}},
    ]}
    everyone = members(session_factory, merchant_id, definition)
    with session_factory() as s:
        preview = segments.preview(s, merchant_id, segments.parse_definition(definition), sample=20, now=NOW)
        empty = segments.preview(s, merchant_id, segments.parse_definition(definition), sample=0, now=NOW)
    assert preview.count == len(everyone) == empty.count > 20
    assert [r["member_id"] for r in preview.sample] == sorted(everyone)[:20]
    assert empty.sample == []
