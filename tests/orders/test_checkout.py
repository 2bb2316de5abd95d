"""Checkout at the service level: preview equals submit, idempotent submit, bad input leaves
nothing behind, stock, cart clean-up, order numbers, zero-payable orders."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.audit import AuditEvent
from siyu.kit.errors import DomainError
from siyu.kit.outbox import Job
from siyu.orders import checkout, service
from siyu.orders.models import PAID, PENDING_PAYMENT, CartItem, Order, OrderLine
from siyu.orders.pricing import ITEM_PROMOTIONS, PricingContext, register_stage
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.factories.orders import buyer, make_freight_template, make_sku, sku_stock, submit_order

TIMEOUT = dt.timedelta(minutes=30)


def _body(items: list[tuple[int, int]] | None, **extra: Any) -> CheckoutIn:
    data: dict[str, Any] = dict(extra)
    if items is not None:
        data["items"] = [{"sku_id": k, "quantity": q} for k, q in items]
    return CheckoutIn.model_validate(data)


def _submit(factory: sessionmaker[Session], tenant: Tenant, member: int, body: CheckoutIn, key: str) -> tuple[Order, bool]:
    with unit_of_work(factory) as s:
        return checkout.submit(s, tenant.id, member, body, idempotency_key=key, payment_timeout=TIMEOUT)


def _count_orders(factory: sessionmaker[Session], merchant_id: int) -> int:
    with factory() as s:
        return s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == merchant_id)) or 0


# A test-only pricing stage: 10% off lines whose product title says so, to exercise allocation.
@register_stage(ITEM_PROMOTIONS, "tests.orders.ten_percent")
def _ten_percent(ctx: PricingContext) -> None:
    idx = ctx.eligible(lambda ln: "[10%]" in ln.title)
    if idx:
        ctx.discount(ITEM_PROMOTIONS, "test:10pct", "九折", sum(ctx.lines[i].amount for i in idx) // 10, idx)


@register_stage(ITEM_PROMOTIONS, "tests.orders.free_all")
def _free_all(ctx: PricingContext) -> None:
    idx = ctx.eligible(lambda ln: "[FREE]" in ln.title)
    if idx:
        ctx.discount(ITEM_PROMOTIONS, "test:free", "免单", sum(ctx.lines[i].amount for i in idx), idx)


def test_preview_equals_submit(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    make_freight_template(session_factory, tenant.id, default=True)
    a = make_sku(session_factory, tenant.id, price=3333, title="镜片 [10%]")
    b = make_sku(session_factory, tenant.id, price=1999, title="镜布 [10%]")
    c = make_sku(session_factory, tenant.id, price=12000)
    member = buyer(session_factory, tenant.id)
    body = _body([(a, 3), (b, 7), (c, 1)])
    with session_factory() as s:
        preview = checkout.preview(s, tenant.id, member, body)
    order, created = _submit(session_factory, tenant, member, body, "k-preview")
    assert created
    assert (order.goods_amount, order.discount_amount, order.freight_amount, order.payable_amount) == (
        preview.goods_amount, preview.discount_amount, preview.freight_amount, preview.payable_amount
    )
    assert order.pricing == preview.breakdown
    assert preview.discount_amount == (3333 * 3 + 1999 * 7) // 10
    with session_factory() as s:
        lines = service.order_lines(s, tenant.id, order.id)
    assert [(ln.sku_id, ln.discounts, ln.payable_amount) for ln in lines] == [
        (p.sku_id, p.discounts, p.payable_amount) for p in preview.lines
    ]
    assert sum(ln.payable_amount for ln in lines) == order.payable_amount - order.freight_amount
    assert all(ln.discount_amount == sum(ln.discounts.values()) for ln in lines)
    assert all(ln.payable_amount == ln.goods_amount - ln.discount_amount for ln in lines)
    assert order.status == PENDING_PAYMENT and order.address["province"] == "浙江省"
    assert len(order.order_no) == 20 and order.order_no.isdigit()
    assert order.pay_deadline is not None and order.created_at is not None
    assert order.pay_deadline - order.created_at == TIMEOUT
    assert sku_stock(session_factory, a) == 97 and sku_stock(session_factory, c) == 99


def test_submit_writes_audit_job_and_event(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id)
    member = buyer(session_factory, tenant.id)
    order = submit_order(session_factory, tenant.id, member, [(sku, 1)])
    with session_factory() as s:
        jobs = {j.kind: j for j in s.scalars(select(Job).where(Job.merchant_id == tenant.id))}
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.merchant_id == tenant.id)))
    assert jobs["orders.auto_cancel"].run_at == order.pay_deadline
    assert jobs["orders.auto_cancel"].dedupe_key == f"order:{order.id}:auto_cancel"
    assert [(e.action, e.to_state, e.actor_type, e.actor_id) for e in events] == [
        ("submitted", PENDING_PAYMENT, "customer", member)
    ]


def test_same_key_same_body_returns_the_same_order_and_takes_stock_once(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, stock=10)
    member = buyer(session_factory, tenant.id)
    body = _body([(sku, 2)], remark="请尽快发货")
    first, created1 = _submit(session_factory, tenant, member, body, "same-key")
    again, created2 = _submit(session_factory, tenant, member, _body([(sku, 2)], remark="请尽快发货"), "same-key")
    assert created1 and not created2 and again.id == first.id
    assert sku_stock(session_factory, sku) == 8
    assert _count_orders(session_factory, tenant.id) == 1


def test_same_key_other_body_is_409_and_changes_nothing(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, stock=10)
    member = buyer(session_factory, tenant.id)
    _submit(session_factory, tenant, member, _body([(sku, 2)]), "k1")
    with pytest.raises(DomainError) as err:
        _submit(session_factory, tenant, member, _body([(sku, 3)]), "k1")
    assert err.value.code == "idempotency_key_reused" and err.value.status == 409
    assert sku_stock(session_factory, sku) == 8 and _count_orders(session_factory, tenant.id) == 1


def test_the_same_key_of_another_member_is_another_order(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, stock=10)
    m1, m2 = buyer(session_factory, tenant.id), buyer(session_factory, tenant.id)
    o1, _ = _submit(session_factory, tenant, m1, _body([(sku, 1)]), "shared")
    o2, _ = _submit(session_factory, tenant, m2, _body([(sku, 1)]), "shared")
    assert o1.id != o2.id and sku_stock(session_factory, sku) == 8


def test_missing_key_is_refused(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id)
    member = buyer(session_factory, tenant.id)
    for key in (None, "", "  "):
        with pytest.raises(DomainError) as err, unit_of_work(session_factory) as s:
            checkout.submit(s, tenant.id, member, _body([(sku, 1)]), idempotency_key=key, payment_timeout=TIMEOUT)
        assert err.value.code == "idempotency_key_required" and err.value.status == 400
    assert _count_orders(session_factory, tenant.id) == 0


@pytest.mark.parametrize("quantity", [0, -1, 1000])
def test_quantity_out_of_range_is_a_field_error(quantity: int) -> None:
    # CheckoutItem states 1..999 (the OpenAPI document has it): the body never reaches checkout
    with pytest.raises(ValidationError) as err:
        _body([(1, 1), (1, 0)] if quantity == 0 else [(1, quantity)])
    (error,) = err.value.errors()
    assert error["type"] == ("less_than_equal" if quantity == 1000 else "greater_than_equal")
    assert error["loc"] == (("items", 1, "quantity") if quantity == 0 else ("items", 0, "quantity"))


def test_merged_quantity_out_of_range_is_a_field_error(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, stock=5000)
    member = buyer(session_factory, tenant.id)
    with pytest.raises(DomainError) as err:
        _submit(session_factory, tenant, member, _body([(sku, 500), (sku, 500)]), "q")
    assert err.value.status == 422 and err.value.code == "validation_error"
    assert err.value.fields[0].code == "quantity_out_of_range"
    assert err.value.fields[0].path == "items.0.quantity"
    assert sku_stock(session_factory, sku) == 5000 and _count_orders(session_factory, tenant.id) == 0


def test_quantity_above_stock_is_409_in_preview_and_submit(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, stock=3)
    member = buyer(session_factory, tenant.id)
    with pytest.raises(DomainError) as err, session_factory() as s:
        checkout.preview(s, tenant.id, member, _body([(sku, 4)]))
    assert err.value.code == "insufficient_stock" and err.value.status == 409
    with pytest.raises(DomainError) as err:
        _submit(session_factory, tenant, member, _body([(sku, 4)]), "too-many")
    assert err.value.code == "insufficient_stock"
    assert sku_stock(session_factory, sku) == 3 and _count_orders(session_factory, tenant.id) == 0


def test_foreign_unknown_and_unsellable_skus(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    from siyu.tenancy import service as tenancy_service
    from tests.conftest import unique

    with unit_of_work(session_factory) as s:
        other = tenancy_service.create_merchant(s, code=unique("o"), name="Other").id
    foreign = make_sku(session_factory, other)
    draft = make_sku(session_factory, tenant.id, status="draft")
    inactive = make_sku(session_factory, tenant.id, active=False)
    good = make_sku(session_factory, tenant.id, stock=5)
    member = buyer(session_factory, tenant.id)
    cases = [(foreign, "sku_not_found", 404), (987654321, "sku_not_found", 404),
             (draft, "product_not_on_sale", 409), (inactive, "product_not_on_sale", 409)]
    for sku, code, status in cases:
        with pytest.raises(DomainError) as err:
            _submit(session_factory, tenant, member, _body([(good, 1), (sku, 1)]), f"k-{sku}")
        assert (err.value.code, err.value.status) == (code, status)
    assert sku_stock(session_factory, good) == 5 and sku_stock(session_factory, foreign) == 100
    assert _count_orders(session_factory, tenant.id) == 0


def test_submit_needs_an_address(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    from tests.factories.orders import make_member

    sku = make_sku(session_factory, tenant.id)
    member = make_member(session_factory, tenant.id)
    with session_factory() as s:  # preview works without an address
        assert checkout.preview(s, tenant.id, member, _body([(sku, 1)])).address is None
    with pytest.raises(DomainError) as err:
        _submit(session_factory, tenant, member, _body([(sku, 1)]), "no-address")
    assert err.value.code == "address_required"
    other_member = buyer(session_factory, tenant.id)
    with session_factory() as s:
        from siyu.orders import repository as repo

        foreign_address = repo.default_address(s, tenant.id, other_member)
        assert foreign_address is not None
    with pytest.raises(DomainError) as err:
        _submit(session_factory, tenant, member, _body([(sku, 1)], address_id=foreign_address.id), "foreign-address")
    assert err.value.code == "validation_error" and err.value.fields[0].path == "address_id"
    assert _count_orders(session_factory, tenant.id) == 0


def test_cart_checkout_removes_ordered_items_only(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    a, b = make_sku(session_factory, tenant.id), make_sku(session_factory, tenant.id)
    member = buyer(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        service.add_to_cart(s, tenant.id, member, a, 2)
        item_b = service.add_to_cart(s, tenant.id, member, b, 1)
        service.update_cart_item(s, tenant.id, member, item_b.id, quantity=None, selected=False)
    order, _ = _submit(session_factory, tenant, member, _body(None), "from-cart")
    with session_factory() as s:
        lines = service.order_lines(s, tenant.id, order.id)
        left = list(s.scalars(select(CartItem.sku_id).where(CartItem.merchant_id == tenant.id)))
    assert [(ln.sku_id, ln.quantity) for ln in lines] == [(a, 2)]
    assert left == [b]
    with pytest.raises(DomainError) as err:  # nothing selected any more
        _submit(session_factory, tenant, member, _body(None), "from-cart-2")
    assert err.value.code == "checkout_empty"


def test_zero_payable_order_is_paid_at_once(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, price=5000, title="赠品 [FREE]", free_shipping=True)
    member = buyer(session_factory, tenant.id)
    order = submit_order(session_factory, tenant.id, member, [(sku, 1)])
    assert order.payable_amount == 0 and order.status == PAID and order.paid_amount == 0
    with session_factory() as s:
        kinds = set(s.scalars(select(Job.kind).where(Job.merchant_id == tenant.id)))
        (line,) = s.scalars(select(OrderLine).where(OrderLine.order_id == order.id))
    assert "orders.auto_cancel" not in kinds
    assert line.discounts == {"item_promotions": 5000} and line.payable_amount == 0


def test_order_numbers_are_unique_and_dated(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, stock=100)
    member = buyer(session_factory, tenant.id)
    now = dt.datetime(2026, 11, 23, 1, 0, tzinfo=dt.UTC)  # 09:00 in Shanghai
    numbers = {submit_order(session_factory, tenant.id, member, [(sku, 1)], now=now).order_no for _ in range(5)}
    assert len(numbers) == 5 and all(n.startswith("20261123090000") for n in numbers)
    assert uuid  # keys are random per call
