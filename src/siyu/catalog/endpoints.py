"""Admin API (area ``catalog``): categories, products, SKUs, status, stock.
Store API: the category tree, the product list and product detail (on sale only)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, status

from siyu.api.deps import DbSession, StaffPrincipal, StoreMerchant, require
from siyu.api.idempotency import idempotent
from siyu.catalog import service
from siyu.catalog.models import Product, Sku
from siyu.catalog.schemas import (
    CategoryIn,
    CategoryNode,
    CategoryOut,
    CategoryUpdate,
    ProductCard,
    ProductCreate,
    ProductDetailOut,
    ProductListItem,
    ProductStatusIn,
    ProductUpdate,
    SkuIn,
    SkuOut,
    SkuUpdate,
    StockAdjustIn,
    StoreCategoryNode,
    StoreProductOut,
)
from siyu.kit.pagination import Page, PageParams, sort_values, sorted_page_params

admin = APIRouter(tags=["admin: catalog"])
store = APIRouter(tags=["store: catalog"])


def _detail(session: DbSession, merchant_id: int, product: Product) -> ProductDetailOut:
    skus: list[Sku] = service.product_skus(session, merchant_id, product.id)
    out = ProductDetailOut.model_validate({**_product_fields(product), "skus": [SkuOut.model_validate(s) for s in skus]})
    return out


def _product_fields(product: Product) -> dict[str, object]:
    return {name: getattr(product, name) for name in ProductDetailOut.model_fields if name != "skus"}


# -- admin: categories ---------------------------------------------------------------------------


@admin.get("/categories", response_model=list[CategoryNode], summary="The category tree (hidden included)")
def category_tree(session: DbSession, p: StaffPrincipal = Depends(require("catalog:read"))) -> list[CategoryNode]:
    return service.category_tree(session, p.merchant_id)


@admin.post("/categories", response_model=CategoryOut, status_code=status.HTTP_201_CREATED)
@idempotent
def create_category(
    body: CategoryIn, session: DbSession, p: StaffPrincipal = Depends(require("catalog:write"))
) -> CategoryOut:
    return CategoryOut.model_validate(service.create_category(session, p.merchant_id, body))


@admin.get("/categories/{category_id}", response_model=CategoryOut)
def get_category(
    category_id: int, session: DbSession, p: StaffPrincipal = Depends(require("catalog:read"))
) -> CategoryOut:
    return CategoryOut.model_validate(service.get_category(session, p.merchant_id, category_id))


@admin.patch("/categories/{category_id}", response_model=CategoryOut)
def update_category(
    category_id: int, body: CategoryUpdate, session: DbSession, p: StaffPrincipal = Depends(require("catalog:write"))
) -> CategoryOut:
    return CategoryOut.model_validate(service.update_category(session, p.merchant_id, category_id, body))


@admin.delete(
    "/categories/{category_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an empty category (409 category_has_products / category_has_children)",
)
def delete_category(category_id: int, session: DbSession, p: StaffPrincipal = Depends(require("catalog:write"))) -> None:
    service.delete_category(session, p.merchant_id, category_id)


# -- admin: products -----------------------------------------------------------------------------


@admin.get("/products", response_model=Page[ProductListItem])
def list_products(
    session: DbSession,
    status_: Literal["draft", "on_sale", "off_shelf"] | None = Query(None, alias="status"),
    category_id: int | None = Query(None, description="includes its sub-categories"),
    q: str | None = Query(None, max_length=120, description="title contains"),
    low_stock: int | None = Query(None, ge=0, description="only products with an active SKU whose stock ≤ this"),
    params: PageParams = Depends(sorted_page_params(sort_values(service.ADMIN_SORTS))),
    p: StaffPrincipal = Depends(require("catalog:read")),
) -> Page[ProductListItem]:
    return service.list_products(
        session, p.merchant_id, params, status=status_, category_id=category_id, q=q, low_stock=low_stock
    )


@admin.post(
    "/products",
    response_model=ProductDetailOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a draft product with its SKUs (all or nothing)",
)
@idempotent
def create_product(
    body: ProductCreate, session: DbSession, p: StaffPrincipal = Depends(require("catalog:write"))
) -> ProductDetailOut:
    product = service.create_product(session, p.merchant_id, body)
    return _detail(session, p.merchant_id, product)


@admin.get("/products/{product_id}", response_model=ProductDetailOut)
def get_product(
    product_id: int, session: DbSession, p: StaffPrincipal = Depends(require("catalog:read"))
) -> ProductDetailOut:
    return _detail(session, p.merchant_id, service.get_product(session, p.merchant_id, product_id))


@admin.patch("/products/{product_id}", response_model=ProductDetailOut)
def update_product(
    product_id: int, body: ProductUpdate, session: DbSession, p: StaffPrincipal = Depends(require("catalog:write"))
) -> ProductDetailOut:
    return _detail(session, p.merchant_id, service.update_product(session, p.merchant_id, product_id, body))


@admin.post(
    "/products/{product_id}/status",
    response_model=ProductDetailOut,
    summary="draft → on_sale → off_shelf → on_sale (on_sale needs an active SKU)",
)
def set_status(
    product_id: int, body: ProductStatusIn, session: DbSession, p: StaffPrincipal = Depends(require("catalog:write"))
) -> ProductDetailOut:
    product = service.set_product_status(session, p.merchant_id, product_id, body.status, actor=p.actor)
    return _detail(session, p.merchant_id, product)


@admin.post("/products/{product_id}/skus", response_model=SkuOut, status_code=status.HTTP_201_CREATED)
@idempotent
def add_sku(
    product_id: int, body: SkuIn, session: DbSession, p: StaffPrincipal = Depends(require("catalog:write"))
) -> SkuOut:
    return SkuOut.model_validate(service.add_sku(session, p.merchant_id, product_id, body))


@admin.patch("/products/{product_id}/skus/{sku_id}", response_model=SkuOut)
def update_sku(
    product_id: int,
    sku_id: int,
    body: SkuUpdate,
    session: DbSession,
    p: StaffPrincipal = Depends(require("catalog:write")),
) -> SkuOut:
    return SkuOut.model_validate(service.update_sku(session, p.merchant_id, product_id, sku_id, body, actor=p.actor))


@admin.post("/products/{product_id}/skus/{sku_id}/deactivate", response_model=SkuOut)
def deactivate_sku(
    product_id: int, sku_id: int, session: DbSession, p: StaffPrincipal = Depends(require("catalog:write"))
) -> SkuOut:
    return SkuOut.model_validate(service.deactivate_sku(session, p.merchant_id, product_id, sku_id))


@admin.post(
    "/skus/{sku_id}/stock",
    response_model=SkuOut,
    summary="Set or change a SKU's stock (never below 0; audited)",
)
def adjust_stock(
    sku_id: int, body: StockAdjustIn, session: DbSession, p: StaffPrincipal = Depends(require("catalog:write"))
) -> SkuOut:
    sku = service.adjust_stock(
        session, p.merchant_id, sku_id, mode=body.mode, quantity=body.quantity, reason=body.reason, actor=p.actor
    )
    return SkuOut.model_validate(sku)


# -- store ---------------------------------------------------------------------------------------


@store.get("/categories", response_model=list[StoreCategoryNode], summary="Visible categories as a tree")
def store_categories(merchant: StoreMerchant, session: DbSession) -> list[StoreCategoryNode]:
    return service.store_category_tree(session, merchant.id)


@store.get(
    "/products",
    response_model=Page[ProductCard],
    summary="Products on sale; sort=price|-price|sales|-sales|newest",
)
def store_products(
    merchant: StoreMerchant,
    session: DbSession,
    category_id: int | None = Query(None, description="includes its sub-categories"),
    q: str | None = Query(None, max_length=120),
    params: PageParams = Depends(sorted_page_params(
        sort_values(service.STORE_SORTS, *service.STORE_SORT_ALIASES),
        "price and sales ascending, '-' first for descending; newest = -created_at; default: the merchant's order",
    )),
) -> Page[ProductCard]:
    return service.store_list_products(session, merchant.id, params, category_id=category_id, q=q)


@store.get("/products/{product_id}", response_model=StoreProductOut)
def store_product(product_id: int, merchant: StoreMerchant, session: DbSession) -> StoreProductOut:
    return service.store_product(session, merchant.id, product_id)
