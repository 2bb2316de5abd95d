"""Checkout: price a selection with the pipeline (preview) and turn it into an order (submit).

Preview and submit share ``price()``, so what the customer saw is what is charged; the submit
recomputes everything on the server (the request schema accepts no price at all).

Submit is idempotent per ``(merchant, member, Idempotency-Key)``:

1. The selection is priced (no writes). If pricing refuses it and an order already holds the
   key, that order is returned (a retry after success may no longer price: the cart was
   emptied, the coupon is locked, the stock is gone).
2. The order row is written with ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` (one round
   trip, ``db.dialect.insert_entity_or_nothing``), which claims the key. A concurrent retry
   waits on the unique index (PostgreSQL) or on ``BEGIN IMMEDIATE`` (SQLite) until the first
   transaction ends; when its row is refused it reads the winner back and returns it if the
   request hash (SHA-256 of the canonical JSON body) matches, else 409
   ``idempotency_key_reused``, without touching stock. (A refused row with no winner is an
   order_no collision: another number is drawn.)
3. Then, in the same transaction: the lines are written with their per-stage discounts (and
   ``activity``) and the ``submitted`` audit event, the submit hooks run (coupons, points,
   activity stock...), the ordered SKUs leave the cart (cart checkouts only; "buy now" leaves
   the cart alone), the auto-cancel job is enqueued for the payment deadline and
   ``order.submitted`` is emitted. On PostgreSQL the order, its lines, its audit event and its
   auto-cancel job are ONE statement (``repository.insert_order_with_lines_pg``, a
   data-modifying CTE: a refused order writes none of them). Last, stock is reserved
   (``catalog.stock.reserve_at_commit``; lines a stage flagged ``activity_stock`` are left to
   that activity's submit hook, which takes them from the activity's own stock). Last, because
   the decrements lock the SKU rows until commit; on PostgreSQL they are sent in the COMMIT's
   own round trip (``db.final_write``), so a hot SKU is locked only while the server works,
   and a shortage (``CHECK (stock >= 0)``) rolls the order back at the commit and raises
   ``insufficient_stock`` there. Any error rolls all of it back.

Virtual products (``Product.kind``, e.g. a paid membership card) need no delivery: an order
of nothing but virtual lines asks no address (and keeps none), pays no freight, and
``service.mark_paid`` completes it on payment. A mixed order needs the address for its physical
lines and pays freight for them only. Each line keeps ``is_virtual``; see ``virtual_flags``
for what a virtual line's flags turn off in the pipeline.

A zero-payable order (fully discounted) is marked paid at once through ``mark_paid`` with
amount 0: there is nothing to pay, so no payment is created and no auto-cancel is scheduled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pydantic_core
from sqlalchemy.orm import Session

from siyu.catalog import stock
from siyu.catalog.models import KIND_VIRTUAL
from siyu.db.dialect import insert_entity_or_nothing, is_postgres, loaded_instance
from siyu.kit.errors import DomainError, FieldError, catalogue, invalid, register_messages
from siyu.kit.events import emit
from siyu.kit.outbox import JOB_PENDING, enqueue
from siyu.kit.timeutil import utcnow
from siyu.orders import repository as repo
from siyu.orders import service
from siyu.orders.freight import VIRTUAL
from siyu.orders.models import PENDING_PAYMENT, REFUND_NONE, Order
from siyu.orders.pricing import (
    PricedLine,
    PricingContext,
    answer_probes,
    load_stage_modules,
    probe_columns,
    run_pipeline,
    run_submit_hooks,
)
from siyu.orders.schemas import CHECKOUT_OPTIONS, AddressOut, CheckoutIn, CheckoutOut, PricedLineOut

_MESSAGES = {
    "checkout_empty": (422, "没有要结算的商品", "Nothing to check out"),
    "address_required": (422, "请选择收货地址", "A delivery address is required"),
}
register_messages({k: v for k, v in _MESSAGES.items() if k not in catalogue()})

IDEMPOTENCY_KEY_MAX = 80
AUTO_CANCEL = "orders.auto_cancel"  # the job that cancels an order left unpaid past its deadline
ORDER_NO_ATTEMPTS = 5
_NEW_LINES = "siyu.orders.checkout.new_lines"  # session.info: order id -> the lines this submit wrote
# The columns of a new order that submit does not set: what the table's defaults give them (the
# PostgreSQL path writes them explicitly and builds the instance from what it wrote).
_UNSET_ORDER_COLUMNS: dict[str, Any] = {
    "refund_status": REFUND_NONE, "paid_at": None, "shipped_at": None, "completed_at": None,
    "cancelled_at": None, "closed_at": None, "cancel_reason": None, "closed_from": None,
}


@dataclass
class Priced:
    ctx: PricingContext
    address: Any | None  # a read-only row with ``Address``'s columns (``repository.checkout_address``)
    from_cart: bool


def request_hash(body: CheckoutIn) -> str:
    canonical = json.dumps(body.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _selection(session: Session, merchant_id: int, member_id: int, body: CheckoutIn) -> list[tuple[int, int]]:
    """(sku_id, quantity) pairs to price: the explicit items (merged by SKU) or the selected cart lines."""
    if body.items is not None:
        merged: dict[int, int] = {}
        for item in body.items:  # CheckoutItem bounds each quantity; the merged total is checked below
            merged[item.sku_id] = merged.get(item.sku_id, 0) + item.quantity
        for sku_id, quantity in merged.items():
            if quantity > service.MAX_LINE_QUANTITY:
                i = next(i for i, it in enumerate(body.items) if it.sku_id == sku_id)
                service.check_quantity(f"items.{i}.quantity", quantity)
        pairs = list(merged.items())
    else:
        pairs = [(c.sku_id, c.quantity) for c in repo.cart_items(session, merchant_id, member_id) if c.selected]
        pairs.reverse()  # oldest cart line first
    if not pairs:
        raise DomainError("checkout_empty")
    return pairs


def build_lines(
    session: Session, merchant_id: int, pairs: list[tuple[int, int]], *, check_stock: bool = True
) -> list[PricedLine]:
    """Load SKUs and products of this merchant only and check they can be sold in these quantities.

    ``check_stock=False`` leaves the normal-stock check to ``check_normal_stock`` after the
    pipeline, which knows which lines an activity sells from its own stock.
    """
    return _load_lines(session, merchant_id, pairs, check_stock=check_stock)[0]


_NO_ADDRESS: Any = object()  # _load_lines did not read the address


def _load_lines(
    session: Session, merchant_id: int, pairs: list[tuple[int, int]], *, check_stock: bool,
    member_id: int | None = None, now: dt.datetime | None = None, address_id: int | None = None,
) -> tuple[list[PricedLine], str, tuple[Any, ...] | None, Any]:
    """``build_lines``, the merchant's time zone and (with ``now``) the pricing probes' answers
    for ``member_id``, all read in the same query; on PostgreSQL (with ``now``) also the
    member's address ``address_id`` (None: the default one) as ``repository.checkout_address``
    gives it, else ``_NO_ADDRESS``."""
    extra = probe_columns() if now is not None else []
    with_address = bool(now is not None and is_postgres(session))
    found = repo.checkout_skus(
        session, merchant_id, [sku_id for sku_id, _ in pairs],
        extra=[*extra, repo.CHECKOUT_ADDRESS_COLUMN] if with_address else extra,
        params={"member_id": member_id, "now": now, "address_id": address_id} if now is not None else None,
    )
    lines = []
    timezone = ""
    answers: tuple[Any, ...] | None = None
    address: Any = _NO_ADDRESS
    for sku_id, quantity in pairs:
        row = found.get(sku_id)
        if row is None:
            raise DomainError("sku_not_found", sku_id=sku_id)
        if not service.sellable_status(row.active, row.status):
            raise DomainError("product_not_on_sale", sku_id=sku_id)
        if check_stock and quantity > row.stock:
            raise DomainError("insufficient_stock", sku_id=sku_id, requested=quantity)
        timezone = row.merchant_timezone
        if with_address:
            values = tuple(row)
            answers, address = values[len(values) - len(extra) - 1:-1], repo.address_record(values[-1])
        elif extra:
            answers = tuple(row)[-len(extra):]
        lines.append(
            PricedLine(
                sku_id=row.id, product_id=row.product_id, category_id=row.category_id, title=row.title,
                spec_text=service.spec_text_of(row.spec_names, row.specs),
                image_url=row.image_url or (row.images[0] if row.images else None),
                quantity=quantity, list_price=row.list_price, sale_price=row.sale_price, cost_price=row.cost_price,
                weight_g=row.weight_g, free_shipping=row.free_shipping, coupons_allowed=row.coupons_allowed,
                bonus_points=row.bonus_points, freight_template_id=row.freight_template_id,
                stock=row.stock, flags=virtual_flags(row.kind, row.coupons_allowed),
            )
        )
    return lines, timezone, answers, address


def virtual_flags(kind: str, coupons_allowed: bool) -> dict[str, Any]:
    """The flags a virtual product's line starts with (physical: none).

    ``virtual``: nothing to ship, so no freight (``freight.compute``) and no member price (the
    loyalty MEMBER_PRICE stage: a card is sold at its own price). The product's
    ``coupons_allowed`` is the one switch for the optional discounts: off (the default of a card
    product) also keeps order promotions and points deduction off the line.
    """
    if kind != KIND_VIRTUAL:
        return {}
    if coupons_allowed:
        return {VIRTUAL: True}
    return {VIRTUAL: True, "no_coupon": True, "no_order_promotions": True, "no_points": True}


def is_virtual(line: PricedLine) -> bool:
    return bool(line.flags.get(VIRTUAL))


def needs_shipping(lines: list[PricedLine]) -> bool:
    """True when any line is physical: then the order needs an address (and may pay freight)."""
    return any(not is_virtual(line) for line in lines)


def takes_normal_stock(line: PricedLine) -> bool:
    """False for a line a pricing stage sells from an activity's own stock (``flags["activity_stock"]``)."""
    return not line.flags.get("activity_stock")


