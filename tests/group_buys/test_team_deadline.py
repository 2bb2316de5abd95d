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
    leader_order, team_id = h.lead(client, session_factory, settings, tenant.id, (leader, leader_h), sku, gb)
    friend_order = h.submit(session_factory, tenant.id, friend, sku, gb, team_id)
    h.pay(client, friend_order, friend_h)
    h.drain(session_factory, settings, tenant.id)

    team = h.team(session_factory, team_id)
    assert team.expires_at == ends_at and team.status == "open" and team.paid_count == 2
    # one job at the leader's payment deadline (the team was not open yet), one at the team's deadline
    pay_by = f.order(session_factory, tenant.id, leader_order).pay_deadline
    jobs = f.jobs(session_factory, tenant.id, "group_buys.expire_team", team_id=team_id)
    assert sorted(j.run_at for j in jobs) == [pay_by, ends_at]

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
    order_id, team_id = h.lead(client, session_factory, settings, tenant.id, (leader, leader_h), sku, gb)
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


def test_validity_counts_from_the_leaders_payment_not_from_the_order(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """A leader who pays 20 minutes after opening gets the full validity from the payment."""
    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2, valid_hours=2)
    opened_at = utcnow()
    order_id = h.submit(session_factory, tenant.id, f.paying_customer(session_factory, tenant.id)[0], sku, gb,
                        now=opened_at)
    team_id = h.team_of(session_factory, tenant.id, order_id).id
    pay_by = f.order(session_factory, tenant.id, order_id).pay_deadline
    assert (h.team(session_factory, team_id).status, h.team(session_factory, team_id).expires_at) == ("pending", pay_by)
    paid_at = opened_at + dt.timedelta(minutes=20)
    h.mark_paid(session_factory, tenant.id, order_id, now=paid_at)
    team = h.team(session_factory, team_id)
    assert (team.status, team.paid_count, team.expires_at) == ("open", 1, paid_at + dt.timedelta(hours=2))
    assert team.expires_at in {j.run_at for j in f.jobs(session_factory, tenant.id, "group_buys.expire_team",
                                                          team_id=team_id)}


def test_an_unpaid_leader_at_the_payment_deadline_cancels_the_team_it_never_opened(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2)
    leader = f.paying_customer(session_factory, tenant.id)[0]
    order_id = h.submit(session_factory, tenant.id, leader, sku, gb)
    team_id = h.team_of(session_factory, tenant.id, order_id).id
    pay_by = h.team(session_factory, team_id).expires_at
    h.drain(session_factory, settings, tenant.id, now=pay_by - dt.timedelta(seconds=1))
    assert h.team(session_factory, team_id).status == "pending"
    h.drain(session_factory, settings, tenant.id, now=pay_by + dt.timedelta(seconds=1))
    team = h.team(session_factory, team_id)
    assert (team.status, team.filled, team.paid_count, team.failed_at) == ("cancelled", 0, 0, None)
    assert f.order(session_factory, tenant.id, order_id).status == "cancelled"
    assert [s.status for s in h.seats(session_factory, tenant.id, team_id)] == ["released"]
    assert f.refunds(session_factory, tenant.id) == []
    # the leader's unit is back in their limit: they can open again
    again = h.submit(session_factory, tenant.id, leader, sku, gb, now=pay_by + dt.timedelta(seconds=2))
    assert h.team_of(session_factory, tenant.id, again).status == "pending"


def test_a_paid_leader_whose_payment_job_is_late_opens_the_team_at_the_pending_deadline(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """The deadline job of a pending team finds the leader's order paid (its order.paid job not run
    yet): it opens the team, validity from the payment, instead of cancelling anything."""
    from siyu.db.session import unit_of_work
    from siyu.group_buys.service import expire_team, on_order_paid
    from siyu.orders import service as orders_service
    from siyu.orders.models import Order

    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2, valid_hours=3)
    order_id = h.submit(session_factory, tenant.id, f.paying_customer(session_factory, tenant.id)[0], sku, gb)
    team_id = h.team_of(session_factory, tenant.id, order_id).id
    pay_by = h.team(session_factory, team_id).expires_at
    paid_at = pay_by - dt.timedelta(seconds=5)
    with unit_of_work(session_factory) as s:
        order = s.get(Order, order_id)
        assert order is not None
        orders_service.mark_paid(s, tenant.id, order_id, amount=order.payable_amount, paid_at=paid_at,
                                 actor=("system", None))
    with unit_of_work(session_factory) as s:
        assert expire_team(s, tenant.id, team_id, pay_by + dt.timedelta(seconds=1)) == "open"
    team = h.team(session_factory, team_id)
    assert (team.status, team.paid_count, team.expires_at) == ("open", 1, paid_at + dt.timedelta(hours=3))
    with unit_of_work(session_factory) as s:  # the late order.paid job: nothing left to do
        on_order_paid(s, tenant.id, order_id, now=pay_by + dt.timedelta(seconds=2))
    assert h.team(session_factory, team_id).paid_count == 1
    assert f.order(session_factory, tenant.id, order_id).status == "paid"
