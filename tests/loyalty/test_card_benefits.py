"""Paid card benefits without a level: a card plan grants a member discount (basis points), free
shipping and/or a points multiplier for its term; the member gets, per benefit, the better of
their level's and their cards' (highest discount, free shipping if any, highest multiplier);
after the term (the hourly job expires the card) they stop; a plan granting nothing is refused."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import KIND_PHYSICAL, Product, Sku
from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from siyu.loyalty import service
from siyu.loyalty.models import CardPlan, MemberCard
from siyu.loyalty.schemas import CardPlanIn
from siyu.orders import service as orders_service
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import make_freight_template, make_sku, submit_order
from tests.loyalty import helpers as h

STORE = "/api/store/v1"
ADMIN = "/api/admin/v1"
PRICE = 10000


def _plan(factory: sessionmaker[Session], tenant: Tenant, **benefits: Any) -> tuple[int, int]:
    """A card plan sold by a new product: ``(plan id, its sku)``."""
    sku = make_sku(factory, tenant.id, price=9900, title="会员卡")
    with unit_of_work(factory) as s:
        product_id = s.get(Sku, sku).product_id  # type: ignore[union-attr]
        plan = service.save_card_plan(s, tenant.id, CardPlanIn(name="省钱卡", product_id=product_id, **benefits),
                                      plan_id=None, actor=h.SYSTEM)
        return plan.id, sku


def _pay(factory: sessionmaker[Session], tenant: Tenant, member: int, sku: int) -> int:
    order = submit_order(factory, tenant.id, member, [(sku, 1)])
    with unit_of_work(factory) as s:
        orders_service.mark_paid(s, tenant.id, order.id, amount=order.payable_amount, paid_at=utcnow(), actor=h.SYSTEM)
        service.on_order_paid(s, tenant.id, order.id)
    return order.id


def _preview(client: TestClient, headers: dict[str, str], sku: int) -> dict[str, Any]:
    r = client.post(f"{STORE}/checkout/preview", json={"items": [{"sku_id": sku, "quantity": 1}]}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _member_price(out: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in out["breakdown"] if b["stage"] == "member_price"]


def _end_term(factory: sessionmaker[Session], tenant: Tenant, member: int) -> None:
    """The member's cards were bought a term ago: their term is over; the hourly job expires them."""
    with unit_of_work(factory) as s:
        for card in s.scalars(select(MemberCard).where(MemberCard.merchant_id == tenant.id,
                                                       MemberCard.member_id == member)):
            card.starts_at -= dt.timedelta(days=400)
            card.ends_at -= dt.timedelta(days=400)
    with unit_of_work(factory) as s:
        assert service.expire_cards(s, tenant.id, utcnow()) == 1
    with factory() as s:
        assert s.scalars(select(MemberCard.status).where(MemberCard.merchant_id == tenant.id,
                                                         MemberCard.member_id == member)).all() == ["expired"]


def _earned(factory: sessionmaker[Session], tenant: Tenant, member: int, sku: int) -> int:
    before = h.balance(factory, tenant.id, member)
    _pay(factory, tenant, member, sku)
    return h.balance(factory, tenant.id, member) - before


def test_a_card_with_only_a_discount_prices_the_cart_at_95_percent_until_its_term_ends(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    make_freight_template(session_factory, tenant.id, default=True)
    _, card_sku = _plan(session_factory, tenant, member_discount_bp=500)
    member, headers = f.paying_customer(session_factory, tenant.id)
    goods = make_sku(session_factory, tenant.id, price=PRICE)
    before = _preview(client, headers, goods)
    assert not _member_price(before) and before["freight_amount"] > 0
    _pay(session_factory, tenant, member, card_sku)
    assert h.level_of(session_factory, tenant.id, member) is None  # no level: the card's own benefit

    out = _preview(client, headers, goods)
    (row,) = _member_price(out)
    assert row["amount"] == -500 and row["label"] == "会员价（省钱卡 9.5折）"
    assert out["payable_amount"] == 9500 + before["freight_amount"]  # the discount only: freight stays
    assert out["freight_amount"] == before["freight_amount"]

    _end_term(session_factory, tenant, member)
    after = _preview(client, headers, goods)
    assert not _member_price(after) and after["payable_amount"] == before["payable_amount"]


def test_a_cards_free_shipping_and_points_multiplier_apply_and_stop_with_its_term(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    make_freight_template(session_factory, tenant.id, default=True)
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 1, "growth_per_yuan": 0})
    _, card_sku = _plan(session_factory, tenant, free_shipping=True, points_multiplier_percent=200)
    member, headers = f.paying_customer(session_factory, tenant.id)
    goods = make_sku(session_factory, tenant.id, price=PRICE)  # ¥100: 100 points at 1x
    assert _preview(client, headers, goods)["freight_amount"] > 0
    assert _earned(session_factory, tenant, member, card_sku) == 99  # the card itself earns before it is held

    out = _preview(client, headers, goods)
    assert out["freight_amount"] == 0 and not _member_price(out)
    assert [n["code"] for n in out["notes"]["member_price"]] == ["card_free_shipping"]
    assert _earned(session_factory, tenant, member, goods) == 200  # 2x on payment

    _end_term(session_factory, tenant, member)
    assert _preview(client, headers, goods)["freight_amount"] > 0
    assert _earned(session_factory, tenant, member, goods) == 100


