"""Admin products: create with SKUs (all or nothing), validation paths, status machine, SKUs,
stock adjustments, list filters, and other merchants' ids."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import Product, Sku
from siyu.db.session import unit_of_work
from siyu.kit.audit import AuditEvent
from siyu.orders.models import FreightTemplate
from siyu.tenancy import service as tenancy_service
from tests.conftest import Tenant, unique
from tests.factories.catalog import (
    ADMIN,
    create_category,
    create_product,
    make_product,
    product_body,
    set_status,
    sku_body,
)


def counts(factory: sessionmaker[Session], merchant_id: int) -> tuple[int, int]:
    with factory() as s:
        products = s.scalar(select(func.count()).select_from(Product).where(Product.merchant_id == merchant_id))
        skus = s.scalar(select(func.count()).select_from(Sku).where(Sku.merchant_id == merchant_id))
        return int(products or 0), int(skus or 0)


def paths(resp: Any) -> dict[str, str]:
    return {f["path"]: f["code"] for f in resp.json()["fields"]}


def test_create_product_with_skus_and_read_it(client: TestClient, tenant: Tenant) -> None:
    cat = create_category(client, tenant, "镜架")
    body = product_body(
        spec_names=["颜色", "尺寸"],
        skus=[
            sku_body({"颜色": "黑", "尺寸": "M"}, sale_price=9900, list_price=9900),  # equal prices allowed
            sku_body({"颜色": "金", "尺寸": "M"}, sale_price=19900, list_price=25900, stock=0),
        ],
        category_id=cat["id"],
        free_shipping=True,
        bonus_points=50,
        coupons_allowed=False,
    )
    r = client.post(f"{ADMIN}/products", json=body, headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    product = r.json()
    assert product["status"] == "draft" and product["category_id"] == cat["id"]
    assert product["free_shipping"] is True and product["bonus_points"] == 50 and product["coupons_allowed"] is False
    assert [s["specs"] for s in product["skus"]] == [{"颜色": "黑", "尺寸": "M"}, {"颜色": "金", "尺寸": "M"}]
    detail = client.get(f"{ADMIN}/products/{product['id']}", headers=tenant.admin_headers).json()
    assert detail == product


def test_validation_errors_have_paths_and_create_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    h = tenant.admin_headers
    before = counts(session_factory, tenant.id)

    # specs keys must equal spec_names; sale price above list price
    body = product_body(
        spec_names=["颜色", "尺寸"],
        skus=[sku_body({"颜色": "黑", "尺寸": "M"}), sku_body({"颜色": "黑"}, sale_price=200, list_price=100)],
    )
    r = client.post(f"{ADMIN}/products", json=body, headers=h)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert paths(r) == {"body.skus.1.specs": "specs_mismatch", "body.skus.1.sale_price": "sale_above_list"}

    # negative prices and stock are refused by the schema, with paths
    body = product_body(skus=[sku_body(sale_price=-1, stock=-5)])
    r = client.post(f"{ADMIN}/products", json=body, headers=h)
    assert r.status_code == 422
    assert {"body.skus.0.sale_price", "body.skus.0.stock"} <= set(paths(r))

    # the same sku_code twice in one request; duplicated spec names; duplicated specs
    body = product_body(skus=[sku_body({"颜色": "黑"}, code="DUP-1"), sku_body({"颜色": "白"}, code="DUP-1")])
    r = client.post(f"{ADMIN}/products", json=body, headers=h)
    assert r.status_code == 422 and paths(r) == {"body.skus.1.sku_code": "duplicate_sku_code"}
    body = product_body(spec_names=["颜色", "颜色"], skus=[sku_body({"颜色": "黑"})])
    assert paths(client.post(f"{ADMIN}/products", json=body, headers=h))["body.spec_names"] == "duplicate_spec_name"
    body = product_body(skus=[sku_body({"颜色": "黑"}), sku_body({"颜色": "黑"})])
    assert paths(client.post(f"{ADMIN}/products", json=body, headers=h)) == {"body.skus.1.specs": "duplicate_specs"}

    # no SKUs at all
    r = client.post(f"{ADMIN}/products", json=product_body(skus=[]), headers=h)
    assert r.status_code == 422 and "body.skus" in paths(r)

    assert counts(session_factory, tenant.id) == before


def test_duplicate_sku_code_is_409_and_creates_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    create_product(client, tenant, skus=[sku_body(code="T201-BLK")])
    before = counts(session_factory, tenant.id)
    body = product_body("Another", skus=[sku_body({"颜色": "白"}, code="NEW-1"), sku_body({"颜色": "黑"}, code="T201-BLK")])
    r = client.post(f"{ADMIN}/products", json=body, headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "sku_code_taken" and "T201-BLK" in r.json()["message"]
    assert counts(session_factory, tenant.id) == before
    # the same code at another merchant is fine (unique per merchant)
    with unit_of_work(session_factory) as s:
        other = tenancy_service.create_merchant(s, code=unique("o"), name="Other")
        make_product(s, other.id, skus=[sku_body(code="T201-BLK")])


def test_status_machine(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    h = tenant.admin_headers
    product = create_product(client, tenant)
    pid = product["id"]
    r = client.post(f"{ADMIN}/products/{pid}/status", json={"status": "off_shelf"}, headers=h)
    assert r.status_code == 409 and r.json()["code"] == "product_transition_invalid"
    assert set_status(client, tenant, pid, "on_sale")["status"] == "on_sale"
    assert set_status(client, tenant, pid, "off_shelf")["status"] == "off_shelf"
    assert set_status(client, tenant, pid, "on_sale")["status"] == "on_sale"
    r = client.post(f"{ADMIN}/products/{pid}/status", json={"status": "draft"}, headers=h)
    assert r.status_code == 422  # draft is not a target
    with session_factory() as s:
        moves = s.scalars(
            select(AuditEvent.to_state)
            .where(AuditEvent.merchant_id == tenant.id, AuditEvent.subject_type == "product", AuditEvent.subject_id == pid)
            .order_by(AuditEvent.id)
        ).all()
    assert list(moves) == ["on_sale", "off_shelf", "on_sale"]


def test_on_sale_needs_an_active_sku(client: TestClient, tenant: Tenant) -> None:
    h = tenant.admin_headers
    inactive = create_product(client, tenant, skus=[sku_body(active=False)])
    r = client.post(f"{ADMIN}/products/{inactive['id']}/status", json={"status": "on_sale"}, headers=h)
    assert r.status_code == 409 and r.json()["code"] == "product_needs_active_sku"
    assert client.get(f"{ADMIN}/products/{inactive['id']}", headers=h).json()["status"] == "draft"

    live = create_product(client, tenant, on_sale=True)
    sku_id = live["skus"][0]["id"]
    r = client.post(f"{ADMIN}/products/{live['id']}/skus/{sku_id}/deactivate", headers=h)
    assert r.status_code == 409 and r.json()["code"] == "product_needs_active_sku"
    r = client.patch(f"{ADMIN}/products/{live['id']}/skus/{sku_id}", json={"active": False}, headers=h)
    assert r.status_code == 409
    assert client.get(f"{ADMIN}/products/{live['id']}", headers=h).json()["skus"][0]["active"] is True

    set_status(client, tenant, live["id"], "off_shelf")
    r = client.post(f"{ADMIN}/products/{live['id']}/skus/{sku_id}/deactivate", headers=h)
    assert r.status_code == 200 and r.json()["active"] is False


def test_update_product_fields(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    h = tenant.admin_headers
    product = create_product(client, tenant)
    cat = create_category(client, tenant, "太阳镜")
    r = client.patch(
        f"{ADMIN}/products/{product['id']}",
        json={"title": "新标题", "category_id": cat["id"], "free_shipping": True, "bonus_points": 10, "subtitle": None},
        headers=h,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["title"], body["category_id"], body["free_shipping"], body["subtitle"]) == ("新标题", cat["id"], True, None)

    r = client.patch(f"{ADMIN}/products/{product['id']}", json={"title": None, "bonus_points": -1}, headers=h)
    assert r.status_code == 422 and paths(r) == {"body.title": "string_type", "body.bonus_points": "greater_than_equal"}
    r = client.patch(f"{ADMIN}/products/{product['id']}", json={"title": None}, headers=h)
    assert r.status_code == 422 and paths(r) == {"body.title": "string_type"}  # ProductUpdate states it
    r = client.patch(f"{ADMIN}/products/{product['id']}", json={"freight_template_id": 987654321}, headers=h)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.patch(f"{ADMIN}/products/{product['id']}", json={"status": "on_sale", "spec_names": []}, headers=h)
    assert r.status_code == 422 and paths(r) == {"body.status": "extra_forbidden", "body.spec_names": "extra_forbidden"}
    detail = client.get(f"{ADMIN}/products/{product['id']}", headers=h).json()
    assert (detail["title"], detail["status"], detail["freight_template_id"]) == ("新标题", "draft", None)

    with unit_of_work(session_factory) as s:
        template = FreightTemplate(merchant_id=tenant.id, name="默认", mode="count", rules=[])
        s.add(template)
        s.flush()
        template_id = template.id
    r = client.patch(f"{ADMIN}/products/{product['id']}", json={"freight_template_id": template_id}, headers=h)
    assert r.status_code == 200 and r.json()["freight_template_id"] == template_id


def test_add_and_update_skus(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    h = tenant.admin_headers
    product = create_product(client, tenant, skus=[sku_body({"颜色": "黑"}, code="S-BLACK")])
    pid = product["id"]

    r = client.post(f"{ADMIN}/products/{pid}/skus", json=sku_body({"尺寸": "L"}), headers=h)
    assert r.status_code == 422 and paths(r) == {"body.specs": "specs_mismatch"}
    r = client.post(f"{ADMIN}/products/{pid}/skus", json=sku_body({"颜色": "黑"}), headers=h)
    assert r.status_code == 422 and paths(r) == {"body.specs": "duplicate_specs"}
    r = client.post(f"{ADMIN}/products/{pid}/skus", json=sku_body({"颜色": "白"}, code="S-BLACK"), headers=h)
    assert r.status_code == 409 and r.json()["code"] == "sku_code_taken"
    assert len(client.get(f"{ADMIN}/products/{pid}", headers=h).json()["skus"]) == 1

    r = client.post(f"{ADMIN}/products/{pid}/skus", json=sku_body({"颜色": "白"}, code="S-WHITE"), headers=h)
    assert r.status_code == 201
    white = r.json()

    r = client.patch(f"{ADMIN}/products/{pid}/skus/{white['id']}", json={"sale_price": 99999}, headers=h)
    assert r.status_code == 422 and paths(r) == {"body.sale_price": "sale_above_list"}
    r = client.patch(f"{ADMIN}/products/{pid}/skus/{white['id']}", json={"sku_code": "S-BLACK"}, headers=h)
    assert r.status_code == 409 and r.json()["code"] == "sku_code_taken"
    r = client.patch(
        f"{ADMIN}/products/{pid}/skus/{white['id']}", json={"sale_price": 5000, "list_price": 8000}, headers=h
    )
    assert r.status_code == 200 and (r.json()["sale_price"], r.json()["list_price"]) == (5000, 8000)
    assert r.json()["sku_code"] == "S-WHITE"
    r = client.patch(f"{ADMIN}/products/{pid}/skus/{white['id']}", json={"stock": 999}, headers=h)
    assert r.status_code == 422 and paths(r) == {"body.stock": "extra_forbidden"}
    with session_factory() as s:
        event = s.scalars(
            select(AuditEvent).where(
                AuditEvent.merchant_id == tenant.id, AuditEvent.subject_id == white["id"],
                AuditEvent.action == "price_changed",
            )
        ).one()
    assert event.data == {"sale_price": {"before": 9900, "after": 5000}, "list_price": {"before": 12900, "after": 8000}}

    # a SKU of another product is not reachable under this product
    other = create_product(client, tenant, "Other")
    r = client.patch(f"{ADMIN}/products/{other['id']}/skus/{white['id']}", json={"sale_price": 1}, headers=h)
    assert r.status_code == 404


def test_stock_adjustment_never_negative_and_audited(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    h = tenant.admin_headers
    sku_id = create_product(client, tenant, skus=[sku_body(stock=5)])["skus"][0]["id"]
    url = f"{ADMIN}/skus/{sku_id}/stock"

    r = client.post(url, json={"mode": "delta", "quantity": -3, "reason": "盘点"}, headers=h)
    assert r.status_code == 200 and r.json()["stock"] == 2
    r = client.post(url, json={"mode": "delta", "quantity": -3}, headers=h)
    assert r.status_code == 409 and r.json()["code"] == "stock_would_go_negative"
    r = client.post(url, json={"mode": "set", "quantity": -1}, headers=h)
    assert r.status_code == 422 and paths(r) == {"body.quantity": "negative_stock"}
    r = client.post(url, json={"mode": "add", "quantity": 1}, headers=h)
    assert r.status_code == 422 and "body.mode" in paths(r)
    with session_factory() as s:
        sku = s.get(Sku, sku_id)
        assert sku is not None and sku.stock == 2

    r = client.post(url, json={"mode": "set", "quantity": 40}, headers=h)
    assert r.status_code == 200 and r.json()["stock"] == 40
    r = client.post(url, json={"mode": "delta", "quantity": -40}, headers=h)
    assert r.status_code == 200 and r.json()["stock"] == 0

    with session_factory() as s:
        events = s.scalars(
            select(AuditEvent)
            .where(AuditEvent.merchant_id == tenant.id, AuditEvent.subject_type == "sku", AuditEvent.subject_id == sku_id)
            .order_by(AuditEvent.id)
        ).all()
    assert [(e.data["before"], e.data["after"]) for e in events] == [(5, 2), (2, 40), (40, 0)]
    assert events[0].data["reason"] == "盘点" and events[0].actor_type == "staff" and events[0].actor_id == tenant.owner_id


def test_admin_list_filters_sort_and_pages(client: TestClient, tenant: Tenant) -> None:
    h = tenant.admin_headers
    frames = create_category(client, tenant, "镜架")
    titanium = create_category(client, tenant, "钛架", parent_id=frames["id"])
    lenses = create_category(client, tenant, "镜片")
    a = create_product(client, tenant, "钛架 A", category_id=titanium["id"], skus=[sku_body(stock=2)], on_sale=True)
    b = create_product(client, tenant, "板材 B", category_id=frames["id"], skus=[sku_body(stock=50)])
    c = create_product(client, tenant, "镜片 C 100%", category_id=lenses["id"], skus=[sku_body(stock=0)], sort=-5)

    def ids(**params: Any) -> list[int]:
        r = client.get(f"{ADMIN}/products", params=params, headers=h)
        assert r.status_code == 200, r.text
        return [item["id"] for item in r.json()["items"]]

    assert ids() == [c["id"], b["id"], a["id"]]  # newest first
    assert ids(status="on_sale") == [a["id"]]
    assert ids(category_id=frames["id"]) == [b["id"], a["id"]]  # includes sub-categories
    assert ids(category_id=titanium["id"]) == [a["id"]]
    assert ids(q="钛架") == [a["id"]]
    assert ids(q="100%") == [c["id"]]  # % is literal
    assert ids(q="%") == [c["id"]]
    assert ids(low_stock=2) == [c["id"], a["id"]]
    assert ids(sort="sort") == [c["id"], b["id"], a["id"]]  # ties: newest first
    assert ids(sort="id", page_size=1, page=2) == [b["id"]]

    page = client.get(f"{ADMIN}/products", params={"page_size": 2}, headers=h).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    item = next(i for i in page["items"] if i["id"] == b["id"])
    assert item["min_sale_price"] == 9900 and item["total_stock"] == 50 and item["active_sku_count"] == 1
    assert item["image"] == "https://img.example.com/t201-1.jpg"

    r = client.get(f"{ADMIN}/products", params={"sort": "cost"}, headers=h)
    assert r.status_code == 422 and r.json()["fields"][0]["path"] == "query.sort"  # refused with the query, before the service
    r = client.get(f"{ADMIN}/products", params={"status": "gone"}, headers=h)
    assert r.status_code == 422


def test_other_merchants_products_are_404(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as s:
        other = tenancy_service.create_merchant(s, code=unique("o"), name="Other")
        theirs = make_product(s, other.id, on_sale=False, skus=[sku_body(stock=7)])
        pid = theirs.id
        sku_id = s.scalars(select(Sku.id).where(Sku.product_id == pid)).one()
    h = tenant.admin_headers
    calls = [
        client.get(f"{ADMIN}/products/{pid}", headers=h),
        client.patch(f"{ADMIN}/products/{pid}", json={"title": "mine"}, headers=h),
        client.post(f"{ADMIN}/products/{pid}/status", json={"status": "on_sale"}, headers=h),
        client.post(f"{ADMIN}/products/{pid}/skus", json=sku_body({"颜色": "白"}), headers=h),
        client.patch(f"{ADMIN}/products/{pid}/skus/{sku_id}", json={"sale_price": 1}, headers=h),
        client.post(f"{ADMIN}/products/{pid}/skus/{sku_id}/deactivate", headers=h),
        client.post(f"{ADMIN}/skus/{sku_id}/stock", json={"mode": "set", "quantity": 0}, headers=h),
    ]
    assert [(r.status_code, r.json()["code"]) for r in calls] == [(404, "not_found")] * len(calls)
    assert client.get(f"{ADMIN}/products", headers=h).json()["total"] == 0
    # a foreign category in a body is a 404 too
    with unit_of_work(session_factory) as s:
        from siyu.catalog.models import Category

        cat = Category(merchant_id=other.id, name="Theirs")
        s.add(cat)
        s.flush()
        cat_id = cat.id
    r = client.post(f"{ADMIN}/products", json=product_body(category_id=cat_id), headers=h)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    with session_factory() as s:
        product = s.get(Product, pid)
        sku = s.get(Sku, sku_id)
        assert product is not None and product.title == "经典方框 T201" and product.status == "draft"
        assert sku is not None and sku.stock == 7 and sku.active
