"""Growth for each review: loyalty subscribes to ``review.created`` and rewards the task
``review`` of the merchant's rules (growth within its daily cap) once per review id; the first
review still earns its one-time ``first_review`` bonus too; a hidden review keeps its growth."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from siyu.loyalty import service
from siyu.loyalty.models import GrowthEntry
from siyu.loyalty.schemas import LoyaltyRules
from tests.conftest import Tenant
from tests.factories import aftersales as af
from tests.factories.orders import make_member
from tests.loyalty import helpers as h
from tests.referral.helpers import drain, login

STORE = "/api/store/v1"
ADMIN = "/api/admin/v1"


def _growth(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> list[tuple[str, str | None, int]]:
    with factory() as s:
        rows = s.scalars(select(GrowthEntry).where(GrowthEntry.merchant_id == merchant_id,
                                                   GrowthEntry.member_id == member_id).order_by(GrowthEntry.id))
        return [(g.action, g.ref, g.delta) for g in rows]


def _review_rules(factory: sessionmaker[Session], merchant_id: int, growth: int, cap: int) -> None:
    tasks = LoyaltyRules().model_dump(mode="json")["earn"]["tasks"]
    tasks["review"] = {"points": 0, "growth": growth, "daily_cap": cap}
    h.set_rules(factory, merchant_id, earn={"growth_per_yuan": 0, "points_per_yuan": 0, "tasks": tasks})


def test_every_review_earns_growth_once_and_a_hidden_review_keeps_it(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _review_rules(session_factory, tenant.id, growth=7, cap=3)
    sku_a, sku_b = af.make_product(session_factory, tenant.id, [5000, 6000])
    member_id, alice = login(client, tenant)
    order = af.paid_order(client, tenant, session_factory, alice, [(sku_a, 1), (sku_b, 1)], completed=True)
    ids = []
    for sku in (sku_a, sku_b):
        r = client.post(f"{STORE}/reviews", headers=alice,
                        json={"order_line_id": af.line_id(order, sku), "rating": 5, "content": "很好"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        drain(session_factory, settings, tenant)
    review_rows = [g for g in _growth(session_factory, tenant.id, member_id) if g[0] == "review"]
    assert review_rows == [("review", f"review:{ids[0]}", 7), ("review", f"review:{ids[1]}", 7)]
    first_bonus = [g for g in _growth(session_factory, tenant.id, member_id) if g[0] == "first_review"]
    assert first_bonus == [("first_review", f"review:{ids[0]}", 10)]  # the one-time bonus, on top
    with session_factory() as s:
        total = service.summary(s, tenant.id, member_id).growth

    # the event delivered again (a retried job) earns nothing twice
    with unit_of_work(session_factory) as s:
        out = service.on_review_created(s, tenant.id, member_id, ids[0])
    assert out is not None and (out.rewarded, out.reason) == (False, "duplicate")
    # moderation takes nothing back
    r = client.post(f"{ADMIN}/reviews/{ids[0]}/hide", headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    drain(session_factory, settings, tenant)
    with session_factory() as s:
        assert service.summary(s, tenant.id, member_id).growth == total


def test_reviews_past_the_daily_cap_earn_nothing_until_the_next_local_day(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    _review_rules(session_factory, tenant.id, growth=5, cap=2)
    member = make_member(session_factory, tenant.id)
    day1 = utcnow().replace(hour=4, minute=0, second=0, microsecond=0)  # 12:00 in Shanghai

    def review(review_id: int, at: dt.datetime) -> Any:
        with unit_of_work(session_factory) as s:
            return service.on_review_created(s, tenant.id, member, review_id, at)

    got = [review(i, day1 + dt.timedelta(minutes=i)) for i in (1, 2, 3)]
    assert [(o.rewarded, o.growth, o.reason) for o in got] == [(True, 5, None), (True, 5, None),
                                                              (False, 0, "daily_cap")]
    assert review(2, day1).reason == "duplicate"  # a second delivery of a rewarded review: no slot taken
    assert review(4, day1 + dt.timedelta(days=1)).rewarded is True
    assert [ref for _, ref, _ in _growth(session_factory, tenant.id, member)] == ["review:1", "review:2", "review:4"]


def test_rules_without_the_review_task_reward_nothing(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    tasks = LoyaltyRules().model_dump(mode="json")["earn"]["tasks"]
    del tasks["review"]  # e.g. rules saved before the task existed
    h.set_rules(session_factory, tenant.id, earn={"tasks": tasks})
    member = make_member(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        assert service.on_review_created(s, tenant.id, member, 1) is None
    assert _growth(session_factory, tenant.id, member) == []
