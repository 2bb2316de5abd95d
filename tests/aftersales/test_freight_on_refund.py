"""After-sales and the freight: a refund-only request that takes the last goods of an order not
yet shipped gives the freight back with them (the order closes fully refunded); a return after
shipment never does (the freight stays with the merchant unless refunded by amount)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import Product, Sku
from siyu.config import Settings
from siyu.db.session import unit_of_work
from tests.conftest import Tenant, customer_login
from tests.factories.aftersales import (
    ADMIN,
    STORE,
    admin_order,
    drain,
    line_id,
    make_product,
    paid_order,
    request_aftersale,
    stock_of,
)
from tests.factories.orders import make_freight_template


def _shop_with_freight(client: TestClient, tenant: Tenant, factory: sessionmaker[Session]) -> dict[str, Any]:
    """Two SKUs of a product that pays freight (default template: 8.00 + 2.00 per extra unit)."""
    a, b = make_product(factory, tenant.id, [3333, 5000])
    with unit_of_work(factory) as s:
        product_id = s.scalar(select(Sku.product_id).where(Sku.merchant_id == tenant.id, Sku.id == a))
        s.execute(update(Product).where(Product.merchant_id == tenant.id, Product.id == product_id)
                  .values(free_shipping=False))
    make_freight_template(factory, tenant.id, default=True)
    return {"a": a, "b": b, "headers": customer_login(client, tenant)}


def _admin(client: TestClient, tenant: Tenant, method: str, path: str, **kw: Any) -> Any:
    return client.request(method, f"{ADMIN}{path}", headers=tenant.admin_headers, **kw)


def _refund_only(
    client: TestClient, tenant: Tenant, headers: dict[str, str], order_id: int, lines: list[tuple[int, int]]
) -> dict[str, Any]:
    r = request_aftersale(client, headers, order_id, "refund_only", lines)
    assert r.status_code == 201, r.text
    r = _admin(client, tenant, "POST", f"/aftersales/{r.json()['id']}/approve")
    assert r.status_code == 200 and r.json()["status"] == "refunding", r.text
    return dict(r.json())


def test_refund_only_of_the_last_goods_before_shipment_gives_the_freight_back(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    shop = _shop_with_freight(client, tenant, session_factory)
    h = shop["headers"]
    order = paid_order(client, tenant, session_factory, h, [(shop["a"], 1), (shop["b"], 2)], discount_amount=1001)
    freight, paid = order["freight_amount"], order["paid_amount"]
    assert freight == 800 + 2 * 200 and paid == 3333 + 2 * 5000 - 1001 + freight
    la, lb = line_id(order, shop["a"]), line_id(order, shop["b"])

    first = _refund_only(client, tenant, h, order["id"], [(lb, 1)])
    drain(session_factory, settings, tenant)
    refund = _admin(client, tenant, "GET", f"/refunds/{first['refund_id']}").json()
    assert refund["freight_amount"] == 0 and refund["amount"] == first["refund_amount"]
    order = admin_order(client, tenant, order["id"])
    assert (order["status"], order["refund_status"]) == ("paid", "partial")  # goods are left to ship

    last = _refund_only(client, tenant, h, order["id"], [(la, 1), (lb, 1)])
    refund = _admin(client, tenant, "GET", f"/refunds/{last['refund_id']}").json()
    assert refund["freight_amount"] == freight and refund["amount"] == last["refund_amount"] + freight
    assert sum(ln["amount"] for ln in refund["lines"]) == last["refund_amount"]
    drain(session_factory, settings, tenant)

    order = admin_order(client, tenant, order["id"])
    assert order["refunded_amount"] == paid and first["refund_amount"] + refund["amount"] == paid
    assert (order["status"], order["refund_status"]) == ("closed", "full")
    assert all(ln["refunded_quantity"] == ln["quantity"] for ln in order["lines"])
    detail = _admin(client, tenant, "GET", f"/aftersales/{last['id']}").json()
    assert detail["status"] == "completed" and detail["refund_amount"] == last["refund_amount"]
    requested = next(e for e in detail["audit"] if e["action"] == "refund_requested")
    assert requested["data"]["freight_amount"] == freight
    assert (stock_of(session_factory, tenant.id, shop["a"]), stock_of(session_factory, tenant.id, shop["b"])) == (10, 10)


def test_return_after_shipment_keeps_the_freight(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    shop = _shop_with_freight(client, tenant, session_factory)
    h = shop["headers"]
    order = paid_order(client, tenant, session_factory, h, [(shop["a"], 1), (shop["b"], 2)], shipped=True)
    freight, paid = order["freight_amount"], order["paid_amount"]
    assert freight > 0
    lines = [(line_id(order, shop["a"]), 1), (line_id(order, shop["b"]), 2)]
    r = request_aftersale(client, h, order["id"], "return_refund", lines)
    assert r.status_code == 201, r.text
    asid = r.json()["id"]
    assert _admin(client, tenant, "POST", f"/aftersales/{asid}/approve").status_code == 200
    r = client.post(f"{STORE}/aftersales/{asid}/return-shipment", json={"carrier": "SF", "tracking_no": "SF9"},
                    headers=h)
    assert r.status_code == 200, r.text
    r = _admin(client, tenant, "POST", f"/aftersales/{asid}/receive", json={"restock": True})
    assert r.status_code == 200 and r.json()["status"] == "refunding", r.text
    refund = _admin(client, tenant, "GET", f"/refunds/{r.json()['refund_id']}").json()
    assert refund["freight_amount"] == 0 and refund["amount"] == paid - freight
    drain(session_factory, settings, tenant)
    order = admin_order(client, tenant, order["id"])
    assert order["refunded_amount"] == paid - freight
    assert (order["status"], order["refund_status"]) == ("shipped", "partial")
