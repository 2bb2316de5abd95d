"""Cart, addresses, freight templates and the order state machine.

Order status (``orders/models.py``)::

    pending_payment ──pay──► paid ──ship──► shipped ──complete──► completed
          │                   │ └──── nothing to ship (all lines virtual) ─┘ │
          │                   │               │                              │
          └─cancel─► cancelled └───── full refund (reserve_refund) ─────────┴──► closed

Every transition locks the order row (``FOR UPDATE`` on PostgreSQL), checks the move is legal
(else 409 ``order_state_invalid`` naming both states), writes the audit event (subject
``order``, from/to, actor) and any follow-up job or domain event in the caller's transaction.
Services never commit.

Functions other domains call: ``get_order``, ``get_order_by_no``, ``order_lines``,
``mark_paid``, ``line_refund_amount``, ``freight_to_refund``, ``reserve_refund``, ``release_refund``,
``ship``, ``complete``, ``cancel``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.catalog import stock
from siyu.catalog.models import PRODUCT_ON_SALE, Product, Sku
from siyu.config import get_settings
from siyu.kit import audit
from siyu.kit.errors import DomainError, catalogue, invalid, not_found, register_messages
from siyu.kit.events import emit
from siyu.kit.outbox import enqueue
from siyu.kit.timeutil import utcnow
from siyu.orders import repository as repo
from siyu.orders.models import (
    CANCELLED,
    CLOSED,
    COMPLETED,
    PAID,
    PENDING_PAYMENT,
    REFUND_FULL,
    REFUND_NONE,
    REFUND_PARTIAL,
    SHIPPED,
    Address,
    CartItem,
    FreightTemplate,
    Order,
    OrderLine,
    Shipment,
)
from siyu.orders.pricing import run_ship_guards
from siyu.orders.schemas import (
    MAX_LINE_QUANTITY,
    AddressIn,
    AddressUpdate,
    CartItemOut,
    CartOut,
    FreightTemplateIn,
    FreightTemplateUpdate,
)

_MESSAGES = {
    "sku_not_found": (404, "商品规格不存在（SKU {sku_id}）", "Product variant not found (SKU {sku_id})"),
    "product_not_on_sale": (409, "商品已下架或不可购买（SKU {sku_id}）", "The product is not on sale (SKU {sku_id})"),
    "order_state_invalid": (
        409,
        "订单状态不允许此操作（{from_state} → {to_state}）",
        "The order cannot go from {from_state} to {to_state}",
    ),
    "payment_amount_mismatch": (
        409,
        "支付金额 {amount} 与应付金额 {payable} 不一致",
        "Paid amount {amount} does not match the payable amount {payable}",
    ),
    "order_not_payable": (409, "订单当前状态（{status}）不可支付", "The order cannot be paid in its state ({status})"),
    "refund_quantity_invalid": (
        422,
        "退款数量不正确（订单行 {line_id}）",
        "Invalid refund quantity (order line {line_id})",
    ),
    "refund_exceeds_paid": (409, "退款金额超过可退金额 {refundable}", "The refund exceeds the refundable {refundable}"),
    "refund_release_invalid": (
        409,
        "要撤销的退款金额超过已登记的退款",
        "The refund to release exceeds what was reserved",
    ),
    "address_limit": (409, "收货地址最多 {limit} 个", "At most {limit} addresses"),
    "order_nothing_to_ship": (
        409,
        "订单的商品已全部退款，无需发货；如需退还运费，请按金额退款",
        "Every item of this order was refunded: there is nothing to ship (refund the freight as an amount if due)",
    ),
}
register_messages({k: v for k, v in _MESSAGES.items() if k not in catalogue()})

ADDRESS_LIMIT = 50

# Legal moves of the fulfilment state machine (refund-driven closing is in reserve_refund).
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING_PAYMENT: frozenset({PAID, CANCELLED}),
    PAID: frozenset({SHIPPED, CLOSED}),
    SHIPPED: frozenset({COMPLETED, CLOSED}),
    COMPLETED: frozenset({CLOSED}),
    CANCELLED: frozenset(),
    CLOSED: frozenset(),
}

# An order with nothing to ship (every line virtual, e.g. a membership card) is delivered by its
# payment: ``mark_paid`` moves it on to completed at once. Only that path may skip "shipped".
DELIVERED_ON_PAYMENT: dict[str, frozenset[str]] = {PAID: frozenset({COMPLETED})}

Actor = tuple[str, int | None]
SYSTEM: Actor = ("system", None)


def check_quantity(path: str, quantity: int) -> None:
    if quantity <= 0 or quantity > MAX_LINE_QUANTITY:
        raise invalid(path, "quantity_out_of_range", f"quantity must be between 1 and {MAX_LINE_QUANTITY}",
                      f"数量应在 1 到 {MAX_LINE_QUANTITY} 之间")


def spec_text(product: Product, sku: Sku) -> str:
    return spec_text_of(product.spec_names, sku.specs)


def spec_text_of(spec_names: list[str] | None, specs: dict[str, Any] | None) -> str:
    """The SKU's spec values in the product's spec order (others after), e.g. "黑 / 1.60"."""
    specs = specs or {}
    names = [n for n in (spec_names or []) if n in specs] + [n for n in specs if n not in (spec_names or [])]
    return " / ".join(str(specs[n]) for n in names)[:120]


def sellable(sku: Sku, product: Product) -> bool:
    return sellable_status(sku.active, product.status)


def sellable_status(sku_active: bool | None, product_status: str) -> bool:
    return bool(sku_active) and product_status == PRODUCT_ON_SALE


# -- cart ------------------------------------------------------------------------------------------


def _load_sellable_sku(session: Session, merchant_id: int, sku_id: int) -> tuple[Sku, Product]:
    found = repo.skus_with_products(session, merchant_id, [sku_id]).get(sku_id)
    if found is None:
        raise DomainError("sku_not_found", sku_id=sku_id)
    sku, product = found
    if not sellable(sku, product):
        raise DomainError("product_not_on_sale", sku_id=sku_id)
    return sku, product


def add_to_cart(session: Session, merchant_id: int, member_id: int, sku_id: int, quantity: int) -> CartItem:
    """Add units of a SKU; an existing line for the SKU is merged (total ≤ 999, ≤ stock)."""
    check_quantity("quantity", quantity)
    sku, _ = _load_sellable_sku(session, merchant_id, sku_id)
    item = repo.cart_item_by_sku(session, merchant_id, member_id, sku_id)
    if item is None:
        if quantity > sku.stock:
            raise DomainError("insufficient_stock", sku_id=sku_id, requested=quantity)
        item = CartItem(merchant_id=merchant_id, member_id=member_id, sku_id=sku_id, quantity=quantity, selected=True)
        try:
            with session.begin_nested():  # add inside: begin_nested() flushes what is pending first
                session.add(item)
                session.flush()
            return item
        except IntegrityError:  # a concurrent add of the same SKU created the line: merge into it
            found = repo.cart_item_by_sku(session, merchant_id, member_id, sku_id)
            if found is None:
                raise
            item = found
    total = item.quantity + quantity
    check_quantity("quantity", total)
    if total > sku.stock:
        raise DomainError("insufficient_stock", sku_id=sku_id, requested=total)
    item.quantity = total
    item.selected = True
    session.flush()
    return item


def _cart_item(session: Session, merchant_id: int, member_id: int, item_id: int) -> CartItem:
    item = repo.cart_item(session, merchant_id, member_id, item_id)
    if item is None:
        raise not_found("购物车商品", "Cart item")
    return item


def update_cart_item(
    session: Session, merchant_id: int, member_id: int, item_id: int, *, quantity: int | None, selected: bool | None
) -> CartItem:
    item = _cart_item(session, merchant_id, member_id, item_id)
    if quantity is not None:
        check_quantity("quantity", quantity)
        sku, _ = _load_sellable_sku(session, merchant_id, item.sku_id)
        if quantity > sku.stock:
            raise DomainError("insufficient_stock", sku_id=item.sku_id, requested=quantity)
        item.quantity = quantity
    if selected is not None:
        item.selected = selected
    session.flush()
    return item


def select_cart_items(
    session: Session, merchant_id: int, member_id: int, item_ids: list[int] | None, selected: bool
) -> None:
    repo.set_cart_selected(session, merchant_id, member_id, item_ids, selected)


def remove_cart_item(session: Session, merchant_id: int, member_id: int, item_id: int) -> None:
    session.delete(_cart_item(session, merchant_id, member_id, item_id))
    session.flush()


def cart(session: Session, merchant_id: int, member_id: int) -> CartOut:
    """The cart with current prices and whether each line can be bought now."""
    items = repo.cart_items(session, merchant_id, member_id)
    found = repo.skus_with_products(session, merchant_id, [i.sku_id for i in items])
    out: list[CartItemOut] = []
    selected_qty = selected_amount = 0
    for item in items:
        pair = found.get(item.sku_id)
        if pair is None:
            continue  # SKU deleted from the catalog
        sku, product = pair
        reason = None
        if not sellable(sku, product):
            reason = "off_sale"
        elif sku.stock <= 0:
            reason = "sold_out"
        elif sku.stock < item.quantity:
            reason = "insufficient_stock"
        out.append(
            CartItemOut(
                id=item.id, sku_id=sku.id, product_id=product.id, title=product.title, spec_text=spec_text(product, sku),
                image_url=sku.image_url or (product.images[0] if product.images else None), quantity=item.quantity,
                selected=item.selected, list_price=sku.list_price, sale_price=sku.sale_price, stock=sku.stock,
                available=reason is None, unavailable_reason=reason,
            )
        )
        if item.selected and reason is None:
            selected_qty += item.quantity
            selected_amount += sku.sale_price * item.quantity
    return CartOut(items=out, selected_quantity=selected_qty, selected_amount=selected_amount)


# -- addresses -------------------------------------------------------------------------------------


def list_addresses(session: Session, merchant_id: int, member_id: int) -> list[Address]:
    return repo.addresses(session, merchant_id, member_id)


def get_address(session: Session, merchant_id: int, member_id: int, address_id: int) -> Address:
    found = repo.address(session, merchant_id, member_id, address_id)
    if found is None:
        raise not_found("收货地址", "Address")
    return found


def create_address(session: Session, merchant_id: int, member_id: int, data: AddressIn) -> Address:
    existing = repo.addresses(session, merchant_id, member_id)
    if len(existing) >= ADDRESS_LIMIT:
        raise DomainError("address_limit", limit=ADDRESS_LIMIT)
    address = Address(merchant_id=merchant_id, member_id=member_id, **data.model_dump())
    address.is_default = data.is_default or not existing  # the first address is the default
    session.add(address)
    session.flush()
    if address.is_default:
        repo.clear_default_address(session, merchant_id, member_id, except_id=address.id)
    return address


def update_address(
    session: Session, merchant_id: int, member_id: int, address_id: int, data: AddressUpdate
) -> Address:
    address = get_address(session, merchant_id, member_id, address_id)
    changes = data.model_dump(exclude_unset=True)
    make_default = changes.pop("is_default", None)
    for key, value in changes.items():
        setattr(address, key, value)  # AddressUpdate refuses null but for postal_code
    if make_default:
        address.is_default = True
        session.flush()
        repo.clear_default_address(session, merchant_id, member_id, except_id=address.id)
    session.flush()
    return address


def set_default_address(session: Session, merchant_id: int, member_id: int, address_id: int) -> Address:
    return update_address(session, merchant_id, member_id, address_id, AddressUpdate(is_default=True))


def delete_address(session: Session, merchant_id: int, member_id: int, address_id: int) -> None:
    """Soft delete (orders keep their own snapshot); the newest remaining address becomes default."""
    address = get_address(session, merchant_id, member_id, address_id)
    address.deleted = True
    was_default = address.is_default
    address.is_default = False
    session.flush()
    if was_default:
        remaining = repo.addresses(session, merchant_id, member_id)
        if remaining:
            max(remaining, key=lambda a: a.id).is_default = True
            session.flush()


def address_snapshot(address: Address) -> dict[str, Any]:
    return {
        "address_id": address.id,
        "name": address.name,
        "phone": address.phone,
        "province": address.province,
        "city": address.city,
        "district": address.district,
        "detail": address.detail,
        "postal_code": address.postal_code,
    }


# -- freight templates -----------------------------------------------------------------------------


def _check_template(mode: str, rules: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        for region in rule["regions"]:
            if not region.strip():
                raise invalid(f"rules.{i}.regions", "region_empty", "region names cannot be empty", "地区名不能为空")
            if region in seen:
                raise invalid(f"rules.{i}.regions", "region_duplicate", f"{region} appears in two rules", f"{region} 出现在两条规则中")
            seen.add(region)


def list_freight_templates(session: Session, merchant_id: int) -> list[FreightTemplate]:
    return repo.freight_templates(session, merchant_id)


def get_freight_template(session: Session, merchant_id: int, template_id: int) -> FreightTemplate:
    found = repo.freight_template(session, merchant_id, template_id)
    if found is None:
        raise not_found("运费模板", "Freight template")
    return found


def create_freight_template(session: Session, merchant_id: int, data: FreightTemplateIn) -> FreightTemplate:
    values = data.model_dump()
    _check_template(values["mode"], values["rules"])
    template = FreightTemplate(merchant_id=merchant_id, **values)
    session.add(template)
    session.flush()
    if template.is_default:
        repo.clear_default_freight(session, merchant_id, except_id=template.id)
    return template


def update_freight_template(
    session: Session, merchant_id: int, template_id: int, data: FreightTemplateUpdate
) -> FreightTemplate:
    template = get_freight_template(session, merchant_id, template_id)
    changes = data.model_dump(exclude_unset=True)
    for key in ("name", "mode", "rules", "unreachable_regions", "is_default"):
        if key in changes and changes[key] is None:
            raise invalid(key, "required", f"{key} cannot be null", f"{key} 不能为 null")
    _check_template(changes.get("mode", template.mode), changes.get("rules", template.rules))
    for key, value in changes.items():
        setattr(template, key, value)
    session.flush()
    if template.is_default:
        repo.clear_default_freight(session, merchant_id, except_id=template.id)
    return template


def delete_freight_template(session: Session, merchant_id: int, template_id: int) -> None:
    """Products still pointing at a deleted template fall back to the merchant's default."""
    session.delete(get_freight_template(session, merchant_id, template_id))
    session.flush()


