"""Demo data: one promotion of each kind on demo products, active for the next 30 days.

- 限时折扣: two SKUs, one at a fixed price and one 8.5折, limit 2 per member, no coupons.
- 首单特价: one SKU at ¥9.90 for new customers.
- 满减: 满300减30 / 满500减60 on the whole store (exclusive).
- 满赠: spend ¥399, get a cheap SKU as a gift.
- 加价购: with ¥199 of goods, add an accessory for ¥9.90 or half its price (2 per order, 100 in all).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from siyu.kit.timeutil import utcnow
from siyu.promotions import repository as repo
from siyu.promotions import service
from siyu.promotions.schemas import PromotionIn

ACTOR = ("system", None)


def _create(session: Session, merchant_id: int, name: str, kind: str, rules: dict[str, Any], **extra: Any) -> None:
    now = utcnow()
    body = PromotionIn.model_validate({
        "name": name, "kind": kind, "rules": rules, "starts_at": now - dt.timedelta(hours=1),
        "ends_at": now + dt.timedelta(days=30), **extra,
    })
    promo = service.create(session, merchant_id, body, actor=ACTOR)
    service.activate(session, merchant_id, promo.id, actor=ACTOR)


def seed(session: Session, merchant_id: int) -> None:
    skus = repo.on_sale_skus(session, merchant_id)
    if len(skus) < 8:
        return
    by_price = sorted(skus, key=lambda s: (s.sale_price, s.id))
    cheap, accessory = by_price[0], by_price[1]
    picks = [s for s in skus[10:] if s.id not in (cheap.id, accessory.id) and s.sale_price > 2000][:3]
    if len(picks) < 3:
        return
    limited_a, limited_b, first = picks
    _create(
        session, merchant_id, "限时折扣 周末特惠", "limited_discount",
        {"items": [{"sku_id": limited_a.id, "price": limited_a.sale_price * 7 // 10},
                   {"sku_id": limited_b.id, "percent_off": 15}]},
        per_member_limit=2, allows_coupons=False,
    )
    _create(session, merchant_id, "新人首单 9.9 元", "first_order",
            {"items": [{"sku_id": first.id, "price": 990}]}, allows_coupons=False, allows_points=False)
    _create(session, merchant_id, "全场满减", "spend_save",
            {"tiers": [{"threshold": 30000, "discount": 3000}, {"threshold": 50000, "discount": 6000}]})
    _create(session, merchant_id, "满 399 送好礼", "spend_gift",
            {"tiers": [{"threshold": 39900, "gift_sku_id": cheap.id, "quantity": 1}]})
    price = 990 if accessory.sale_price > 990 else accessory.sale_price // 2
    _create(session, merchant_id, f"满 199 加 {price / 100:g} 元换购", "add_on",
            {"threshold": 19900, "items": [{"sku_id": accessory.id, "price": price, "per_order_limit": 2,
                                            "stock": 100}]})
