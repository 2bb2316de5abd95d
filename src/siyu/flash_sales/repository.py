"""Flash-sale queries. Every one filters on ``merchant_id``.

The gate's conditional updates live in ``gate.DatabaseGate``; the ledger transitions here are
conditional too (``WHERE status = 'reserved'``), so each happens exactly once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.orm import Session

from siyu.catalog.models import Product, Sku
from siyu.db.dialect import for_update
from siyu.flash_sales import gate
from siyu.flash_sales.models import (
    ACTIVE,
    DRAFT,
    ENDED,
    PAID,
    REFUNDED,
    RELEASED,
    RESERVED,
    SCHEDULED,
    FlashSale,
    FlashSaleItem,
    FlashSaleMemberCounter,
    FlashSalePurchase,
    FlashSaleStockShard,
)

# -- activities and items ----------------------------------------------------------------------------


def flash_sale(session: Session, merchant_id: int, sale_id: int, *, lock: bool = False) -> FlashSale | None:
    stmt = select(FlashSale).where(FlashSale.merchant_id == merchant_id, FlashSale.id == sale_id)
    if lock:
        stmt = for_update(stmt, session).execution_options(populate_existing=True)
    return session.scalar(stmt)


def search_flash_sales(merchant_id: int, status: str | None = None) -> Select[Any]:
    stmt = select(FlashSale).where(FlashSale.merchant_id == merchant_id)
    if status:
        stmt = stmt.where(FlashSale.status == status)
    return stmt


def live_flash_sales(session: Session, merchant_id: int, until: dt.datetime, since: dt.datetime) -> list[FlashSale]:
    """Published activities whose window overlaps ``[since, until)``."""
    stmt = select(FlashSale).where(
        FlashSale.merchant_id == merchant_id,
        FlashSale.status.in_((SCHEDULED, ACTIVE)),
        FlashSale.starts_at < until,
        FlashSale.ends_at > since,
    )
    return list(session.scalars(stmt.order_by(FlashSale.starts_at, FlashSale.id)))


def published_flash_sales(session: Session, merchant_id: int) -> list[FlashSale]:
    stmt = select(FlashSale).where(FlashSale.merchant_id == merchant_id, FlashSale.status.in_((SCHEDULED, ACTIVE)))
    return list(session.scalars(stmt))


def items(session: Session, merchant_id: int, sale_ids: Iterable[int]) -> list[FlashSaleItem]:
    ids = sorted(set(sale_ids))
    if not ids:
        return []
    stmt = select(FlashSaleItem).where(FlashSaleItem.merchant_id == merchant_id, FlashSaleItem.flash_sale_id.in_(ids))
    return list(session.scalars(stmt.order_by(FlashSaleItem.sort, FlashSaleItem.id)))


def item(session: Session, merchant_id: int, item_id: int, *, refresh: bool = False) -> FlashSaleItem | None:
    stmt = select(FlashSaleItem).where(FlashSaleItem.merchant_id == merchant_id, FlashSaleItem.id == item_id)
    if refresh:
        stmt = stmt.execution_options(populate_existing=True)
    return session.scalar(stmt)


def item_with_sale(session: Session, merchant_id: int, item_id: int) -> tuple[FlashSaleItem, FlashSale] | None:
    stmt = (
        select(FlashSaleItem, FlashSale)
        .join(FlashSale, FlashSale.id == FlashSaleItem.flash_sale_id)
        .where(
            FlashSaleItem.merchant_id == merchant_id,
            FlashSale.merchant_id == merchant_id,
            FlashSaleItem.id == item_id,
        )
    )
    row = session.execute(stmt).first()
    return (row[0], row[1]) if row else None


def skus_with_products(session: Session, merchant_id: int, sku_ids: Iterable[int]) -> dict[int, tuple[Sku, Product]]:
    ids = sorted(set(sku_ids))
    if not ids:
        return {}
    stmt = (
        select(Sku, Product)
        .join(Product, Product.id == Sku.product_id)
        .where(Sku.merchant_id == merchant_id, Product.merchant_id == merchant_id, Sku.id.in_(ids))
    )
    return {sku.id: (sku, product) for sku, product in session.execute(stmt).all()}


def create_shards(session: Session, merchant_id: int, item_id: int, units: int) -> None:
    """The new item's stock rows: ``units`` split over ``SHARDS`` rows."""
    session.execute(
        insert(FlashSaleStockShard),
        [{"merchant_id": merchant_id, "item_id": item_id, "shard": shard, "remaining": q}
         for shard, q in enumerate(gate.split_units(units))],
    )
    gate.forget_sold_out(session, merchant_id, item_id)  # an id reused (a test database): no stale memo


