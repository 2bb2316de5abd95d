"""Atomic stock reservation.

``reserve`` decrements each SKU conditionally (``stock = stock - :q ... WHERE stock >= :q``),
locking the rows in primary-key order (so two carts never deadlock on each other) — on
PostgreSQL all SKUs of an order in one statement (``db.dialect.take_many``); a SKU that cannot
cover its quantity raises ``insufficient_stock`` and the caller's transaction rolls back every
decrement made. No read-then-write, so no oversell under any
concurrency, on PostgreSQL and SQLite alike; ``CHECK (stock >= 0)`` backs it up.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from siyu.catalog.models import Sku
from siyu.db.dialect import is_check_violation, take_many, take_many_at_commit
from siyu.kit.errors import DomainError, register_messages

SKUS: Table = Sku.__table__  # type: ignore[assignment]

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
    """Take ``quantities`` (sku_id -> units) out of stock, all or nothing (within the transaction).

    On PostgreSQL every SKU of the order in one statement (``db.dialect.take_many``: rows locked
    in id order, each decremented only if it covers its quantity); the first SKU in id order
    that could not is reported, as the per-SKU loop reported it.
    """
    wanted = _positive(quantities)
    taken = take_many(session, SKUS, "stock", merchant_id, wanted, touch="updated_at")
    if len(taken) != len(wanted):
        sku_id = min(set(wanted) - taken)
        raise DomainError("insufficient_stock", sku_id=sku_id, requested=wanted[sku_id])


def reserve_at_commit(session: Session, merchant_id: int, quantities: Mapping[int, int]) -> None:
    """``reserve``, taken as the transaction's last statement: on PostgreSQL it is sent with the
    COMMIT (``db.final_write``), so a hot SKU is locked only while the server works, and a
    shortage (the ``CHECK (stock >= 0)`` refusal) rolls the transaction back at commit and
    raises ``insufficient_stock`` from there. On SQLite it is ``reserve``, at once.

    Nothing after it in the transaction may rely on the stock being taken."""
    wanted = _positive(quantities)

    def refused(s: Session, error: BaseException) -> BaseException | None:
        if not is_check_violation(error, "stock_nonneg"):
            return None
        stock = dict(s.execute(select(Sku.id, Sku.stock).where(Sku.merchant_id == merchant_id, Sku.id.in_(wanted))).all())
        short = sorted(i for i in wanted if stock.get(i, 0) < wanted[i]) or sorted(wanted)
        return DomainError("insufficient_stock", sku_id=short[0], requested=wanted[short[0]])

    if not take_many_at_commit(session, SKUS, "stock", merchant_id, wanted, touch="updated_at", refused=refused):
        reserve(session, merchant_id, wanted)


def _positive(quantities: Mapping[int, int]) -> dict[int, int]:
    wanted = dict(quantities)
    if any(qty <= 0 for qty in wanted.values()):
        raise ValueError("quantities must be positive")
    return wanted


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
