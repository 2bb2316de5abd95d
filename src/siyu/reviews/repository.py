"""Review queries. Every one filters on ``merchant_id``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from siyu.members.models import MEMBER_MERGED, Member
from siyu.orders.models import Order, OrderLine
from siyu.reviews.models import REVIEW_VISIBLE, ProductReview


def review(session: Session, merchant_id: int, review_id: int) -> ProductReview | None:
    return session.scalar(
        select(ProductReview).where(ProductReview.merchant_id == merchant_id, ProductReview.id == review_id)
    )


def review_of_line(session: Session, merchant_id: int, order_line_id: int) -> ProductReview | None:
    return session.scalar(
        select(ProductReview).where(
            ProductReview.merchant_id == merchant_id, ProductReview.order_line_id == order_line_id
        )
    )


def line_with_order(session: Session, merchant_id: int, order_line_id: int) -> tuple[OrderLine, Order] | None:
    row = session.execute(
        select(OrderLine, Order)
        .join(Order, (Order.id == OrderLine.order_id) & (Order.merchant_id == OrderLine.merchant_id))
        .where(OrderLine.merchant_id == merchant_id, OrderLine.id == order_line_id)
    ).first()
    return (row[0], row[1]) if row is not None else None


def first_review_id(session: Session, merchant_id: int, member_id: int) -> int | None:
    return session.scalar(
        select(func.min(ProductReview.id)).where(
            ProductReview.merchant_id == merchant_id, ProductReview.member_id == member_id
        )
    )


def visible_stmt(merchant_id: int, product_id: int) -> Select[Any]:
    return select(ProductReview).where(
        ProductReview.merchant_id == merchant_id,
        ProductReview.product_id == product_id,
        ProductReview.status == REVIEW_VISIBLE,
    )


def rating_counts(session: Session, merchant_id: int, product_id: int) -> dict[int, int]:
    rows = session.execute(
        select(ProductReview.rating, func.count())
        .where(
            ProductReview.merchant_id == merchant_id,
            ProductReview.product_id == product_id,
            ProductReview.status == REVIEW_VISIBLE,
        )
        .group_by(ProductReview.rating)
    ).all()
    return {int(r): int(c) for r, c in rows}


def member_stmt(merchant_id: int, member_id: int) -> Select[Any]:
    return select(ProductReview).where(
        ProductReview.merchant_id == merchant_id, ProductReview.member_id == member_id
    )


def search(
    merchant_id: int,
    *,
    product_id: int | None = None,
    member_id: int | None = None,
    status: str | None = None,
    rating: int | None = None,
    replied: bool | None = None,
) -> Select[Any]:
    stmt = select(ProductReview).where(ProductReview.merchant_id == merchant_id)
    if product_id is not None:
        stmt = stmt.where(ProductReview.product_id == product_id)
    if member_id is not None:
        stmt = stmt.where(ProductReview.member_id == member_id)
    if status:
        stmt = stmt.where(ProductReview.status == status)
    if rating is not None:
        stmt = stmt.where(ProductReview.rating == rating)
    if replied is not None:
        stmt = stmt.where(ProductReview.reply.is_not(None) if replied else ProductReview.reply.is_(None))
    return stmt


def current_member(session: Session, merchant_id: int, member_id: int) -> int:
    """``member_id``, or the member it was merged into (following a chain of merges)."""
    current = member_id
    for _ in range(10):
        row = session.execute(
            select(Member.status, Member.merged_into).where(Member.merchant_id == merchant_id, Member.id == current)
        ).first()
        if row is None or row[0] != MEMBER_MERGED or row[1] is None:
            break
        current = int(row[1])
    return current


def nicknames(session: Session, merchant_id: int, member_ids: set[int]) -> dict[int, str | None]:
    """Members' nicknames by id (for showing reviewers masked)."""
    if not member_ids:
        return {}
    rows = session.execute(
        select(Member.id, Member.nickname).where(Member.merchant_id == merchant_id, Member.id.in_(member_ids))
    ).all()
    return {int(i): n for i, n in rows}
