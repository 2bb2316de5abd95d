"""Demo data: one group buy (3-person team, leader price, shipped free, virtual success at 2)
on a demo product. Its stacking settings are stated as the usual practice has them: its line
takes no coupon, no points deduction and does not count toward spend-and-save, spend-and-gift
or add-on thresholds (``allows_order_promotions``). Called by ``siyu.demo.seed`` after the catalogue exists."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.catalog.models import PRODUCT_ON_SALE, Product, Sku
from siyu.group_buys import service
from siyu.group_buys.schemas import GroupBuyIn
from siyu.kit.timeutil import utcnow


def demo_sku(session: Session, merchant_id: int, offset: int) -> Sku | None:
    """An active, on-sale SKU with stock, picked deterministically (by id)."""
    stmt = (
        select(Sku)
        .join(Product, Product.id == Sku.product_id)
        .where(
            Sku.merchant_id == merchant_id, Product.merchant_id == merchant_id, Product.status == PRODUCT_ON_SALE,
            Sku.active.is_(True), Sku.stock > 10, Sku.sale_price >= 2000,
        )
        .order_by(Sku.id)
        .offset(offset)
        .limit(1)
    )
    return session.scalar(stmt)


def seed(session: Session, merchant_id: int) -> None:
    sku = demo_sku(session, merchant_id, 0)
    if sku is None:
        return
    now = utcnow()
    group_price = sku.sale_price * 7 // 10
    service.create_group_buy(
        session, merchant_id,
        GroupBuyIn(
            name="三人成团 7 折", sku_id=sku.id, team_size=3, valid_hours=24, group_price=group_price,
            leader_price=group_price - 500 if group_price > 500 else None, per_member_limit=2, free_shipping=True,
            allows_coupons=False, allows_points=False, allows_order_promotions=False, virtual_min_paid=2, starts_at=now - dt.timedelta(hours=1), ends_at=now + dt.timedelta(days=30),
        ),
        actor=("system", None),
    )
