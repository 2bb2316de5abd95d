"""Builders for catalog and storefront tests: request bodies, and products/categories created
through the admin API (``client`` + ``tenant``) or the catalog service (a session)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from siyu.catalog import service
from siyu.catalog.models import PRODUCT_ON_SALE, Product
from siyu.catalog.schemas import ProductCreate
from tests.conftest import Tenant

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"


def sku_code() -> str:
    return f"SKU-{uuid.uuid4().hex[:10]}"


def sku_body(
    specs: dict[str, str] | None = None,
    *,
    code: str | None = None,
    sale_price: int = 9900,
    list_price: int = 12900,
    cost_price: int = 5000,
    stock: int = 10,
    weight_g: int = 120,
    active: bool = True,
    image_url: str | None = None,
) -> dict[str, Any]:
    return {
        "sku_code": code or sku_code(),
        "specs": {"颜色": "黑"} if specs is None else specs,
        "sale_price": sale_price,
        "list_price": list_price,
        "cost_price": cost_price,
        "stock": stock,
        "weight_g": weight_g,
        "active": active,
        "image_url": image_url,
    }


def product_body(
    title: str = "经典方框 T201",
    *,
    spec_names: list[str] | None = None,
    skus: list[dict[str, Any]] | None = None,
    category_id: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    return {
        "title": title,
        "subtitle": "纯钛 轻至 9g",
        "images": ["https://img.example.com/t201-1.jpg", "https://img.example.com/t201-2.jpg"],
        "spec_names": ["颜色"] if spec_names is None else spec_names,
        "skus": [sku_body()] if skus is None else skus,
        "category_id": category_id,
        **fields,
    }


def create_category(client: TestClient, tenant: Tenant, name: str = "镜架", **fields: Any) -> dict[str, Any]:
    r = client.post(f"{ADMIN}/categories", json={"name": name, **fields}, headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def create_product(
    client: TestClient, tenant: Tenant, title: str = "经典方框 T201", *, on_sale: bool = False, **kwargs: Any
) -> dict[str, Any]:
    """Create a product over the admin API (draft, or put on sale with ``on_sale=True``)."""
    r = client.post(f"{ADMIN}/products", json=product_body(title, **kwargs), headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    product = dict(r.json())
    if on_sale:
        product = set_status(client, tenant, product["id"], "on_sale")
    return product


def set_status(client: TestClient, tenant: Tenant, product_id: int, status: str) -> dict[str, Any]:
    r = client.post(f"{ADMIN}/products/{product_id}/status", json={"status": status}, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def make_product(
    session: Session,
    merchant_id: int,
    title: str = "经典方框 T201",
    *,
    on_sale: bool = True,
    **kwargs: Any,
) -> Product:
    """Create a product with the catalog service in ``session`` (the caller commits)."""
    product = service.create_product(session, merchant_id, ProductCreate.model_validate(product_body(title, **kwargs)))
    if on_sale:
        service.set_product_status(session, merchant_id, product.id, PRODUCT_ON_SALE)
    return product