# -- orders: reads ---------------------------------------------------------------------------------


def get_order(session: Session, merchant_id: int, order_id: int) -> Order:
    found = repo.order(session, merchant_id, order_id)
    if found is None:
        raise not_found("订单", "Order")
    return found


def get_order_by_no(session: Session, merchant_id: int, order_no: str) -> Order:
    found = repo.order_by_no(session, merchant_id, order_no)
    if found is None:
        raise not_found("订单", "Order")
    return found


def order_by_idempotency_key(session: Session, merchant_id: int, member_id: int, key: str) -> Order | None:
    """The order a member's submit with this Idempotency-Key created, if any (retries replay it)."""
    return repo.order_by_idempotency_key(session, merchant_id, member_id, key)


def get_member_order(session: Session, merchant_id: int, member_id: int, order_id: int) -> Order:
    """A customer's own order; another member's order is a 404 like a missing one."""
    found = repo.order(session, merchant_id, order_id)
    if found is None or found.member_id != member_id:
        raise not_found("订单", "Order")
    return found


def order_lines(session: Session, merchant_id: int, order_id: int) -> list[OrderLine]:
    return repo.order_lines(session, merchant_id, order_id)


def _locked_order(session: Session, merchant_id: int, order_id: int) -> Order:
    found = repo.order(session, merchant_id, order_id, lock=True)
    if found is None:
        raise not_found("订单", "Order")
    return found


