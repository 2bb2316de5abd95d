"""Store API: review an item of my order, my reviews, a product's reviews with its rating.
Admin API (area ``catalog``): list and filter reviews, hide / show, reply."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response, status

from siyu.api.deps import Customer, DbSession, StaffPrincipal, StoreMerchant, require
from siyu.catalog import service as catalog_service
from siyu.kit.pagination import Page, PageParams, apply_sort, page_params, paginate
from siyu.reviews import repository as repo
from siyu.reviews import service
from siyu.reviews.models import ProductReview
from siyu.reviews.schemas import (
    AdminReviewOut,
    MyReviewOut,
    ProductReviewsOut,
    ReplyIn,
    ReviewIn,
    ReviewStatus,
)

admin = APIRouter(tags=["admin: reviews"])
store = APIRouter(tags=["store: reviews"])

_SORTABLE: dict[str, Any] = {
    "id": ProductReview.id,
    "created_at": ProductReview.created_at,
    "rating": ProductReview.rating,
}


@store.post(
    "/reviews",
    response_model=MyReviewOut,
    status_code=status.HTTP_201_CREATED,
    summary="Review an item of my shipped or completed order (once; the same review again returns it)",
)
def create_review(body: ReviewIn, customer: Customer, session: DbSession, response: Response) -> MyReviewOut:
    review, created = service.create_review(session, customer.merchant_id, customer.member_id, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return MyReviewOut.model_validate(review)


@store.get("/me/reviews", response_model=Page[MyReviewOut])
def my_reviews(
    customer: Customer, session: DbSession, params: PageParams = Depends(page_params)
) -> Page[MyReviewOut]:
    stmt = apply_sort(
        repo.member_stmt(customer.merchant_id, customer.member_id),
        params.sort,
        _SORTABLE,
        ProductReview.id.desc(),
    )
    rows, total = paginate(session, stmt, params)
    return Page(
        items=[MyReviewOut.model_validate(r) for r in rows],
        total=total,
        page=params.page,
        page_size=params.page_size,
    )


@store.get(
    "/products/{product_id}/reviews",
    response_model=ProductReviewsOut,
    summary="A product's visible reviews (newest first) and its rating summary",
)
def product_reviews(
    product_id: int, merchant: StoreMerchant, session: DbSession, params: PageParams = Depends(page_params)
) -> ProductReviewsOut:
    stmt = apply_sort(
        repo.visible_stmt(merchant.id, product_id), params.sort, _SORTABLE, ProductReview.id.desc()
    )
    catalog_service.get_product(session, merchant.id, product_id)  # an unknown or foreign product is a 404
    rows, total = paginate(session, stmt, params)
    return ProductReviewsOut(
        product_id=product_id,
        summary=service.summary(session, merchant.id, product_id),
        items=service.public_reviews(session, merchant.id, rows),
        total=total,
        page=params.page,
        page_size=params.page_size,
    )


@admin.get("/reviews", response_model=Page[AdminReviewOut])
def list_reviews(
    session: DbSession,
    product_id: int | None = None,
    member_id: int | None = None,
    review_status: ReviewStatus | None = Query(None, alias="status"),
    rating: int | None = Query(None, ge=1, le=5),
    replied: bool | None = None,
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("catalog:read")),
) -> Page[AdminReviewOut]:
    stmt = repo.search(
        p.merchant_id,
        product_id=product_id,
        member_id=member_id,
        status=review_status,
        rating=rating,
        replied=replied,
    )
    rows, total = paginate(session, apply_sort(stmt, params.sort, _SORTABLE, ProductReview.id.desc()), params)
    return Page(
        items=[AdminReviewOut.model_validate(r) for r in rows],
        total=total,
        page=params.page,
        page_size=params.page_size,
    )


@admin.get("/reviews/{review_id}", response_model=AdminReviewOut)
def get_review(
    review_id: int, session: DbSession, p: StaffPrincipal = Depends(require("catalog:read"))
) -> AdminReviewOut:
    return AdminReviewOut.model_validate(service.get_review(session, p.merchant_id, review_id))


@admin.post(
    "/reviews/{review_id}/hide", response_model=AdminReviewOut, summary="Hide from the store (audited)"
)
def hide_review(
    review_id: int, session: DbSession, p: StaffPrincipal = Depends(require("catalog:write"))
) -> AdminReviewOut:
    return AdminReviewOut.model_validate(
        service.set_visibility(session, p.merchant_id, review_id, False, actor=p.actor)
    )


@admin.post(
    "/reviews/{review_id}/show", response_model=AdminReviewOut, summary="Show in the store again (audited)"
)
def show_review(
    review_id: int, session: DbSession, p: StaffPrincipal = Depends(require("catalog:write"))
) -> AdminReviewOut:
    return AdminReviewOut.model_validate(
        service.set_visibility(session, p.merchant_id, review_id, True, actor=p.actor)
    )


@admin.put(
    "/reviews/{review_id}/reply", response_model=AdminReviewOut, summary="Set or replace the merchant's reply"
)
def reply_review(
    review_id: int, body: ReplyIn, session: DbSession, p: StaffPrincipal = Depends(require("catalog:write"))
) -> AdminReviewOut:
    return AdminReviewOut.model_validate(
        service.reply(session, p.merchant_id, review_id, body.reply, actor=p.actor)
    )
