"""Demo data: a flash sale running now (the whole window is one session, 2 items, shipped free)
and a daily one with two session slots (10:00-10:30 and 20:00-21:00, merchant time) for a week.
Called by ``siyu.demo.seed`` after the catalogue exists."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.catalog.models import PRODUCT_ON_SALE, Product, Sku
from siyu.flash_sales import service
from siyu.flash_sales.schemas import FlashSaleIn
from siyu.kit.timeutil import utcnow

SYSTEM = ("system", None)


def _skus(session: Session, merchant_id: int, offset: int, count: int) -> list[Sku]:
    """Active, on-sale SKUs with stock, picked deterministically (by id, from the end of the list,
    away from the SKUs other demo activities take from the start)."""
    stmt = (
        select(Sku)
        .join(Product, Product.id == Sku.product_id)
        .where(
            Sku.merchant_id == merchant_id, Product.merchant_id == merchant_id, Product.status == PRODUCT_ON_SALE,
            Sku.active.is_(True), Sku.stock >= 20, Sku.sale_price >= 2000,
        )
        .order_by(Sku.id.desc())
        .offset(offset)
        .limit(count)
    )
    return list(session.scalars(stmt))


def _items(skus: list[Sku]) -> list[dict[str, int]]:
    return [
        {"sku_id": sku.id, "flash_price": sku.sale_price * 6 // 10, "activity_stock": min(20, sku.stock // 4)}
        for sku in skus
    ]


def seed(session: Session, merchant_id: int) -> None:
    now = utcnow()
    running = _skus(session, merchant_id, 0, 2)
    if running:
        sale = service.create_flash_sale(session, merchant_id, FlashSaleIn.model_validate({
            "name": "限时秒杀 6 折", "starts_at": (now - dt.timedelta(hours=1)).isoformat(),
            "ends_at": (now + dt.timedelta(days=3)).isoformat(), "free_shipping": True, "per_member_limit": 1,
            "items": _items(running),
        }), actor=SYSTEM)
        service.start(session, merchant_id, sale.id, actor=SYSTEM, now=now)
    daily = _skus(session, merchant_id, 2, 1)
    if daily:
        sale = service.create_flash_sale(session, merchant_id, FlashSaleIn.model_validate({
            "name": "每日两场秒杀", "starts_at": (now - dt.timedelta(hours=1)).isoformat(),
            "ends_at": (now + dt.timedelta(days=7)).isoformat(), "per_member_limit": 2,
            "slots": [{"start": "10:00", "end": "10:30"}, {"start": "20:00", "end": "21:00"}],
            "items": _items(daily),
        }), actor=SYSTEM)
        service.start(session, merchant_id, sale.id, actor=SYSTEM, now=now)