def _transition(
    session: Session, order: Order, to_state: str, action: str, actor: Actor, data: dict[str, Any] | None = None,
    *, moves: dict[str, frozenset[str]] = TRANSITIONS,
) -> str:
    from_state = order.status
    if to_state not in moves.get(from_state, frozenset()):
        raise DomainError("order_state_invalid", from_state=from_state, to_state=to_state)
    order.status = to_state
    audit.record(
        session, order.merchant_id, "order", order.id, action,
        from_state=from_state, to_state=to_state, actor=actor, data=data,
    )
    return from_state


def _event_payload(order: Order, **extra: Any) -> dict[str, Any]:
    return {"order_id": order.id, "member_id": order.member_id, **extra}


# -- orders: transitions ---------------------------------------------------------------------------


def mark_paid(
    session: Session, merchant_id: int, order_id: int, *, amount: int, paid_at: dt.datetime, actor: Actor
) -> Order:
    """Record the payment of a pending order (called by payments, idempotent for the same amount).

    An order with nothing to ship (all lines virtual) completes in the same step: audit
    ``completed`` (actor system, reason ``nothing_to_ship``), ``completed_at = paid_at`` (the
    after-sales window runs from there) and ``order.completed`` after ``order.paid``.

    A repeated call for an order already paid with the same amount returns it unchanged. A
    cancelled/closed order, or one already paid with another amount, is ``order_not_payable``
    (the payments module then refunds the money); an amount other than the payable is
    ``payment_amount_mismatch``. The pending auto-cancel job is left in place: it sees the paid
    status and does nothing.
    """
    order = _locked_order(session, merchant_id, order_id)
    if order.paid_at is not None:
        if order.paid_amount == amount:
            return order
        raise DomainError("order_not_payable", status=order.status)
    if order.status != PENDING_PAYMENT:
        raise DomainError("order_not_payable", status=order.status)
    if amount != order.payable_amount:
        raise DomainError("payment_amount_mismatch", amount=amount, payable=order.payable_amount)
    if paid_at.tzinfo is None:
        raise ValueError("paid_at must be timezone-aware")
    _transition(session, order, PAID, "paid", actor, {"amount": amount})
    order.paid_amount = amount
    order.paid_at = paid_at
    session.flush()
    emit(
        session, merchant_id, "order.paid",
        _event_payload(order, paid_amount=amount, paid_at=paid_at.astimezone(dt.UTC).isoformat()),
        key=f"order:{order.id}",
    )
    if _nothing_to_ship(session, order):
        _transition(session, order, COMPLETED, "completed", SYSTEM, {"reason": "nothing_to_ship"},
                    moves=DELIVERED_ON_PAYMENT)
        order.completed_at = paid_at
        session.flush()
        emit(session, merchant_id, "order.completed", _event_payload(order), key=f"order:{order.id}")
    return order