def test_card_and_level_each_benefit_is_the_better_of_the_two(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """Level: 9.5折, 1.5x, no free shipping. Card: 9折, 1.2x, free shipping. The member gets 9折
    (card), 1.5x (level), free shipping (card); a card discount below the level's leaves the level's."""
    make_freight_template(session_factory, tenant.id, default=True)
    h.set_rules(session_factory, tenant.id, earn={"points_per_yuan": 1, "growth_per_yuan": 0})
    level = h.add_level(session_factory, tenant.id, 0, "会员", member_price_percent=95, points_multiplier_percent=150)
    _, card_sku = _plan(session_factory, tenant, member_discount_bp=1000, points_multiplier_percent=120,
                        free_shipping=True)
    _, weak_sku = _plan(session_factory, tenant, member_discount_bp=300)
    member, headers = f.paying_customer(session_factory, tenant.id)
    other, other_headers = f.paying_customer(session_factory, tenant.id)
    for m in (member, other):
        with unit_of_work(session_factory) as s:
            service.evaluate_level(s, tenant.id, m)
    goods = make_sku(session_factory, tenant.id, price=PRICE)
    (row,) = _member_price(_preview(client, headers, goods))
    assert row["amount"] == -500 and row["label"] == "会员价（会员 9.5折）"

    _pay(session_factory, tenant, member, card_sku)
    out = _preview(client, headers, goods)
    (row,) = _member_price(out)
    assert row["amount"] == -1000 and row["label"] == "会员价（省钱卡 9折）" and out["freight_amount"] == 0
    with session_factory() as s:
        benefits = service.member_benefits(s, tenant.id, member)
    assert (benefits.level.id if benefits.level else None, benefits.multiplier_percent,
            benefits.multiplier_from) == (level, 150, f"level:{level}")
    assert _earned(session_factory, tenant, member, goods) == 9000 * 150 // 100 // 100  # ¥90 paid at 1.5x

    _pay(session_factory, tenant, other, weak_sku)
    out = _preview(client, other_headers, goods)
    (row,) = _member_price(out)
    assert row["amount"] == -500 and row["label"] == "会员价（会员 9.5折）" and out["freight_amount"] > 0


def test_a_plan_granting_neither_a_level_nor_a_benefit_is_refused_and_nothing_changes(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=9900, title="空卡")
    with session_factory() as s:
        product_id = s.get(Sku, sku).product_id  # type: ignore[union-attr]
    for body, lang, message in (
        ({}, "en", "A card plan must grant a level or at least one benefit"),
        ({"points_multiplier_percent": 100, "member_discount_bp": 0, "free_shipping": False}, "zh-CN", "会员卡须授予"),
    ):
        r = client.post(f"{ADMIN}/loyalty/cards", headers={**tenant.admin_headers, "Accept-Language": lang},
                        json={"name": "空卡", "product_id": product_id, **body})
        assert r.status_code == 422 and r.json()["code"] == "card_plan_grants_nothing", r.text
        assert message in r.text
    with session_factory() as s:
        assert s.scalars(select(CardPlan).where(CardPlan.merchant_id == tenant.id)).all() == []
        product = s.get(Product, product_id)
        assert product is not None and product.kind == KIND_PHYSICAL and product.coupons_allowed is True
    # a benefit alone is enough
    r = client.post(f"{ADMIN}/loyalty/cards", headers=tenant.admin_headers,
                    json={"name": "积分卡", "product_id": product_id, "points_multiplier_percent": 150})
    assert r.status_code == 201, r.text
    assert (r.json()["level_id"], r.json()["points_multiplier_percent"], r.json()["member_discount_bp"]) == (None, 150, 0)
