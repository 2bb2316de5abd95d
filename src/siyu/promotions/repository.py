"""Promotion queries. Every one filters on ``merchant_id``.

Counters move only by conditional updates (no read-then-write); the ledger transitions are
conditional on the current status, so each happens exactly once.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Select,
    bindparam,
    cast,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from siyu.catalog.models import KIND_VIRTUAL, Product, Sku
from siyu.db.dialect import for_update, insert_ignore
from siyu.orders.models import Order, OrderLine
from siyu.promotions.models import (
    ACTIVE,
    PAID,
    RELEASED,
    RESERVED,
    FirstOrderClaim,
    Promotion,
    PromotionMemberCounter,
    PromotionSkuCounter,
    PromotionUsage,
)

# -- promotions ---------------------------------------------------------------------------------------


def promotion(session: Session, merchant_id: int, promotion_id: int, *, lock: bool = False) -> Promotion | None:
    stmt = select(Promotion).where(Promotion.merchant_id == merchant_id, Promotion.id == promotion_id)
    if lock:
        stmt = for_update(stmt, session).execution_options(populate_existing=True)
    return session.scalar(stmt)


def search(merchant_id: int, kind: str | None = None, status: str | None = None) -> Select[Any]:
    stmt = select(Promotion).where(Promotion.merchant_id == merchant_id)
    if kind:
        stmt = stmt.where(Promotion.kind == kind)
    if status:
        stmt = stmt.where(Promotion.status == status)
    return stmt


# The pricing-path queries are built once with bound parameters: building SQLAlchemy expressions
# is most of their cost on every checkout preview, and a prebuilt statement also reuses its
# compiled form (its cache key is memoised).


@functools.cache
def _live_stmt() -> Any:
    return (
        select(Promotion)
        .where(
            Promotion.merchant_id == bindparam("merchant_id"),
            Promotion.status == ACTIVE,
            Promotion.kind.in_(bindparam("kinds", expanding=True)),
            Promotion.starts_at <= bindparam("now"),
            Promotion.ends_at > bindparam("now"),
        )
        .order_by(Promotion.id)
    )


def live(session: Session, merchant_id: int, kinds: Iterable[str], now: dt.datetime) -> list[Promotion]:
    """Activated promotions of these kinds whose window contains ``now``, oldest first."""
    params = {"merchant_id": merchant_id, "kinds": list(kinds), "now": now}
    return list(session.scalars(_live_stmt(), params))


@functools.cache
def _skus_stmt() -> Any:
    return (
        select(Sku, Product)
        .join(Product, (Product.id == Sku.product_id) & (Product.merchant_id == Sku.merchant_id))
        .where(Sku.merchant_id == bindparam("merchant_id"), Sku.id.in_(bindparam("ids", expanding=True)))
    )


def skus_with_products(session: Session, merchant_id: int, sku_ids: Iterable[int]) -> dict[int, tuple[Sku, Product]]:
    ids = sorted(set(sku_ids))
    if not ids:
        return {}
    rows = session.execute(_skus_stmt(), {"merchant_id": merchant_id, "ids": ids}).all()
    return {sku.id: (sku, product) for sku, product in rows}


def virtual_product_ids(session: Session, merchant_id: int, product_ids: Iterable[int]) -> set[int]:
    """Which of these products are virtual (``products.kind``): a membership card, a service."""
    ids = sorted(set(product_ids))
    if not ids:
        return set()
    stmt = select(Product.id).where(
        Product.merchant_id == merchant_id, Product.id.in_(ids), Product.kind == KIND_VIRTUAL
    )
    return set(session.scalars(stmt))


def product_sku_ids(session: Session, merchant_id: int, product_id: int) -> list[int]:
    stmt = select(Sku.id).where(Sku.merchant_id == merchant_id, Sku.product_id == product_id).order_by(Sku.id)
    return list(session.scalars(stmt))


def product(session: Session, merchant_id: int, product_id: int) -> Product | None:
    return session.scalar(select(Product).where(Product.merchant_id == merchant_id, Product.id == product_id))


# -- member facts -------------------------------------------------------------------------------------


def has_paid_order(session: Session, merchant_id: int, member_id: int) -> bool:
    stmt = select(
        exists().where(Order.merchant_id == merchant_id, Order.member_id == member_id, Order.paid_at.is_not(None))
    )
    return bool(session.scalar(stmt))






@dataclass
class PricingFacts:
    first_order_eligible: bool = False
    member_units: dict[int, int] = field(default_factory=dict)
    add_on_sold: dict[tuple[int, int], int] = field(default_factory=dict)


@functools.cache
def _facts_stmt(units: bool, sold: bool, first_order: bool) -> Any:
    zero = literal(0, BigInteger)
    parts: list[Any] = []
    if units:
        parts.append(
            select(literal("units"), PromotionMemberCounter.promotion_id, zero,
                   cast(PromotionMemberCounter.units, BigInteger)).where(
                PromotionMemberCounter.merchant_id == bindparam("merchant_id"),
                PromotionMemberCounter.member_id == bindparam("member_id"),
                PromotionMemberCounter.promotion_id.in_(bindparam("limited", expanding=True)),
            )
        )
    if sold:
        parts.append(
            select(literal("sold"), PromotionSkuCounter.promotion_id, PromotionSkuCounter.sku_id,
                   cast(PromotionSkuCounter.sold, BigInteger)).where(
                PromotionSkuCounter.merchant_id == bindparam("merchant_id"),
                PromotionSkuCounter.promotion_id.in_(bindparam("add_ons", expanding=True)),
            )
        )
    if first_order:
        paid = exists().where(
            Order.merchant_id == bindparam("merchant_id"), Order.member_id == bindparam("member_id"),
            Order.paid_at.is_not(None),
        )
        claimed = exists().where(
            FirstOrderClaim.merchant_id == bindparam("merchant_id"), FirstOrderClaim.member_id == bindparam("member_id")
        )
        parts.append(select(literal("used"), zero, zero, zero).where(or_(paid, claimed)))
    return parts[0] if len(parts) == 1 else union_all(*parts)


def pricing_facts(
    session: Session, merchant_id: int, member_id: int | None, *, limited_ids: Iterable[int],
    add_on_ids: Iterable[int], first_order: bool,
) -> PricingFacts:
    """Everything the promotion stages need about the member and the add-on stock, in one round
    trip (``UNION ALL`` of tagged rows): units held per limited promotion, add-on units sold,
    and whether the member has a paid order or a first-order claim."""
    limited, add_ons = sorted(set(limited_ids)), sorted(set(add_on_ids))
    units = member_id is not None and bool(limited)
    first_order = member_id is not None and first_order
    facts = PricingFacts()
    if not (units or add_ons or first_order):
        return facts
    params = {"merchant_id": merchant_id, "member_id": member_id, "limited": limited, "add_ons": add_ons}
    used = False
    for tag, a, b, value in session.execute(_facts_stmt(units, bool(add_ons), first_order), params).all():
        if tag == "units":
            facts.member_units[int(a)] = int(value)
        elif tag == "sold":
            facts.add_on_sold[(int(a), int(b))] = int(value)
        elif tag == "used":
            used = True
    facts.first_order_eligible = first_order and not used
    return facts


def member_units(session: Session, merchant_id: int, member_id: int, promotion_ids: Iterable[int]) -> dict[int, int]:
    ids = sorted(set(promotion_ids))
    if not ids:
        return {}
    stmt = select(PromotionMemberCounter.promotion_id, PromotionMemberCounter.units).where(
        PromotionMemberCounter.merchant_id == merchant_id,
        PromotionMemberCounter.member_id == member_id,
        PromotionMemberCounter.promotion_id.in_(ids),
    )
    return {int(pid): int(units) for pid, units in session.execute(stmt).all()}




# -- guards (conditional updates) ------------------------------------------------------------------------


def claim_first_order(session: Session, merchant_id: int, member_id: int, order_id: int, promotion_id: int) -> bool:
    """Insert the member's claim; False when another order holds it (unique constraint)."""
    values = {"merchant_id": merchant_id, "member_id": member_id, "order_id": order_id, "promotion_id": promotion_id}
    return insert_ignore(session, FirstOrderClaim.__table__, values, ["merchant_id", "member_id"])  # type: ignore[arg-type]