def check_normal_stock(session: Session, merchant_id: int, lines: list[PricedLine]) -> None:
    """The early (advisory) stock check of ``build_lines`` for lines that take normal stock;
    the binding one is ``catalog.stock.reserve`` at submit."""
    needed: dict[int, int] = defaultdict(int)
    for line in lines:
        if takes_normal_stock(line) and line.stock is not None:
            needed[line.sku_id] += line.quantity
            if needed[line.sku_id] > line.stock:
                raise DomainError("insufficient_stock", sku_id=line.sku_id, requested=needed[line.sku_id])


def _address(
    session: Session, merchant_id: int, member_id: int, body: CheckoutIn, *, required: bool, read: Any = _NO_ADDRESS
) -> Any | None:
    """The delivery address (``read``: as ``_load_lines`` read it already)."""
    found = repo.checkout_address(session, merchant_id, member_id, body.address_id) if read is _NO_ADDRESS else read
    if body.address_id is not None:
        if found is None:
            raise invalid("address_id", "address_not_found", "no such address", "收货地址不存在")
        return found
    if found is None and required:
        raise DomainError("address_required")
    return found


def check_options(options: dict[str, Any]) -> None:
    """Refuse every ``options`` key that no pricing stage registered (``schemas.CHECKOUT_OPTIONS``):
    a 422 ``checkout_unknown_option`` at ``options.<key>`` naming the keys there are, before
    anything is read or priced. A misspelt ``first_order`` would otherwise be ignored by every
    stage and the order priced without the deal the customer asked for."""
    if not options:
        return
    load_stage_modules()  # the stages register their keys
    unknown = [key for key in options if key not in CHECKOUT_OPTIONS]
    if unknown:
        known = ", ".join(sorted(CHECKOUT_OPTIONS))
        raise DomainError("validation_error", fields=[
            FieldError(f"options.{key}", "checkout_unknown_option", f"unknown checkout option {key!r}; known: {known}",
                       f"不支持的下单参数 {key!r}，可用的有：{known}")
            for key in unknown
        ])


