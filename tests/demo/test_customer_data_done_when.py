"""Issue 5's "Done when", in the demo store as ``siyu demo`` seeds it (300 customers, on its own
SQLite file): the operator previews "silent members in Hangzhou who viewed frames twice in the
last 30 days and did not order" and gets exactly the members an independent count from the raw
rows finds, sees the lifecycle and RFM distributions, the prediction fit and each member's
predicted value, and the super users."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from siyu.app import create_app
from siyu.config import Settings
from siyu.db.engine import make_engine
from siyu.db.migrate import upgrade
from siyu.db.session import make_session_factory
from siyu.demo.seed import DEMO_CODE, seed_demo
from siyu.events.models import Event
from siyu.members.models import Member
from siyu.orders.models import PAID_STATUSES, Order

ADMIN = "/api/admin/v1"
SEGMENT = "杭州沉默会员·近30天看镜架≥2次未下单"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str], Any]]:
    folder = Path(tmp_path_factory.mktemp("demo"))
    settings = Settings(database_url=f"sqlite:///{folder / 'siyu.sqlite'}", data_dir=folder, secret_key="demo-test",
                        env="test", redis_url="")
    engine = make_engine(settings.database_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    seed_demo(factory, settings)
    with TestClient(create_app(settings)) as client:
        r = client.post(f"{ADMIN}/auth/login",
                        json={"merchant": DEMO_CODE, "username": "operator", "password": "demo-operator-123"})
        assert r.status_code == 200, r.text
        yield client, {"Authorization": f"Bearer {r.json()['token']}"}, factory
    engine.dispose()


def _expected_members(factory: Any, frames_category_id: int, now: dt.datetime) -> set[int]:
    """The example segment counted from the raw rows in Python (not through the compiler): city,
    days since the last paid order in the silent band (91-180 by default), two or more views of
    a frame in 30 days, no paid order in 30 days."""
    with factory() as s:
        members = {m.id: m.city for m in s.scalars(select(Member))}
        last_paid: dict[int, dt.datetime] = {}
        for member_id, paid_at in s.execute(select(Order.member_id, Order.paid_at)
                                            .where(Order.status.in_(PAID_STATUSES), Order.paid_at.is_not(None))):
            last_paid[member_id] = max(paid_at, last_paid.get(member_id, paid_at))
        views = Counter(
            e.member_id for e in s.scalars(select(Event).where(Event.name == "product_view"))
            if e.occurred_at >= now - dt.timedelta(days=30) and e.properties.get("category_id") == frames_category_id
        )
    return {
        mid for mid, city in members.items()
        if city == "杭州市" and mid in last_paid
        and dt.timedelta(days=90) < now - last_paid[mid] <= dt.timedelta(days=180)
        and views[mid] >= 2
    }


def test_the_operator_previews_the_example_segment_and_it_matches_an_independent_count(
    demo: tuple[TestClient, dict[str, str], Any],
) -> None:
    client, operator, factory = demo
    saved = {s["name"]: s for s in client.get(f"{ADMIN}/segments", headers=operator).json()}
    segment = saved[SEGMENT]
    frames = next(n["where"][0]["value"] for n in segment["definition"]["nodes"] if n["type"] == "behavior")
    r = client.post(f"{ADMIN}/segments/preview", json={"definition": segment["definition"]}, headers=operator)
    assert r.status_code == 200, r.text
    expected = _expected_members(factory, frames, dt.datetime.now(dt.UTC))
    assert len(expected) >= 1  # the demo's browsing gives the example members to find
    assert r.json()["count"] == len(expected) == segment["member_count"]
    assert {row["member_id"] for row in r.json()["sample"]} == expected


def test_the_operator_sees_lifecycle_rfm_predictions_each_members_value_and_super_users(
    demo: tuple[TestClient, dict[str, str], Any],
) -> None:
    client, operator, factory = demo
    stages = client.get(f"{ADMIN}/audience/lifecycle", headers=operator).json()
    assert sum(s["members"] for s in stages) == 300
    with factory() as s:
        buyers = len(set(s.scalars(select(Order.member_id).where(Order.status.in_(PAID_STATUSES)))))
    assert 300 - next(s["members"] for s in stages if s["stage"] == "never_purchased") == buyers

    tiers = client.get(f"{ADMIN}/audience/rfm", headers=operator).json()
    assert len(tiers) == 8 and sum(t["members"] for t in tiers) == buyers  # every buyer scored

    predictions = client.get(f"{ADMIN}/audience/predictions", headers=operator).json()
    assert predictions["model"]["status"] == "fitted", predictions["model"]
    assert predictions["members_predicted"] == buyers and predictions["predicted_clv_total"] > 0
    member_id = client.get(f"{ADMIN}/audience/super-users", params={"limit": 1}, headers=operator).json()["items"][0][
        "member_id"]
    stats = client.get(f"{ADMIN}/members/{member_id}/stats", headers=operator).json()
    assert 0 <= stats["p_alive"] <= 1 and stats["predicted_clv"] >= 0 and stats["clv_percentile"] is not None

    supers = client.get(f"{ADMIN}/audience/super-users", headers=operator).json()
    assert supers["top_percent"] == 5.0 and 1 <= supers["total"] <= round(buyers * 0.05) + 1
    assert all(u["super_score"] >= 95.0 for u in supers["items"])
