"""Queries for categories, products and SKUs. Every query is scoped by ``merchant_id``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, func, select, update
from sqlalchemy.orm import Session

from siyu.catalog.models import PRODUCT_ON_SALE, Category, Product, Sku
from siyu.db.dialect import for_update

# -- categories ----------------------------------------------------------------------------------


def category_by_id(session: Session, merchant_id: int, category_id: int) -> Category | None:
    return session.scalar(select(Category).where(Category.merchant_id == merchant_id, Category.id == category_id))


def categories(session: Session, merchant_id: int, *, visible_only: bool = False) -> list[Category]:
    stmt = select(Category).where(Category.merchant_id == merchant_id)
    if visible_only:
        stmt = stmt.where(Category.visible.is_(True))
    return list(session.scalars(stmt.order_by(Category.sort, Category.id)))


def category_parents(session: Session, merchant_id: int) -> dict[int, int | None]:
    """``{category_id: parent_id}`` for the merchant (small: a store has tens of categories)."""
    stmt = select(Category.id, Category.parent_id).where(Category.merchant_id == merchant_id)
    return {cid: parent for cid, parent in session.execute(stmt).all()}


def category_has_children(session: Session, merchant_id: int, category_id: int) -> bool:
    stmt = select(Category.id).where(Category.merchant_id == merchant_id, Category.parent_id == category_id).limit(1)
    return session.scalar(stmt) is not None


def category_product_count(session: Session, merchant_id: int, category_id: int) -> int:
    stmt = select(func.count()).where(Product.merchant_id == merchant_id, Product.category_id == category_id)
    return int(session.scalar(stmt) or 0)


# -- products ------------------------------------------------------------------------------------


def product_by_id(session: Session, merchant_id: int, product_id: int) -> Product | None:
    return session.scalar(select(Product).where(Product.merchant_id == merchant_id, Product.id == product_id))


def products_by_ids(session: Session, merchant_id: int, product_ids: Iterable[int]) -> list[Product]:
    ids = sorted(set(product_ids))
    if not ids:
        return []
    return list(session.scalars(select(Product).where(Product.merchant_id == merchant_id, Product.id.in_(ids))))


def existing_product_ids(session: Session, merchant_id: int, ids: Iterable[int]) -> set[int]:
    """Which of ``ids`` are the merchant's products (a promotion's or coupon's scope)."""
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    stmt = select(Product.id).where(Product.merchant_id == merchant_id, Product.id.in_(wanted))
    return {int(i) for i in session.scalars(stmt)}


def existing_category_ids(session: Session, merchant_id: int, ids: Iterable[int]) -> set[int]:
    """Which of ``ids`` are the merchant's categories."""
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    stmt = select(Category.id).where(Category.merchant_id == merchant_id, Category.id.in_(wanted))
    return {int(i) for i in session.scalars(stmt)}


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def admin_product_search(
    merchant_id: int,
    *,
    status: str | None = None,
    category_ids: list[int] | None = None,
    q: str | None = None,
    low_stock: int | None = None,
) -> Select[Any]:
    """Products for the admin list. ``low_stock=N``: products with an active SKU whose stock is ≤ N."""
    stmt = select(Product).where(Product.merchant_id == merchant_id)
    if status:
        stmt = stmt.where(Product.status == status)
    if category_ids is not None:
        stmt = stmt.where(Product.category_id.in_(category_ids))
    if q:
        stmt = stmt.where(Product.title.ilike(_like(q), escape="\\"))
    if low_stock is not None:
        low = select(Sku.product_id).where(
            Sku.merchant_id == merchant_id, Sku.active.is_(True), Sku.stock <= low_stock
        )
        stmt = stmt.where(Product.id.in_(low))
    return stmt


def active_sku_stats() -> Select[int, int, int, int, int, int, int]:
    """Per product over its active SKUs: min/max sale price, min list price, stock sum, count."""
    return (
        select(
            Sku.merchant_id.label("merchant_id"),
            Sku.product_id.label("product_id"),
            func.min(Sku.sale_price).label("min_sale_price"),
            func.max(Sku.sale_price).label("max_sale_price"),
            func.min(Sku.list_price).label("min_list_price"),
            func.coalesce(func.sum(Sku.stock), 0).label("total_stock"),
            func.count(Sku.id).label("sku_count"),
        )
        .where(Sku.active.is_(True))
        .group_by(Sku.merchant_id, Sku.product_id)
    )


@dataclass(frozen=True)
class SkuStats:
    min_sale_price: int
    max_sale_price: int
    min_list_price: int
    total_stock: int
    sku_count: int


def sku_stats(session: Session, merchant_id: int, product_ids: Iterable[int]) -> dict[int, SkuStats]:
    """Active-SKU figures for the given products (products without an active SKU are absent)."""
    ids = sorted(set(product_ids))
    if not ids:
        return {}
    stats = active_sku_stats().where(Sku.merchant_id == merchant_id, Sku.product_id.in_(ids)).subquery()
    rows = session.execute(select(stats)).all()
    return {
        row.product_id: SkuStats(
            int(row.min_sale_price), int(row.max_sale_price), int(row.min_list_price), int(row.total_stock),
            int(row.sku_count),
        )
        for row in rows
    }