def _nothing_to_ship(session: Session, order: Order) -> bool:
    """Every line of the order is virtual (``OrderLine.is_virtual``).

    The checkout keeps no address only for such an order, so an order with an address is
    physical without reading its lines (a payment of a normal order costs no extra query); one
    without is checked line by line (lines written by this session's submit cost no read).
    """
    if order.address:
        return False
    from siyu.orders.checkout import new_order_lines  # checkout builds on this module

    lines = new_order_lines(session, order)
    return bool(lines) and all(line.is_virtual for line in lines)


def cancel(session: Session, merchant_id: int, order_id: int, *, reason: str, actor: Actor) -> Order:
    """Cancel an unpaid order and put its stock back (customer, operator or payment timeout).

    Lines sold from an activity's own stock (``OrderLine.activity``) are left to that activity,
    which returns its units when it handles ``order.cancelled``.
    """
    order = _locked_order(session, merchant_id, order_id)
    _transition(session, order, CANCELLED, "cancelled", actor, {"reason": reason})
    order.cancelled_at = utcnow()
    order.cancel_reason = (reason or "")[:64]
    quantities: dict[int, int] = defaultdict(int)
    for line in repo.order_lines(session, merchant_id, order.id):
        if line.activity:  # activity stock: its module releases it on "order.cancelled"
            continue
        quantities[line.sku_id] += line.quantity
    stock.release(session, merchant_id, quantities)
    session.flush()
    emit(session, merchant_id, "order.cancelled", _event_payload(order, reason=order.cancel_reason), key=f"order:{order.id}")
    return order


