"""Refunds and levels: a refund nets the figures the level rules read (paid spend by exactly the
refunded amount, growth and points earned by their proportional share, paid orders on a full
refund) and, unless the merchant turned it off (``levels.refund_lowers_level``), moves a member
whose net figures no longer reach their level down to the highest level they still qualify for
(history ``refund``, event ``level.changed``). A retried refund job changes nothing; a card's
level stays; a level coupon is not issued again when the level is reached again."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.events import subscribe
from siyu.kit.outbox import Job
from siyu.kit.timeutil import utcnow
from siyu.loyalty import repository as repo
from siyu.loyalty import service
from siyu.loyalty.models import LevelHistory, PendingReward
from siyu.loyalty.schemas import CardPlanIn, LevelIn, LevelRules
from siyu.orders import service as orders_service
from siyu.worker.registry import JobContext
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import make_sku, submit_order
from tests.loyalty import helpers as h

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"
YUAN = 100
THRESHOLD = 300 * YUAN  # ¥300


@subscribe("level.changed", "test.loyalty.level_changed")
def _on_level_changed(ctx: JobContext) -> None:
    pass


def _pay(factory: sessionmaker[Session], tenant: Tenant, member: int, price: int, sku: int | None = None) -> int:
    """A paid order of one item at ``price`` fen (free shipping), the paid job run; its id."""
    sku = sku if sku is not None else make_sku(factory, tenant.id, price=price, free_shipping=True)
    order = submit_order(factory, tenant.id, member, [(sku, 1)])
    assert order.payable_amount == price
    with unit_of_work(factory) as s:
        orders_service.mark_paid(s, tenant.id, order.id, amount=order.payable_amount, paid_at=utcnow(), actor=h.SYSTEM)
        service.on_order_paid(s, tenant.id, order.id)
    return order.id


def _refund(factory: sessionmaker[Session], tenant: Tenant, order_id: int, refund_id: int, amount: int,
            full: bool = False) -> None:
    """The loyalty refund job for one refund (what ``loyalty.order_refunded`` runs)."""
    with unit_of_work(factory) as s:
        service.on_order_refunded(s, tenant.id, order_id, refund_id, amount, full=full)


def _figures(factory: sessionmaker[Session], tenant: Tenant, member: int) -> tuple[int, int, int, int]:
    with factory() as s:
        out = service.summary(s, tenant.id, member)
    return out.paid_spend, out.points_earned_total, out.growth, out.paid_orders


def _history(factory: sessionmaker[Session], tenant: Tenant, member: int) -> list[tuple[str, int | None, int | None]]:
    with factory() as s:
        rows = s.scalars(select(LevelHistory).where(LevelHistory.merchant_id == tenant.id,
                                                    LevelHistory.member_id == member).order_by(LevelHistory.id))
        return [(x.reason, x.from_level_id, x.to_level_id) for x in rows]


def _level_events(factory: sessionmaker[Session], tenant: Tenant, member: int) -> list[dict[str, Any]]:
    with factory() as s:
        jobs = s.scalars(select(Job).where(Job.merchant_id == tenant.id, Job.kind == "test.loyalty.level_changed")
                         .order_by(Job.id)).all()
        return [
            {k: j.payload[k] for k in ("from_level_id", "to_level_id", "reason")}
            for j in jobs if j.payload["member_id"] == member
        ]


def _ladder(factory: sessionmaker[Session], tenant: Tenant, **regular: Any) -> dict[str, int]:
    """普通会员 (entry) and 正式会员 at ``regular`` (default: ¥300 of paid spend)."""
    return {
        "普通会员": h.add_level(factory, tenant.id, 0, "普通会员"),
        "正式会员": h.add_level(factory, tenant.id, 1, "正式会员", **(regular or {"min_spend": THRESHOLD})),
    }


def test_a_one_yuan_refund_from_exactly_the_threshold_drops_the_level_once(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 0, "growth_per_yuan": 0})
    levels = _ladder(session_factory, tenant)
    member = f.buyer(session_factory, tenant.id)
    order = _pay(session_factory, tenant, member, THRESHOLD)
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"

    for _ in range(2):  # the refund job, then its retry
        _refund(session_factory, tenant, order, 7001, 1 * YUAN)
        assert _figures(session_factory, tenant, member) == (THRESHOLD - 100, 0, 0, 1)
        assert h.level_of(session_factory, tenant.id, member) == "普通会员"
        assert _history(session_factory, tenant, member) == [
            ("upgrade", None, levels["正式会员"]), ("refund", levels["正式会员"], levels["普通会员"]),
        ]
        assert _level_events(session_factory, tenant, member) == [
            {"from_level_id": None, "to_level_id": levels["正式会员"], "reason": "upgrade"},
            {"from_level_id": levels["正式会员"], "to_level_id": levels["普通会员"], "reason": "refund"},
        ]
    with session_factory() as s:
        state = repo.member_state_or_none(s, tenant.id, member)
        assert state is not None and state.level_id == levels["普通会员"]


def test_a_refund_that_leaves_the_member_at_the_threshold_keeps_the_level(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 0, "growth_per_yuan": 0})
    _ladder(session_factory, tenant)
    member = f.buyer(session_factory, tenant.id)
    order = _pay(session_factory, tenant, member, THRESHOLD + 1 * YUAN)
    _refund(session_factory, tenant, order, 7002, 1 * YUAN)  # ¥301 - ¥1 = ¥300: still there
    assert _figures(session_factory, tenant, member)[0] == THRESHOLD
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"
    assert [r for r, _, _ in _history(session_factory, tenant, member)] == ["upgrade"]


def test_growth_is_netted_by_its_exact_share_and_the_level_follows(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """Growth ¥1 = 1 on ¥300 paid: 300 growth. Refunds of ¥0.50 and ¥0.50 take back floor(300 *
    50 / 30000) = 0, then floor(300 * 100 / 30000) - 0 = 1 (running total): 299 < 300."""
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 0, "growth_per_yuan": 1})
    levels = _ladder(session_factory, tenant, min_growth=300)
    member = f.buyer(session_factory, tenant.id)
    order = _pay(session_factory, tenant, member, THRESHOLD)
    assert _figures(session_factory, tenant, member) == (THRESHOLD, 0, 300, 1)
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"
    _refund(session_factory, tenant, order, 7003, 50)
    assert _figures(session_factory, tenant, member) == (THRESHOLD - 50, 0, 300, 1)
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"
    _refund(session_factory, tenant, order, 7004, 50)
    assert _figures(session_factory, tenant, member) == (THRESHOLD - 100, 0, 299, 1)
    assert h.level_of(session_factory, tenant.id, member) == "普通会员"
    assert _history(session_factory, tenant, member)[-1] == ("refund", levels["正式会员"], levels["普通会员"])


def test_points_earned_are_netted_and_the_level_follows(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 1, "growth_per_yuan": 0})
    _ladder(session_factory, tenant, min_points=300)
    member = f.buyer(session_factory, tenant.id)
    order = _pay(session_factory, tenant, member, THRESHOLD)
    assert _figures(session_factory, tenant, member) == (THRESHOLD, 300, 0, 1)
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"
    _refund(session_factory, tenant, order, 7005, 1 * YUAN)  # floor(300 * 100 / 30000) = 1 point back
    assert _figures(session_factory, tenant, member) == (THRESHOLD - 100, 299, 0, 1)
    assert h.balance(session_factory, tenant.id, member) == 299
    assert h.level_of(session_factory, tenant.id, member) == "普通会员"


def test_a_full_refund_takes_the_order_off_the_count_and_the_level_follows(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 0, "growth_per_yuan": 0})
    _ladder(session_factory, tenant, min_orders=2)
    member = f.buyer(session_factory, tenant.id)
    _pay(session_factory, tenant, member, 10 * YUAN)
    second = _pay(session_factory, tenant, member, 20 * YUAN)
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"
    _refund(session_factory, tenant, second, 7006, 5 * YUAN)  # partial: the order still counts
    assert _figures(session_factory, tenant, member) == (25 * YUAN, 0, 0, 2)
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"
    _refund(session_factory, tenant, second, 7007, 15 * YUAN, full=True)
    assert _figures(session_factory, tenant, member) == (10 * YUAN, 0, 0, 1)
    assert h.level_of(session_factory, tenant.id, member) == "普通会员"


def test_a_refund_moves_down_to_the_highest_level_still_reached_in_one_step(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """¥600 (中级) in one order and ¥300 (正式) in another: a full refund of the ¥600 order leaves
    ¥300, so 中级 → 正式; a ¥1 refund of the other then leaves ¥299: 正式 → 普通."""
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 0, "growth_per_yuan": 0})
    levels = _ladder(session_factory, tenant)
    levels["中级会员"] = h.add_level(session_factory, tenant.id, 2, "中级会员", min_spend=2 * THRESHOLD)
    member = f.buyer(session_factory, tenant.id)
    small = _pay(session_factory, tenant, member, THRESHOLD)
    big = _pay(session_factory, tenant, member, 2 * THRESHOLD)
    assert h.level_of(session_factory, tenant.id, member) == "中级会员"
    _refund(session_factory, tenant, big, 7008, 2 * THRESHOLD, full=True)
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"
    _refund(session_factory, tenant, small, 7009, 1 * YUAN)
    assert h.level_of(session_factory, tenant.id, member) == "普通会员"
    assert _history(session_factory, tenant, member) == [
        ("upgrade", None, levels["正式会员"]), ("upgrade", levels["正式会员"], levels["中级会员"]),
        ("refund", levels["中级会员"], levels["正式会员"]), ("refund", levels["正式会员"], levels["普通会员"]),
    ]


def test_with_the_setting_off_a_refund_nets_the_figures_but_keeps_the_level(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 0, "growth_per_yuan": 0},
                levels={"refund_lowers_level": False})
    _ladder(session_factory, tenant)
    member = f.buyer(session_factory, tenant.id)
    order = _pay(session_factory, tenant, member, THRESHOLD)
    _refund(session_factory, tenant, order, 7010, 1 * YUAN)
    assert _figures(session_factory, tenant, member) == (THRESHOLD - 100, 0, 0, 1)
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"
    assert [r for r, _, _ in _history(session_factory, tenant, member)] == ["upgrade"]
    assert _level_events(session_factory, tenant, member) == [
        {"from_level_id": None, "to_level_id": _ladder_ids(session_factory, tenant)["正式会员"], "reason": "upgrade"},
    ]


def _ladder_ids(factory: sessionmaker[Session], tenant: Tenant) -> dict[str, int]:
    with factory() as s:
        return {lv.name: lv.id for lv in repo.levels(s, tenant.id)}


def test_a_refund_that_changes_nothing_the_member_qualifies_for_moves_nobody(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """The merchant raised 正式会员 to ¥600 after the member reached it at ¥300: members keep what
    they reached, and a ¥1 refund (¥299: 普通 before and after) does not take it now."""
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 0, "growth_per_yuan": 0})
    levels = _ladder(session_factory, tenant)
    member = f.buyer(session_factory, tenant.id)
    order = _pay(session_factory, tenant, member, THRESHOLD + 1 * YUAN)
    with unit_of_work(session_factory) as s:
        service.save_level(s, tenant.id, LevelIn(rank=1, name="正式会员", min_spend=2 * THRESHOLD),
                           level_id=levels["正式会员"], actor=h.SYSTEM)
    _refund(session_factory, tenant, order, 7011, 1 * YUAN)
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"
    _refund(session_factory, tenant, order, 7012, THRESHOLD, full=True)  # ¥0: 普通 reached, as before it
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"


def test_a_paid_card_level_is_not_touched_by_a_refund(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    """Card ¥99 (VIP for a year) + order ¥201 = ¥300: rules level 正式, card VIP applies. A ¥1
    refund of the order lowers the rules level to 普通; the card's VIP still applies."""
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 0, "growth_per_yuan": 0})
    levels = _ladder(session_factory, tenant)
    levels["VIP"] = h.add_level(session_factory, tenant.id, 5, "VIP", min_spend=10**8)
    card_sku = make_sku(session_factory, tenant.id, price=99 * YUAN, free_shipping=True, title="年卡")
    with unit_of_work(session_factory) as s:
        from siyu.catalog.models import Sku

        product_id = s.get(Sku, card_sku).product_id  # type: ignore[union-attr]
        service.save_card_plan(s, tenant.id, CardPlanIn(name="年卡", product_id=product_id, level_id=levels["VIP"]),
                               plan_id=None, actor=h.SYSTEM)
    member = f.buyer(session_factory, tenant.id)
    _pay(session_factory, tenant, member, 99 * YUAN, sku=card_sku)
    order = _pay(session_factory, tenant, member, 201 * YUAN)
    with session_factory() as s:
        state = repo.member_state_or_none(s, tenant.id, member)
        assert state is not None and state.level_id == levels["正式会员"]
    _refund(session_factory, tenant, order, 7013, 1 * YUAN)
    with session_factory() as s:
        state = repo.member_state_or_none(s, tenant.id, member)
        assert state is not None and state.level_id == levels["普通会员"]  # the rules level went down
        out = service.summary(s, tenant.id, member)
    assert (out.level_name, out.level_source, out.paid_spend) == ("VIP", "card", THRESHOLD - 100)
    assert _history(session_factory, tenant, member)[-1] == ("refund", levels["正式会员"], levels["普通会员"])


