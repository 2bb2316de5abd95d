"""Queries for after-sales. Every query filters on ``merchant_id``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from siyu.aftersales.models import AfterSale, AfterSaleLine, AftersalePolicy
from siyu.catalog.models import Sku
from siyu.db.dialect import for_update
from siyu.kit.audit import AuditEvent


def get(session: Session, merchant_id: int, aftersale_id: int, *, lock: bool = False) -> AfterSale | None:
    stmt = select(AfterSale).where(AfterSale.merchant_id == merchant_id, AfterSale.id == aftersale_id)
    if lock:
        stmt = for_update(stmt, session).execution_options(populate_existing=True)
    return session.scalar(stmt)


def by_idempotency_key(session: Session, merchant_id: int, member_id: int, key: str) -> AfterSale | None:
    return session.scalar(
        select(AfterSale).where(
            AfterSale.merchant_id == merchant_id,
            AfterSale.member_id == member_id,
            AfterSale.idempotency_key == key,
        )
    )


def by_refund_id(
    session: Session, merchant_id: int, refund_id: int, *, lock: bool = False
) -> AfterSale | None:
    stmt = select(AfterSale).where(AfterSale.merchant_id == merchant_id, AfterSale.refund_id == refund_id)
    if lock:
        stmt = for_update(stmt, session).execution_options(populate_existing=True)
    return session.scalar(stmt)


def lines_of(session: Session, merchant_id: int, aftersale_id: int) -> list[AfterSaleLine]:
    stmt = (
        select(AfterSaleLine)
        .where(AfterSaleLine.merchant_id == merchant_id, AfterSaleLine.aftersale_id == aftersale_id)
        .order_by(AfterSaleLine.id)
    )
    return list(session.scalars(stmt))


def lines_of_many(
    session: Session, merchant_id: int, aftersale_ids: Iterable[int]
) -> dict[int, list[AfterSaleLine]]:
    ids = list(aftersale_ids)
    out: dict[int, list[AfterSaleLine]] = {i: [] for i in ids}
    if not ids:
        return out
    stmt = (
        select(AfterSaleLine)
        .where(AfterSaleLine.merchant_id == merchant_id, AfterSaleLine.aftersale_id.in_(ids))
        .order_by(AfterSaleLine.id)
    )
    for line in session.scalars(stmt):
        out[line.aftersale_id].append(line)
    return out


def open_lines(session: Session, merchant_id: int, order_line_ids: Iterable[int]) -> list[AfterSaleLine]:
    """Lines of open after-sales on these order lines (at most one per order line)."""
    ids = list(order_line_ids)
    if not ids:
        return []
    stmt = select(AfterSaleLine).where(
        AfterSaleLine.merchant_id == merchant_id, AfterSaleLine.open_order_line_id.in_(ids)
    )
    return list(session.scalars(stmt))


def search(
    session: Session,
    merchant_id: int,
    *,
    member_id: int | None = None,
    status: str | None = None,
    kind: str | None = None,
    order_id: int | None = None,
) -> Select[Any]:
    stmt = select(AfterSale).where(AfterSale.merchant_id == merchant_id)
    if member_id is not None:
        stmt = stmt.where(AfterSale.member_id == member_id)
    if status:
        stmt = stmt.where(AfterSale.status == status)
    if kind:
        stmt = stmt.where(AfterSale.kind == kind)
    if order_id is not None:
        stmt = stmt.where(AfterSale.order_id == order_id)
    return stmt


def audit_trail(session: Session, merchant_id: int, aftersale_id: int) -> list[AuditEvent]:
    stmt = (
        select(AuditEvent)
        .where(
            AuditEvent.merchant_id == merchant_id,
            AuditEvent.subject_type == "aftersale",
            AuditEvent.subject_id == aftersale_id,
        )
        .order_by(AuditEvent.id)
    )
    return list(session.scalars(stmt))


def policy(session: Session, merchant_id: int) -> AftersalePolicy | None:
    return session.scalar(select(AftersalePolicy).where(AftersalePolicy.merchant_id == merchant_id))


def sku(session: Session, merchant_id: int, sku_id: int) -> Sku | None:
    return session.scalar(select(Sku).where(Sku.merchant_id == merchant_id, Sku.id == sku_id))