def ship(
    session: Session,
    merchant_id: int,
    order_id: int,
    *,
    carrier: str,
    tracking_no: str,
    actor: Actor,
    auto_complete_days: int | None = None,
) -> Order:
    """Paid → shipped with one shipment for the whole order; schedules the auto-completion."""
    carrier, tracking_no = carrier.strip(), tracking_no.strip()
    if not carrier:
        raise invalid("carrier", "required", "carrier is required", "请填写快递公司")
    if not tracking_no:
        raise invalid("tracking_no", "required", "tracking_no is required", "请填写快递单号")
    order = _locked_order(session, merchant_id, order_id)
    if order.status == PAID:
        physical = [ln for ln in order_lines(session, merchant_id, order.id) if not ln.is_virtual]
        if physical and all(ln.refunded_quantity >= ln.quantity for ln in physical):
            # every unit to ship was refunded, yet the order is still paid: a lowered line refund
            # or an earlier refund by amount kept part of the freight (freight_to_refund)
            raise DomainError("order_nothing_to_ship")
    run_ship_guards(session, order)  # an activity may hold its orders back (a group buy before success)
    _transition(session, order, SHIPPED, "shipped", actor, {"carrier": carrier, "tracking_no": tracking_no})
    now = utcnow()
    order.shipped_at = now
    session.add(
        Shipment(merchant_id=merchant_id, order_id=order.id, carrier=carrier, tracking_no=tracking_no, shipped_at=now, lines=[])
    )
    days = auto_complete_days if auto_complete_days is not None else get_settings().order_auto_complete_days
    enqueue(
        session, merchant_id, "orders.auto_complete", {"order_id": order.id},
        run_at=now + dt.timedelta(days=days), dedupe_key=f"order:{order.id}:auto_complete",
    )
    session.flush()
    emit(session, merchant_id, "order.shipped", _event_payload(order), key=f"order:{order.id}")
    return order


