"""Group buys end to end: open, join, pay, succeed and ship; time out and refund every paid
member through the sandbox provider; virtual success; each refusal with its own code and no change."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.group_buys.service import expire_team, mask_nickname
from siyu.kit.errors import DomainError
from siyu.kit.events import subscribe
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.orders import service as orders_service
from siyu.orders.models import Order
from siyu.worker.registry import JobContext
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import make_sku, sku_stock
from tests.group_buys import helpers as h

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"


@subscribe("group_buy.succeeded", "test.group_buys.succeeded")
def _on_succeeded(ctx: JobContext) -> None:
    pass


@subscribe("group_buy.failed", "test.group_buys.failed")
def _on_failed(ctx: JobContext) -> None:
    pass


@subscribe("group_buy.team_opened", "test.group_buys.team_opened")
def _on_opened(ctx: JobContext) -> None:
    pass


def _order_count(factory: sessionmaker[Session], merchant_id: int) -> int:
    return f.count(factory, Order, merchant_id)


def test_open_join_pay_succeed_then_ship(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    r = client.post(
        f"{ADMIN}/group-buys",
        json={"name": "双人团", "sku_id": sku, "team_size": 2, "group_price": 6000, "leader_price": 5500,
              "free_shipping": True, "starts_at": (utcnow() - dt.timedelta(hours=1)).isoformat(),
              "ends_at": (utcnow() + dt.timedelta(days=3)).isoformat()},
        headers=tenant.admin_headers,
    )
    assert r.status_code == 201, r.text
    gb = r.json()
    assert gb["effective_status"] == "active" and gb["teams_open"] == 0
    _leader, leader_h = f.paying_customer(session_factory, tenant.id)
    _friend, friend_h = f.paying_customer(session_factory, tenant.id)

    r = client.post(f"{STORE}/group-buys/{gb['id']}/teams", json={}, headers={**leader_h, "Idempotency-Key": "open-1"})
    assert r.status_code == 201, r.text
    leader_order = r.json()
    assert leader_order["payable_amount"] == 5500  # leader price, shipped free
    assert leader_order["lines"][0]["discount_amount"] == 10000 - 5500
    team_id = h.team_of(session_factory, tenant.id, leader_order["id"]).id
    # Not open (开团) before the leader pays: listed nowhere, the share page says so, a join is refused.
    h.drain(session_factory, settings, tenant.id)
    assert h.team(session_factory, team_id).status == "pending"
    assert f.jobs(session_factory, tenant.id, "test.group_buys.team_opened", team_id=team_id) == []
    detail = client.get(f"{STORE}/group-buys/{gb['id']}", headers=tenant.store_headers).json()
    assert detail["open_teams"] == []
    page = client.get(f"{STORE}/group-buys/teams/{team_id}", headers=tenant.store_headers)
    assert page.status_code == 200, page.text
    assert (page.json()["status"], page.json()["remaining_seats"], page.json()["seats"]) == ("pending", 0, [])
    r = client.post(f"{STORE}/group-buys/teams/{team_id}/join", json={}, headers={**friend_h, "Idempotency-Key": "j-0"})
    assert r.status_code == 409 and r.json()["code"] == "group_team_not_open", r.text
    assert "团长" in r.json()["message"] or "leader" in r.json()["message"]
    assert h.team(session_factory, team_id).filled == 1 and sku_stock(session_factory, sku) == 9
    assert _order_count(session_factory, tenant.id) == 1

    h.pay(client, leader_order["id"], leader_h)
    h.drain(session_factory, settings, tenant.id)
    # The leader's payment opens the team; its validity (24 h) counts from the payment.
    team = h.team(session_factory, team_id)
    paid_at = f.order(session_factory, tenant.id, leader_order["id"]).paid_at
    assert paid_at is not None
    assert (team.status, team.paid_count, team.expires_at) == ("open", 1, paid_at + dt.timedelta(hours=24))
    (opened,) = f.jobs(session_factory, tenant.id, "test.group_buys.team_opened", team_id=team_id)
    assert opened.payload["order_id"] == leader_order["id"]
    detail = client.get(f"{STORE}/group-buys/{gb['id']}", headers=tenant.store_headers).json()
    assert [t["team_id"] for t in detail["open_teams"]] == [team_id] and detail["open_teams"][0]["remaining_seats"] == 1
    # One seat paid: not a success yet, and the paid order cannot ship.
    r = client.post(f"{ADMIN}/orders/{leader_order['id']}/ship", json={"carrier": "SF", "tracking_no": "SF1"},
                    headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "group_buy_not_succeeded"
    assert f.order(session_factory, tenant.id, leader_order["id"]).status == "paid"

    r = client.post(f"{STORE}/group-buys/teams/{team_id}/join", json={}, headers={**friend_h, "Idempotency-Key": "j-1"})
    assert r.status_code == 201, r.text
    friend_order = r.json()
    assert friend_order["payable_amount"] == 6000
    assert h.team(session_factory, team_id).filled == 2
    assert sku_stock(session_factory, sku) == 8

    h.pay(client, friend_order["id"], friend_h)
    h.drain(session_factory, settings, tenant.id)
    team = h.team(session_factory, team_id)
    assert team.status == "success" and team.paid_count == 2 and not team.virtual
    (job,) = f.jobs(session_factory, tenant.id, "test.group_buys.succeeded", team_id=team_id)
    assert sorted(job.payload["order_ids"]) == sorted([leader_order["id"], friend_order["id"]])
    r = client.post(f"{ADMIN}/orders/{leader_order['id']}/ship", json={"carrier": "SF", "tracking_no": "SF1"},
                    headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "shipped"

    teams = client.get(f"{ADMIN}/group-buys/{gb['id']}/teams?status=success", headers=tenant.admin_headers).json()
    assert teams["total"] == 1 and [s["status"] for s in teams["items"][0]["seats"]] == ["paid", "paid"]
    # A success schedules no refund: the deadline job finds nothing to do.
    h.drain(session_factory, settings, tenant.id, now=team.expires_at + dt.timedelta(seconds=1))
    assert h.team(session_factory, team_id).status == "success" and f.refunds(session_factory, tenant.id) == []


def test_timed_out_team_refunds_every_paid_member_in_full(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=4, valid_hours=2)
    people = [f.paying_customer(session_factory, tenant.id) for _ in range(3)]
    leader_order, team_id = h.lead(client, session_factory, settings, tenant.id, people[0], sku, gb)
    second = h.submit(session_factory, tenant.id, people[1][0], sku, gb, team_id)
    unpaid = h.submit(session_factory, tenant.id, people[2][0], sku, gb, team_id)
    h.pay(client, second, people[1][1])
    h.drain(session_factory, settings, tenant.id)
    assert h.team(session_factory, team_id).paid_count == 2 and sku_stock(session_factory, sku) == 7

    deadline = h.team(session_factory, team_id).expires_at
    h.drain(session_factory, settings, tenant.id, now=deadline + dt.timedelta(seconds=1))

    team = h.team(session_factory, team_id)
    assert team.status == "failed" and team.failed_at is not None
    for order_id in (leader_order, second):
        order = f.order(session_factory, tenant.id, order_id)
        (refund,) = f.refunds(session_factory, tenant.id, order_id)
        assert refund.status == "succeeded" and refund.requested_by_type == "system"
        assert refund.amount == order.paid_amount == order.refunded_amount > 0
        assert order.status == "closed" and order.refund_status == "full"
    assert f.order(session_factory, tenant.id, unpaid).status == "cancelled"
    assert f.refunds(session_factory, tenant.id, unpaid) == []
    assert sorted(s.status for s in h.seats(session_factory, tenant.id, team_id)) == ["refunded", "refunded", "released"]
    (job,) = f.jobs(session_factory, tenant.id, "test.group_buys.failed", team_id=team_id)
    assert sorted(job.payload["refunded_order_ids"]) == sorted([leader_order, second])
    assert sku_stock(session_factory, sku) == 10  # every unit back: none shipped

    # Running everything again refunds nothing twice.
    h.drain(session_factory, settings, tenant.id, now=deadline + dt.timedelta(hours=1))
    assert len(f.refunds(session_factory, tenant.id)) == 2


def test_virtual_success_with_k_of_n_paid(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=3, virtual_min_paid=2)
    a, b = (f.paying_customer(session_factory, tenant.id) for _ in range(2))
    first, team_id = h.lead(client, session_factory, settings, tenant.id, a, sku, gb)
    second = h.submit(session_factory, tenant.id, b[0], sku, gb, team_id)
    h.pay(client, second, b[1])
    h.drain(session_factory, settings, tenant.id)
    assert h.team(session_factory, team_id).status == "open"
    h.drain(session_factory, settings, tenant.id, now=h.team(session_factory, team_id).expires_at + dt.timedelta(seconds=1))
    team = h.team(session_factory, team_id)
    assert team.status == "success" and team.virtual and team.paid_count == 2
    assert f.refunds(session_factory, tenant.id) == []
    with unit_of_work(session_factory) as s:
        assert orders_service.ship(s, tenant.id, first, carrier="SF", tracking_no="1", actor=("system", None)).status == "shipped"


def _refused(fn: object) -> str:
    try:
        fn()  # type: ignore[operator]
    except DomainError as exc:
        return exc.code
    raise AssertionError("expected a refusal")


def test_each_refusal_has_its_code_and_changes_nothing(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=20)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2, valid_hours=1)
    leader = f.paying_customer(session_factory, tenant.id)[0]
    friend = f.paying_customer(session_factory, tenant.id)[0]
    third = f.paying_customer(session_factory, tenant.id)[0]
    leader_order = h.submit(session_factory, tenant.id, leader, sku, gb)
    team = h.team_of(session_factory, tenant.id, leader_order)

    def state() -> tuple[int, int, int]:
        return _order_count(session_factory, tenant.id), h.team(session_factory, team.id).filled, sku_stock(session_factory, sku)

    before = state()
    # a team whose leader has not paid is not open yet
    assert _refused(lambda: h.submit(session_factory, tenant.id, friend, sku, gb, team.id)) == "group_team_not_open"
    assert state() == before and h.team(session_factory, team.id).status == "pending"
    h.mark_paid(session_factory, tenant.id, leader_order)
    team = h.team(session_factory, team.id)
    assert team.status == "open"
    before = state()
    # joining own team
    assert _refused(lambda: h.submit(session_factory, tenant.id, leader, sku, gb, team.id)) == "group_team_already_joined"
    # past the per-member limit (1 unit): a second team, or 2 units at once
    assert _refused(lambda: h.submit(session_factory, tenant.id, leader, sku, gb)) == "group_buy_limit_reached"
    assert _refused(lambda: h.submit(session_factory, tenant.id, third, sku, gb, quantity=2)) == "group_buy_limit_reached"
    # an expired team (the activity still runs)
    late = team.expires_at + dt.timedelta(minutes=1)
    assert _refused(lambda: h.submit(session_factory, tenant.id, friend, sku, gb, team.id, now=late)) == "group_team_expired"
    assert state() == before
    # a full team
    h.submit(session_factory, tenant.id, friend, sku, gb, team.id)
    before = state()
    assert _refused(lambda: h.submit(session_factory, tenant.id, third, sku, gb, team.id)) == "group_team_full"
    # activity not started / ended
    later = h.make_group_buy(session_factory, tenant.id, sku, starts_in=dt.timedelta(hours=2))
    over = h.make_group_buy(session_factory, tenant.id, sku, starts_in=dt.timedelta(days=-3), lasts=dt.timedelta(days=1))
    assert _refused(lambda: h.submit(session_factory, tenant.id, third, sku, later)) == "group_buy_not_started"
    assert _refused(lambda: h.submit(session_factory, tenant.id, third, sku, over)) == "group_buy_ended"
    # a team of another activity, an unknown activity
    assert _refused(lambda: h.submit(session_factory, tenant.id, third, sku, later, team.id)) == "group_buy_not_started"
    assert _refused(lambda: h.submit(session_factory, tenant.id, third, sku, 999_999_999)) == "not_found"
    assert state() == before


def test_cancelled_order_gives_the_seat_back(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=5)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2)
    leader = f.paying_customer(session_factory, tenant.id)[0]
    friend = f.paying_customer(session_factory, tenant.id)[0]
    _, team_id = h.lead_marked_paid(session_factory, tenant.id, leader, sku, gb)
    team = h.team(session_factory, team_id)
    joined = h.submit(session_factory, tenant.id, friend, sku, gb, team.id)
    assert h.team(session_factory, team.id).filled == 2 and sku_stock(session_factory, sku) == 3
    with unit_of_work(session_factory) as s:
        orders_service.cancel(s, tenant.id, joined, reason="changed mind", actor=("customer", friend))
    h.drain(session_factory, settings, tenant.id)
    assert h.team(session_factory, team.id).filled == 1 and sku_stock(session_factory, sku) == 4
    # The same member may come back: the seat and the limit were given back.
    again = h.submit(session_factory, tenant.id, friend, sku, gb, team.id)
    assert h.team(session_factory, team.id).filled == 2 and again != joined


def test_share_page_masks_nicknames_and_unknown_ids_are_404(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=3)
    leader = f.paying_customer(session_factory, tenant.id)[0]
    with unit_of_work(session_factory) as s:
        member = s.get(Member, leader)
        assert member is not None
        member.nickname = "王小明"
    _, team_id = h.lead_marked_paid(session_factory, tenant.id, leader, sku, gb)
    team = h.team(session_factory, team_id)
    page = client.get(f"{STORE}/group-buys/teams/{team.id}", headers=tenant.store_headers).json()
    assert page["remaining_seats"] == 2 and page["status"] == "open"
    assert page["seats"] == [{"seat_no": 1, "nickname": "王**明", "avatar_url": None, "is_leader": True, "paid": True}]
    r = client.get(f"{STORE}/group-buys/teams/{team.id + 10_000_000}", headers=tenant.store_headers)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.get(f"{ADMIN}/group-buys/teams/{team.id + 10_000_000}", headers=tenant.admin_headers)
    assert r.status_code == 404 and r.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("nickname", "masked"), [("王小明", "王**明"), ("张三", "张*"), ("A", "A*"), (None, "微信用户"), ("  ", "微信用户")]
)
def test_mask_nickname(nickname: str | None, masked: str) -> None:
    assert mask_nickname(nickname) == masked


def test_leader_cancelling_unpaid_cancels_the_team_it_never_opened(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=5)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2)
    _leader, headers = f.paying_customer(session_factory, tenant.id)
    url = f"{STORE}/group-buys/{gb}/teams"
    first = client.post(url, json={}, headers={**headers, "Idempotency-Key": "open"})
    replay = client.post(url, json={}, headers={**headers, "Idempotency-Key": "open"})
    assert first.status_code == 201 and replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    team_id = h.team_of(session_factory, tenant.id, first.json()["id"]).id
    r = client.post(f"{STORE}/orders/{first.json()['id']}/cancel", headers=headers)
    assert r.status_code == 200, r.text
    h.drain(session_factory, settings, tenant.id)
    team = h.team(session_factory, team_id)
    assert team.status == "cancelled" and team.filled == 0 and sku_stock(session_factory, sku) == 5
    # it never opened: no failure, no opening, nothing refunded
    assert f.jobs(session_factory, tenant.id, "test.group_buys.failed", team_id=team_id) == []
    assert f.jobs(session_factory, tenant.id, "test.group_buys.team_opened", team_id=team_id) == []
    assert f.refunds(session_factory, tenant.id) == []
    r = client.get(f"{STORE}/group-buys/teams/{team_id}", headers=tenant.store_headers)
    assert (r.json()["status"], r.json()["remaining_seats"], r.json()["seats"]) == ("cancelled", 0, [])
    stats = client.get(f"{ADMIN}/group-buys/{gb}/stats", headers=tenant.admin_headers).json()
    assert (stats["teams_opened"], stats["teams_pending"], stats["teams_cancelled"]) == (0, 0, 1)
    # the member's unit went back: they may open again
    assert h.submit(session_factory, tenant.id, _leader, sku, gb) != first.json()["id"]


def test_payment_landing_after_the_unopened_team_was_cancelled_is_refunded_automatically(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=5)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2, valid_hours=1)
    leader, headers = f.paying_customer(session_factory, tenant.id)
    order_id = h.submit(session_factory, tenant.id, leader, sku, gb)
    team_id = h.team_of(session_factory, tenant.id, order_id).id
    r = client.post(h.PAY.format(order_id), headers=headers)  # the customer opened the payment sheet...
    assert r.status_code == 200, r.text
    complete_url = r.json()["params"]["complete_url"]
    deadline = h.team(session_factory, team_id).expires_at
    assert deadline == f.order(session_factory, tenant.id, order_id).pay_deadline  # unpaid: the leader's pay-by
    with unit_of_work(session_factory) as s:  # the deadline job alone, before the payment is closed
        assert expire_team(s, tenant.id, team_id, deadline + dt.timedelta(seconds=1)) == "cancelled"
    assert f.order(session_factory, tenant.id, order_id).status == "cancelled"
    assert h.team(session_factory, team_id).status == "cancelled"
    # ...and pays after the team failed: the money goes back through the provider.
    assert client.post(complete_url, headers=headers).status_code == 200
    h.drain(session_factory, settings, tenant.id, now=deadline + dt.timedelta(seconds=2))
    (payment,) = f.payments(session_factory, tenant.id, order_id)
    (refund,) = f.refunds(session_factory, tenant.id, order_id)
    assert refund.status == "succeeded" and refund.amount == payment.amount and refund.automatic
    assert sku_stock(session_factory, sku) == 5