def test_a_level_coupon_is_not_issued_again_when_the_level_is_reached_again(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    from siyu.coupons.models import MemberCoupon
    from tests.coupons.helpers import make_template

    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 0, "growth_per_yuan": 0})
    tpl = make_template(session_factory, tenant.id, "fixed", amount=500)
    levels = _ladder(session_factory, tenant, min_spend=THRESHOLD, coupon_template_ids=[tpl])
    member = f.buyer(session_factory, tenant.id)
    order = _pay(session_factory, tenant, member, THRESHOLD)
    _refund(session_factory, tenant, order, 7014, 1 * YUAN)
    assert h.level_of(session_factory, tenant.id, member) == "普通会员"
    sku = make_sku(session_factory, tenant.id, price=1 * YUAN, free_shipping=True)
    with unit_of_work(session_factory) as s:  # the wallet's ¥5 coupon stays out of the way
        from siyu.catalog.models import Product, Sku

        s.get(Product, s.get(Sku, sku).product_id).coupons_allowed = False  # type: ignore[union-attr]
    _pay(session_factory, tenant, member, 1 * YUAN, sku=sku)  # ¥300 net again
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"
    assert _history(session_factory, tenant, member) == [
        ("upgrade", None, levels["正式会员"]), ("refund", levels["正式会员"], levels["普通会员"]),
        ("upgrade", levels["普通会员"], levels["正式会员"]),
    ]
    with session_factory() as s:
        coupons = s.scalar(select(func.count()).select_from(MemberCoupon).where(
            MemberCoupon.merchant_id == tenant.id, MemberCoupon.member_id == member, MemberCoupon.template_id == tpl))
        pending = s.scalar(select(func.count()).select_from(PendingReward).where(PendingReward.merchant_id == tenant.id))
    assert (coupons, pending) == (1, 0)


