"""Atomic stock reservation.

``reserve`` decrements each SKU with one conditional ``UPDATE ... SET stock = stock - :q WHERE
id = :id AND stock >= :q`` in primary-key order (so two carts never deadlock on each other); a
SKU that cannot cover its quantity raises ``insufficient_stock`` and the caller's transaction
rolls back every decrement made before it. No read-then-write, so no oversell under any
concurrency, on PostgreSQL and SQLite alike; ``CHECK (stock >= 0)`` backs it up.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import update
from sqlalchemy.orm import Session

from siyu.catalog.models import Sku
from siyu.kit.errors import DomainError, register_messages

register_messages(
    {
        "insufficient_stock": (
            409,
            "商品库存不足（SKU {sku_id} 需要 {requested} 件）",
            "Not enough stock (SKU {sku_id} needs {requested})",
        ),
    }
)


def reserve(session: Session, merchant_id: int, quantities: Mapping[int, int]) -> None:
    """Take ``quantities`` (sku_id -> units) out of stock, all or nothing (within the transaction)."""
    for sku_id in sorted(quantities):
        qty = quantities[sku_id]
        if qty <= 0:
            raise ValueError("quantities must be positive")
        result = session.execute(
            update(Sku)
            .where(Sku.merchant_id == merchant_id, Sku.id == sku_id, Sku.stock >= qty)
            .values(stock=Sku.stock - qty)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            raise DomainError("insufficient_stock", sku_id=sku_id, requested=qty)


def release(session: Session, merchant_id: int, quantities: Mapping[int, int]) -> None:
    """Put units back (cancelled unpaid orders, returned goods)."""
    for sku_id in sorted(quantities):
        qty = quantities[sku_id]
        if qty <= 0:
            continue
        session.execute(
            update(Sku)
            .where(Sku.merchant_id == merchant_id, Sku.id == sku_id)
            .values(stock=Sku.stock + qty)
            .execution_options(synchronize_session=False)
        )
