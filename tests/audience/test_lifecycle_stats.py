"""Member statistics from order events and behaviour, lifecycle stages at their exact boundaries."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import repository as repo
from siyu.audience import service
from siyu.audience.schemas import LifecycleConfig
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.events import service as events_service
from siyu.kit.events import emit
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.worker.runner import Worker
from tests.conftest import Tenant

NOW = dt.datetime(2026, 11, 23, 4, 0, tzinfo=dt.UTC)


def make_members(factory: sessionmaker[Session], merchant_id: int, n: int) -> list[int]:
    with unit_of_work(factory) as s:
        members = [Member(merchant_id=merchant_id, openid=f"o-{uuid.uuid4().hex[:12]}") for _ in range(n)]
        s.add_all(members)
        s.flush()
        return [m.id for m in members]


def stage_of(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> str:
    with factory() as s:
        row = repo.stats_row(s, merchant_id, member_id)
        assert row is not None
        return row.lifecycle_stage


@pytest.mark.parametrize(
    ("days_ago", "stage"),
    [(0, "active"), (90, "active"), (91, "silent"), (180, "silent"), (181, "sleeping"), (270, "sleeping"),
     (271, "pre_churn"), (365, "pre_churn"), (366, "churned"), (None, "never_purchased")],
)
def test_stage_boundaries(session_factory: sessionmaker[Session], tenant: Tenant, days_ago: int | None, stage: str) -> None:
    (member_id,) = make_members(session_factory, tenant.id, 1)
    with unit_of_work(session_factory) as s:
        repo.ensure_rows(s, tenant.id, {member_id})
        if days_ago is not None:
            repo.apply_payment(s, tenant.id, member_id, 1000, NOW - dt.timedelta(days=days_ago), NOW)
        service.recompute_lifecycle(s, tenant.id, now=NOW)
    assert stage_of(session_factory, tenant.id, member_id) == stage


def test_thresholds_are_per_merchant(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    (member_id,) = make_members(session_factory, tenant.id, 1)
    with unit_of_work(session_factory) as s:
        service.set_lifecycle_config(s, tenant.id, LifecycleConfig(active_days=30, silent_days=60, sleeping_days=90, pre_churn_days=120))
        repo.ensure_rows(s, tenant.id, {member_id})
        repo.apply_payment(s, tenant.id, member_id, 1000, NOW - dt.timedelta(days=45), NOW)
        service.recompute_lifecycle(s, tenant.id, now=NOW)
    assert stage_of(session_factory, tenant.id, member_id) == "silent"
    with pytest.raises(ValueError):
        LifecycleConfig(active_days=100, silent_days=90)


def test_payment_event_updates_stats_and_stage_at_once(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    (member_id,) = make_members(session_factory, tenant.id, 1)
    with unit_of_work(session_factory) as s:
        repo.ensure_rows(s, tenant.id, {member_id})
        repo.apply_payment(s, tenant.id, member_id, 5000, utcnow() - dt.timedelta(days=200), utcnow())
        service.recompute_lifecycle(s, tenant.id)
    assert stage_of(session_factory, tenant.id, member_id) == "sleeping"
    with unit_of_work(session_factory) as s:
        emit(s, tenant.id, "order.paid", {"order_id": 1, "member_id": member_id, "paid_amount": 7000,
                                           "paid_at": utcnow().isoformat()}, key="order:1")
    Worker(session_factory, settings, merchant_id=tenant.id).drain()
    with session_factory() as s:
        row = repo.stats_row(s, tenant.id, member_id)
        assert row is not None
        assert (row.paid_orders, row.paid_total, row.aov) == (2, 12000, 6000)
        assert row.second_order_at is not None and row.lifecycle_stage == "active"
        history = [(t.from_stage, t.to_stage) for t in repo.transitions_for(s, tenant.id, member_id)]
    assert history[-1] == ("sleeping", "active")


def test_refunds_reduce_spend(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    (member_id,) = make_members(session_factory, tenant.id, 1)
    with unit_of_work(session_factory) as s:
        service.record_payment(s, tenant.id, member_id, 10000, NOW)
        service.record_refund(s, tenant.id, member_id, 4000, full=False)
        service.record_refund(s, tenant.id, member_id, 6000, full=True)
    with session_factory() as s:
        row = repo.stats_row(s, tenant.id, member_id)
        assert row is not None and (row.paid_total, row.refunded_total, row.paid_orders) == (0, 10000, 0)


def test_behaviour_events_update_activity_counters(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    (member_id,) = make_members(session_factory, tenant.id, 1)
    now = utcnow()
    batch = [
        {"event_id": uuid.uuid4().hex, "name": n, "timestamp": (now - dt.timedelta(minutes=i)).isoformat(), "properties": p}
        for i, (n, p) in enumerate(
            [("product_view", {"product_id": 1}), ("product_view", {"product_id": 2}),
             ("add_to_cart", {"product_id": 1, "sku_id": 3, "quantity": 1}), ("favorite", {"product_id": 1})]
        )
    ]
    with unit_of_work(session_factory) as s:
        events_service.ingest(s, events_service.Caller(tenant.id, member_id), batch, now=now)
    # a batch's counters are added by one worker job, after the request
    assert Worker(session_factory, settings, merchant_id=tenant.id).drain() == 1
    with session_factory() as s:
        row = repo.stats_row(s, tenant.id, member_id)
        assert row is not None
        assert (row.product_views, row.cart_adds, row.favorites) == (2, 1, 1)
        assert row.last_visit_at is not None and abs((row.last_visit_at - now).total_seconds()) < 1


def test_recompute_backfills_members_without_stats(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    make_members(session_factory, tenant.id, 3)
    with unit_of_work(session_factory) as s:
        service.recompute_lifecycle(s, tenant.id, now=NOW)
        dist = {c.stage: c.members for c in service.stage_distribution(s, tenant.id)}
    assert dist["never_purchased"] == 3 and sum(dist.values()) == 3
