"""Virtual products (``Product.kind == "virtual"``, e.g. a membership card) at checkout: no
address and no freight for them, their own price (no member price; coupons, order promotions
and points only when the product allows coupons), completion on payment; a mixed cart ships
(and pays freight for) its physical lines only; a physical-only checkout is unchanged."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import KIND_PHYSICAL, KIND_VIRTUAL, Product, Sku
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.audit import AuditEvent
from siyu.kit.errors import DomainError
from siyu.kit.timeutil import utcnow
from siyu.orders import checkout, service
from siyu.orders.models import COMPLETED, PAID, PENDING_PAYMENT, SHIPPED, Order
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.factories.orders import buyer, make_freight_template, make_member, make_sku, sku_stock
from tests.loyalty import helpers as h

TIMEOUT = dt.timedelta(minutes=30)
SYSTEM = ("system", None)
# The default template: ¥8 for the first piece, ¥2 for each further piece, everywhere.
FREIGHT_RULES = [{"regions": ["*"], "first_units": 1, "first_fee": 800, "extra_units": 1, "extra_fee": 200}]


def virtual_sku(
    factory: sessionmaker[Session], merchant_id: int, *, price: int = 9900, coupons_allowed: bool = False,
    stock: int = 100,
) -> int:
    """A virtual product (not free-shipping, no template: the default template would apply to it
    if it were physical) with one SKU; returns the SKU id."""
    sku_id = make_sku(factory, merchant_id, price=price, stock=stock, title="付费会员年卡", weight_g=0)
    with unit_of_work(factory) as s:
        sku = s.get(Sku, sku_id)
        assert sku is not None
        product = s.get(Product, sku.product_id)
        assert product is not None
        product.kind = KIND_VIRTUAL
        product.coupons_allowed = coupons_allowed
    return sku_id


def _body(items: list[tuple[int, int]], **extra: Any) -> CheckoutIn:
    return CheckoutIn.model_validate({"items": [{"sku_id": k, "quantity": q} for k, q in items], **extra})


def _submit(factory: sessionmaker[Session], tenant: Tenant, member: int, body: CheckoutIn) -> Order:
    with unit_of_work(factory) as s:
        order, created = checkout.submit(s, tenant.id, member, body, idempotency_key=uuid.uuid4().hex,
                                         payment_timeout=TIMEOUT)
        assert created
        return order


def _pay(factory: sessionmaker[Session], tenant: Tenant, order: Order) -> Order:
    with unit_of_work(factory) as s:
        return service.mark_paid(s, tenant.id, order.id, amount=order.payable_amount, paid_at=utcnow(), actor=SYSTEM)


def _order_audit(factory: sessionmaker[Session], merchant_id: int, order_id: int) -> list[tuple[Any, ...]]:
    with factory() as s:
        events = s.scalars(
            select(AuditEvent).where(AuditEvent.merchant_id == merchant_id, AuditEvent.subject_type == "order",
                                     AuditEvent.subject_id == order_id).order_by(AuditEvent.id)
        ).all()
        return [(e.action, e.from_state, e.to_state, e.actor_type, (e.data or {}).get("reason")) for e in events]


def _vip(factory: sessionmaker[Session], merchant_id: int, member: int, percent: int = 90) -> None:
    """Put ``member`` on a level with ``percent`` % member price."""
    h.add_level(factory, merchant_id, 1, "VIP", min_points=10, member_price_percent=percent)
    h.award(factory, merchant_id, member, 10, f"vip:{member}")
    with unit_of_work(factory) as s:
        from siyu.loyalty import service as loyalty_service

        loyalty_service.evaluate_level(s, merchant_id, member)
    assert h.level_of(factory, merchant_id, member) == "VIP"


def test_a_product_is_physical_unless_made_virtual(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id)
    with session_factory() as s:
        product = s.get(Product, s.get(Sku, sku).product_id)  # type: ignore[union-attr]
        assert product is not None and product.kind == KIND_PHYSICAL


def test_card_only_checkout_needs_no_address_pays_no_freight_and_keeps_its_price(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    make_freight_template(session_factory, tenant.id, rules=FREIGHT_RULES, default=True)
    card = virtual_sku(session_factory, tenant.id, price=9900)
    member = make_member(session_factory, tenant.id)  # no address at all
    _vip(session_factory, tenant.id, member, percent=90)
    body = _body([(card, 1)])
    with session_factory() as s:
        preview = checkout.preview(s, tenant.id, member, body)
    assert preview.freight_amount == 0 and preview.payable_amount == 9900 and preview.discount_amount == 0
    assert preview.address is None and "freight" not in preview.notes  # no "estimated without a destination"
    (line,) = preview.lines
    assert line.is_virtual and line.discounts == {} and line.flags["virtual"] is True

    order = _submit(session_factory, tenant, member, body)
    assert order.status == PENDING_PAYMENT and order.address == {}
    assert (order.goods_amount, order.discount_amount, order.freight_amount, order.payable_amount) == (
        9900, 0, 0, 9900
    )
    with session_factory() as s:
        (stored,) = service.order_lines(s, tenant.id, order.id)
    assert stored.is_virtual and stored.payable_amount == 9900 and stored.discounts == {}
    assert sku_stock(session_factory, card) == 99  # a card product still counts its stock


def test_paying_a_card_only_order_completes_it_with_an_audit_event(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    card = virtual_sku(session_factory, tenant.id)
    member = make_member(session_factory, tenant.id)
    order = _submit(session_factory, tenant, member, _body([(card, 1)]))
    paid = _pay(session_factory, tenant, order)
    assert paid.status == COMPLETED and paid.completed_at == paid.paid_at and paid.shipped_at is None
    assert _order_audit(session_factory, tenant.id, order.id) == [
        ("submitted", None, PENDING_PAYMENT, "customer", None),
        ("paid", PENDING_PAYMENT, PAID, "system", None),
        ("completed", PAID, COMPLETED, "system", "nothing_to_ship"),
    ]
    # Paying again with the same amount is still a no-op; there is nothing to ship.
    again = _pay(session_factory, tenant, order)
    assert again.status == COMPLETED
    with pytest.raises(DomainError) as err, unit_of_work(session_factory) as s:
        service.ship(s, tenant.id, order.id, carrier="SF", tracking_no="SF1", actor=SYSTEM)
    assert err.value.code == "order_state_invalid"


def test_a_free_card_order_completes_at_submit(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    card = virtual_sku(session_factory, tenant.id, price=0)
    member = make_member(session_factory, tenant.id)
    order = _submit(session_factory, tenant, member, _body([(card, 1)]))
    assert order.payable_amount == 0 and order.status == COMPLETED


def test_mixed_cart_needs_an_address_and_pays_freight_for_physical_lines_only(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    make_freight_template(session_factory, tenant.id, rules=FREIGHT_RULES, default=True)
    card = virtual_sku(session_factory, tenant.id, price=9900)
    glasses = make_sku(session_factory, tenant.id, price=20000)
    homeless = make_member(session_factory, tenant.id)
    with pytest.raises(DomainError) as err, unit_of_work(session_factory) as s:
        checkout.submit(s, tenant.id, homeless, _body([(card, 1), (glasses, 1)]), idempotency_key="mixed",
                        payment_timeout=TIMEOUT)
    assert err.value.code == "address_required"

    member = buyer(session_factory, tenant.id)
    _vip(session_factory, tenant.id, member, percent=90)
    # 2 cards + 1 pair of glasses: counted as pieces, the cards would make it ¥8 + 2 x ¥2.
    order = _submit(session_factory, tenant, member, _body([(card, 2), (glasses, 1)]))
    assert order.address["province"] == "浙江省"
    assert order.freight_amount == 800
    with session_factory() as s:
        lines = {ln.sku_id: ln for ln in service.order_lines(s, tenant.id, order.id)}
    assert lines[card].is_virtual and not lines[glasses].is_virtual
    assert lines[card].payable_amount == 2 * 9900 and lines[card].discounts == {}  # no member price on the card
    assert lines[glasses].discounts == {"member_price": 2000} and lines[glasses].payable_amount == 18000
    assert order.payable_amount == 2 * 9900 + 18000 + 800
    paid = _pay(session_factory, tenant, order)
    assert paid.status == PAID  # the glasses still ship
    with unit_of_work(session_factory) as s:
        assert service.ship(s, tenant.id, order.id, carrier="SF", tracking_no="SF2", actor=SYSTEM).status == SHIPPED


def test_physical_only_checkout_is_unchanged(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    make_freight_template(session_factory, tenant.id, rules=FREIGHT_RULES, default=True)
    glasses = make_sku(session_factory, tenant.id, price=20000)
    homeless = make_member(session_factory, tenant.id)
    with pytest.raises(DomainError) as err, unit_of_work(session_factory) as s:
        checkout.submit(s, tenant.id, homeless, _body([(glasses, 1)]), idempotency_key="phys",
                        payment_timeout=TIMEOUT)
    assert err.value.code == "address_required"
    member = buyer(session_factory, tenant.id)
    _vip(session_factory, tenant.id, member, percent=90)
    order = _submit(session_factory, tenant, member, _body([(glasses, 2)]))
    assert order.freight_amount == 1000 and order.discount_amount == 4000 and order.payable_amount == 37000
    assert order.address["province"] == "浙江省"
    with session_factory() as s:
        (line,) = service.order_lines(s, tenant.id, order.id)
    assert not line.is_virtual
    assert _pay(session_factory, tenant, order).status == PAID


def test_points_deduction_skips_a_card_that_allows_no_coupons(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    h.set_rules(session_factory, tenant.id,
                deduction={"enabled": True, "points_per_yuan": 100, "max_percent": 50, "min_points": 0})
    card = virtual_sku(session_factory, tenant.id, price=10000, coupons_allowed=False)
    open_card = virtual_sku(session_factory, tenant.id, price=10000, coupons_allowed=True)
    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 100000, "points")
    with session_factory() as s:
        closed = checkout.preview(s, tenant.id, member, _body([(card, 1)], points_to_use=5000))
        opened = checkout.preview(s, tenant.id, member, _body([(open_card, 1)], points_to_use=5000))
    (line,) = closed.lines
    assert closed.payable_amount == 10000 and line.flags.get("no_points") and line.flags.get("no_coupon")
    assert line.flags.get("no_order_promotions")
    assert {k: v for k, v in closed.notes.items() if k == "points"}["points"][0]["code"] == "points_not_usable"
    # The merchant turned coupons on for this card: points may pay for half of it.
    (line,) = opened.lines
    assert opened.payable_amount == 5000 and line.discounts == {"points": 5000}
    assert not line.flags.get("no_coupon") and line.flags["virtual"] is True


def _recording(factory: sessionmaker[Session], fn: Any) -> list[str]:
    """The SQL statements ``fn(session)`` runs in one unit of work."""
    statements: list[str] = []
    with unit_of_work(factory) as s:
        bind = s.connection().engine
        listener = lambda *args: statements.append(" ".join(args[2].split()))  # noqa: E731
        event.listen(bind, "before_cursor_execute", listener)
        try:
            fn(s)
        finally:
            event.remove(bind, "before_cursor_execute", listener)
    return statements


def _reads(statements: list[str], table: str) -> list[str]:
    return [st for st in statements if st.upper().startswith("SELECT") and f" {table}" in st]


def test_a_card_only_submit_reads_no_address_and_no_freight_template(
    session_factory: sessionmaker[Session], tenant: Tenant, settings: Settings
) -> None:
    make_freight_template(session_factory, tenant.id, rules=FREIGHT_RULES, default=True)
    card, glasses = virtual_sku(session_factory, tenant.id), make_sku(session_factory, tenant.id)
    member = buyer(session_factory, tenant.id)

    def submit(items: list[tuple[int, int]]) -> list[str]:
        return _recording(session_factory, lambda s: checkout.submit(
            s, tenant.id, member, _body(items), idempotency_key=uuid.uuid4().hex, payment_timeout=TIMEOUT))

    virtual, physical = submit([(card, 1)]), submit([(glasses, 1)])
    # On PostgreSQL the address comes with the SKU read whatever the lines (no round trip of its
    # own, nothing to skip); SQLite reads it apart, only for a physical order.
    address_reads = 1 if settings.is_sqlite else 0
    own = [st for st in _reads(physical, "addresses") if "FROM skus JOIN products" not in st]
    assert len(own) == address_reads and not [st for st in _reads(virtual, "addresses") if "FROM skus" not in st]
    assert not _reads(virtual, "freight_templates") and _reads(physical, "freight_templates")
    assert len(virtual) == len(physical) - 1 - address_reads  # the same submit, less those reads
    with session_factory() as s:  # and the card-only order keeps no address
        kept = list(s.scalars(select(Order.address).where(Order.merchant_id == tenant.id).order_by(Order.id)))
    assert kept[0] == {} and kept[1] != {}


def test_paying_a_physical_order_reads_no_lines_a_card_order_reads_them_once(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    card, glasses = virtual_sku(session_factory, tenant.id), make_sku(session_factory, tenant.id)
    member = buyer(session_factory, tenant.id)
    orders = [_submit(session_factory, tenant, member, _body([(sku, 1)])) for sku in (glasses, card)]

    def pay(order: Order) -> list[str]:
        return _recording(session_factory, lambda s: service.mark_paid(
            s, tenant.id, order.id, amount=order.payable_amount, paid_at=utcnow(), actor=SYSTEM))

    physical, virtual = pay(orders[0]), pay(orders[1])
    assert not _reads(physical, "order_lines")
    assert len(_reads(virtual, "order_lines")) == 1
