"""Bargains end to end: start, helps take the pre-generated cuts, floor, buy at the current or
floor price once; each refusal with its own code and no change; cancelled order reopens."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.kit.events import subscribe
from siyu.orders import service as orders_service
from siyu.worker.registry import JobContext
from siyu.worker.runner import Worker
from tests.bargains import helpers as h
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import buyer, make_sku, sku_stock, submit_order

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"


@subscribe("bargain.started", "test.bargains.started")
def _on_started(ctx: JobContext) -> None:
    pass


@subscribe("bargain.helped", "test.bargains.helped")
def _on_helped(ctx: JobContext) -> None:
    pass


@subscribe("bargain.floor_reached", "test.bargains.floor_reached")
def _on_floor(ctx: JobContext) -> None:
    pass


def _refused(fn: Callable[[], object]) -> str:
    try:
        fn()
    except DomainError as exc:
        return exc.code
    raise AssertionError("expected a refusal")


def test_helps_reach_the_floor_and_the_initiator_buys_at_the_floor_once(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=5)
    now = dt.datetime.now(dt.UTC)
    r = client.post(
        f"{ADMIN}/bargain-activities",
        json={"name": "砍到 10 元", "sku_id": sku, "floor_price": 1000, "helpers_needed": 3, "free_shipping": True,
              "starts_at": (now - dt.timedelta(hours=1)).isoformat(), "ends_at": (now + dt.timedelta(days=2)).isoformat()},
        headers=tenant.admin_headers,
    )
    assert r.status_code == 201, r.text
    act = r.json()
    assert act["start_price"] == 10000 and act["effective_status"] == "active"
    _initiator, ih = f.paying_customer(session_factory, tenant.id)
    friends = [f.paying_customer(session_factory, tenant.id) for _ in range(4)]

    r = client.post(f"{STORE}/bargains/activities/{act['id']}/start", headers=ih)
    assert r.status_code == 201, r.text
    bargain = r.json()
    assert bargain["current_price"] == 10000 and bargain["status"] == "active"
    cuts = h.bargain(session_factory, bargain["id"]).cuts
    assert sum(cuts) == 9000 and len(cuts) == 3 and min(cuts) >= 1

    results = []
    for _, headers in friends[:3]:
        r = client.post(f"{STORE}/bargains/{bargain['id']}/help", headers=headers)
        assert r.status_code == 200, r.text
        results.append(r.json())
    assert [x["cut"] for x in results] == cuts  # the i-th help takes the i-th cut
    assert [x["current_price"] for x in results] == [10000 - sum(cuts[:i + 1]) for i in range(3)]
    assert results[-1]["floor_reached"] and results[-1]["current_price"] == 1000
    r = client.post(f"{STORE}/bargains/{bargain['id']}/help", headers=friends[3][1])
    assert r.status_code == 409 and r.json()["code"] == "bargain_finished"

    page = client.get(f"{STORE}/bargains/{bargain['id']}", headers=friends[0][1]).json()
    assert page["status"] == "floor_reached" and page["mine"] is False and len(page["helps"]) == 3
    assert all(x["nickname"] == "微信用户" for x in page["helps"])

    r = client.post(f"{STORE}/bargains/{bargain['id']}/buy", json={}, headers={**ih, "Idempotency-Key": "b1"})
    assert r.status_code == 201, r.text
    assert r.json()["payable_amount"] == 1000  # the floor, shipped free
    replay = client.post(f"{STORE}/bargains/{bargain['id']}/buy", json={}, headers={**ih, "Idempotency-Key": "b1"})
    assert replay.status_code == 200 and replay.json()["id"] == r.json()["id"]
    again = client.post(f"{STORE}/bargains/{bargain['id']}/buy", json={}, headers={**ih, "Idempotency-Key": "b2"})
    assert again.status_code == 409 and again.json()["code"] == "bargain_already_ordered"
    assert h.bargain(session_factory, bargain["id"]).status == "ordered" and sku_stock(session_factory, sku) == 4
    # somebody else's bargain is a 404 to them
    r = client.post(f"{STORE}/bargains/{bargain['id']}/buy", json={}, headers={**friends[0][1], "Idempotency-Key": "x"})
    assert r.status_code == 404

    assert len(f.jobs(session_factory, tenant.id, "test.bargains.started", bargain_id=bargain["id"])) == 1
    assert len(f.jobs(session_factory, tenant.id, "test.bargains.helped", bargain_id=bargain["id"])) == 3
    assert len(f.jobs(session_factory, tenant.id, "test.bargains.floor_reached", bargain_id=bargain["id"])) == 1
    listed = client.get(f"{ADMIN}/bargain-activities/{act['id']}/bargains?status=ordered", headers=tenant.admin_headers)
    assert listed.status_code == 200 and listed.json()["total"] == 1
    detail = client.get(f"{ADMIN}/bargains/{bargain['id']}", headers=tenant.admin_headers).json()
    assert detail["cuts"] == cuts and [x["amount"] for x in detail["helps"]] == cuts


def test_buy_at_the_current_price_then_cancel_reopens(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=5)
    act = h.make_activity(session_factory, tenant.id, sku, helpers_needed=4)
    initiator, ih = f.paying_customer(session_factory, tenant.id)
    friend = buyer(session_factory, tenant.id)
    bargain_id = h.start(session_factory, tenant.id, initiator, act)
    cut = h.help_(session_factory, tenant.id, bargain_id, friend)
    r = client.post(f"{STORE}/bargains/{bargain_id}/buy", json={}, headers={**ih, "Idempotency-Key": "now"})
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["payable_amount"] >= 10000 - cut  # current price (+ any freight)
    assert order["lines"][0]["payable_amount"] == 10000 - cut
    # ordered: friends can no longer help
    late = buyer(session_factory, tenant.id)
    assert _refused(lambda: h.help_(session_factory, tenant.id, bargain_id, late)) == "bargain_finished"
    assert sku_stock(session_factory, sku) == 4

    with unit_of_work(session_factory) as s:
        orders_service.cancel(s, tenant.id, order["id"], reason="test", actor=("customer", initiator))
    Worker(session_factory, settings, merchant_id=tenant.id).drain()
    b = h.bargain(session_factory, bargain_id)
    assert b.status == "active" and b.order_id is None and sku_stock(session_factory, sku) == 5
    h.help_(session_factory, tenant.id, bargain_id, late)
    assert h.bargain(session_factory, bargain_id).helped_count == 2


def test_each_refusal_has_its_code_and_changes_nothing(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    act = h.make_activity(session_factory, tenant.id, sku, helpers_needed=3, new_users_only=True, valid_hours=2)
    initiator, friend, old_customer = (buyer(session_factory, tenant.id) for _ in range(3))
    bargain_id = h.start(session_factory, tenant.id, initiator, act)
    first_cut = h.help_(session_factory, tenant.id, bargain_id, friend)
    order = submit_order(session_factory, tenant.id, old_customer, [(sku, 1)])
    with unit_of_work(session_factory) as s:
        orders_service.mark_paid(s, tenant.id, order.id, amount=order.payable_amount, paid_at=dt.datetime.now(dt.UTC),
                                 actor=("system", None))

    def state() -> tuple[int, int, int]:
        b = h.bargain(session_factory, bargain_id)
        return b.helped_count, b.cut_total, len(h.helps(session_factory, bargain_id))

    before = state()
    assert _refused(lambda: h.help_(session_factory, tenant.id, bargain_id, initiator)) == "bargain_help_own"
    assert h.help_(session_factory, tenant.id, bargain_id, friend) == first_cut  # a repeat: the first result
    assert _refused(lambda: h.help_(session_factory, tenant.id, bargain_id, old_customer)) == "bargain_new_users_only"
    expired_at = h.bargain(session_factory, bargain_id).expires_at + dt.timedelta(seconds=1)
    newcomer = buyer(session_factory, tenant.id)
    assert _refused(lambda: h.help_(session_factory, tenant.id, bargain_id, newcomer, now=expired_at)) == "bargain_expired"
    assert _refused(lambda: h.help_(session_factory, tenant.id, 999_999_999, newcomer)) == "not_found"
    assert state() == before
    # starting: past the per-member limit (1), not started, ended
    assert _refused(lambda: h.start(session_factory, tenant.id, initiator, act)) == "bargain_limit_reached"
    later = h.make_activity(session_factory, tenant.id, sku, starts_in=dt.timedelta(hours=3))
    over = h.make_activity(session_factory, tenant.id, sku, starts_in=dt.timedelta(days=-3), lasts=dt.timedelta(days=1))
    assert _refused(lambda: h.start(session_factory, tenant.id, newcomer, later)) == "bargain_not_started"
    assert _refused(lambda: h.start(session_factory, tenant.id, newcomer, over)) == "bargain_ended"


def test_deadline_job_expires_the_bargain(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    act = h.make_activity(session_factory, tenant.id, sku, valid_hours=1)
    bargain_id = h.start(session_factory, tenant.id, buyer(session_factory, tenant.id), act)
    deadline = h.bargain(session_factory, bargain_id).expires_at
    Worker(session_factory, settings, merchant_id=tenant.id).drain(now=deadline + dt.timedelta(seconds=1))
    assert h.bargain(session_factory, bargain_id).status == "expired"


def test_bad_activity_rules_are_refused(client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    now = dt.datetime.now(dt.UTC)
    window = {"starts_at": now.isoformat(), "ends_at": (now + dt.timedelta(days=1)).isoformat()}
    for body, field in [
        ({"floor_price": 10000, "helpers_needed": 2}, "floor_price"),
        ({"floor_price": 9999, "helpers_needed": 2}, "helpers_needed"),
    ]:
        r = client.post(f"{ADMIN}/bargain-activities", json={"name": "x", "sku_id": sku, **body, **window},
                        headers=tenant.admin_headers)
        assert r.status_code == 422 and r.json()["fields"][0]["path"] == field, r.text


def test_start_with_an_idempotency_key_replays_the_first_bargain(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    act = h.make_activity(session_factory, tenant.id, sku, per_member_limit=3)
    other = h.make_activity(session_factory, tenant.id, sku)
    _, headers = f.paying_customer(session_factory, tenant.id)
    url = f"{STORE}/bargains/activities/{act}/start"
    first = client.post(url, headers={**headers, "Idempotency-Key": "s1"})
    again = client.post(url, headers={**headers, "Idempotency-Key": "s1"})
    assert first.status_code == 201 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    reused = client.post(f"{STORE}/bargains/activities/{other}/start", headers={**headers, "Idempotency-Key": "s1"})
    assert reused.status_code == 409 and reused.json()["code"] == "idempotency_key_reused"
    second = client.post(url, headers={**headers, "Idempotency-Key": "s2"})
    assert second.status_code == 201 and second.json()["id"] != first.json()["id"]
    listed = client.get(f"{ADMIN}/bargain-activities/{act}/bargains", headers=tenant.admin_headers).json()
    assert listed["total"] == 2
