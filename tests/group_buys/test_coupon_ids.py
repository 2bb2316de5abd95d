"""The activity buy endpoints take ``coupon_ids`` as the checkout does: a group-buy open or join and a
bargain buy of an activity that ``allows_coupons`` apply the coupons the customer picked (``[]``:
none; omitted: the pricing picks, as before); an activity that does not allow coupons refuses a
picked one with the checkout's code and writes no order."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.orders.models import Order
from tests.bargains import helpers as bargain_h
from tests.conftest import Tenant
from tests.coupons.helpers import give, make_template
from tests.factories import payments as f
from tests.factories.orders import buyer, make_sku
from tests.group_buys import helpers as h

STORE = "/api/store/v1"


def _line(order: dict[str, object]) -> int:
    lines = order["lines"]
    assert isinstance(lines, list)
    return int(lines[0]["payable_amount"])


def test_group_buy_open_and_join_apply_the_picked_coupons_when_the_activity_allows_them(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=3, group_price=6000, allows_coupons=True)
    template = make_template(session_factory, tenant.id, "fixed", amount=500)
    leader, leader_h = f.paying_customer(session_factory, tenant.id)
    coupon = give(session_factory, tenant.id, template, leader)

    r = client.post(f"{STORE}/group-buys/{gb}/teams", json={"coupon_ids": [coupon]},
                    headers={**leader_h, "Idempotency-Key": "open-c"})
    assert r.status_code == 201, r.text
    assert _line(r.json()) == 6000 - 500
    h.pay(client, r.json()["id"], leader_h)
    h.drain(session_factory, settings, tenant.id)
    team_id = h.team_of(session_factory, tenant.id, r.json()["id"]).id

    friend, friend_h = f.paying_customer(session_factory, tenant.id)
    give(session_factory, tenant.id, template, friend)
    r = client.post(f"{STORE}/group-buys/teams/{team_id}/join", json={"coupon_ids": []},
                    headers={**friend_h, "Idempotency-Key": "join-none"})
    assert r.status_code == 201, r.text
    assert _line(r.json()) == 6000  # [] : no coupon, though one would apply
    # the same key with other coupons is another request
    r = client.post(f"{STORE}/group-buys/teams/{team_id}/join", json={"coupon_ids": [coupon]},
                    headers={**friend_h, "Idempotency-Key": "join-none"})
    assert r.status_code == 409 and r.json()["code"] == "idempotency_key_reused", r.text
    r = client.post(f"{STORE}/group-buys/teams/{team_id}/join", json={"coupon_ids": [0]},
                    headers={**friend_h, "Idempotency-Key": "join-bad"})
    assert r.status_code == 422 and r.json()["fields"][0]["path"] == "body.coupon_ids.0", r.text


def test_a_picked_coupon_on_a_group_buy_without_coupons_is_refused_and_writes_nothing(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2, group_price=6000)  # allows_coupons off
    leader, leader_h = f.paying_customer(session_factory, tenant.id)
    coupon = give(session_factory, tenant.id, make_template(session_factory, tenant.id, "fixed", amount=500), leader)
    before = f.count(session_factory, Order, tenant.id)
    r = client.post(f"{STORE}/group-buys/{gb}/teams", json={"coupon_ids": [coupon]},
                    headers={**leader_h, "Idempotency-Key": "open-x"})
    assert r.status_code == 409 and r.json()["code"] == "coupon_excluded_by_activity", r.text
    assert f.count(session_factory, Order, tenant.id) == before
    r = client.post(f"{STORE}/group-buys/{gb}/teams", json={}, headers={**leader_h, "Idempotency-Key": "open-y"})
    assert r.status_code == 201 and _line(r.json()) == 6000, r.text


def test_bargain_buy_applies_the_picked_coupon_when_the_activity_allows_it(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    template = make_template(session_factory, tenant.id, "fixed", amount=500)
    on = bargain_h.make_activity(session_factory, tenant.id, sku, helpers_needed=4, allows_coupons=True)
    off = bargain_h.make_activity(session_factory, tenant.id, sku, helpers_needed=4)
    initiator, ih = f.paying_customer(session_factory, tenant.id)
    coupon = give(session_factory, tenant.id, template, initiator)

    refused = bargain_h.start(session_factory, tenant.id, initiator, off)
    before = f.count(session_factory, Order, tenant.id)
    r = client.post(f"{STORE}/bargains/{refused}/buy", json={"coupon_ids": [coupon]},
                    headers={**ih, "Idempotency-Key": "b-off"})
    assert r.status_code == 409 and r.json()["code"] == "coupon_excluded_by_activity", r.text
    assert f.count(session_factory, Order, tenant.id) == before

    bargain_id = bargain_h.start(session_factory, tenant.id, initiator, on)
    cut = bargain_h.help_(session_factory, tenant.id, bargain_id, buyer(session_factory, tenant.id))
    r = client.post(f"{STORE}/bargains/{bargain_id}/buy", json={"coupon_ids": [coupon]},
                    headers={**ih, "Idempotency-Key": "b-on"})
    assert r.status_code == 201, r.text
    assert _line(r.json()) == 10000 - cut - 500