def set_activity_stock(session: Session, merchant_id: int, item_id: int, delta: int) -> bool:
    """``activity_stock += delta``, the units added to or taken from the shards; False (and the
    caller rolls back) when lowering would take units already sold."""
    moved = session.execute(
        update(FlashSaleItem)
        .where(
            FlashSaleItem.merchant_id == merchant_id,
            FlashSaleItem.id == item_id,
            FlashSaleItem.closed.is_(False),
            FlashSaleItem.activity_stock + delta >= 0,
        )
        .values(activity_stock=FlashSaleItem.activity_stock + delta)
        .returning(FlashSaleItem.id)
        .execution_options(synchronize_session=False)
    ).first()
    if moved is None:
        return False
    if delta > 0:
        gate.add_units(session, merchant_id, item_id, delta)
        return True
    # The item row first, the shards second (in shard order): as ``end`` and every release.
    return gate.take_from_all(session, merchant_id, item_id, -delta)[0]


def close_items(session: Session, merchant_id: int, sale_id: int) -> list[tuple[int, int, int]]:
    """Shrink every open item of the activity to what it sold and mark it closed; returns
    ``(item_id, sku_id, units returned)`` for the caller to give back to the SKUs. Runs once
    per item (``closed`` goes false → true in the same statement). Item rows are locked first,
    their shards second (in item and shard order), as by a release."""
    closing = session.execute(
        update(FlashSaleItem)
        .where(
            FlashSaleItem.merchant_id == merchant_id,
            FlashSaleItem.flash_sale_id == sale_id,
            FlashSaleItem.closed.is_(False),
        )
        .values(closed=True)
        .returning(FlashSaleItem.id, FlashSaleItem.sku_id)
        .execution_options(synchronize_session=False)
    ).all()
    if not closing:
        return []
    ids = sorted(int(r[0]) for r in closing)
    shards = FlashSaleStockShard
    lock: Any = (
        select(shards.item_id, shards.remaining)
        .where(shards.merchant_id == merchant_id, shards.item_id.in_(ids))
        .order_by(shards.item_id, shards.shard)
    )
    unsold: dict[int, int] = {}
    for row in session.execute(for_update(lock, session)).all():
        unsold[int(row[0])] = unsold.get(int(row[0]), 0) + int(row[1])
    session.execute(
        update(shards)
        .where(shards.merchant_id == merchant_id, shards.item_id.in_(ids), shards.remaining > 0)
        .values(remaining=0)
        .execution_options(synchronize_session=False)
    )
    out = []
    for item_id, sku_id in sorted((int(r[0]), int(r[1])) for r in closing):
        units = unsold.get(item_id, 0)
        if units:
            session.execute(
                update(FlashSaleItem)
                .where(FlashSaleItem.merchant_id == merchant_id, FlashSaleItem.id == item_id)
                .values(activity_stock=FlashSaleItem.activity_stock - units,
                        returned_stock=FlashSaleItem.returned_stock + units)
                .execution_options(synchronize_session=False)
            )
        out.append((item_id, sku_id, units))
    return out


def delete_item(session: Session, merchant_id: int, item_id: int) -> FlashSaleItem | None:
    """Delete an item nobody ever bought, with its shards; returns it (for its stock), or None if
    it has sales or any ledger history (a released purchase still names the item: the ledger is
    kept). The caller deletes the item row itself."""
    found = item(session, merchant_id, item_id)
    if found is None:
        return None
    has_history = (
        select(FlashSalePurchase.id)
        .where(FlashSalePurchase.merchant_id == merchant_id, FlashSalePurchase.item_id == item_id)
        .exists()
    )
    # Conditional: lock the item row only while there is no ledger history, then remove the
    # shards; the units they held (read as they are deleted, after any purchase in flight
    # committed) must be the whole activity stock, i.e. nothing sold.
    locked = session.execute(
        update(FlashSaleItem)
        .where(FlashSaleItem.merchant_id == merchant_id, FlashSaleItem.id == item_id, ~has_history)
        .values(returned_stock=FlashSaleItem.returned_stock)
        .returning(FlashSaleItem.activity_stock)
        .execution_options(synchronize_session=False)
    ).first()
    if locked is None:
        return None
    held = session.execute(
        delete(FlashSaleStockShard)
        .where(FlashSaleStockShard.merchant_id == merchant_id, FlashSaleStockShard.item_id == item_id)
        .returning(FlashSaleStockShard.remaining)
        .execution_options(synchronize_session=False)
    ).all()
    if sum(int(r[0]) for r in held) != int(locked[0]):
        return None
    return found


# -- ledger ------------------------------------------------------------------------------------------


def add_purchase(session: Session, purchase: FlashSalePurchase) -> None:
    session.add(purchase)
    session.flush()


