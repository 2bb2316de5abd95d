"""A member merge (the same person through two doors) hands the kept member the person's whole
loyalty standing: points through the ledger lot by lot with their expiry, earned totals, growth,
paid counters, the level the combined figures reach, paid cards, unused coupons, coupons held
by a pending order, and per-member claim counters. A second run of the merge steps moves nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.coupons import merge as coupons_merge
from siyu.coupons import service as coupons
from siyu.coupons.models import CouponMemberCounter, MemberCoupon
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.kit.timeutil import utcnow
from siyu.loyalty import merge as loyalty_merge
from siyu.loyalty import points as ledger
from siyu.loyalty import service as loyalty
from siyu.loyalty.models import (
    CardPlan,
    GrowthEntry,
    LevelHistory,
    MemberCard,
    MemberLoyalty,
    PointsAccount,
    PointsEntry,
    PointsLot,
    PointsLotUse,
)
from siyu.members.models import Member, MemberMerge
from siyu.orders import checkout
from siyu.orders.models import Order
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.coupons.helpers import make_product_sku, make_template
from tests.factories.orders import make_address, submit_order
from tests.loyalty.helpers import add_level
from tests.members.api_helpers import STORE, login


def _rows(factory: sessionmaker[Session], model: Any, merchant_id: int, **where: Any) -> list[Any]:
    with factory() as s:
        stmt = select(model).where(model.merchant_id == merchant_id)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return list(s.scalars(stmt.order_by(model.id)))


def _account(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> tuple[int, int, int]:
    [acct] = _rows(factory, PointsAccount, merchant_id, member_id=member_id)
    return acct.balance, acct.earned_total, acct.spent_total


def _state(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> tuple[int | None, int, int, int]:
    [st] = _rows(factory, MemberLoyalty, merchant_id, member_id=member_id)
    return st.level_id, st.growth, st.paid_spend, st.paid_orders


def _open_lots(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> list[tuple[int, dt.datetime | None]]:
    return [(lt.remaining, lt.expires_at) for lt in _rows(factory, PointsLot, merchant_id, member_id=member_id)
            if lt.remaining > 0]


def _received(factory: sessionmaker[Session], merchant_id: int, member_id: int, template_id: int) -> int:
    rows = _rows(factory, CouponMemberCounter, merchant_id, member_id=member_id, template_id=template_id)
    return rows[0].received if rows else 0


def _same_instant(a: dt.datetime | None, b: dt.datetime | None) -> bool:
    """SQLite hands back naive UTC; compare as UTC instants."""
    if a is None or b is None:
        return a is b
    return a.replace(tzinfo=a.tzinfo or dt.UTC) == b.replace(tzinfo=b.tzinfo or dt.UTC)


def test_merge_moves_points_lots_growth_level_cards_and_coupons_once(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    m = tenant.id
    silver = add_level(session_factory, m, 1, "银卡", min_points=200)
    gold = add_level(session_factory, m, 2, "金卡", min_points=500)
    keep_id, keep = login(client, tenant)  # older: kept
    drop_id, drop = login(client, tenant)
    now = utcnow()
    soon, later = now + dt.timedelta(days=5), now + dt.timedelta(days=60)
    with unit_of_work(session_factory) as s:
        ledger.award(s, m, keep_id, 300, reason="order", idempotency_key="k-earn")
        ledger.award(s, m, drop_id, 100, reason="order", idempotency_key="d-earn-1", expires_at=soon)
        ledger.award(s, m, drop_id, 200, reason="order", idempotency_key="d-earn-2", expires_at=later)
        ledger.spend(s, m, drop_id, 50, reason="mall", idempotency_key="d-spend")  # from the soonest lot
        loyalty.add_growth(s, m, keep_id, 10, action="order", ref=None, key="k-growth")
        loyalty.add_growth(s, m, drop_id, 40, action="order", ref=None, key="d-growth")
        dstate = s.scalars(select(MemberLoyalty).where(MemberLoyalty.merchant_id == m,
                                                       MemberLoyalty.member_id == drop_id)).one()
        dstate.paid_spend, dstate.paid_orders = 12000, 2
        plan = CardPlan(merchant_id=m, name="年卡", product_id=10**9 + drop_id, level_id=silver, term_days=365)
        s.add(plan)
        s.flush()
        s.add(MemberCard(merchant_id=m, member_id=drop_id, plan_id=plan.id, order_id=10**9 + drop_id,
                         level_id=silver, starts_at=now, ends_at=now + dt.timedelta(days=365)))
    assert _state(session_factory, m, keep_id)[0] == silver
    assert _state(session_factory, m, drop_id)[0] == silver
    assert _account(session_factory, m, drop_id) == (250, 300, 50)
    # two coupons of a template limited to 2 per member: one unused, one held by a pending order
    tpl = make_template(session_factory, m, "fixed", amount=300, per_member_limit=2)
    with unit_of_work(session_factory) as s:
        unused = coupons.issue_to_member(s, m, tpl, drop_id, source="api", idempotency_key="c-1").id
        locked = coupons.issue_to_member(s, m, tpl, drop_id, source="api", idempotency_key="c-2").id
    sku, _, _ = make_product_sku(session_factory, m, price=3000)
    make_address(session_factory, m, drop_id)
    with unit_of_work(session_factory) as s:
        body = CheckoutIn.model_validate({"items": [{"sku_id": sku, "quantity": 1}], "coupon_ids": [locked]})
        order, _ = checkout.submit(s, m, drop_id, body, idempotency_key="o-1", payment_timeout=dt.timedelta(minutes=30))
        order_id = order.id
    assert _rows(session_factory, MemberCoupon, m, id=locked)[0].status == "locked"

    # the same phone through both doors: the newer member is merged into the older one
    code = f"sandbox-{uuid.uuid4().int % 10**8}"
    assert client.post(f"{STORE}/me/phone", json={"code": code}, headers=drop).status_code == 200
    r = client.post(f"{STORE}/me/phone", json={"code": code}, headers=keep)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == keep_id
    assert _rows(session_factory, Member, m, id=drop_id)[0].status == "merged"

    # points: balance, totals, ledger entries, lots with their expiry (soonest first)
    assert _account(session_factory, m, keep_id) == (550, 600, 50)
    assert _account(session_factory, m, drop_id) == (0, 0, 0)
    [out] = _rows(session_factory, PointsEntry, m, idempotency_key=f"merge:{drop_id}:out")
    [into] = _rows(session_factory, PointsEntry, m, idempotency_key=f"merge:{drop_id}:in")
    assert (out.member_id, out.delta, out.kind, out.balance_after) == (drop_id, -250, "merge_out", 0)
    assert (into.member_id, into.delta, into.kind, into.balance_after) == (keep_id, 250, "merge_in", 550)
    uses = _rows(session_factory, PointsLotUse, m, entry_id=out.id)
    assert [u.points for u in uses] == [50, 200]
    assert _open_lots(session_factory, m, drop_id) == []
    moved_lots = _rows(session_factory, PointsLot, m, entry_id=into.id)
    assert [lt.points for lt in moved_lots] == [50, 200]
    assert _same_instant(moved_lots[0].expires_at, soon) and _same_instant(moved_lots[1].expires_at, later)
    with session_factory() as s:
        assert sum(e.delta for e in s.scalars(select(PointsEntry).where(
            PointsEntry.merchant_id == m, PointsEntry.member_id == keep_id))) == 550
    # growth and paid counters; the level the combined figures reach, with a merge history line
    assert _state(session_factory, m, keep_id) == (gold, 50, 12000, 2)
    assert _state(session_factory, m, drop_id) == (None, 0, 0, 0)
    assert [(g.member_id, g.delta, g.action) for g in _rows(session_factory, GrowthEntry, m)
            if g.idempotency_key.startswith("merge:")] == [(drop_id, -40, "merge_out"), (keep_id, 40, "merge_in")]
    [kept_line] = [h for h in _rows(session_factory, LevelHistory, m, member_id=keep_id) if h.reason == "merge"]
    assert (kept_line.from_level_id, kept_line.to_level_id) == (silver, gold)
    [drop_line] = [h for h in _rows(session_factory, LevelHistory, m, member_id=drop_id) if h.reason == "merge"]
    assert (drop_line.from_level_id, drop_line.to_level_id) == (silver, None)
    # the paid card, coupons (the locked one still held by the order) and claim counters
    assert [c.member_id for c in _rows(session_factory, MemberCard, m)] == [keep_id]
    by_id = {c.id: c for c in _rows(session_factory, MemberCoupon, m)}
    assert (by_id[unused].member_id, by_id[unused].status) == (keep_id, "unused")
    assert (by_id[locked].member_id, by_id[locked].status, by_id[locked].order_id) == (keep_id, "locked", order_id)
    assert (_received(session_factory, m, keep_id, tpl), _received(session_factory, m, drop_id, tpl)) == (2, 0)
    [merge] = _rows(session_factory, MemberMerge, m, merged_member_id=drop_id)
    assert (merge.moved["points"], merge.moved["growth"], merge.moved["cards"]) == (250, 40, 1)
    assert (merge.moved["coupons_unused"], merge.moved["coupons_locked"]) == (1, 1)
    assert merge.moved["coupon_counters"] == {str(tpl): 2}

    # a retried merge step moves nothing more
    with unit_of_work(session_factory) as s:
        again = loyalty_merge.merge_members(s, m, drop_id, keep_id)
        again_coupons = coupons_merge.merge_members(s, m, drop_id, keep_id)
    assert (again["points"], again["growth"], again["paid_spend"], again["cards"]) == (0, 0, 0, 0)
    assert (again_coupons["coupons_unused"], again_coupons["coupons_locked"], again_coupons["coupon_counters"]) == (
        0, 0, {})
    assert _account(session_factory, m, keep_id) == (550, 600, 50)
    assert _state(session_factory, m, keep_id) == (gold, 50, 12000, 2)
    assert len([e for e in _rows(session_factory, PointsEntry, m) if e.idempotency_key.startswith("merge:")]) == 2
    assert (_received(session_factory, m, keep_id, tpl), _received(session_factory, m, drop_id, tpl)) == (2, 0)

    # the per-member limit holds for the person
    with pytest.raises(DomainError) as refused, unit_of_work(session_factory) as s:
        coupons.issue_to_member(s, m, tpl, keep_id, source="api", idempotency_key="c-3")
    assert refused.value.code == "coupon_limit_reached"
    # the order is cancelled: its coupon comes back to the kept member's wallet
    with unit_of_work(session_factory) as s:
        assert coupons.on_order_cancelled(s, m, order_id, utcnow()) == [(locked, "unused")]
    back = _rows(session_factory, MemberCoupon, m, id=locked)[0]
    assert (back.member_id, back.status, back.order_id) == (keep_id, "unused", None)
    # the moved lots still expire on time: the one due in 5 days goes at the job after it
    with unit_of_work(session_factory) as s:
        assert ledger.expire_due(s, m, soon + dt.timedelta(hours=1)) == 1
    assert _account(session_factory, m, keep_id)[0] == 500
    assert sorted(n for n, _ in _open_lots(session_factory, m, keep_id)) == [200, 300]


def test_merge_of_a_member_with_no_loyalty_rows_moves_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    keep_id, keep = login(client, tenant)
    drop_id, drop = login(client, tenant)
    with unit_of_work(session_factory) as s:
        ledger.award(s, tenant.id, keep_id, 30, reason="order", idempotency_key="only-keep")
    code = f"sandbox-{uuid.uuid4().int % 10**8}"
    assert client.post(f"{STORE}/me/phone", json={"code": code}, headers=drop).status_code == 200
    assert client.post(f"{STORE}/me/phone", json={"code": code}, headers=keep).status_code == 200
    assert _account(session_factory, tenant.id, keep_id) == (30, 30, 0)
    assert _account(session_factory, tenant.id, drop_id) == (0, 0, 0)
    assert not [e for e in _rows(session_factory, PointsEntry, tenant.id) if e.idempotency_key.startswith("merge:")]
    [merge] = _rows(session_factory, MemberMerge, tenant.id, merged_member_id=drop_id)
    assert (merge.moved["points"], merge.moved["growth"], merge.moved["coupons_unused"]) == (0, 0, 0)


def _merge(client: TestClient, keep: dict[str, str], drop: dict[str, str]) -> None:
    code = f"sandbox-{uuid.uuid4().int % 10**8}"
    assert client.post(f"{STORE}/me/phone", json={"code": code}, headers=drop).status_code == 200
    assert client.post(f"{STORE}/me/phone", json={"code": code}, headers=keep).status_code == 200


def test_orders_placed_before_the_merge_count_for_the_kept_member_after_it(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """A pending order of the merged member cancelled after the merge gives its spent points back
    to the kept member (with the expiry of the lot they came from); one paid after the merge earns
    there, and its refund takes back from there: the merged member stays at zero throughout."""
    m = tenant.id
    keep_id, keep = login(client, tenant)
    drop_id, drop = login(client, tenant)
    soon = utcnow() + dt.timedelta(days=5)
    sku, _, _ = make_product_sku(session_factory, m, price=3000)
    make_address(session_factory, m, drop_id)
    checkout_spend = 10**9 + drop_id  # the order of a checkout that spent points, left unpaid
    with unit_of_work(session_factory) as s:
        ledger.award(s, m, drop_id, 100, reason="order", idempotency_key="d-earn", expires_at=soon)
        loyalty.record_checkout_spend(s, m, drop_id, checkout_spend, 40)
    pending = submit_order(session_factory, m, drop_id, [(sku, 1)]).id
    _merge(client, keep, drop)
    assert _account(session_factory, m, keep_id) == (60, 100, 40)
    assert _account(session_factory, m, drop_id) == (0, 0, 0)

    with unit_of_work(session_factory) as s:
        loyalty.on_order_cancelled(s, m, checkout_spend)
    assert _account(session_factory, m, keep_id) == (100, 100, 0)
    assert _account(session_factory, m, drop_id) == (0, 0, 0)
    lots = _open_lots(session_factory, m, keep_id)
    assert sorted(n for n, _ in lots) == [40, 60] and all(_same_instant(e, soon) for _, e in lots)

    with unit_of_work(session_factory) as s:
        order = s.get(Order, pending)
        assert order is not None
        order.paid_amount, order.paid_at = order.payable_amount, utcnow()
        paid_total, paid = order.payable_amount, order.payable_amount - order.freight_amount
    with unit_of_work(session_factory) as s:
        loyalty.on_order_paid(s, m, pending)
    earned = paid // 100
    assert _account(session_factory, m, keep_id) == (100 + earned, 100 + earned, 0)
    assert _state(session_factory, m, keep_id)[1:] == (earned, paid_total, 1)
    assert _account(session_factory, m, drop_id) == (0, 0, 0)
    with unit_of_work(session_factory) as s:
        loyalty.on_order_refunded(s, m, pending, 10**9 + pending, paid_total, full=True)
    assert _account(session_factory, m, keep_id) == (100, 100, 0)
    assert _state(session_factory, m, keep_id)[1:] == (0, 0, 0)
    assert _account(session_factory, m, drop_id) == (0, 0, 0)
    assert _state(session_factory, m, drop_id)[1:] == (0, 0, 0)
