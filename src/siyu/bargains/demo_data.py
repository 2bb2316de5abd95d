"""Demo data: one bargain activity (5 friends cut to 30% of the price, new users only) on a
demo product. Its stacking settings are stated as the usual practice has them: the bargained
line takes no coupon, no points deduction and does not count toward spend-and-save,
spend-and-gift or add-on thresholds (``allows_order_promotions``). Called by ``siyu.demo.seed`` after the catalogue exists."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from siyu.bargains import service
from siyu.bargains.schemas import BargainActivityIn
from siyu.group_buys.demo_data import demo_sku
from siyu.kit.timeutil import utcnow


def seed(session: Session, merchant_id: int) -> None:
    sku = demo_sku(session, merchant_id, 1)
    if sku is None:
        return
    now = utcnow()
    service.create_activity(
        session, merchant_id,
        BargainActivityIn(
            name="好友帮砍 低至 3 折", sku_id=sku.id, floor_price=sku.sale_price * 3 // 10, helpers_needed=5,
            valid_hours=48, new_users_only=True, per_member_limit=1, allows_coupons=False, allows_points=False,
            allows_order_promotions=False, free_shipping=False, starts_at=now - dt.timedelta(hours=1),
            ends_at=now + dt.timedelta(days=30),
        ),
        actor=("system", None),
    )