def price(
    session: Session,
    merchant_id: int,
    member_id: int,
    body: CheckoutIn,
    *,
    now: dt.datetime | None = None,
    address_required: bool = False,
) -> Priced:
    """Run the pricing pipeline over the selection (no writes)."""
    check_options(body.options)
    pairs = _selection(session, merchant_id, member_id, body)
    now = now or utcnow()
    lines, timezone, answers, read = _load_lines(
        session, merchant_id, pairs, check_stock=False, member_id=member_id, now=now, address_id=body.address_id
    )
    # Nothing to ship (only virtual lines, e.g. a membership card): no address is asked for or kept.
    address = (
        _address(session, merchant_id, member_id, body, required=address_required, read=read)
        if needs_shipping(lines) else None
    )
    ctx = PricingContext(
        session=session, merchant_id=merchant_id, member_id=member_id, lines=lines, now=now,
        timezone=timezone, province=address.province if address else None,
        coupon_ids=list(body.coupon_ids) if body.coupon_ids is not None else None,
        points_to_use=body.points_to_use, options=dict(body.options),
    )
    if answers is not None:
        answer_probes(ctx, answers)  # read with the SKUs: the pipeline asks them no more
    run_pipeline(ctx)
    check_normal_stock(session, merchant_id, ctx.lines)
    return Priced(ctx=ctx, address=address, from_cart=body.items is None)


