"""Admin API (area ``promotions``): item and order promotions — CRUD, activate/stop, stats.
Store API: the live promotions of a product or SKU (what the product page shows)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, status

from siyu.api.deps import DbSession, StaffPrincipal, StoreMerchant, require
from siyu.api.idempotency import idempotent
from siyu.kit.pagination import Page, PageParams, apply_sort, page_params, paginate
from siyu.promotions import repository as repo
from siyu.promotions import service
from siyu.promotions.models import Promotion
from siyu.promotions.schemas import (
    Kind,
    PromotionIn,
    PromotionOut,
    PromotionStatsOut,
    PromotionUpdate,
    StorePromotionOut,
)

admin = APIRouter(tags=["admin: promotions"])
store = APIRouter(tags=["store: promotions"])

StatusFilter = Literal["draft", "active", "stopped"]


@admin.get("/promotions", response_model=Page[PromotionOut])
def list_promotions(
    session: DbSession,
    kind: Kind | None = Query(None),
    promo_status: StatusFilter | None = Query(None, alias="status"),
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("promotions:read")),
) -> Page[PromotionOut]:
    stmt = repo.search(p.merchant_id, kind, promo_status)
    sortable: dict[str, Any] = {"id": Promotion.id, "starts_at": Promotion.starts_at, "created_at": Promotion.created_at}
    rows, total = paginate(session, apply_sort(stmt, params.sort, sortable, Promotion.id.desc()), params)
    return Page(items=[service.out(r) for r in rows], total=total, page=params.page, page_size=params.page_size)


@admin.post("/promotions", response_model=PromotionOut, status_code=status.HTTP_201_CREATED,
            summary="Create a draft promotion (rules validated for its kind)")
@idempotent
def create_promotion(
    body: PromotionIn, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> PromotionOut:
    return service.out(service.create(session, p.merchant_id, body, actor=p.actor))


@admin.get("/promotions/{promotion_id}", response_model=PromotionOut)
def get_promotion(
    promotion_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))
) -> PromotionOut:
    return service.out(service.get_promotion(session, p.merchant_id, promotion_id))


@admin.patch("/promotions/{promotion_id}", response_model=PromotionOut, summary="Change it before it starts")
def update_promotion(
    promotion_id: int, body: PromotionUpdate, session: DbSession,
    p: StaffPrincipal = Depends(require("promotions:write")),
) -> PromotionOut:
    return service.out(service.update(session, p.merchant_id, promotion_id, body, actor=p.actor))


@admin.delete("/promotions/{promotion_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a draft")
def delete_promotion(
    promotion_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> None:
    service.delete(session, p.merchant_id, promotion_id, actor=p.actor)


@admin.post("/promotions/{promotion_id}/activate", response_model=PromotionOut,
            summary="draft → active (scheduled until starts_at)")
def activate_promotion(
    promotion_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> PromotionOut:
    return service.out(service.activate(session, p.merchant_id, promotion_id, actor=p.actor))


@admin.post("/promotions/{promotion_id}/stop", response_model=PromotionOut, summary="Stop now")
def stop_promotion(
    promotion_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> PromotionOut:
    return service.out(service.stop(session, p.merchant_id, promotion_id, actor=p.actor))


@admin.get("/promotions/{promotion_id}/stats", response_model=PromotionStatsOut,
           summary="Orders using it (paid / pending / released), discount given, GMV")
def promotion_stats(
    promotion_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))
) -> PromotionStatsOut:
    return service.stats(session, p.merchant_id, promotion_id)


@store.get("/promotions", response_model=list[StorePromotionOut],
           summary="Live promotions of a product (or one SKU) with their prices and tiers")
def store_promotions(
    session: DbSession,
    merchant: StoreMerchant,
    product_id: int | None = Query(None),
    sku_id: int | None = Query(None),
) -> list[StorePromotionOut]:
    return service.store_promotions(session, merchant.id, product_id=product_id, sku_id=sku_id)