def complete(session: Session, merchant_id: int, order_id: int, *, actor: Actor) -> Order:
    """Shipped → completed (customer confirms receipt, an operator, or the auto-complete job)."""
    order = _locked_order(session, merchant_id, order_id)
    _transition(session, order, COMPLETED, "completed", actor)
    order.completed_at = utcnow()
    session.flush()
    emit(session, merchant_id, "order.completed", _event_payload(order), key=f"order:{order.id}")
    return order


def auto_cancel_if_due(session: Session, merchant_id: int, order_id: int, now: dt.datetime) -> bool:
    order = repo.order(session, merchant_id, order_id, lock=True)
    if order is None or order.status != PENDING_PAYMENT:
        return False
    if order.pay_deadline is None or order.pay_deadline > now:
        return False
    cancel(session, merchant_id, order_id, reason="timeout", actor=SYSTEM)
    return True


def auto_complete_if_due(session: Session, merchant_id: int, order_id: int) -> bool:
    order = repo.order(session, merchant_id, order_id, lock=True)
    if order is None or order.status != SHIPPED:
        return False
    complete(session, merchant_id, order_id, actor=SYSTEM)
    return True


# -- refunds ---------------------------------------------------------------------------------------


def line_refund_amount(line: OrderLine, quantity: int) -> int:
    """The paid share of ``quantity`` more units of ``line`` after what was already refunded.

    ``floor(P*(r+q)/Q) - floor(P*r/Q)`` with P the line's payable, Q its quantity and r the
    units already refunded: refunding every unit, in any batches, returns exactly P.
    """
    total, done = line.quantity, line.refunded_quantity or 0
    if quantity <= 0 or done + quantity > total:
        raise DomainError("refund_quantity_invalid", line_id=line.id)
    payable = line.payable_amount
    return payable * (done + quantity) // total - payable * done // total