def _line_out(line: PricedLine) -> PricedLineOut:
    return PricedLineOut(
        sku_id=line.sku_id, product_id=line.product_id, title=line.title, spec_text=line.spec_text,
        image_url=line.image_url, quantity=line.quantity, list_price=line.list_price, sale_price=line.sale_price,
        goods_amount=line.goods_amount, discounts={k: v for k, v in line.discounts.items() if v},
        discount_amount=line.discount_amount, payable_amount=line.amount, is_virtual=is_virtual(line),
        flags=dict(line.flags),
    )


def result(priced: Priced) -> CheckoutOut:
    ctx = priced.ctx
    return CheckoutOut(
        lines=[_line_out(line) for line in ctx.lines], breakdown=ctx.breakdown(), notes=ctx.notes,
        goods_amount=ctx.goods_amount, discount_amount=ctx.discount_amount, freight_amount=ctx.freight,
        payable_amount=ctx.payable, address=AddressOut.model_validate(priced.address) if priced.address else None,
    )


def preview(
    session: Session, merchant_id: int, member_id: int, body: CheckoutIn, *, now: dt.datetime | None = None
) -> CheckoutOut:
    return result(price(session, merchant_id, member_id, body, now=now))


def new_order_no(now: dt.datetime, tz: str) -> str:
    """Readable and time-ordered: local date and time of day, then 6 random digits (20 chars)."""
    local = now.astimezone(ZoneInfo(tz))
    return local.strftime("%Y%m%d%H%M%S") + f"{secrets.randbelow(10**6):06d}"


def _replay(existing: Order, digest: str) -> Order:
    if existing.request_hash != digest:
        raise DomainError("idempotency_key_reused")
    return existing


def new_order_lines(session: Session, order: Order) -> list[Any]:
    """The lines of an order, without a round trip when this session's submit just wrote them
    (then as the read-only records ``repository.insert_order_lines`` returned, every column set)."""
    written = session.info.get(_NEW_LINES, {}).get(order.id)
    if written is not None:
        return sorted(written, key=lambda ln: ln.id)
    return repo.order_lines(session, order.merchant_id, order.id)


def check_idempotency_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise DomainError("idempotency_key_required")
    key = key.strip()
    if len(key) > IDEMPOTENCY_KEY_MAX:
        raise invalid("header.Idempotency-Key", "too_long", f"at most {IDEMPOTENCY_KEY_MAX} characters",
                      f"最多 {IDEMPOTENCY_KEY_MAX} 个字符")
    return key


