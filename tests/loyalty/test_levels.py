"""Levels: upgrade at exactly the threshold (spend, points), member price and free shipping in
the pipeline, yearly retention downgrade, level coupons (issued or pending), paid cards."""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from siyu.loyalty import repository as repo
from siyu.loyalty import service
from siyu.loyalty.models import LevelHistory, MemberCard, PendingReward
from siyu.loyalty.schemas import CardPlanIn
from siyu.orders import service as orders_service
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import make_member, make_sku, submit_order
from tests.loyalty import helpers as h

STORE = "/api/store/v1"


def _ladder(factory: sessionmaker[Session], tenant: Tenant) -> dict[str, int]:
    return {
        "普通会员": h.add_level(factory, tenant.id, 0, "普通会员"),
        "正式会员": h.add_level(factory, tenant.id, 1, "正式会员", min_spend=30000, member_price_percent=95),
        "中级会员": h.add_level(factory, tenant.id, 2, "中级会员", min_points=2000, free_shipping=True,
                             retain_growth=100),
        "高级会员": h.add_level(factory, tenant.id, 3, "高级会员", min_growth=10000, min_orders=20),
    }


def _paid_order(factory: sessionmaker[Session], tenant: Tenant, member: int, price: int) -> int:
    sku = make_sku(factory, tenant.id, price=price, free_shipping=True)
    order = submit_order(factory, tenant.id, member, [(sku, 1)])
    with unit_of_work(factory) as s:
        orders_service.mark_paid(s, tenant.id, order.id, amount=order.payable_amount, paid_at=utcnow(), actor=h.SYSTEM)
        service.on_order_paid(s, tenant.id, order.id)
    return order.id


def test_upgrade_happens_at_exactly_the_spend_threshold(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 0, "growth_per_yuan": 0})
    _ladder(session_factory, tenant)
    member = f.buyer(session_factory, tenant.id)
    _paid_order(session_factory, tenant, member, 29999)
    assert h.level_of(session_factory, tenant.id, member) == "普通会员"
    _paid_order(session_factory, tenant, member, 1)  # 30000 fen exactly
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"
    with session_factory() as s:
        moves = [(m.reason, m.to_level_id) for m in repo.level_history(s, tenant.id, member)]
    assert [r for r, _ in moves] == ["upgrade", "upgrade"]


def test_upgrade_happens_at_exactly_the_points_threshold(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    _ladder(session_factory, tenant)
    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 1999, "a")
    with unit_of_work(session_factory) as s:
        service.evaluate_level(s, tenant.id, member)
    assert h.level_of(session_factory, tenant.id, member) == "普通会员"
    with unit_of_work(session_factory) as s:  # a correction is not earning: 1999 earned still
        service.adjust(s, tenant.id, member, 1, reason="one more", idempotency_key="x", actor=h.SYSTEM)
    assert h.level_of(session_factory, tenant.id, member) == "普通会员"
    h.award(session_factory, tenant.id, member, 1, "b")
    assert h.level_of(session_factory, tenant.id, member) == "中级会员"  # 2000 earned: skips to rank 2


