"""A team's deadline never outlives its activity: a team opened near the end expires at the
activity's end, and the timeout flow refunds its paid members through the provider."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.group_buys.models import GroupBuy
from siyu.group_buys.service import team_deadline
from siyu.kit.timeutil import utcnow
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import make_sku
from tests.group_buys import helpers as h


def _ends_at(factory: sessionmaker[Session], group_buy_id: int) -> dt.datetime:
    with factory() as s:
        gb = s.get(GroupBuy, group_buy_id)
        assert gb is not None
        return gb.ends_at


def test_team_deadline_is_the_validity_or_the_activity_end_whichever_is_first() -> None:
    opened = dt.datetime(2026, 5, 1, 10, 0, tzinfo=dt.UTC)
    far_end = opened + dt.timedelta(days=3)
    near_end = opened + dt.timedelta(hours=2)
    assert team_deadline(opened, 24, far_end) == opened + dt.timedelta(hours=24)
    assert team_deadline(opened, 24, near_end) == near_end
    assert team_deadline(opened, 24, near_end.isoformat()) == near_end  # as carried in the reservation


def test_team_opened_near_the_end_expires_at_the_end_and_refunds_its_members(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    # Started an hour ago, ends in an hour; a team is valid 24 hours.
    gb = h.make_group_buy(
        session_factory, tenant.id, sku, team_size=3, valid_hours=24, lasts=dt.timedelta(hours=2)
    )
    ends_at = _ends_at(session_factory, gb)
    assert ends_at < utcnow() + dt.timedelta(hours=24)
    (leader, leader_h), (friend, friend_h) = (f.paying_customer(session_factory, tenant.id) for _ in range(2))
    leader_order = h.submit(session_factory, tenant.id, leader, sku, gb)
    team_id = h.team_of(session_factory, tenant.id, leader_order).id
    friend_order = h.submit(session_factory, tenant.id, friend, sku, gb, team_id)
    h.pay(client, leader_order, leader_h)
    h.pay(client, friend_order, friend_h)
    h.drain(session_factory, settings, tenant.id)

    team = h.team(session_factory, team_id)
    assert team.expires_at == ends_at and team.status == "open" and team.paid_count == 2
    (job,) = f.jobs(session_factory, tenant.id, "group_buys.expire_team", team_id=team_id)
    assert job.run_at == ends_at

    h.drain(session_factory, settings, tenant.id, now=ends_at + dt.timedelta(seconds=1))
    team = h.team(session_factory, team_id)
    assert team.status == "failed"
    for order_id in (leader_order, friend_order):
        order = f.order(session_factory, tenant.id, order_id)
        (refund,) = f.refunds(session_factory, tenant.id, order_id)
        assert refund.status == "succeeded" and refund.amount == order.paid_amount == order.refunded_amount > 0
    assert sorted(s.status for s in h.seats(session_factory, tenant.id, team_id)) == ["refunded", "refunded"]


def test_an_earlier_activity_end_brings_open_teams_deadlines_to_it(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2, valid_hours=24)
    leader, leader_h = f.paying_customer(session_factory, tenant.id)
    order_id = h.submit(session_factory, tenant.id, leader, sku, gb)
    h.pay(client, order_id, leader_h)
    h.drain(session_factory, settings, tenant.id)
    team_id = h.team_of(session_factory, tenant.id, order_id).id
    assert h.team(session_factory, team_id).expires_at > utcnow() + dt.timedelta(hours=23)

    new_end = utcnow() + dt.timedelta(hours=1)
    r = client.patch(f"/api/admin/v1/group-buys/{gb}", json={"ends_at": new_end.isoformat()},
                     headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    ends_at = _ends_at(session_factory, gb)
    assert h.team(session_factory, team_id).expires_at == ends_at
    assert ends_at in {j.run_at for j in f.jobs(session_factory, tenant.id, "group_buys.expire_team", team_id=team_id)}

    h.drain(session_factory, settings, tenant.id, now=ends_at + dt.timedelta(seconds=1))
    assert h.team(session_factory, team_id).status == "failed"
    (refund,) = f.refunds(session_factory, tenant.id, order_id)
    assert refund.status == "succeeded" and refund.amount == f.order(session_factory, tenant.id, order_id).paid_amount