def freight_to_refund(session: Session, merchant_id: int, order: Order, lines: list[tuple[int, int, int]]) -> int:
    """The freight a refund of ``lines`` (``(order_line_id, quantity, amount)``) gives back with them.

    Before shipment (the order is ``paid``, nothing shipped) a refund that takes the last
    unrefunded units of the goods to ship leaves nothing to ship, so the freight goes back with
    them and the order is refunded in full (as Youzan / WeChat malls do). After shipment the
    freight stays with the merchant (refund it as an amount if due). The refund must take at
    least one unit to ship (a virtual line refunded last never brings the freight).

    What is given back is what is left of the freight: at most ``order.freight_amount`` and at
    most what remains of the payment once the goods' unrefunded shares are set aside (a lowered
    line refund or an earlier refund by amount are kept), so the order's refunds never exceed
    what was paid. Read with the order row locked by the caller.
    """
    if order.status != PAID or order.shipped_at is not None or order.freight_amount <= 0 or not lines:
        return 0
    taking: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for line_id, quantity, amount in lines:
        taking[line_id][0] += quantity
        taking[line_id][1] += amount
    takes_goods_to_ship = False
    outstanding = 0  # the goods' paid shares not refunded once these lines are
    for line in repo.order_lines(session, merchant_id, order.id):
        quantity, amount = taking.get(line.id, (0, 0))
        if not line.is_virtual:
            if line.refunded_quantity + quantity < line.quantity:
                return 0  # goods are left to ship: the freight stays paid
            takes_goods_to_ship = takes_goods_to_ship or quantity > 0
        outstanding += line.payable_amount - line.refunded_amount - amount
    if not takes_goods_to_ship:
        return 0
    left = order.paid_amount - order.refunded_amount - sum(a for _, _, a in lines) - outstanding
    return max(0, min(order.freight_amount, left))


def _refund_lines(
    session: Session, merchant_id: int, order_id: int, lines: list[tuple[int, int, int]]
) -> list[tuple[OrderLine, int, int]]:
    by_id = {ln.id: ln for ln in repo.order_lines(session, merchant_id, order_id, lock=True)}
    out = []
    for line_id, quantity, amount in lines:
        line = by_id.get(line_id)
        if line is None:
            raise not_found("订单行", "Order line")
        if quantity < 0:
            raise DomainError("refund_quantity_invalid", line_id=line_id)
        if amount < 0:
            raise DomainError("refund_exceeds_paid", refundable=line.payable_amount - line.refunded_amount)
        out.append((line, quantity, amount))
    return out


def _set_refund_status(order: Order, lines: list[OrderLine] | None = None) -> None:
    if order.paid_amount == 0 and lines is not None:  # zero-paid: by units, its refunds are all 0
        refunded = sum(ln.refunded_quantity for ln in lines)
        if refunded <= 0:
            order.refund_status = REFUND_NONE
        elif all(ln.refunded_quantity >= ln.quantity for ln in lines):
            order.refund_status = REFUND_FULL
        else:
            order.refund_status = REFUND_PARTIAL
    elif order.refunded_amount <= 0:
        order.refund_status = REFUND_NONE
    elif order.refunded_amount >= order.paid_amount:
        order.refund_status = REFUND_FULL
    else:
        order.refund_status = REFUND_PARTIAL


