"""Demo data: a 4-level ladder, earn rules (1 point and 1 growth per ¥1, 100 points = ¥1 at
checkout, check-in streak rewards, make-up check-in, a points mall with a coupon and a product
"500 积分 + ¥9.90"), an annual membership card sold as a
virtual catalog product (no address, no freight), and points / levels for the first 60 demo
customers. Called by ``siyu.demo.seed`` after the catalogue and customers exist; idempotent
(keys and ranks)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.catalog.models import KIND_VIRTUAL, PRODUCT_ON_SALE, Product, Sku
from siyu.kit.timeutil import utcnow
from siyu.loyalty import repository as repo
from siyu.loyalty import service
from siyu.loyalty.schemas import CardPlanIn, LevelIn, LoyaltyRules
from siyu.members.models import Member

SYSTEM = ("system", None)

LADDER = [
    LevelIn(rank=0, name="普通会员"),
    LevelIn(rank=1, name="正式会员", min_spend=30000, member_price_percent=98),
    LevelIn(rank=2, name="中级会员", min_points=2000, min_growth=2000, member_price_percent=95,
            points_multiplier_percent=120, retain_growth=500),
    LevelIn(rank=3, name="高级会员", min_growth=10000, min_orders=20, member_price_percent=90, free_shipping=True,
            points_multiplier_percent=150, retain_growth=2000),
]


def seed(session: Session, merchant_id: int) -> None:
    rules = LoyaltyRules.model_validate({
        "earn": {"points_per_yuan": 1, "growth_per_yuan": 1, "award_on": "paid"},
        "expiry": {"mode": "end_of_next_year", "notice_days": 30},
        "deduction": {"enabled": True, "points_per_yuan": 100, "max_percent": 30, "min_points": 100},
        "check_in": {"points": 5, "growth": 1,
                     "streak_rewards": [{"day": 7, "points": 50, "growth": 10}, {"day": 30, "points": 300, "growth": 50}],
                     "makeup": {"enabled": True, "cost_points": 20, "within_days": 3}},
        "mall": _mall(session, merchant_id),
    })
    service.put_rules(session, merchant_id, rules, actor=SYSTEM)
    existing = {lv.rank for lv in repo.levels(session, merchant_id)}
    for level in LADDER:
        if level.rank not in existing:
            service.save_level(session, merchant_id, level, level_id=None, actor=SYSTEM)
    _annual_card(session, merchant_id)
    now = utcnow()
    members = session.scalars(
        select(Member.id).where(Member.merchant_id == merchant_id).order_by(Member.id).limit(60)
    ).all()
    for i, member_id in enumerate(members):
        points = [120, 800, 2500, 6000][i % 4]
        service.award(session, merchant_id, member_id, points, reason="demo_welcome", ref="demo",
                      idempotency_key=f"demo:welcome:{member_id}", now=now - dt.timedelta(days=30 + i))
        if i % 4 == 3:
            service.add_growth(session, merchant_id, member_id, 3000, action="demo", ref="demo",
                               key=f"demo:growth:{member_id}")
        service.evaluate_level(session, merchant_id, member_id, now)


def _mall(session: Session, merchant_id: int) -> list[dict[str, object]]:
    """The first active coupon template (the coupons demo seeds before this one) for 300 points,
    and the cheapest physical SKU on sale above ¥20 for 500 points + ¥9.90, two per member."""
    from siyu.coupons.models import ACTIVE, CouponTemplate

    items: list[dict[str, object]] = []
    template_id = session.scalar(
        select(CouponTemplate.id).where(CouponTemplate.merchant_id == merchant_id, CouponTemplate.status == ACTIVE)
        .order_by(CouponTemplate.id).limit(1)
    )
    if template_id is not None:
        items.append({"kind": "coupon", "coupon_template_id": template_id, "points": 300})
    sku_id = session.scalar(
        select(Sku.id).join(Product, Product.id == Sku.product_id)
        .where(Sku.merchant_id == merchant_id, Sku.active.is_(True), Sku.sale_price > 2000, Sku.stock > 0,
               Product.status == PRODUCT_ON_SALE, Product.kind != KIND_VIRTUAL)
        .order_by(Sku.sale_price, Sku.id).limit(1)
    )
    if sku_id is not None:
        items.append({"kind": "product", "sku_id": sku_id, "points": 500, "cash": 990, "per_member_limit": 2})
    return items


def _annual_card(session: Session, merchant_id: int) -> None:
    if repo.card_plans(session, merchant_id):
        return
    product = Product(merchant_id=merchant_id, title="付费会员年卡", subtitle="一年中级会员权益：95 折、1.2 倍积分",
                      status=PRODUCT_ON_SALE, kind=KIND_VIRTUAL, free_shipping=True, bonus_points=0,
                      coupons_allowed=False, spec_names=[], images=[])
    session.add(product)
    session.flush()
    session.add(Sku(merchant_id=merchant_id, product_id=product.id, sku_code=f"CARD-{uuid.uuid4().hex[:8]}", specs={},
                    list_price=19900, sale_price=9900, cost_price=0, weight_g=0, stock=100000, active=True))
    session.flush()
    middle = next(lv for lv in repo.levels(session, merchant_id) if lv.rank == 2)
    service.save_card_plan(session, merchant_id,
                           CardPlanIn(name="付费会员年卡", product_id=product.id, level_id=middle.id, term_days=365,
                                      refund_days=7), plan_id=None, actor=SYSTEM)
