"""The store and admin HTTP API: cart, addresses, checkout, my orders, admin orders."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import Tenant, customer_login
from tests.factories.orders import make_freight_template, make_sku, sku_stock

ADDRESS = {"name": "李四", "phone": "13900000000", "province": "浙江省", "city": "杭州市", "district": "西湖区",
           "detail": "文二路 2 号"}


def _address(client: TestClient, headers: dict[str, str], **kw: Any) -> dict[str, Any]:
    r = client.post("/api/store/v1/addresses", json={**ADDRESS, **kw}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def _submit(client: TestClient, headers: dict[str, str], body: dict[str, Any], key: str | None = None) -> Any:
    return client.post(
        "/api/store/v1/checkout/submit", json=body, headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex}
    )


def test_cart_add_merge_set_select_remove(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    h = customer_login(client, tenant)
    a = make_sku(session_factory, tenant.id, price=1000, stock=10)
    b = make_sku(session_factory, tenant.id, price=2500, stock=10)
    client.post("/api/store/v1/cart/items", json={"sku_id": a, "quantity": 2}, headers=h)
    cart = client.post("/api/store/v1/cart/items", json={"sku_id": a, "quantity": 3}, headers=h).json()
    assert [(i["sku_id"], i["quantity"]) for i in cart["items"]] == [(a, 5)]
    cart = client.post("/api/store/v1/cart/items", json={"sku_id": b, "quantity": 1}, headers=h).json()
    assert cart["selected_amount"] == 5 * 1000 + 2500
    item_b = next(i for i in cart["items"] if i["sku_id"] == b)
    cart = client.patch(f"/api/store/v1/cart/items/{item_b['id']}", json={"quantity": 4}, headers=h).json()
    assert cart["selected_amount"] == 5000 + 10000
    cart = client.post("/api/store/v1/cart/select", json={"selected": False}, headers=h).json()
    assert cart["selected_amount"] == 0 and all(not i["selected"] for i in cart["items"])
    cart = client.post("/api/store/v1/cart/select", json={"item_ids": [item_b["id"]], "selected": True}, headers=h).json()
    assert cart["selected_quantity"] == 4
    cart = client.delete(f"/api/store/v1/cart/items/{item_b['id']}", headers=h).json()
    assert [i["sku_id"] for i in cart["items"]] == [a]


def test_cart_bad_input_changes_nothing(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    h = customer_login(client, tenant)
    sku = make_sku(session_factory, tenant.id, stock=5)
    off = make_sku(session_factory, tenant.id, status="off_shelf")
    client.post("/api/store/v1/cart/items", json={"sku_id": sku, "quantity": 2}, headers=h)
    cases = [
        ({"sku_id": sku, "quantity": 0}, 422, "validation_error"),
        ({"sku_id": sku, "quantity": 4}, 409, "insufficient_stock"),
        ({"sku_id": off, "quantity": 1}, 409, "product_not_on_sale"),
        ({"sku_id": 99999999, "quantity": 1}, 404, "sku_not_found"),
        ({"sku_id": sku, "quantity": 1, "price": 1}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        r = client.post("/api/store/v1/cart/items", json=body, headers=h)
        assert (r.status_code, r.json()["code"]) == (status, code), body
    items = client.get("/api/store/v1/cart", headers=h).json()["items"]
    assert [(i["sku_id"], i["quantity"]) for i in items] == [(sku, 2)]
    other = customer_login(client, tenant)
    r = client.patch(f"/api/store/v1/cart/items/{items[0]['id']}", json={"quantity": 1}, headers=other)
    assert r.status_code == 404


def test_cart_shows_availability(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    from siyu.catalog.models import Sku
    from siyu.db.session import unit_of_work

    h = customer_login(client, tenant)
    sku = make_sku(session_factory, tenant.id, stock=5)
    client.post("/api/store/v1/cart/items", json={"sku_id": sku, "quantity": 3}, headers=h)
    with unit_of_work(session_factory) as s:
        row = s.get(Sku, sku)
        assert row is not None
        row.stock = 2
    (item,) = client.get("/api/store/v1/cart", headers=h).json()["items"]
    assert item["available"] is False and item["unavailable_reason"] == "insufficient_stock"


def test_addresses_keep_one_default(client: TestClient, tenant: Tenant) -> None:
    h = customer_login(client, tenant)
    first = _address(client, h)
    assert first["is_default"] is True  # the first address is the default
    second = _address(client, h, is_default=True)
    listed = client.get("/api/store/v1/addresses", headers=h).json()
    assert [(a["id"], a["is_default"]) for a in listed] == [(second["id"], True), (first["id"], False)]
    client.post(f"/api/store/v1/addresses/{first['id']}/default", headers=h)
    assert [a["id"] for a in client.get("/api/store/v1/addresses", headers=h).json() if a["is_default"]] == [first["id"]]
    r = client.patch(f"/api/store/v1/addresses/{second['id']}", json={"city": "宁波市"}, headers=h)
    assert r.json()["city"] == "宁波市"
    assert client.delete(f"/api/store/v1/addresses/{first['id']}", headers=h).status_code == 204
    (left,) = client.get("/api/store/v1/addresses", headers=h).json()
    assert left["id"] == second["id"] and left["is_default"] is True
    other = customer_login(client, tenant)
    assert client.get(f"/api/store/v1/addresses/{second['id']}", headers=other).status_code == 404
    r = client.post("/api/store/v1/addresses", json={**ADDRESS, "phone": "call me"}, headers=h)
    assert r.status_code == 422 and r.json()["fields"][0]["path"] == "body.phone"
    assert len(client.get("/api/store/v1/addresses", headers=h).json()) == 1


def test_preview_and_submit_over_http(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    make_freight_template(session_factory, tenant.id, default=True)
    sku = make_sku(session_factory, tenant.id, price=1999, stock=10)
    h = customer_login(client, tenant)
    _address(client, h)
    body = {"items": [{"sku_id": sku, "quantity": 2}]}
    preview = client.post("/api/store/v1/checkout/preview", json=body, headers=h)
    assert preview.status_code == 200, preview.text
    assert preview.json()["payable_amount"] == 2 * 1999 + 800 + 200
    r = _submit(client, h, body, "http-key")
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["payable_amount"] == preview.json()["payable_amount"] and order["lines"][0]["quantity"] == 2
    again = _submit(client, h, body, "http-key")
    assert again.status_code == 200 and again.json()["id"] == order["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    reused = _submit(client, h, {"items": [{"sku_id": sku, "quantity": 1}]}, "http-key")
    assert reused.status_code == 409 and reused.json()["code"] == "idempotency_key_reused"
    assert sku_stock(session_factory, sku) == 8


def test_submit_refuses_missing_key_and_client_prices(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku = make_sku(session_factory, tenant.id, price=5000, stock=10)
    h = customer_login(client, tenant)
    _address(client, h)
    body = {"items": [{"sku_id": sku, "quantity": 1}]}
    r = client.post("/api/store/v1/checkout/submit", json=body, headers=h)
    assert r.status_code == 400 and r.json()["code"] == "idempotency_key_required"
    for tampered in (
        {**body, "payable_amount": 1},
        {"items": [{"sku_id": sku, "quantity": 1, "price": 1}]},
        {**body, "discount_amount": 4999},
    ):
        r = _submit(client, h, tampered)
        assert r.status_code == 422 and r.json()["code"] == "validation_error", tampered
    r = _submit(client, h, {"items": [{"sku_id": sku, "quantity": 0}]})
    assert r.status_code == 422 and r.json()["fields"][0]["path"] == "body.items.0.quantity"  # as README.md shows
    r = _submit(client, h, {"items": [{"sku_id": sku, "quantity": 11}]})
    assert r.status_code == 409 and r.json()["code"] == "insufficient_stock"
    assert sku_stock(session_factory, sku) == 10
    assert client.get("/api/store/v1/orders", headers=h).json()["total"] == 0


def test_my_orders_cancel_and_receipt(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    from siyu.db.session import unit_of_work
    from siyu.kit.timeutil import utcnow
    from siyu.orders import service

    sku = make_sku(session_factory, tenant.id, stock=10)
    h = customer_login(client, tenant)
    _address(client, h)
    one = _submit(client, h, {"items": [{"sku_id": sku, "quantity": 1}]}).json()
    two = _submit(client, h, {"items": [{"sku_id": sku, "quantity": 2}]}).json()
    r = client.post(f"/api/store/v1/orders/{one['id']}/cancel", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert sku_stock(session_factory, sku) == 8
    listed = client.get("/api/store/v1/orders", params={"status": "pending_payment"}, headers=h).json()
    assert [o["id"] for o in listed["items"]] == [two["id"]]
    assert client.get("/api/store/v1/orders", params={"status": "nope"}, headers=h).status_code == 422
    other = customer_login(client, tenant)
    assert client.get(f"/api/store/v1/orders/{two['id']}", headers=other).status_code == 404
    assert client.post(f"/api/store/v1/orders/{two['id']}/cancel", headers=other).status_code == 404
    r = client.post(f"/api/store/v1/orders/{two['id']}/confirm-receipt", headers=h)
    assert r.status_code == 409 and r.json()["code"] == "order_state_invalid"
    with unit_of_work(session_factory) as s:
        service.mark_paid(s, tenant.id, two["id"], amount=two["payable_amount"], paid_at=utcnow(), actor=("payment", None))
    r = client.post(f"/api/admin/v1/orders/{two['id']}/ship", json={"carrier": "SF", "tracking_no": ""},
                    headers=tenant.admin_headers)
    assert r.status_code == 422
    r = client.post(f"/api/admin/v1/orders/{two['id']}/ship", json={"carrier": "SF", "tracking_no": "SF001"},
                    headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["shipments"][0]["tracking_no"] == "SF001"
    r = client.post(f"/api/store/v1/orders/{two['id']}/confirm-receipt", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "completed"


def test_admin_list_filters_detail_and_transitions(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku = make_sku(session_factory, tenant.id, price=1000, stock=50)
    h1, h2 = customer_login(client, tenant), customer_login(client, tenant)
    for h in (h1, h2):
        _address(client, h)
    o1 = _submit(client, h1, {"items": [{"sku_id": sku, "quantity": 1}]}).json()
    o2 = _submit(client, h2, {"items": [{"sku_id": sku, "quantity": 3}]}).json()
    a = tenant.admin_headers
    page = client.get("/api/admin/v1/orders", headers=a).json()
    assert page["total"] == 2 and [o["id"] for o in page["items"]] == [o2["id"], o1["id"]]
    page = client.get("/api/admin/v1/orders", params={"sort": "payable_amount"}, headers=a).json()
    assert [o["id"] for o in page["items"]] == [o1["id"], o2["id"]]
    assert client.get("/api/admin/v1/orders", params={"sort": "secret"}, headers=a).status_code == 422
    page = client.get("/api/admin/v1/orders", params={"member_id": o1["member_id"]}, headers=a).json()
    assert [o["id"] for o in page["items"]] == [o1["id"]]
    page = client.get("/api/admin/v1/orders", params={"order_no": o2["order_no"]}, headers=a).json()
    assert [o["id"] for o in page["items"]] == [o2["id"]]
    page = client.get("/api/admin/v1/orders", params={"created_from": "2000-01-01T00:00:00Z", "page_size": 1}, headers=a).json()
    assert page["total"] == 2 and len(page["items"]) == 1
    assert client.get("/api/admin/v1/orders", params={"created_to": "2000-01-01T00:00:00Z"}, headers=a).json()["total"] == 0
    r = client.post(f"/api/admin/v1/orders/{o1['id']}/complete", headers=a)
    assert r.status_code == 409 and r.json()["code"] == "order_state_invalid"
    r = client.post(f"/api/admin/v1/orders/{o1['id']}/cancel", json={"reason": "缺货"}, headers=a)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    detail = client.get(f"/api/admin/v1/orders/{o1['id']}", headers=a).json()
    assert [(e["from_state"], e["to_state"], e["actor_type"]) for e in detail["audit"]] == [
        (None, "pending_payment", "customer"), ("pending_payment", "cancelled", "staff")
    ]
    assert detail["cancel_reason"] == "缺货" and len(detail["lines"]) == 1
    page = client.get("/api/admin/v1/orders", params={"status": "cancelled"}, headers=a).json()
    assert [o["id"] for o in page["items"]] == [o1["id"]]


def test_admin_orders_need_permission_and_are_tenant_scoped(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    from siyu.db.session import unit_of_work
    from siyu.tenancy import service as tenancy_service
    from tests.conftest import unique

    sku = make_sku(session_factory, tenant.id)
    h = customer_login(client, tenant)
    _address(client, h)
    order = _submit(client, h, {"items": [{"sku_id": sku, "quantity": 1}]}).json()
    code = unique("o")
    with unit_of_work(session_factory) as s:
        other = tenancy_service.create_merchant(s, code=code, name="Other")
        tenancy_service.create_staff(s, other.id, username="boss", password="boss-pass-1", role="owner")
        tenancy_service.create_staff(s, tenant.id, username="clerk", password="clerk-pass-1", role="staff")
    boss = client.post("/api/admin/v1/auth/login", json={"merchant": code, "username": "boss", "password": "boss-pass-1"})
    other_h = {"Authorization": f"Bearer {boss.json()['token']}"}
    assert client.get(f"/api/admin/v1/orders/{order['id']}", headers=other_h).status_code == 404
    assert client.post(f"/api/admin/v1/orders/{order['id']}/cancel", headers=other_h).status_code == 404
    clerk = client.post("/api/admin/v1/auth/login", json={"merchant": tenant.code, "username": "clerk", "password": "clerk-pass-1"})
    clerk_h = {"Authorization": f"Bearer {clerk.json()['token']}"}
    assert client.get(f"/api/admin/v1/orders/{order['id']}", headers=clerk_h).status_code == 200
    r = client.post(f"/api/admin/v1/orders/{order['id']}/cancel", headers=clerk_h)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert client.get(f"/api/store/v1/orders/{order['id']}", headers=h).json()["status"] == "pending_payment"


def test_ids_beyond_bigint_in_a_body_are_field_errors(client: TestClient, tenant: Tenant) -> None:
    """A sku id beyond BIGINT was a 500 (SQLite OverflowError, PostgreSQL 'bigint out of range');
    found fuzzing POST /cart/items."""
    h = customer_login(client, tenant)
    r = client.post("/api/store/v1/cart/items", json={"sku_id": 2**70, "quantity": 1}, headers=h)
    assert r.status_code == 422 and [(f["path"], f["code"]) for f in r.json()["fields"]] == [("body.sku_id", "less_than_equal")]
    r = client.post("/api/store/v1/checkout/preview", json={"items": [{"sku_id": 0, "quantity": 1}], "coupon_ids": [2**64]},
                    headers=h)
    assert r.status_code == 422, r.text
    assert {f["path"] for f in r.json()["fields"]} == {"body.items.0.sku_id", "body.coupon_ids.0"}
    assert client.get("/api/store/v1/cart", headers=h).json()["items"] == []


def test_freight_amounts_beyond_their_columns_are_field_errors(client: TestClient, tenant: Tenant) -> None:
    """free_threshold beyond the 32-bit column was a 500 on PostgreSQL (found fuzzing POST /freight-templates)."""
    rule = {"regions": ["*"], "first_units": 1, "first_fee": 800}
    for body, path in [
        ({"name": "T", "rules": [rule], "free_threshold": 2**31}, "body.free_threshold"),
        ({"name": "T", "rules": [{**rule, "first_fee": 2**40}]}, "body.rules.0.first_fee"),
        ({"name": "T", "rules": [{**rule, "first_units": 2**40}]}, "body.rules.0.first_units"),
    ]:
        r = client.post("/api/admin/v1/freight-templates", json=body, headers=tenant.admin_headers)
        assert r.status_code == 422 and r.json()["fields"][0]["path"] == path, r.text
    assert client.get("/api/admin/v1/freight-templates", headers=tenant.admin_headers).json() == []
