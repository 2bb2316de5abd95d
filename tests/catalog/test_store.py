"""Store catalog: only products on sale show; category subtree, search, sorts, SKU availability."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import Tenant, customer_login
from tests.factories.catalog import ADMIN, STORE, create_category, create_product, set_status, sku_body


def store_ids(client: TestClient, tenant: Tenant, **params: Any) -> list[int]:
    r = client.get(f"{STORE}/products", params=params, headers=tenant.store_headers)
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


def test_store_hides_drafts_and_off_shelf(client: TestClient, tenant: Tenant) -> None:
    draft = create_product(client, tenant, "草稿")
    live = create_product(client, tenant, "在售", on_sale=True)
    gone = create_product(client, tenant, "下架", on_sale=True)
    set_status(client, tenant, gone["id"], "off_shelf")

    assert store_ids(client, tenant) == [live["id"]]
    for p in (draft, gone):
        r = client.get(f"{STORE}/products/{p['id']}", headers=tenant.store_headers)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert client.get(f"{STORE}/products/{live['id']}", headers=tenant.store_headers).status_code == 200
    # a logged-in customer sees the same store
    headers = customer_login(client, tenant)
    r = client.get(f"{STORE}/products", headers=headers)
    assert [i["id"] for i in r.json()["items"]] == [live["id"]]


def test_store_product_detail_shows_active_skus_with_availability(client: TestClient, tenant: Tenant) -> None:
    product = create_product(
        client,
        tenant,
        spec_names=["颜色"],
        skus=[
            sku_body({"颜色": "黑"}, sale_price=9900, list_price=12900, stock=3),
            sku_body({"颜色": "白"}, sale_price=8900, list_price=15900, stock=0),
            sku_body({"颜色": "红"}, sale_price=100, list_price=200, stock=9, active=False),
        ],
        on_sale=True,
    )
    body = client.get(f"{STORE}/products/{product['id']}", headers=tenant.store_headers).json()
    assert [(s["specs"]["颜色"], s["in_stock"], s["stock"]) for s in body["skus"]] == [("黑", True, 3), ("白", False, 0)]
    assert (body["min_sale_price"], body["min_list_price"], body["sold_out"]) == (8900, 12900, False)
    assert "cost_price" not in body["skus"][0] and "sku_code" not in body["skus"][0]

    card = client.get(f"{STORE}/products", headers=tenant.store_headers).json()["items"][0]
    assert card == {
        "id": product["id"], "title": product["title"], "subtitle": product["subtitle"],
        "image": product["images"][0], "min_sale_price": 8900, "min_list_price": 12900, "sold_out": False,
        "sales_count": 0,
    }
    client.post(f"{ADMIN}/skus/{product['skus'][0]['id']}/stock", json={"mode": "set", "quantity": 0}, headers=tenant.admin_headers)
    assert client.get(f"{STORE}/products", headers=tenant.store_headers).json()["items"][0]["sold_out"] is True


def test_store_list_category_search_sort(client: TestClient, tenant: Tenant) -> None:
    frames = create_category(client, tenant, "镜架")
    titanium = create_category(client, tenant, "钛架", parent_id=frames["id"])
    other = create_category(client, tenant, "镜片")
    cheap = create_product(client, tenant, "钛架 轻", category_id=titanium["id"], skus=[sku_body(sale_price=5000)], on_sale=True)
    mid = create_product(client, tenant, "板材 复古", category_id=frames["id"], skus=[sku_body(sale_price=8000)], on_sale=True)
    dear = create_product(client, tenant, "镜片 钻晶", category_id=other["id"], skus=[sku_body(sale_price=9000)], on_sale=True)

    assert store_ids(client, tenant, category_id=frames["id"]) == [mid["id"], cheap["id"]]
    assert store_ids(client, tenant, category_id=titanium["id"]) == [cheap["id"]]
    assert store_ids(client, tenant, q="钻晶") == [dear["id"]]
    assert store_ids(client, tenant, sort="price") == [cheap["id"], mid["id"], dear["id"]]
    assert store_ids(client, tenant, sort="-price") == [dear["id"], mid["id"], cheap["id"]]
    assert store_ids(client, tenant, sort="newest") == [dear["id"], mid["id"], cheap["id"]]
    assert store_ids(client, tenant, sort="-sales") == [dear["id"], mid["id"], cheap["id"]]  # ties: newest
    page = client.get(f"{STORE}/products", params={"sort": "price", "page": 2, "page_size": 2}, headers=tenant.store_headers)
    assert page.json()["total"] == 3 and [i["id"] for i in page.json()["items"]] == [dear["id"]]
    r = client.get(f"{STORE}/products", params={"sort": "cost"}, headers=tenant.store_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "invalid_sort"


def test_store_needs_a_merchant(client: TestClient, tenant: Tenant) -> None:
    r = client.get(f"{STORE}/products")
    assert r.status_code == 400 and r.json()["code"] == "merchant_required"
    r = client.get(f"{STORE}/categories", headers={"X-Siyu-Merchant": "no-such-merchant"})
    assert r.status_code == 404


def test_store_does_not_leak_other_merchants_products(client: TestClient, tenant: Tenant, session_factory) -> None:  # type: ignore[no-untyped-def]
    from siyu.db.session import unit_of_work
    from siyu.tenancy import service as tenancy_service
    from tests.conftest import unique
    from tests.factories.catalog import make_product

    with unit_of_work(session_factory) as s:
        other = tenancy_service.create_merchant(s, code=unique("o"), name="Other")
        theirs = make_product(s, other.id, on_sale=True).id
    assert store_ids(client, tenant) == []
    assert client.get(f"{STORE}/products/{theirs}", headers=tenant.store_headers).status_code == 404
