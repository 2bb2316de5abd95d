"""Builders for after-sales tests: a product, a paid (shipped, completed) order, a worker drain.

Orders are made the way a customer makes them (checkout submit, sandbox payment) and moved on by
the admin API (ship, complete). ``discount`` simulates a pipeline discount allocated to the
lines with the largest-remainder method, so refunds of paid shares are not trivially the price.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.aftersales.models import AfterSale, AfterSaleLine
from siyu.catalog.models import Product, Sku
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.audit import AuditEvent
from siyu.kit.money import allocate
from siyu.orders.models import Order, OrderLine
from siyu.worker.runner import Worker
from tests.conftest import Tenant

STORE = "/api/store/v1"
ADMIN = "/api/admin/v1"


def make_product(
    session_factory: sessionmaker[Session], merchant_id: int, prices: list[int], *, stock: int = 10
) -> list[int]:
    """An on-sale, free-shipping product with one SKU per price; returns the SKU ids."""
    with unit_of_work(session_factory) as s:
        product = Product(
            merchant_id=merchant_id,
            title="镜框 Frame",
            status="on_sale",
            free_shipping=True,
            spec_names=["颜色"],
        )
        s.add(product)
        s.flush()
        ids = []
        for i, price in enumerate(prices):
            sku = Sku(
                merchant_id=merchant_id,
                product_id=product.id,
                sku_code=f"sku-{uuid.uuid4().hex[:10]}",
                specs={"颜色": f"c{i}"},
                list_price=price,
                sale_price=price,
                stock=stock,
            )
            s.add(sku)
            s.flush()
            ids.append(sku.id)
        return ids


def add_address(client: TestClient, headers: dict[str, str]) -> int:
    body = {
        "name": "张三",
        "phone": "13800000000",
        "province": "浙江省",
        "city": "杭州市",
        "detail": "西湖路 1 号",
    }
    r = client.post(f"{STORE}/addresses", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def submit_order(client: TestClient, headers: dict[str, str], items: list[tuple[int, int]]) -> dict[str, Any]:
    address_id = add_address(client, headers)
    r = client.post(
        f"{STORE}/checkout/submit",
        json={"items": [{"sku_id": s, "quantity": q} for s, q in items], "address_id": address_id},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def discount(session_factory: sessionmaker[Session], merchant_id: int, order_id: int, amount: int) -> None:
    """Take ``amount`` off an unpaid order, allocated over its lines like a pricing stage would."""
    with unit_of_work(session_factory) as s:
        order = s.scalar(select(Order).where(Order.merchant_id == merchant_id, Order.id == order_id))
        assert order is not None
        lines = list(
            s.scalars(
                select(OrderLine)
                .where(OrderLine.merchant_id == merchant_id, OrderLine.order_id == order_id)
                .order_by(OrderLine.id)
            )
        )
        for line, part in zip(lines, allocate(amount, [ln.payable_amount for ln in lines]), strict=True):
            line.discounts = {**line.discounts, "coupons": part}
            line.discount_amount += part
            line.payable_amount -= part
        order.discount_amount += amount
        order.payable_amount -= amount


def pay(client: TestClient, headers: dict[str, str], order_id: int) -> None:
    r = client.post(f"{STORE}/orders/{order_id}/pay", headers=headers)
    assert r.status_code in (200, 201), r.text
    out_trade_no = r.json()["out_trade_no"]
    r = client.post(f"{STORE}/sandbox/payments/{out_trade_no}/complete", headers=headers)
    assert r.status_code in (200, 201, 204), r.text


def ship(client: TestClient, tenant: Tenant, order_id: int) -> None:
    r = client.post(
        f"{ADMIN}/orders/{order_id}/ship",
        json={"carrier": "SF", "tracking_no": "SF100"},
        headers=tenant.admin_headers,
    )
    assert r.status_code == 200, r.text


def complete(client: TestClient, tenant: Tenant, order_id: int) -> None:
    r = client.post(f"{ADMIN}/orders/{order_id}/complete", headers=tenant.admin_headers)
    assert r.status_code == 200, r.text


def paid_order(
    client: TestClient,
    tenant: Tenant,
    session_factory: sessionmaker[Session],
    headers: dict[str, str],
    items: list[tuple[int, int]],
    *,
    discount_amount: int = 0,
    shipped: bool = False,
    completed: bool = False,
) -> dict[str, Any]:
    """Submit, optionally discount, pay; then ship / complete. Returns the order (admin detail)."""
    order = submit_order(client, headers, items)
    if discount_amount:
        discount(session_factory, tenant.id, order["id"], discount_amount)
    pay(client, headers, order["id"])
    if shipped or completed:
        ship(client, tenant, order["id"])
    if completed:
        complete(client, tenant, order["id"])
    return admin_order(client, tenant, order["id"])


def admin_order(client: TestClient, tenant: Tenant, order_id: int) -> dict[str, Any]:
    r = client.get(f"{ADMIN}/orders/{order_id}", headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def line_id(order: dict[str, Any], sku_id: int) -> int:
    return next(int(ln["id"]) for ln in order["lines"] if ln["sku_id"] == sku_id)


def request_aftersale(
    client: TestClient,
    headers: dict[str, str],
    order_id: int,
    kind: str,
    lines: list[tuple[int, int]],
    *,
    line_bodies: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> Any:
    """POST a request; ``line_bodies`` replaces ``lines`` when a line needs more than id and quantity."""
    body = {
        "kind": kind,
        "reason_code": extra.pop("reason_code", "quality_issue"),
        "description": extra.pop("description", "镜腿松动"),
        "lines": line_bodies or [{"order_line_id": lid, "quantity": q} for lid, q in lines],
        **extra,
    }
    return client.post(f"{STORE}/orders/{order_id}/aftersales", json=body, headers=headers)


def drain(session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant, **kw: Any) -> int:
    return Worker(session_factory, settings, merchant_id=tenant.id).drain(**kw)


def set_order_times(
    session_factory: sessionmaker[Session],
    merchant_id: int,
    order_id: int,
    *,
    completed_at: dt.datetime | None = None,
    shipped_at: dt.datetime | None = None,
) -> None:
    with unit_of_work(session_factory) as s:
        order = s.scalar(select(Order).where(Order.merchant_id == merchant_id, Order.id == order_id))
        assert order is not None
        if completed_at is not None:
            order.completed_at = completed_at
        if shipped_at is not None:
            order.shipped_at = shipped_at


def snapshot(session_factory: sessionmaker[Session], merchant_id: int) -> dict[str, Any]:
    """Everything an after-sales call may change, to assert that a refused call changed nothing."""
    with session_factory() as s:
        return {
            "aftersales": [
                (a.id, a.status, a.refund_amount, a.refund_id)
                for a in s.scalars(
                    select(AfterSale).where(AfterSale.merchant_id == merchant_id).order_by(AfterSale.id)
                )
            ],
            "lines": [
                (ln.id, ln.open_order_line_id, ln.amount, ln.refund_amount)
                for ln in s.scalars(
                    select(AfterSaleLine)
                    .where(AfterSaleLine.merchant_id == merchant_id)
                    .order_by(AfterSaleLine.id)
                )
            ],
            "audit": s.scalar(
                select(func.count()).where(
                    AuditEvent.merchant_id == merchant_id, AuditEvent.subject_type == "aftersale"
                )
            ),
            "stock": [
                (k.id, k.stock)
                for k in s.scalars(select(Sku).where(Sku.merchant_id == merchant_id).order_by(Sku.id))
            ],
            "orders": [
                (o.id, o.status, o.refunded_amount)
                for o in s.scalars(select(Order).where(Order.merchant_id == merchant_id).order_by(Order.id))
            ],
            "order_lines": [
                (ln.id, ln.refunded_quantity, ln.refunded_amount)
                for ln in s.scalars(
                    select(OrderLine).where(OrderLine.merchant_id == merchant_id).order_by(OrderLine.id)
                )
            ],
        }


def stock_of(session_factory: sessionmaker[Session], merchant_id: int, sku_id: int) -> int:
    with session_factory() as s:
        value = s.scalar(select(Sku.stock).where(Sku.merchant_id == merchant_id, Sku.id == sku_id))
        assert value is not None
        return int(value)
