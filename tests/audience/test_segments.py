"""Segment definitions compiled to SQL: every condition type, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import repository as repo
from siyu.audience import segments
from siyu.catalog.models import Category, Product
from siyu.db.session import unit_of_work
from siyu.events.models import Event
from siyu.kit.errors import DomainError
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.orders import models as om
from tests.conftest import Tenant

NOW = utcnow()


def ago(**kw: float) -> dt.datetime:
    return NOW - dt.timedelta(**kw)


class World:
    """Five members with known attributes, purchases and behaviour."""

    def __init__(self, factory: sessionmaker[Session], merchant_id: int) -> None:
        self.merchant_id = merchant_id
        with unit_of_work(factory) as s:
            frames = Category(merchant_id=merchant_id, name="镜架")
            s.add(frames)
            s.flush()
            self.frames = frames.id
            product = Product(merchant_id=merchant_id, category_id=frames.id, title="T201")
            s.add(product)
            s.flush()
            self.product = product.id
            spec = {  # name: (city, gender, registered days ago, last order days ago or None)
                "ann": ("杭州市", "female", 400, 120),
                "bob": ("杭州市", "male", 300, 10),
                "cat": ("上海市", "female", 20, None),
                "dan": ("杭州市", "female", 200, 150),
                "eve": ("北京市", "female", 500, 700),
            }
            self.ids: dict[str, int] = {}
            for name, (city, gender, reg, last) in spec.items():
                m = Member(merchant_id=merchant_id, openid=f"{name}-{uuid.uuid4().hex[:8]}", nickname=name, city=city,
                           gender=gender, registered_at=ago(days=reg))
                s.add(m)
                s.flush()
                self.ids[name] = m.id
                repo.ensure_rows(s, merchant_id, {m.id})
                if last is not None:
                    self._order(s, m.id, ago(days=last), 30000)
                    repo.apply_payment(s, merchant_id, m.id, 30000, ago(days=last), NOW)
            repo.recompute_stages(s, merchant_id, __import__("siyu.audience.schemas", fromlist=["x"]).LifecycleConfig(), NOW)
            # ann viewed frames twice recently, dan once; bob viewed then added to cart
            self._event(s, "ann", "product_view", ago(days=3), {"product_id": self.product, "category_id": self.frames})
            self._event(s, "ann", "product_view", ago(days=5), {"product_id": self.product, "category_id": self.frames})
            self._event(s, "ann", "product_view", ago(days=60), {"product_id": self.product, "category_id": self.frames})
            self._event(s, "dan", "product_view", ago(days=2), {"product_id": self.product, "category_id": self.frames})
            self._event(s, "bob", "product_view", ago(days=4), {"product_id": self.product, "category_id": 999})
            self._event(s, "bob", "add_to_cart", ago(days=4) + dt.timedelta(hours=2), {"product_id": self.product, "sku_id": 1, "quantity": 1})

    def _order(self, s: Session, member_id: int, paid_at: dt.datetime, amount: int) -> None:
        order = om.Order(merchant_id=self.merchant_id, order_no=uuid.uuid4().hex[:20], member_id=member_id, status=om.COMPLETED,
                         idempotency_key=uuid.uuid4().hex, request_hash="x", goods_amount=amount, payable_amount=amount,
                         paid_amount=amount, paid_at=paid_at)
        s.add(order)
        s.flush()
        s.add(om.OrderLine(merchant_id=self.merchant_id, order_id=order.id, product_id=self.product, sku_id=1, title="T201",
                           quantity=1, list_price=amount, sale_price=amount, goods_amount=amount, payable_amount=amount))

    def _event(self, s: Session, who: str, name: str, at: dt.datetime, props: dict[str, Any]) -> None:
        s.add(Event(merchant_id=self.merchant_id, event_id=uuid.uuid4().hex, name=name, member_id=self.ids[who],
                    source="mini_program", occurred_at=at, received_at=at, properties=props))

    def names(self, ids: list[int]) -> set[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return {by_id[i] for i in ids}


@pytest.fixture
def world(session_factory: sessionmaker[Session], tenant: Tenant) -> World:
    return World(session_factory, tenant.id)


def match(factory: sessionmaker[Session], world: World, definition: dict[str, Any]) -> set[str]:
    parsed = segments.parse_definition(definition)
    with factory() as s:
        result = segments.preview(s, world.merchant_id, parsed, sample=100, now=NOW)
    assert result.count == len(result.sample)
    return world.names([r["member_id"] for r in result.sample])


def test_attribute_conditions(session_factory: sessionmaker[Session], world: World) -> None:
    assert match(session_factory, world, {"type": "attribute", "field": "city", "op": "eq", "value": "杭州市"}) == {"ann", "bob", "dan"}
    assert match(session_factory, world, {"type": "attribute", "field": "city", "op": "in", "value": ["上海市", "北京市"]}) == {"cat", "eve"}
    assert match(session_factory, world, {"type": "attribute", "field": "registered_at", "op": "within_last_days", "value": 30}) == {"cat"}
    assert match(session_factory, world, {"type": "attribute", "field": "paid_total", "op": "gte", "value": 30000}) == {"ann", "bob", "dan", "eve"}
    assert match(session_factory, world, {"type": "attribute", "field": "last_order_at", "op": "is_not_set"}) == {"cat"}


def test_stage_and_not(session_factory: sessionmaker[Session], world: World) -> None:
    assert match(session_factory, world, {"type": "stage", "in": ["silent"]}) == {"ann", "dan"}
    assert match(session_factory, world, {"type": "stage", "in": ["never_purchased", "churned"]}) == {"cat", "eve"}
    assert match(session_factory, world, {"type": "not", "node": {"type": "stage", "in": ["silent"]}}) == {"bob", "cat", "eve"}


def test_behavior_counts_in_window_with_property_filters(session_factory: sessionmaker[Session], world: World) -> None:
    frames_twice = {"type": "behavior", "event": "product_view", "op": "gte", "count": 2, "within_days": 30,
                    "where": [{"property": "category_id", "op": "eq", "value": world.frames}]}
    assert match(session_factory, world, frames_twice) == {"ann"}
    once = {**frames_twice, "count": 1}
    assert match(session_factory, world, once) == {"ann", "dan"}
    never = {"type": "behavior", "event": "product_view", "op": "eq", "count": 0, "within_days": 30}
    assert match(session_factory, world, never) == {"cat", "eve"}
    at_most_one = {"type": "behavior", "event": "product_view", "op": "lte", "count": 1, "within_days": 90}
    assert match(session_factory, world, at_most_one) == {"bob", "cat", "dan", "eve"}


def test_the_documents_example_segment(session_factory: sessionmaker[Session], world: World) -> None:
    """Silent members in Hangzhou who viewed frames twice in the last 30 days and did not order."""
    definition = {"type": "and", "nodes": [
        {"type": "stage", "in": ["silent"]},
        {"type": "attribute", "field": "city", "op": "eq", "value": "杭州市"},
        {"type": "behavior", "event": "product_view", "op": "gte", "count": 2, "within_days": 30,
         "where": [{"property": "category_id", "op": "eq", "value": world.frames}]},
        {"type": "not", "node": {"type": "purchase", "within_days": 30}},
    ]}
    assert match(session_factory, world, definition) == {"ann"}


def test_purchase_conditions(session_factory: sessionmaker[Session], world: World) -> None:
    assert match(session_factory, world, {"type": "purchase", "within_days": 30}) == {"bob"}
    assert match(session_factory, world, {"type": "purchase", "within_days": 365, "category_ids": [world.frames]}) == {"ann", "bob", "dan"}
    assert match(session_factory, world, {"type": "purchase", "within_days": 365, "min_amount": 30001}) == set()
    assert match(session_factory, world, {"type": "purchase", "within_days": 1000, "min_orders": 1, "product_ids": [world.product]}) == {"ann", "bob", "dan", "eve"}


def test_sequence_viewed_then_no_cart_within_a_day(session_factory: sessionmaker[Session], world: World) -> None:
    seq = {"type": "sequence", "first": "product_view", "then_not": "add_to_cart", "within_hours": 24, "window_days": 30}
    assert match(session_factory, world, seq) == {"ann", "dan"}


def test_random_bucket_is_stable_and_proportional(session_factory: sessionmaker[Session], world: World) -> None:
    a = match(session_factory, world, {"type": "random_bucket", "percent": 50, "salt": 7})
    assert a == match(session_factory, world, {"type": "random_bucket", "percent": 50, "salt": 7})
    assert match(session_factory, world, {"type": "random_bucket", "percent": 100}) == set(world.ids)
    assert match(session_factory, world, {"type": "random_bucket", "percent": 0}) == set()


@pytest.mark.parametrize(
    ("definition", "path"),
    [
        ({"type": "attribute", "field": "shoe_size", "op": "eq", "value": 1}, "definition.attribute"),
        ({"type": "and", "nodes": [{"type": "stage", "in": ["sleepy"]}]}, "definition.and.nodes.0.stage"),
        ({"type": "behavior", "event": "product_view", "count": 2}, "definition.behavior"),
        ({"type": "teleport"}, "definition"),
    ],
)
def test_invalid_definitions_name_the_bad_node(definition: dict[str, Any], path: str) -> None:
    with pytest.raises(DomainError) as err:
        segments.parse_definition(definition)
    assert err.value.code == "segment_invalid"
    assert any(f.path.startswith(path) for f in err.value.fields), [f.path for f in err.value.fields]


def test_saved_segment_records_entered_and_left(session_factory: sessionmaker[Session], world: World) -> None:
    definition = segments.parse_definition({"type": "stage", "in": ["active"]})
    with unit_of_work(session_factory) as s:
        seg = segments.save_segment(s, world.merchant_id, name="active", description=None, definition=definition)
        seg_id = seg.id
        assert seg.member_count == 1
    with unit_of_work(session_factory) as s:  # cat buys now: enters; bob's order is refunded away below
        repo.apply_payment(s, world.merchant_id, world.ids["cat"], 100, NOW, NOW)
        repo.stats_row(s, world.merchant_id, world.ids["bob"]).last_order_at = ago(days=100)  # type: ignore[union-attr]
        s.flush()
        repo.recompute_stages(s, world.merchant_id, __import__("siyu.audience.schemas", fromlist=["x"]).LifecycleConfig(), NOW)
        result = segments.recompute(s, world.merchant_id, seg_id, now=NOW + dt.timedelta(seconds=1))
    assert (result.entered, result.left, result.members) == (1, 1, 1)
    with unit_of_work(session_factory) as s:
        again = segments.recompute(s, world.merchant_id, seg_id, now=NOW + dt.timedelta(seconds=2))
    assert (again.entered, again.left) == (0, 0)


def test_http_preview_save_export(client: TestClient, tenant: Tenant, world: World) -> None:
    definition = {"type": "attribute", "field": "city", "op": "eq", "value": "杭州市"}
    r = client.post("/api/admin/v1/segments/preview", json={"definition": definition}, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 3
    r = client.post("/api/admin/v1/segments/preview", json={"definition": {"type": "stage", "in": ["x"]}}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["code"] == "segment_invalid" and r.json()["fields"][0]["path"].startswith("definition")
    r = client.post("/api/admin/v1/segments", json={"name": "杭州", "definition": definition}, headers=tenant.admin_headers)
    assert r.status_code == 201 and r.json()["member_count"] == 3
    seg_id = r.json()["id"]
    dup = client.post("/api/admin/v1/segments", json={"name": "杭州", "definition": definition}, headers=tenant.admin_headers)
    assert dup.status_code == 409 and dup.json()["code"] == "segment_name_taken"
    csv_text = client.get(f"/api/admin/v1/segments/{seg_id}/export.csv", headers=tenant.admin_headers).text
    assert csv_text.splitlines()[0].startswith("member_id,nickname") and len(csv_text.splitlines()) == 4


def test_preview_evaluates_the_definition_whole_before_its_limit(
    session_factory: sessionmaker[Session], world: World
) -> None:
    """The matches are a subquery behind OFFSET 0, planned for all their rows (with the sample's
    LIMIT in view PostgreSQL chose a per-member nested loop for "did NOT buy category C":
    minutes at a million members); the count and the sample are unchanged."""
    from sqlalchemy import event

    statements: list[str] = []
    engine = session_factory.kw["bind"]

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    node = {"type": "not", "node": {"type": "stage", "in": ["silent"]}}
    event.listen(engine, "before_cursor_execute", seen)
    try:
        with session_factory() as s:
            result = segments.preview(s, world.merchant_id, segments.parse_definition(node), sample=2, now=utcnow())
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    first = next(st for st in statements if "OVER ()" in st)
    assert "OFFSET" in first.split("ORDER BY")[0], first  # inside the subquery, before the outer ORDER BY
    assert result.count == 3 and len(result.sample) == 2
    assert match(session_factory, world, node) == {"bob", "cat", "eve"}