def test_over_the_api_a_partial_refund_lowers_the_level_and_the_retried_job_changes_nothing(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 1, "growth_per_yuan": 1})
    levels = _ladder(session_factory, tenant)
    member, headers = f.paying_customer(session_factory, tenant.id)
    sku = make_sku(session_factory, tenant.id, price=THRESHOLD, free_shipping=True)
    r = client.post(f"{STORE}/checkout/submit", json={"items": [{"sku_id": sku, "quantity": 1}]},
                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    order_id = r.json()["id"]
    r = client.post(f"{STORE}/orders/{order_id}/pay", headers=headers)
    assert client.post(r.json()["params"]["complete_url"], headers=headers).status_code == 200
    Worker(session_factory, settings, merchant_id=tenant.id).drain()
    me = client.get(f"{STORE}/loyalty/me/level", headers=headers).json()
    assert (me["level"]["name"], me["source"]) == ("正式会员", "rules")

    r = client.post(f"{ADMIN}/orders/{order_id}/refunds", json={"amount": 1 * YUAN, "reason": "少发一件配件"},
                    headers={**tenant.admin_headers, "Idempotency-Key": "refund-1"})
    assert r.status_code == 201, r.text
    Worker(session_factory, settings, merchant_id=tenant.id).drain()
    with session_factory() as s:
        (job,) = s.scalars(select(Job).where(Job.merchant_id == tenant.id, Job.kind == "loyalty.order_refunded")).all()
        payload = dict(job.payload)
    expected = {"paid_spend": THRESHOLD - 100, "points_earned_total": 299, "growth": 299, "paid_orders": 1,
                "level_id": levels["普通会员"], "level_source": "rules", "points_balance": 299}
    got = client.get(f"{ADMIN}/loyalty/members/{member}", headers=tenant.admin_headers).json()
    assert {k: got[k] for k in expected} == expected
    history = client.get(f"{ADMIN}/loyalty/members/{member}/level-history", headers=tenant.admin_headers).json()
    assert [(x["reason"], x["to_level_id"]) for x in history] == [  # newest first
        ("refund", levels["普通会员"]), ("upgrade", levels["正式会员"]),
    ]

    # the job delivered again (a worker that died before its commit was recorded): nothing moves
    with unit_of_work(session_factory) as s:
        service.on_order_refunded(s, tenant.id, int(payload["order_id"]), int(payload["refund_id"]),
                                  int(payload["amount"]), full=bool(payload.get("full")))
    assert {k: v for k, v in client.get(f"{ADMIN}/loyalty/members/{member}",
                                        headers=tenant.admin_headers).json().items() if k in expected} == expected
    assert len(client.get(f"{ADMIN}/loyalty/members/{member}/level-history",
                          headers=tenant.admin_headers).json()) == len(history)


def test_the_setting_is_part_of_the_rules_defaults_on_and_validated(client: TestClient, tenant: Tenant) -> None:
    assert LevelRules().refund_lowers_level is True
    rules = client.get(f"{ADMIN}/loyalty/rules", headers=tenant.admin_headers).json()
    assert rules["levels"] == {"refund_lowers_level": True}
    for bad, path, code, en, zh in (
        ({"levels": {"refund_lowers_level": "maybe"}}, "body.levels.refund_lowers_level", "bool_parsing",
         "Must be true or false", "应为 true 或 false"),
        ({"levels": {"lower_on_refund": False}}, "body.levels.lower_on_refund", "extra_forbidden", "Unknown field",
         "不支持的字段"),
        ({"levels": []}, "body.levels", "model_attributes_type", "Must be a JSON object", "应为 JSON 对象"),
    ):
        for lang, message in (("en", en), ("zh-CN", zh)):
            r = client.put(f"{ADMIN}/loyalty/rules", json=bad,
                           headers={**tenant.admin_headers, "Accept-Language": lang})
            assert r.status_code == 422, r.text
            assert r.json()["code"] == "validation_error"
            assert [(x["path"], x["code"], x["message"]) for x in r.json()["fields"]] == [(path, code, message)]
    assert client.get(f"{ADMIN}/loyalty/rules", headers=tenant.admin_headers).json() == rules
    r = client.put(f"{ADMIN}/loyalty/rules", json={**rules, "levels": {"refund_lowers_level": False}},
                   headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["levels"] == {"refund_lowers_level": False}
    schema = client.app.openapi()["components"]["schemas"]["LevelRules"]  # type: ignore[attr-defined]
    assert "refund" in schema["properties"]["refund_lowers_level"]["description"]


def test_a_refund_past_what_is_left_of_the_order_takes_no_more_than_the_order(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """¥300 + ¥100 paid; a refund of ¥150 reported against the ¥100 order nets ¥100 (the order),
    not ¥150: ¥300 is left, the level stays."""
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 0, "growth_per_yuan": 0})
    _ladder(session_factory, tenant)
    member = f.buyer(session_factory, tenant.id)
    _pay(session_factory, tenant, member, THRESHOLD)
    small = _pay(session_factory, tenant, member, 100 * YUAN)
    _refund(session_factory, tenant, small, 7015, 150 * YUAN, full=True)
    assert _figures(session_factory, tenant, member) == (THRESHOLD, 0, 0, 1)
    assert h.level_of(session_factory, tenant.id, member) == "正式会员"
