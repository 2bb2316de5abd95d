"""Queries shared by single-SKU activities. Every one filters on ``merchant_id``.

``ActivityTables`` binds them to a module's tables: the activity, its children (teams,
bargains: rows with a ``status`` and a foreign key to the activity) and the per-member counter
(one row per activity and member, moved only by conditional updates)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from siyu.catalog.models import Product, Sku
from siyu.db.dialect import for_update, insert_ignore
from siyu.members.models import Member

A = TypeVar("A")


def rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def sku_with_product(session: Session, merchant_id: int, sku_id: int) -> tuple[Sku, Product] | None:
    stmt = (
        select(Sku, Product)
        .join(Product, Product.id == Sku.product_id)
        .where(Sku.merchant_id == merchant_id, Product.merchant_id == merchant_id, Sku.id == sku_id)
    )
    row = session.execute(stmt).first()
    return (row[0], row[1]) if row else None


def members(session: Session, merchant_id: int, member_ids: Iterable[int]) -> dict[int, Member]:
    ids = sorted(set(member_ids))
    if not ids:
        return {}
    stmt = select(Member).where(Member.merchant_id == merchant_id, Member.id.in_(ids))
    return {m.id: m for m in session.scalars(stmt)}


@dataclass(frozen=True)
class ActivityTables(Generic[A]):
    """A module's activity, child and counter tables, and the names of their columns."""

    activity: type[A]  # e.g. GroupBuy
    child: type[Any]  # e.g. GroupTeam
    child_fk: str  # the child's column naming the activity, e.g. "group_buy_id"
    counter: type[Any]  # e.g. GroupBuyMemberCounter
    counter_fk: str  # the counter's column naming the activity
    counter_value: str  # the counted column, e.g. "units"

    def get(self, session: Session, merchant_id: int, activity_id: int, *, lock: bool = False) -> A | None:
        model: Any = self.activity
        stmt = select(model).where(model.merchant_id == merchant_id, model.id == activity_id)
        if lock:
            stmt = for_update(stmt, session).execution_options(populate_existing=True)
        return session.scalar(stmt)

    def search(self, merchant_id: int, status: str | None = None) -> Select[Any]:
        model: Any = self.activity
        stmt = select(model).where(model.merchant_id == merchant_id)
        if status:
            stmt = stmt.where(model.status == status)
        return stmt

    def search_children(self, merchant_id: int, activity_id: int, status: str | None = None) -> Select[Any]:
        child = self.child
        stmt = select(child).where(child.merchant_id == merchant_id, getattr(child, self.child_fk) == activity_id)
        if status:
            stmt = stmt.where(child.status == status)
        return stmt

    def child_counts(self, session: Session, merchant_id: int, activity_id: int) -> dict[str, int]:
        """Children per status."""
        child = self.child
        stmt = (
            select(child.status, func.count())
            .where(child.merchant_id == merchant_id, getattr(child, self.child_fk) == activity_id)
            .group_by(child.status)
        )
        return {str(s): int(n) for s, n in session.execute(stmt).all()}

    def has_children(self, session: Session, merchant_id: int, activity_id: int) -> bool:
        child = self.child
        stmt = select(child.id).where(child.merchant_id == merchant_id, getattr(child, self.child_fk) == activity_id)
        return session.scalar(stmt.limit(1)) is not None

    def _counter_row(self, merchant_id: int, activity_id: int, member_id: int) -> list[Any]:
        counter = self.counter
        return [
            counter.merchant_id == merchant_id,
            getattr(counter, self.counter_fk) == activity_id,
            counter.member_id == member_id,
        ]

    def take_counter(
        self, session: Session, merchant_id: int, activity_id: int, member_id: int, qty: int, limit: int
    ) -> bool:
        """``value += qty`` only while it stays within ``limit``; the row is created on first use."""
        counter, value = self.counter, getattr(self.counter, self.counter_value)
        insert_ignore(
            session, counter.__table__,
            {"merchant_id": merchant_id, self.counter_fk: activity_id, "member_id": member_id, self.counter_value: 0},
            [self.counter_fk, "member_id"],
        )
        result = session.execute(
            update(counter)
            .where(*self._counter_row(merchant_id, activity_id, member_id), value + qty <= limit)
            .values({self.counter_value: value + qty})
            .execution_options(synchronize_session=False)
        )
        return rowcount(result) == 1

    def give_back_counter(self, session: Session, merchant_id: int, activity_id: int, member_id: int, qty: int) -> None:
        counter, value = self.counter, getattr(self.counter, self.counter_value)
        session.execute(
            update(counter)
            .where(*self._counter_row(merchant_id, activity_id, member_id), value >= qty)
            .values({self.counter_value: value - qty})
            .execution_options(synchronize_session=False)
        )

    def counter_value_of(self, session: Session, merchant_id: int, activity_id: int, member_id: int) -> int:
        stmt = select(getattr(self.counter, self.counter_value)).where(
            *self._counter_row(merchant_id, activity_id, member_id)
        )
        return int(session.scalar(stmt) or 0)

    def delete_counters(self, session: Session, merchant_id: int, activity_id: int) -> None:
        counter = self.counter
        session.execute(
            delete(counter).where(counter.merchant_id == merchant_id, getattr(counter, self.counter_fk) == activity_id)
        )
