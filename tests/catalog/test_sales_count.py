"""A product's sales count follows paid orders and refunds, once per event."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog import repository as catalog_repo
from siyu.catalog.models import Product, Sku
from siyu.config import Settings
from siyu.db.session import unit_of_work
from tests.conftest import Tenant, customer_login
from tests.factories.aftersales import admin_order, drain, line_id, make_product, paid_order, submit_order


def _sales(session_factory: sessionmaker[Session], sku_id: int) -> int:
    with session_factory() as s:
        sku = s.get(Sku, sku_id)
        assert sku is not None
        product = s.get(Product, sku.product_id)
        assert product is not None
        return product.sales_count


def test_paid_units_count_and_refunded_units_come_off(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    headers = customer_login(client, tenant)
    a, b = make_product(session_factory, tenant.id, [10000, 20000])
    order = paid_order(client, tenant, session_factory, headers, [(a, 2), (b, 1)])
    submit_order(client, headers, [(a, 5)])  # never paid: does not count
    drain(session_factory, settings, tenant)
    drain(session_factory, settings, tenant)  # a second pass finds nothing left to count
    assert _sales(session_factory, a) == 3

    body = {"lines": [{"order_line_id": line_id(order, a), "quantity": 2}], "reason": "退一副"}
    r = client.post(f"/api/admin/v1/orders/{order['id']}/refunds", json=body,
                    headers={**tenant.admin_headers, "Idempotency-Key": "sales-r1"})
    assert r.status_code == 201, r.text
    drain(session_factory, settings, tenant)
    assert admin_order(client, tenant, order["id"])["refunded_amount"] == 20000
    assert _sales(session_factory, a) == 1


def test_recount_matches_the_orders(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    headers = customer_login(client, tenant)
    (a,) = make_product(session_factory, tenant.id, [10000])
    paid_order(client, tenant, session_factory, headers, [(a, 4)])
    submit_order(client, headers, [(a, 1)])  # pending: not sold
    with unit_of_work(session_factory) as s:
        catalog_repo.recount_sales(s, tenant.id)
    assert _sales(session_factory, a) == 4