def drop_first_order_claim(session: Session, merchant_id: int, order_id: int) -> int:
    result = session.execute(
        delete(FirstOrderClaim).where(FirstOrderClaim.merchant_id == merchant_id, FirstOrderClaim.order_id == order_id)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def take_member_units(
    session: Session, merchant_id: int, promotion_id: int, member_id: int, units: int, limit: int
) -> bool:
    """``units += q`` only while it stays within ``limit``; the row is created on first use."""
    insert_ignore(
        session, PromotionMemberCounter.__table__,  # type: ignore[arg-type]
        {"merchant_id": merchant_id, "promotion_id": promotion_id, "member_id": member_id, "units": 0},
        ["promotion_id", "member_id"],
    )
    result = session.execute(
        update(PromotionMemberCounter)
        .where(
            PromotionMemberCounter.merchant_id == merchant_id,
            PromotionMemberCounter.promotion_id == promotion_id,
            PromotionMemberCounter.member_id == member_id,
            PromotionMemberCounter.units + units <= limit,
        )
        .values(units=PromotionMemberCounter.units + units)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def give_member_units(session: Session, merchant_id: int, promotion_id: int, member_id: int, units: int) -> None:
    session.execute(
        update(PromotionMemberCounter)
        .where(
            PromotionMemberCounter.merchant_id == merchant_id,
            PromotionMemberCounter.promotion_id == promotion_id,
            PromotionMemberCounter.member_id == member_id,
            PromotionMemberCounter.units >= units,
        )
        .values(units=PromotionMemberCounter.units - units)
        .execution_options(synchronize_session=False)
    )


def ensure_sku_counter(session: Session, merchant_id: int, promotion_id: int, sku_id: int, stock: int) -> None:
    """Create the add-on counter, or set its stock (never below what is sold)."""
    inserted = insert_ignore(
        session, PromotionSkuCounter.__table__,  # type: ignore[arg-type]
        {"merchant_id": merchant_id, "promotion_id": promotion_id, "sku_id": sku_id, "stock": stock, "sold": 0},
        ["promotion_id", "sku_id"],
    )
    if not inserted:
        session.execute(
            update(PromotionSkuCounter)
            .where(
                PromotionSkuCounter.merchant_id == merchant_id,
                PromotionSkuCounter.promotion_id == promotion_id,
                PromotionSkuCounter.sku_id == sku_id,
                PromotionSkuCounter.sold <= stock,
            )
            .values(stock=stock)
            .execution_options(synchronize_session=False)
        )


def take_sku_units(session: Session, merchant_id: int, promotion_id: int, sku_id: int, qty: int) -> bool:
    result = session.execute(
        update(PromotionSkuCounter)
        .where(
            PromotionSkuCounter.merchant_id == merchant_id,
            PromotionSkuCounter.promotion_id == promotion_id,
            PromotionSkuCounter.sku_id == sku_id,
            PromotionSkuCounter.sold + qty <= PromotionSkuCounter.stock,
        )
        .values(sold=PromotionSkuCounter.sold + qty)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def give_sku_units(session: Session, merchant_id: int, promotion_id: int, sku_id: int, qty: int) -> None:
    session.execute(
        update(PromotionSkuCounter)
        .where(
            PromotionSkuCounter.merchant_id == merchant_id,
            PromotionSkuCounter.promotion_id == promotion_id,
            PromotionSkuCounter.sku_id == sku_id,
            PromotionSkuCounter.sold >= qty,
        )
        .values(sold=PromotionSkuCounter.sold - qty)
        .execution_options(synchronize_session=False)
    )


# -- usage ledger -------------------------------------------------------------------------------------------


def add_usage(session: Session, usage: PromotionUsage) -> None:
    session.add(usage)
    session.flush()


def usages_of_order(session: Session, merchant_id: int, order_id: int) -> list[PromotionUsage]:
    stmt = select(PromotionUsage).where(PromotionUsage.merchant_id == merchant_id, PromotionUsage.order_id == order_id)
    return list(session.scalars(stmt.order_by(PromotionUsage.promotion_id)))


def usages_of_order_locked(session: Session, merchant_id: int, order_id: int) -> list[PromotionUsage]:
    stmt = select(PromotionUsage).where(PromotionUsage.merchant_id == merchant_id, PromotionUsage.order_id == order_id)
    stmt = for_update(stmt.order_by(PromotionUsage.id), session).execution_options(populate_existing=True)
    return list(session.scalars(stmt))


def order_line_ids(session: Session, merchant_id: int, order_id: int) -> list[int]:
    """The order's line ids in their order (a line's rank is its position in the checkout)."""
    stmt = select(OrderLine.id).where(OrderLine.merchant_id == merchant_id, OrderLine.order_id == order_id)
    return [int(i) for i in session.scalars(stmt.order_by(OrderLine.id))]


def release_usage(session: Session, merchant_id: int, usage_id: int, now: dt.datetime) -> bool:
    """reserved → released, once."""
    result = session.execute(
        update(PromotionUsage)
        .where(PromotionUsage.merchant_id == merchant_id, PromotionUsage.id == usage_id, PromotionUsage.status == RESERVED)
        .values(status=RELEASED, released_at=now)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def mark_order_paid(session: Session, merchant_id: int, order_id: int, now: dt.datetime) -> int:
    result = session.execute(
        update(PromotionUsage)
        .where(
            PromotionUsage.merchant_id == merchant_id,
            PromotionUsage.order_id == order_id,
            PromotionUsage.status == RESERVED,
        )
        .values(status=PAID, paid_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def usage_stats(session: Session, merchant_id: int, promotion_id: int) -> dict[str, dict[str, int]]:
    stmt = (
        select(
            PromotionUsage.status,
            func.count(),
            func.coalesce(func.sum(PromotionUsage.units), 0),
            func.coalesce(func.sum(PromotionUsage.discount), 0),
            func.coalesce(func.sum(PromotionUsage.gmv), 0),
            func.coalesce(func.sum(PromotionUsage.refunded), 0),
        )
        .where(PromotionUsage.merchant_id == merchant_id, PromotionUsage.promotion_id == promotion_id)
        .group_by(PromotionUsage.status)
    )
    return {
        str(status): {"orders": int(n), "units": int(u), "discount": int(d), "gmv": int(g), "refunded": int(r)}
        for status, n, u, d, g, r in session.execute(stmt).all()
    }


def has_usage(session: Session, merchant_id: int, promotion_id: int) -> bool:
    stmt = select(
        exists().where(PromotionUsage.merchant_id == merchant_id, PromotionUsage.promotion_id == promotion_id)
    )
    return bool(session.scalar(stmt))







def on_sale_skus(session: Session, merchant_id: int, limit: int = 200) -> list[Sku]:
    """Active SKUs of on-sale products, oldest first (demo data picks from them)."""
    from siyu.catalog.models import PRODUCT_ON_SALE

    stmt = (
        select(Sku)
        .join(Product, (Product.id == Sku.product_id) & (Product.merchant_id == Sku.merchant_id))
        .where(Sku.merchant_id == merchant_id, Sku.active.is_(True), Product.status == PRODUCT_ON_SALE, Sku.stock > 0)
        .order_by(Sku.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))