def submit(
    session: Session,
    merchant_id: int,
    member_id: int,
    body: CheckoutIn,
    *,
    idempotency_key: str | None,
    payment_timeout: dt.timedelta,
    channel: str = "mini_program",
    now: dt.datetime | None = None,
) -> tuple[Order, bool]:
    """Create the order (or return the one this key already made). Returns ``(order, created)``."""
    key = check_idempotency_key(idempotency_key)
    digest = request_hash(body)
    now = now or utcnow()
    try:
        priced = price(session, merchant_id, member_id, body, now=now, address_required=True)
    except DomainError:
        # A retry of a key that already made its order may no longer price (the cart was
        # emptied, the coupon is locked, the stock is gone): it gets that order back.
        existing = repo.order_by_idempotency_key(session, merchant_id, member_id, key)
        if existing is not None:
            return _replay(existing, digest), False
        raise
    ctx, address = priced.ctx, priced.address
    assert address is not None or not needs_shipping(ctx.lines)
    actor = ("customer", member_id)

    values = {
        **_UNSET_ORDER_COLUMNS,
        "merchant_id": merchant_id, "member_id": member_id, "status": PENDING_PAYMENT, "idempotency_key": key,
        "request_hash": digest, "goods_amount": ctx.goods_amount, "discount_amount": ctx.discount_amount,
        "points_used": ctx.points_to_use if any(ln.discounts.get("points") for ln in ctx.lines) else 0,
        "freight_amount": ctx.freight, "payable_amount": ctx.payable, "paid_amount": 0, "refunded_amount": 0,
        "pricing": ctx.breakdown(), "address": service.address_snapshot(address) if address is not None else {}, "remark": body.remark,
        "channel": channel, "pay_deadline": now + payment_timeout, "created_at": now, "updated_at": now,
    }
    rows = []
    for line in ctx.lines:
        discounts = {stage: amount for stage, amount in line.discounts.items() if amount}
        rows.append({
            "merchant_id": merchant_id, "product_id": line.product_id, "sku_id": line.sku_id,
            "title": line.title[:120], "spec_text": line.spec_text[:120], "image_url": line.image_url,
            "quantity": line.quantity, "list_price": line.list_price, "sale_price": line.sale_price,
            "cost_price": line.cost_price, "goods_amount": line.goods_amount, "discounts": discounts,
            "discount_amount": sum(discounts.values()), "payable_amount": line.amount,
            "bonus_points": line.bonus_points * line.quantity, "refunded_quantity": 0, "refunded_amount": 0,
            "activity": (str(line.flags["activity"])[:40] if line.flags.get("activity") else None),
            "is_virtual": is_virtual(line),
        })
    # what kit.audit.record writes (``subject_id`` and ``data.order_no`` come with the order)
    audit = {
        "merchant_id": merchant_id, "subject_type": "order", "action": "submitted",
        "from_state": None, "to_state": PENDING_PAYMENT, "actor_type": actor[0], "actor_id": actor[1],
    }
    postgres = is_postgres(session)
    # The payment deadline's auto-cancel job (none for a zero-payable order: it is paid at once).
    # PostgreSQL writes it with the order; SQLite enqueues it below.
    auto_cancel = {
        "merchant_id": merchant_id, "kind": AUTO_CANCEL, "status": JOB_PENDING, "run_at": values["pay_deadline"],
        "attempts": 0, "max_attempts": 8, "created_at": utcnow(),
    } if postgres and ctx.payable != 0 else None
    order: Order | None = None
    for _ in range(ORDER_NO_ATTEMPTS):
        # One round trip claims the key and writes the order (on PostgreSQL with its lines and
        # audit event). Refused by a unique constraint: either a retry with this key won (a
        # concurrent one is waited for), or, rarely, the order_no collided and another one is drawn.
        order_no = new_order_no(now, ctx.timezone)
        event = {**audit, "data": {"payable_amount": ctx.payable, "order_no": order_no}, "created_at": utcnow()}
        if postgres:
            written = repo.insert_order_with_lines_pg(
                session, {**values, "order_no": order_no}, rows, event, auto_cancel=auto_cancel
            )
            if written is not None:
                order_id, line_ids = written
                # JSON columns as the row holds them (plain JSON types), as a read-back would give
                as_stored = {c: pydantic_core.from_json(pydantic_core.to_json(values[c])) for c in ("pricing", "address")}
                order = loaded_instance(session, Order, {**values, **as_stored, "order_no": order_no, "id": order_id})
                lines = [SimpleNamespace(**row, order_id=order_id, id=line_id)
                         for row, line_id in zip(rows, line_ids, strict=True)]
                break
        else:
            order = insert_entity_or_nothing(session, Order, {**values, "order_no": order_no})
            if order is not None:
                lines = repo.insert_order_lines(session, [{**row, "order_id": order.id} for row in rows])
                repo.insert_audit_event(session, {**event, "subject_id": order.id})  # no ORM flush
                break
        winner = repo.order_by_idempotency_key(session, merchant_id, member_id, key)
        if winner is not None:
            return _replay(winner, digest), False
    if order is None:
        raise DomainError("conflict")
    session.info.setdefault(_NEW_LINES, {})[order.id] = lines
    run_submit_hooks(ctx, order.id)
    if priced.from_cart:
        repo.remove_cart_skus(session, merchant_id, member_id, {line.sku_id for line in ctx.lines})
    emit(
        session, merchant_id, "order.submitted",
        {"order_id": order.id, "member_id": member_id, "payable_amount": order.payable_amount},
        key=f"order:{order.id}",
    )
    if order.payable_amount == 0:
        service.mark_paid(session, merchant_id, order.id, amount=0, paid_at=now, actor=actor)
    elif auto_cancel is None:  # SQLite (PostgreSQL wrote it with the order)
        enqueue(
            session, merchant_id, AUTO_CANCEL, {"order_id": order.id},
            run_at=order.pay_deadline, dedupe_key=f"order:{order.id}:auto_cancel",
        )
    session.flush()
    # Stock last: the decrements lock the SKU rows until commit. On PostgreSQL they are sent
    # with the COMMIT (one round trip), so a hot SKU is locked only while the server works; a
    # shortage rolls it all back there and raises insufficient_stock from the commit.
    quantities: dict[int, int] = defaultdict(int)
    for line in ctx.lines:
        if takes_normal_stock(line):  # activity lines are taken from the activity's stock by its hook
            quantities[line.sku_id] += line.quantity
    if quantities:
        stock.reserve_at_commit(session, merchant_id, quantities)
    return order, True

