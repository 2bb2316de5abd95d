"""Product reviews.

- A customer reviews an item (order line) of **their own** order (or of a member merged into
  them) once the order is ``shipped``
  or ``completed`` (``review_not_allowed`` before that, or for a line refunded in full), once
  per line (``review_exists``; sending the identical review again returns the first one, so a
  retried submit is harmless). Rating 1-5, text up to 1,000 characters, up to 9 image URLs.
- Store: a product's visible reviews, newest first, with the summary over visible reviews
  (count, average to two decimals, count per rating).
- Admin: list and filter; hide / show (moderation, audited); reply (set or replaced, audited).
- The member's first review completes the loyalty task ``first_review``: ``review.created``
  is emitted in the same transaction and its job calls ``siyu.loyalty.service.complete_task``
  with ``ref="review:<the member's first review id>"`` — the same ref whichever review's job
  runs, so the task is rewarded once even when two first reviews race.

Services never commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.kit import audit
from siyu.kit.errors import DomainError, not_found, register_messages
from siyu.kit.events import emit
from siyu.kit.masking import mask_nickname
from siyu.kit.timeutil import utcnow
from siyu.reviews import repository as repo
from siyu.reviews.models import REVIEW_HIDDEN, REVIEW_VISIBLE, ProductReview
from siyu.reviews.schemas import PublicReviewOut, RatingSummary, ReviewIn, ReviewOut

register_messages(
    {
        "review_not_allowed": (
            409,
            "订单发货后才能评价该商品（订单状态：{status}）",
            "Items can be reviewed once the order has shipped (order status: {status})",
        ),
        "review_exists": (409, "该商品已评价过", "This item has already been reviewed"),
    }
)

REVIEWABLE_ORDER_STATUSES = ("shipped", "completed")

Actor = tuple[str, int | None]


def create_review(
    session: Session, merchant_id: int, member_id: int, data: ReviewIn
) -> tuple[ProductReview, bool]:
    """Review an order line of the member's own order; returns (review, created)."""
    found = repo.line_with_order(session, merchant_id, data.order_line_id)
    # orders stay under a member merged into this one (see ``members.service``): theirs too
    if found is None or repo.current_member(session, merchant_id, found[1].member_id) != member_id:
        raise not_found("订单商品", "Order item")
    line, order = found
    existing = repo.review_of_line(session, merchant_id, line.id)
    if existing is not None:
        return _replayed(existing, member_id, data), False
    if order.status not in REVIEWABLE_ORDER_STATUSES:
        raise DomainError("review_not_allowed", status=order.status)
    if line.refunded_quantity >= line.quantity:
        raise DomainError("review_not_allowed", status="refunded")
    review = ProductReview(
        merchant_id=merchant_id,
        member_id=member_id,
        order_id=order.id,
        order_line_id=line.id,
        product_id=line.product_id,
        sku_id=line.sku_id,
        spec_text=line.spec_text or "",
        rating=data.rating,
        content=data.content,
        images=list(data.images),
        status=REVIEW_VISIBLE,
    )
    session.add(review)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:  # the same line was reviewed in parallel
        other = repo.review_of_line(session, merchant_id, line.id)
        if other is None:
            raise
        return _replayed(other, member_id, data), False
    emit(
        session,
        merchant_id,
        "review.created",
        {
            "review_id": review.id,
            "member_id": member_id,
            "product_id": review.product_id,
            "rating": review.rating,
        },
        key=f"review:{review.id}",
    )
    return review, True


def _replayed(existing: ProductReview, member_id: int, data: ReviewIn) -> ProductReview:
    same = (
        existing.member_id == member_id
        and existing.rating == data.rating
        and existing.content == data.content
        and list(existing.images) == list(data.images)
    )
    if not same:
        raise DomainError("review_exists")
    return existing


def summary(session: Session, merchant_id: int, product_id: int) -> RatingSummary:
    counts = repo.rating_counts(session, merchant_id, product_id)
    total = sum(counts.values())
    average = round(sum(r * c for r, c in counts.items()) / total, 2) if total else None
    return RatingSummary(
        count=total, average_rating=average, counts={str(r): counts.get(r, 0) for r in range(1, 6)}
    )


def public_reviews(session: Session, merchant_id: int, rows: list[ProductReview]) -> list[PublicReviewOut]:
    """Reviews as anyone may see them: the reviewer as a masked nickname, never the member id."""
    names = repo.nicknames(session, merchant_id, {r.member_id for r in rows})
    return [
        PublicReviewOut.model_validate(
            {**ReviewOut.model_validate(r).model_dump(), "reviewer": mask_nickname(names.get(r.member_id))}
        )
        for r in rows
    ]


def get_review(session: Session, merchant_id: int, review_id: int) -> ProductReview:
    review = repo.review(session, merchant_id, review_id)
    if review is None:
        raise not_found("评价", "Review")
    return review


def set_visibility(
    session: Session, merchant_id: int, review_id: int, visible: bool, *, actor: Actor
) -> ProductReview:
    review = get_review(session, merchant_id, review_id)
    target = REVIEW_VISIBLE if visible else REVIEW_HIDDEN
    if review.status == target:
        return review
    before = review.status
    review.status, review.moderated_at, review.moderated_by = target, utcnow(), actor[1]
    session.flush()
    audit.record(
        session,
        merchant_id,
        "review",
        review.id,
        "shown" if visible else "hidden",
        from_state=before,
        to_state=target,
        actor=actor,
    )
    return review


def reply(session: Session, merchant_id: int, review_id: int, text: str, *, actor: Actor) -> ProductReview:
    review = get_review(session, merchant_id, review_id)
    text = text.strip()
    if not text:
        raise DomainError("validation_error")
    if review.reply == text:
        return review
    previous = review.reply
    review.reply, review.replied_at, review.replied_by = text, utcnow(), actor[1]
    session.flush()
    audit.record(
        session,
        merchant_id,
        "review",
        review.id,
        "replied",
        actor=actor,
        data={"reply": text, "previous": previous},
    )
    return review


def complete_first_review_task(session: Session, merchant_id: int, member_id: int) -> Any:
    """The loyalty task ``first_review`` for the member (idempotent by the first review's id).
    A merchant whose loyalty rules have no such task gets nothing (``task_unknown``)."""
    from siyu.loyalty import service as loyalty

    first = repo.first_review_id(session, merchant_id, member_id)
    if first is None:
        return None
    try:
        with session.begin_nested():
            return loyalty.complete_task(
                session, merchant_id, member_id, "first_review", ref=f"review:{first}"
            )
    except DomainError as exc:
        if exc.code != "task_unknown":
            raise
        return None