def reserve_refund(
    session: Session,
    merchant_id: int,
    order_id: int,
    *,
    amount: int,
    lines: list[tuple[int, int, int]],
    freight: int = 0,
) -> Order:
    """Book a requested refund against the order (lines: ``(order_line_id, quantity, amount)``).

    With the order row locked: ``amount`` must not exceed ``paid_amount - refunded_amount``, and
    each line's quantity/amount must fit what is left on it. A full refund of a paid, shipped or
    completed order closes it. ``release_refund`` undoes this when the provider refuses.
    ``freight`` is the part of ``amount`` that is freight (``freight_to_refund``), for the audit.
    A zero-paid order (``paid_amount == 0``) books line refunds of amount 0; its refund status
    follows the units (full once every unit is refunded).
    """
    order = _locked_order(session, merchant_id, order_id)
    if order.paid_at is None:
        raise DomainError("order_state_invalid", from_state=order.status, to_state="refund")
    refundable = order.paid_amount - order.refunded_amount
    zero_paid = order.paid_amount == 0 and bool(lines)  # a zero-paid order's line refund is worth 0
    if (amount <= 0 and not zero_paid) or amount > refundable:
        raise DomainError("refund_exceeds_paid", refundable=refundable)
    checked = _refund_lines(session, merchant_id, order.id, lines)
    if sum(a for _, _, a in checked) > amount:
        raise DomainError("refund_exceeds_paid", refundable=amount)
    for line, quantity, line_amount in checked:
        if line.refunded_quantity + quantity > line.quantity:
            raise DomainError("refund_quantity_invalid", line_id=line.id)
        if line.refunded_amount + line_amount > line.payable_amount:
            raise DomainError("refund_exceeds_paid", refundable=line.payable_amount - line.refunded_amount)
    for line, quantity, line_amount in checked:
        line.refunded_quantity += quantity
        line.refunded_amount += line_amount
    order.refunded_amount += amount
    _set_refund_status(order, repo.order_lines(session, merchant_id, order.id) if order.paid_amount == 0 else None)
    data: dict[str, Any] = {"amount": amount, "lines": [list(t) for t in lines]}
    if freight:
        data["freight_amount"] = freight
    if order.refund_status == REFUND_FULL and order.status in (PAID, SHIPPED, COMPLETED):
        order.closed_from = _transition(session, order, CLOSED, "refund_reserved", SYSTEM, data)
        order.closed_at = utcnow()
    else:
        audit.record(session, merchant_id, "order", order.id, "refund_reserved", actor=SYSTEM, data=data)
    session.flush()
    return order


def release_refund(
    session: Session, merchant_id: int, order_id: int, *, amount: int, lines: list[tuple[int, int, int]]
) -> Order:
    """Undo ``reserve_refund`` for a refund that failed; reopens an order the refund had closed."""
    order = _locked_order(session, merchant_id, order_id)
    if amount <= 0 or amount > order.refunded_amount:
        raise DomainError("refund_release_invalid")
    checked = _refund_lines(session, merchant_id, order.id, lines)
    for line, quantity, line_amount in checked:
        if quantity > line.refunded_quantity or line_amount > line.refunded_amount:
            raise DomainError("refund_release_invalid")
    for line, quantity, line_amount in checked:
        line.refunded_quantity -= quantity
        line.refunded_amount -= line_amount
    order.refunded_amount -= amount
    _set_refund_status(order, repo.order_lines(session, merchant_id, order.id) if order.paid_amount == 0 else None)
    data = {"amount": amount, "lines": [list(t) for t in lines]}
    if order.status == CLOSED and order.refund_status != REFUND_FULL and order.closed_from:
        previous = order.closed_from
        audit.record(
            session, merchant_id, "order", order.id, "refund_released",
            from_state=CLOSED, to_state=previous, actor=SYSTEM, data=data,
        )
        order.status = previous
        order.closed_from = None
        order.closed_at = None
        if previous == SHIPPED:  # its auto-complete job may have run (as a no-op) while closed
            now = utcnow()
            due = (order.shipped_at or now) + dt.timedelta(days=get_settings().order_auto_complete_days)
            enqueue(
                session, merchant_id, "orders.auto_complete", {"order_id": order.id},
                run_at=max(now, due), dedupe_key=f"order:{order.id}:auto_complete:reopened:{now.isoformat()}",
            )
    else:
        audit.record(session, merchant_id, "order", order.id, "refund_released", actor=SYSTEM, data=data)
    session.flush()
    return order