def release_order_purchases(session: Session, merchant_id: int, order_id: int, now: dt.datetime) -> list[tuple[int, int, int]]:
    """reserved → released for the order's purchases; returns ``(item_id, member_id, quantity)``
    of the rows that moved (an already released or paid row does not move again)."""
    rows = session.execute(
        update(FlashSalePurchase)
        .where(
            FlashSalePurchase.merchant_id == merchant_id,
            FlashSalePurchase.order_id == order_id,
            FlashSalePurchase.status == RESERVED,
        )
        .values(status=RELEASED, released_at=now, updated_at=now)
        .returning(FlashSalePurchase.item_id, FlashSalePurchase.member_id, FlashSalePurchase.quantity)
        .execution_options(synchronize_session=False)
    ).all()
    return [(int(r[0]), int(r[1]), int(r[2])) for r in rows]


def refund_order_purchases(session: Session, merchant_id: int, order_id: int, now: dt.datetime) -> list[tuple[int, int, int]]:
    """reserved or paid → refunded for a fully refunded order's purchases (a ``reserved`` row is
    one whose ``order.paid`` job has not run yet); returns ``(item_id, member_id, quantity)`` of
    the rows that moved, once."""
    rows = session.execute(
        update(FlashSalePurchase)
        .where(
            FlashSalePurchase.merchant_id == merchant_id,
            FlashSalePurchase.order_id == order_id,
            FlashSalePurchase.status.in_((RESERVED, PAID)),
        )
        .values(status=REFUNDED, released_at=now, updated_at=now)
        .returning(FlashSalePurchase.item_id, FlashSalePurchase.member_id, FlashSalePurchase.quantity)
        .execution_options(synchronize_session=False)
    ).all()
    return [(int(r[0]), int(r[1]), int(r[2])) for r in rows]


def mark_order_paid(session: Session, merchant_id: int, order_id: int, now: dt.datetime) -> int:
    result = session.execute(
        update(FlashSalePurchase)
        .where(
            FlashSalePurchase.merchant_id == merchant_id,
            FlashSalePurchase.order_id == order_id,
            FlashSalePurchase.status == RESERVED,
        )
        .values(status=PAID, paid_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def member_bought(session: Session, merchant_id: int, item_id: int, member_id: int) -> int:
    """Units the member's counter holds (committed ones, read without a lock)."""
    stmt = select(FlashSaleMemberCounter.bought).where(
        FlashSaleMemberCounter.merchant_id == merchant_id,
        FlashSaleMemberCounter.item_id == item_id,
        FlashSaleMemberCounter.member_id == member_id,
    )
    return int(session.scalar(stmt) or 0)


def member_units(session: Session, merchant_id: int, item_id: int) -> dict[int, int]:
    """Units each member holds (reserved or paid) according to the ledger."""
    stmt = (
        select(FlashSalePurchase.member_id, func.sum(FlashSalePurchase.quantity))
        .where(
            FlashSalePurchase.merchant_id == merchant_id,
            FlashSalePurchase.item_id == item_id,
            FlashSalePurchase.status.not_in((RELEASED, REFUNDED)),
        )
        .group_by(FlashSalePurchase.member_id)
    )
    return {int(m): int(q) for m, q in session.execute(stmt).all()}


def purchases_of_order(session: Session, merchant_id: int, order_id: int) -> list[FlashSalePurchase]:
    stmt = select(FlashSalePurchase).where(
        FlashSalePurchase.merchant_id == merchant_id, FlashSalePurchase.order_id == order_id
    )
    return list(session.scalars(stmt.order_by(FlashSalePurchase.id)))


def purchase_stats(session: Session, merchant_id: int, sale_id: int) -> dict[int, dict[str, dict[str, int]]]:
    """Per item and status: purchases (orders), units and amount."""
    stmt = (
        select(
            FlashSalePurchase.item_id,
            FlashSalePurchase.status,
            func.count(),
            func.coalesce(func.sum(FlashSalePurchase.quantity), 0),
            func.coalesce(func.sum(FlashSalePurchase.amount), 0),
        )
        .where(FlashSalePurchase.merchant_id == merchant_id, FlashSalePurchase.flash_sale_id == sale_id)
        .group_by(FlashSalePurchase.item_id, FlashSalePurchase.status)
    )
    out: dict[int, dict[str, dict[str, int]]] = {}
    for item_id, status, orders, units, amount in session.execute(stmt).all():
        out.setdefault(int(item_id), {})[str(status)] = {
            "orders": int(orders), "units": int(units), "amount": int(amount)
        }
    return out


def due_to_end(session: Session, merchant_id: int, now: dt.datetime) -> list[int]:
    stmt = select(FlashSale.id).where(
        FlashSale.merchant_id == merchant_id,
        FlashSale.status.in_((SCHEDULED, ACTIVE)),
        FlashSale.ends_at <= now,
    )
    return list(session.scalars(stmt))


__all__ = ["ACTIVE", "DRAFT", "ENDED", "SCHEDULED"]