def store_product_search(
    merchant_id: int,
    *,
    category_ids: list[int] | None = None,
    q: str | None = None,
) -> tuple[Select[Any], dict[str, Any]]:
    """On-sale products with at least one active SKU, and the columns the store may sort by."""
    stats = active_sku_stats().where(Sku.merchant_id == merchant_id).subquery()
    stmt = (
        select(Product)
        .join(stats, and_(stats.c.product_id == Product.id, stats.c.merchant_id == Product.merchant_id))
        .where(Product.merchant_id == merchant_id, Product.status == PRODUCT_ON_SALE)
    )
    if category_ids is not None:
        stmt = stmt.where(Product.category_id.in_(category_ids))
    if q:
        stmt = stmt.where(Product.title.ilike(_like(q), escape="\\"))
    sortable = {
        "price": stats.c.min_sale_price,
        "sales": Product.sales_count,
        "created_at": Product.created_at,
        "sort": Product.sort,
    }
    return stmt, sortable


def freight_template_exists(session: Session, merchant_id: int, template_id: int) -> bool:
    from siyu.orders.models import FreightTemplate  # the orders domain owns freight templates

    stmt = select(FreightTemplate.id).where(
        FreightTemplate.merchant_id == merchant_id, FreightTemplate.id == template_id
    )
    return session.scalar(stmt) is not None


# -- SKUs ----------------------------------------------------------------------------------------


def sku_by_id(session: Session, merchant_id: int, sku_id: int) -> Sku | None:
    return session.scalar(select(Sku).where(Sku.merchant_id == merchant_id, Sku.id == sku_id))


def skus_of(session: Session, merchant_id: int, product_ids: Iterable[int], *, active_only: bool = False) -> list[Sku]:
    ids = sorted(set(product_ids))
    if not ids:
        return []
    stmt = select(Sku).where(Sku.merchant_id == merchant_id, Sku.product_id.in_(ids))
    if active_only:
        stmt = stmt.where(Sku.active.is_(True))
    return list(session.scalars(stmt.order_by(Sku.product_id, Sku.id)))


def active_sku_count(session: Session, merchant_id: int, product_id: int, *, excluding: int | None = None) -> int:
    stmt = select(func.count()).where(
        Sku.merchant_id == merchant_id, Sku.product_id == product_id, Sku.active.is_(True)
    )
    if excluding is not None:
        stmt = stmt.where(Sku.id != excluding)
    return int(session.scalar(stmt) or 0)


def taken_sku_codes(
    session: Session, merchant_id: int, codes: Iterable[str], *, excluding_sku: int | None = None
) -> set[str]:
    wanted = sorted(set(codes))
    if not wanted:
        return set()
    stmt = select(Sku.sku_code).where(Sku.merchant_id == merchant_id, Sku.sku_code.in_(wanted))
    if excluding_sku is not None:
        stmt = stmt.where(Sku.id != excluding_sku)
    return set(session.scalars(stmt))


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


def add_stock(session: Session, merchant_id: int, sku_id: int, delta: int) -> int | None:
    """``stock += delta`` in one conditional UPDATE that never goes below zero.

    Returns the new stock, or None when the SKU does not exist or the result would be negative.
    """
    stmt = (
        update(Sku)
        .where(Sku.merchant_id == merchant_id, Sku.id == sku_id, Sku.stock + delta >= 0)
        .values(stock=Sku.stock + delta)
        .returning(Sku.stock)
        .execution_options(synchronize_session=False)
    )
    new = session.execute(stmt).scalar_one_or_none()
    return None if new is None else int(new)


def lock_stock(session: Session, merchant_id: int, sku_id: int) -> int | None:
    """The SKU's current stock, row-locked until the transaction ends (PostgreSQL)."""
    stmt = for_update(select(Sku.stock).where(Sku.merchant_id == merchant_id, Sku.id == sku_id), session)
    value = session.scalar(stmt)
    return None if value is None else int(value)


def set_stock(session: Session, merchant_id: int, sku_id: int, quantity: int) -> None:
    session.execute(
        update(Sku)
        .where(Sku.merchant_id == merchant_id, Sku.id == sku_id)
        .values(stock=quantity)
        .execution_options(synchronize_session=False)
    )


# -- sales counts (the store's "sort by sales") ------------------------------------------------------


def add_sales(session: Session, merchant_id: int, units_by_product: dict[int, int]) -> None:
    """Add (or, with negative units, take back) sold units; a count never goes below zero."""
    from sqlalchemy import case

    for product_id in sorted(units_by_product):
        units = units_by_product[product_id]
        if units == 0:
            continue
        session.execute(
            update(Product)
            .where(Product.merchant_id == merchant_id, Product.id == product_id)
            .values(sales_count=case((Product.sales_count + units >= 0, Product.sales_count + units), else_=0))
            .execution_options(synchronize_session=False)
        )


def recount_sales(session: Session, merchant_id: int) -> None:
    """Set every product's sales count from its paid, not refunded units (demo seed, repairs)."""
    from siyu.orders.models import CANCELLED, CLOSED, PENDING_PAYMENT, Order, OrderLine

    sold = (
        select(func.coalesce(func.sum(OrderLine.quantity - OrderLine.refunded_quantity), 0))
        .join(Order, (Order.id == OrderLine.order_id) & (Order.merchant_id == merchant_id))
        .where(
            OrderLine.merchant_id == merchant_id, OrderLine.product_id == Product.id,
            Order.status.not_in((PENDING_PAYMENT, CANCELLED, CLOSED)),
        )
        .scalar_subquery()
    )
    session.execute(
        update(Product).where(Product.merchant_id == merchant_id).values(sales_count=sold)
        .execution_options(synchronize_session=False)
    )
