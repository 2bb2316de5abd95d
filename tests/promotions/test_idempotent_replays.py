"""Every retried POST of the promotions and growth endpoints answers the way the checkout submit
does: the first call creates (201; a bargain help answers 200), an exact retry answers 200 with
``Idempotent-Replayed: true`` and the same body and changes nothing, and the same key sent with
a different request is refused with a stable code (409 ``idempotency_key_reused``, as checkout;
a redeem code, which is its own key, is ``coupon_code_used`` for anyone else).

One case per endpoint: coupon claim, coupon redeem-by-code, manual points adjustment, card
purchase, group-buy open and join, bargain start, help and buy, flash-sale buy, check-in and
make-up (with a key; without one a repeat stays 409 ``checkin_already``)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.bargains.models import Bargain, BargainHelp
from siyu.coupons.models import MemberCoupon
from siyu.db.session import unit_of_work
from siyu.loyalty.models import CheckIn, PointsEntry
from siyu.loyalty.schemas import CardPlanIn
from siyu.orders.models import Order
from tests.bargains import helpers as bargain_h
from tests.conftest import Tenant
from tests.coupons.helpers import make_template
from tests.factories import payments as f
from tests.factories.catalog import ADMIN
from tests.factories.orders import make_sku
from tests.group_buys import helpers as group_h

STORE = "/api/store/v1"


@dataclass
class Call:
    url: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None

    def post(self, client: TestClient) -> Any:
        return client.post(self.url, json=self.json, headers=self.headers)


@dataclass
class Case:
    first: Call
    first_status: int
    other: Call | None  # the same key with a different request
    other_code: str | None
    model: Any  # rows of this model count what was written


Factory = sessionmaker[Session]
Builder = Callable[[TestClient, Factory, Tenant], Case]


def _keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


def coupon_claim(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    _, headers = f.paying_customer(factory, tenant.id)
    t1 = make_template(factory, tenant.id, "fixed", amount=300, per_member_limit=3)
    t2 = make_template(factory, tenant.id, "fixed", amount=500, per_member_limit=3)
    h = _keyed(headers, "claim-1")
    return Case(Call(f"{STORE}/coupons/templates/{t1}/claim", h), 201,
                Call(f"{STORE}/coupons/templates/{t2}/claim", h), "idempotency_key_reused", MemberCoupon)


def coupon_redeem(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    _, headers = f.paying_customer(factory, tenant.id)
    _, other = f.paying_customer(factory, tenant.id)
    tpl = make_template(factory, tenant.id, "fixed", amount=300, channels=["code"])
    r = client.post(f"{ADMIN}/coupon-templates/{tpl}/codes", json={"count": 1}, headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    code = r.json()["codes"][0]
    return Case(Call(f"{STORE}/coupons/redeem", headers, {"code": code}), 201,
                Call(f"{STORE}/coupons/redeem", other, {"code": code}), "coupon_code_used", MemberCoupon)


def points_adjust(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    member, _ = f.paying_customer(factory, tenant.id)
    url = f"{ADMIN}/loyalty/members/{member}/points/adjust"
    h = _keyed(tenant.admin_headers, "adjust-1")
    return Case(Call(url, h, {"points": 120, "reason": "客诉补偿"}), 201,
                Call(url, h, {"points": 150, "reason": "客诉补偿"}), "idempotency_key_reused", PointsEntry)


def card_buy(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    from siyu.catalog.models import Sku
    from siyu.loyalty import service

    plans = []
    for title in ("年卡", "季卡"):
        sku = make_sku(factory, tenant.id, price=9900, title=title)
        with unit_of_work(factory) as s:
            product_id = s.get(Sku, sku).product_id  # type: ignore[union-attr]
            plans.append(service.save_card_plan(s, tenant.id, CardPlanIn(name=title, product_id=product_id, free_shipping=True),
                                                plan_id=None, actor=("system", None)).id)
    _, headers = f.paying_customer(factory, tenant.id)
    h = _keyed(headers, "card-1")
    return Case(Call(f"{STORE}/loyalty/cards/{plans[0]}/buy", h, {}), 201,
                Call(f"{STORE}/loyalty/cards/{plans[1]}/buy", h, {}), "idempotency_key_reused", Order)


def group_open(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    sku = make_sku(factory, tenant.id, price=10000, stock=10)
    gb = group_h.make_group_buy(factory, tenant.id, sku, team_size=2)
    _, headers = f.paying_customer(factory, tenant.id)
    h = _keyed(headers, "open-1")
    url = f"{STORE}/group-buys/{gb}/teams"
    return Case(Call(url, h, {}), 201, Call(url, h, {"remark": "快点发货"}), "idempotency_key_reused", Order)


def group_join(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    sku = make_sku(factory, tenant.id, price=10000, stock=10)
    gb = group_h.make_group_buy(factory, tenant.id, sku, team_size=3)
    _, leader = f.paying_customer(factory, tenant.id)
    r = client.post(f"{STORE}/group-buys/{gb}/teams", json={}, headers=_keyed(leader, "lead"))
    assert r.status_code == 201, r.text
    group_h.mark_paid(factory, tenant.id, r.json()["id"])  # a team opens (joinable) once its leader paid
    team_id = group_h.team_of(factory, tenant.id, r.json()["id"]).id
    _, friend = f.paying_customer(factory, tenant.id)
    h = _keyed(friend, "join-1")
    url = f"{STORE}/group-buys/teams/{team_id}/join"
    return Case(Call(url, h, {}), 201, Call(url, h, {"remark": "快点发货"}), "idempotency_key_reused", Order)


def bargain_start(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    sku = make_sku(factory, tenant.id, price=10000)
    act = bargain_h.make_activity(factory, tenant.id, sku)
    other = bargain_h.make_activity(factory, tenant.id, sku)
    _, headers = f.paying_customer(factory, tenant.id)
    h = _keyed(headers, "start-1")
    return Case(Call(f"{STORE}/bargains/activities/{act}/start", h), 201,
                Call(f"{STORE}/bargains/activities/{other}/start", h), "idempotency_key_reused", Bargain)


def bargain_help(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    sku = make_sku(factory, tenant.id, price=10000)
    act = bargain_h.make_activity(factory, tenant.id, sku)
    owner, _ = f.paying_customer(factory, tenant.id)
    bargain_id = bargain_h.start(factory, tenant.id, owner, act)
    _, helper = f.paying_customer(factory, tenant.id)
    # A help takes no key: the (bargain, helper) pair is its key, so there is no "other request".
    return Case(Call(f"{STORE}/bargains/{bargain_id}/help", helper), 200, None, None, BargainHelp)


def bargain_buy(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    sku = make_sku(factory, tenant.id, price=10000)
    act = bargain_h.make_activity(factory, tenant.id, sku, helpers_needed=1)
    owner, headers = f.paying_customer(factory, tenant.id)
    bargain_id = bargain_h.start(factory, tenant.id, owner, act)
    h = _keyed(headers, "buy-1")
    url = f"{STORE}/bargains/{bargain_id}/buy"
    return Case(Call(url, h, {}), 201, Call(url, h, {"remark": "快点发货"}), "idempotency_key_reused", Order)


def flash_buy(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    from tests.flash_sales.helpers import create_sale

    sku = make_sku(factory, tenant.id, price=10000, stock=20)
    sale = create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 5}],
                       per_member_limit=2)
    item = int(sale["items"][0]["id"])
    _, headers = f.paying_customer(factory, tenant.id)
    h = _keyed(headers, "flash-1")
    url = f"{STORE}/flash-sales/{item}/buy"
    return Case(Call(url, h, {"quantity": 1}), 201, Call(url, h, {"quantity": 1, "remark": "快点发货"}),
                "idempotency_key_reused", Order)


def check_in(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    _, headers = f.paying_customer(factory, tenant.id)
    # No body, and the day is the key: any repeat the same day is the retry (no "other request").
    return Case(Call(f"{STORE}/loyalty/me/check-in", _keyed(headers, "checkin-1")), 201, None, None, CheckIn)


def check_in_makeup(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    r = client.put(f"{ADMIN}/loyalty/rules", json={"check_in": {"makeup": {"enabled": True, "cost_points": 0}}},
                   headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    _, headers = f.paying_customer(factory, tenant.id)
    yesterday = (dt.datetime.now(ZoneInfo("Asia/Shanghai")).date() - dt.timedelta(days=1)).isoformat()
    return Case(Call(f"{STORE}/loyalty/me/check-in/makeup", _keyed(headers, "makeup-1"), {"day": yesterday}), 201,
                None, None, CheckIn)


CASES: dict[str, Builder] = {
    "coupon_claim": coupon_claim,
    "coupon_redeem": coupon_redeem,
    "points_adjust": points_adjust,
    "card_buy": card_buy,
    "group_buy_open": group_open,
    "group_buy_join": group_join,
    "bargain_start": bargain_start,
    "bargain_help": bargain_help,
    "bargain_buy": bargain_buy,
    "flash_sale_buy": flash_buy,
    "check_in": check_in,
    "check_in_makeup": check_in_makeup,
}


def _count(factory: Factory, model: Any, merchant_id: int) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(model.merchant_id == merchant_id)) or 0)


@pytest.mark.parametrize("name", list(CASES))
def test_a_retry_replays_with_200_and_a_reused_key_is_refused(
    name: str, client: TestClient, session_factory: Factory, tenant: Tenant
) -> None:
    case = CASES[name](client, session_factory, tenant)
    first = case.first.post(client)
    assert first.status_code == case.first_status, first.text
    assert "Idempotent-Replayed" not in first.headers
    written = _count(session_factory, case.model, tenant.id)

    again = case.first.post(client)
    assert again.status_code == 200, again.text
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    assert _count(session_factory, case.model, tenant.id) == written  # nothing more was written

    if case.other is not None:
        reused = case.other.post(client)
        assert reused.status_code == 409, reused.text
        assert reused.json()["code"] == case.other_code
        assert "Idempotent-Replayed" not in reused.headers
        assert _count(session_factory, case.model, tenant.id) == written


def test_an_idempotency_key_longer_than_checkouts_limit_is_refused_not_cut(
    client: TestClient, session_factory: Factory, tenant: Tenant
) -> None:
    """Two long keys sharing their first characters are two requests: a key over 80 characters is
    a 422 on the coupon claim and the points adjustment, as on checkout, never silently cut."""
    case = coupon_claim(client, session_factory, tenant)
    long_key = "k" * 81 + uuid.uuid4().hex
    r = client.post(case.first.url, headers={**case.first.headers, "Idempotency-Key": long_key})
    assert r.status_code == 422 and r.json()["fields"][0]["path"] == "header.Idempotency-Key", r.text
    adjust = points_adjust(client, session_factory, tenant)
    r = client.post(adjust.first.url, json=adjust.first.json, headers={**adjust.first.headers, "Idempotency-Key": long_key})
    assert r.status_code == 422 and r.json()["fields"][0]["path"] == "header.Idempotency-Key", r.text
    assert _count(session_factory, MemberCoupon, tenant.id) == 0
    assert _count(session_factory, PointsEntry, tenant.id) == 0