def test_member_price_and_free_shipping_apply_in_the_pipeline(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    from tests.factories.orders import make_freight_template

    make_freight_template(session_factory, tenant.id, default=True)
    _ladder(session_factory, tenant)
    member, headers = f.paying_customer(session_factory, tenant.id)
    sku = make_sku(session_factory, tenant.id, price=12345)
    body = {"items": [{"sku_id": sku, "quantity": 3}]}
    before = client.post(f"{STORE}/checkout/preview", json=body, headers=headers).json()
    assert before["freight_amount"] == 1200 and not [b for b in before["breakdown"] if b["stage"] == "member_price"]

    with unit_of_work(session_factory) as s:
        state = repo.member_state(s, tenant.id, member, lock=True)
        state.paid_spend = 30000
        service.evaluate_level(s, tenant.id, member)
    out = client.post(f"{STORE}/checkout/preview", json=body, headers=headers).json()
    (row,) = [b for b in out["breakdown"] if b["stage"] == "member_price"]
    goods = 12345 * 3
    assert row["amount"] == -(goods - (goods * 95 + 50) // 100) and row["label"] == "会员价（正式会员 9.5折）"
    assert out["payable_amount"] == (goods * 95 + 50) // 100 + 1200

    h.award(session_factory, tenant.id, member, 2000, "up")
    with unit_of_work(session_factory) as s:
        service.evaluate_level(s, tenant.id, member)
    out = client.post(f"{STORE}/checkout/preview", json=body, headers=headers).json()
    assert out["freight_amount"] == 0 and out["notes"]["member_price"][0]["code"] == "level_free_shipping"


def test_yearly_retention_moves_down_one_step_when_growth_falls_short(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    levels = _ladder(session_factory, tenant)
    kept, dropped = make_member(session_factory, tenant.id), make_member(session_factory, tenant.id)
    long_ago = utcnow() - dt.timedelta(days=400)
    for member in (kept, dropped):
        h.award(session_factory, tenant.id, member, 2000, f"up{member}", now=long_ago)  # upgrades then
    with unit_of_work(session_factory) as s:
        service.add_growth(s, tenant.id, kept, 100, action="test", ref=None, key="g-kept")
        service.add_growth(s, tenant.id, dropped, 99, action="test", ref=None, key="g-dropped")
    with unit_of_work(session_factory) as s:
        assert service.review_levels(s, tenant.id, utcnow()) == 1
    with unit_of_work(session_factory) as s:  # reviewed: nothing due again today
        assert service.review_levels(s, tenant.id, utcnow()) == 0
    assert h.level_of(session_factory, tenant.id, kept) == "中级会员"
    assert h.level_of(session_factory, tenant.id, dropped) == "正式会员"
    with session_factory() as s:
        last = repo.level_history(s, tenant.id, dropped)[0]
    assert (last.reason, last.from_level_id, last.to_level_id) == ("retention", levels["中级会员"], levels["正式会员"])


def test_level_coupons_are_issued_once_or_recorded_pending(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    from siyu.coupons.models import CouponTemplate
    from tests.coupons.helpers import make_template

    # A level may only name the store's own templates (validated on write); one stopped since
    # cannot be issued.
    tpl = make_template(session_factory, tenant.id, "fixed", amount=500)
    h.add_level(session_factory, tenant.id, 0, "普通会员")
    h.add_level(session_factory, tenant.id, 1, "VIP", min_points=10, coupon_template_ids=[tpl])
    with unit_of_work(session_factory) as s:
        s.get(CouponTemplate, tpl).status = "stopped"  # type: ignore[union-attr]
    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 10, "a")
    for _ in range(2):
        with unit_of_work(session_factory) as s:
            service.evaluate_level(s, tenant.id, member)
    with session_factory() as s:
        pending = s.scalars(select(PendingReward).where(PendingReward.merchant_id == tenant.id)).all()
    # The coupons module refuses the stopped template (or is absent): one record either way.
    assert len(pending) == 1 and pending[0].template_id == tpl and pending[0].status in ("pending", "failed")
    assert h.level_of(session_factory, tenant.id, member) == "VIP"


def test_paid_card_grants_its_level_for_the_term_and_a_full_refund_in_time_revokes_it(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    levels = _ladder(session_factory, tenant)
    sku = make_sku(session_factory, tenant.id, price=9900, free_shipping=True, title="年卡")
    with session_factory() as s:
        from siyu.catalog.models import Sku

        product_id = s.get(Sku, sku).product_id  # type: ignore[union-attr]
    r = client.post("/api/admin/v1/loyalty/cards", headers=tenant.admin_headers,
                    json={"name": "年卡", "product_id": product_id, "level_id": levels["高级会员"], "term_days": 365,
                          "refund_days": 7})
    assert r.status_code == 201, r.text
    plan_id = r.json()["id"]
    member, headers = f.paying_customer(session_factory, tenant.id)
    r = client.post(f"{STORE}/loyalty/cards/{plan_id}/buy", json={},
                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    order_id = r.json()["id"]
    r = client.post(f"{STORE}/orders/{order_id}/pay", headers=headers)
    client.post(r.json()["params"]["complete_url"], headers=headers)
    Worker(session_factory, settings, merchant_id=tenant.id).drain()
    assert h.level_of(session_factory, tenant.id, member) == "高级会员"
    me = client.get(f"{STORE}/loyalty/me/level", headers=headers).json()
    assert me["source"] == "card" and me["card_until"] is not None

    r = client.post(f"/api/admin/v1/orders/{order_id}/refunds", json={"amount": 9900, "reason": "不要了"},
                    headers={**tenant.admin_headers, "Idempotency-Key": "card-refund"})
    assert r.status_code == 201, r.text
    Worker(session_factory, settings, merchant_id=tenant.id).drain()
    with session_factory() as s:
        (card,) = s.scalars(select(MemberCard).where(MemberCard.merchant_id == tenant.id)).all()
        history = s.scalars(select(LevelHistory).where(LevelHistory.merchant_id == tenant.id,
                                                       LevelHistory.member_id == member).order_by(LevelHistory.id)).all()
    assert card.status == "revoked"
    # On order.paid the growth moves the member onto the ladder, then the card lifts the level;
    # the refund revokes the card and the member falls back to the rules level.
    assert [(x.reason, x.to_level_id) for x in history] == [
        ("upgrade", levels["普通会员"]), ("card", levels["高级会员"]), ("card_revoked", levels["普通会员"])
    ]
    assert h.level_of(session_factory, tenant.id, member) == "普通会员"


def test_card_refund_after_the_window_keeps_the_card(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    levels = _ladder(session_factory, tenant)
    member = f.buyer(session_factory, tenant.id)
    sku = make_sku(session_factory, tenant.id, price=9900, free_shipping=True, title="年卡")
    with unit_of_work(session_factory) as s:
        from siyu.catalog.models import Sku

        product_id = s.get(Sku, sku).product_id  # type: ignore[union-attr]
        service.save_card_plan(s, tenant.id, CardPlanIn(name="年卡", product_id=product_id, level_id=levels["正式会员"],
                                                        refund_days=7), plan_id=None, actor=h.SYSTEM)
    order_id = _paid_order_of_sku(session_factory, tenant, member, sku)
    with unit_of_work(session_factory) as s:
        service.on_order_refunded(s, tenant.id, order_id, 4242, 9900, full=True, now=utcnow() + dt.timedelta(days=8))
    with session_factory() as s:
        (card,) = s.scalars(select(MemberCard).where(MemberCard.merchant_id == tenant.id)).all()
    assert card.status == "active"


def _paid_order_of_sku(factory: sessionmaker[Session], tenant: Tenant, member: int, sku: int) -> int:
    order = submit_order(factory, tenant.id, member, [(sku, 1)])
    with unit_of_work(factory) as s:
        orders_service.mark_paid(s, tenant.id, order.id, amount=order.payable_amount, paid_at=utcnow(), actor=h.SYSTEM)
        service.on_order_paid(s, tenant.id, order.id)
    return order.id


def test_a_card_whose_term_ends_expires_once_and_the_fall_is_in_the_level_history(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """Card 高级 for 30 days over rules level 普通: at the end the hourly job marks it expired and
    writes 高级 → 普通 (reason card_expired) once; a card followed by another of the same level, or
    below the rules level, expires without a history line."""
    levels = _ladder(session_factory, tenant)
    member, other = make_member(session_factory, tenant.id), make_member(session_factory, tenant.id)
    t0 = utcnow() - dt.timedelta(days=90)
    with unit_of_work(session_factory) as s:
        for m in (member, other):
            service.evaluate_level(s, tenant.id, m, t0)
        s.add_all([
            MemberCard(merchant_id=tenant.id, member_id=member, plan_id=1, order_id=1, level_id=levels["高级会员"],
                       starts_at=t0, ends_at=t0 + dt.timedelta(days=30)),
            # other: two stacked cards of one level, then a card of the entry level
            MemberCard(merchant_id=tenant.id, member_id=other, plan_id=1, order_id=2, level_id=levels["中级会员"],
                       starts_at=t0, ends_at=t0 + dt.timedelta(days=30)),
            MemberCard(merchant_id=tenant.id, member_id=other, plan_id=1, order_id=3, level_id=levels["中级会员"],
                       starts_at=t0 + dt.timedelta(days=30), ends_at=t0 + dt.timedelta(days=60)),
            MemberCard(merchant_id=tenant.id, member_id=other, plan_id=2, order_id=4, level_id=levels["普通会员"],
                       starts_at=t0, ends_at=t0 + dt.timedelta(days=45)),
        ])

    def run(days: int) -> int:
        with unit_of_work(session_factory) as s:
            return service.expire_cards(s, tenant.id, t0 + dt.timedelta(days=days))

    def history(m: int) -> list[tuple[str, int | None, int | None]]:
        with session_factory() as s:
            rows = s.scalars(select(LevelHistory).where(LevelHistory.merchant_id == tenant.id,
                                                        LevelHistory.member_id == m).order_by(LevelHistory.id))
            return [(x.reason, x.from_level_id, x.to_level_id) for x in rows]

    assert run(29) == 0
    assert run(30) == 2 and run(30) == 0
    assert history(member) == [("upgrade", None, levels["普通会员"]),
                               ("card_expired", levels["高级会员"], levels["普通会员"])]
    assert history(other) == [("upgrade", None, levels["普通会员"])]  # the second 中级 card goes on
    assert run(45) == 1 and history(other) == [("upgrade", None, levels["普通会员"])]
    assert run(60) == 1
    assert history(other) == [("upgrade", None, levels["普通会员"]),
                              ("card_expired", levels["中级会员"], levels["普通会员"])]
    with session_factory() as s:
        statuses = s.scalars(select(MemberCard.status).where(MemberCard.merchant_id == tenant.id)).all()
    assert sorted(statuses) == ["expired"] * 4
