"""After-sales logic: eligibility, amounts, the state machine, returns, restock, refunds, exchanges.

Rules
- The order must be the customer's own (else 404) and paid: ``paid``, ``shipped`` or
  ``completed`` (else ``aftersale_order_not_eligible``).
- Kinds by order state and policy: refund-only before shipment (``refund_only_before_shipment``)
  and, if the merchant allows it, after shipment; return-and-refund and exchange need goods that
  were shipped (``aftersale_kind_not_allowed``). An order of virtual lines only (a paid card)
  never ships: refund-only follows the before-shipment rule, and a virtual line can never be
  returned or exchanged (``aftersale_quantity_invalid``, field code ``virtual_line``).
- Window (``aftersale_window_closed``): a shipped order's window runs ``window_days`` from its
  completion (delivery); while it is shipped but not yet completed, from the moment it would be
  auto-completed (``shipped_at + order_auto_complete_days``), so a late auto-completion never
  moves the deadline. An order not yet shipped has no deadline.
- Lines (``aftersale_quantity_invalid``, with a field path and a specific field code): each must
  belong to the order, appear once, ask 1..(quantity - refunded quantity) units and not be in
  another open after-sale (also guarded by a unique key, see ``models``).
- Amounts: each line's share is ``orders.service.line_refund_amount(line, quantity)`` (its
  allocated paid share); the customer never sends an amount. On approval the operator may lower
  the refund (``1 <= amount <= computed``, else ``aftersale_amount_invalid``); the lowered amount
  is spread over the lines with the largest-remainder method. A request whose units were
  fully discounted (paid share 0) completes without a refund. Shares are recomputed at approval
  so a refund made on the order in between is taken into account.

Stock: returned goods are restocked when the operator confirms receipt (``restock``, default
true); a refund-only request that completes before the order shipped puts its units back too
(they never leave the warehouse); an exchange takes the replacement units with
``catalog.stock.reserve`` when it ships.

Refunds go through ``payments.service.request_refund`` with the idempotency key
``aftersale:{id}``; the after-sale completes when ``order.refunded`` arrives for that refund
(``tasks.on_refunded``). A refund the provider refuses (``order.refund_failed``) sends the
after-sale back to ``approved`` / ``returned``, and ``retry_refund`` books a new refund (key
``aftersale:{id}:{attempt}``: the failed one keeps the first key). A refund-only request
approved at its full share that takes the last goods of an order not yet shipped also gives back
the remaining freight (``orders.service.freight_to_refund``): the refund's ``amount`` is then
``refund_amount`` plus its ``freight_amount`` (in the ``refund_requested`` audit data), and the
order closes fully refunded. A return (after shipment) or a lowered amount never adds freight.
Services never commit; every state change is audited in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.aftersales import repository as repo
from siyu.aftersales.models import (
    APPROVED,
    AWAITING_RETURN,
    CANCELLED,
    COMPLETED,
    CUSTOMER_CANCELLABLE,
    EXCHANGE,
    EXCHANGE_SHIPPED,
    REFUND_ONLY,
    REFUNDING,
    REJECTED,
    REQUESTED,
    RETURN_KINDS,
    RETURN_REFUND,
    RETURNED,
    AfterSale,
    AfterSaleLine,
    AftersalePolicy,
)
from siyu.aftersales.schemas import AfterSaleCreate, PolicyIn
from siyu.catalog import stock
from siyu.config import Settings
from siyu.kit import audit
from siyu.kit.errors import DomainError, FieldError, not_found, register_messages
from siyu.kit.events import emit
from siyu.kit.money import allocate
from siyu.kit.outbox import enqueue
from siyu.kit.timeutil import utcnow
from siyu.orders import models as order_models
from siyu.orders import service as orders_service
from siyu.payments import service as payments_service

register_messages(
    {
        "aftersale_order_not_eligible": (
            409,
            "该订单当前不能申请售后（订单状态：{status}）",
            "This order is not eligible for after-sales (order status: {status})",
        ),
        "aftersale_window_closed": (
            409,
            "已超过售后申请期限（确认收货后 {days} 天内）",
            "The after-sales window has closed ({days} days after delivery)",
        ),
        "aftersale_kind_not_allowed": (
            409,
            "该订单当前不支持此售后类型：{kind}",
            "This kind of after-sale is not available for this order now: {kind}",
        ),
        "aftersale_quantity_invalid": (
            422,
            "售后商品或数量不正确",
            "An after-sale line or quantity is not valid",
        ),
        "aftersale_amount_invalid": (
            422,
            "退款金额不正确（最多 {max} 分）",
            "The refund amount is not valid (at most {max} fen)",
        ),
        "aftersale_exchange_sku_invalid": (
            422,
            "换货规格不可用：须为同一商品、同价且在售的规格",
            "The exchange SKU must be an active SKU of the same product at the same price",
        ),
        "aftersale_reject_reason_required": (
            422,
            "驳回售后申请须填写原因",
            "A reason is required to reject an after-sale request",
        ),
        "aftersale_state_invalid": (
            409,
            "售后单当前状态（{status}）不能执行该操作",
            "This after-sale cannot do that in its current status ({status})",
        ),
    }
)

SUBJECT = "aftersale"
Actor = tuple[str, int | None]
PAID_STATUSES = order_models.PAID_STATUSES
SHIPPED_STATUSES = (order_models.SHIPPED, order_models.COMPLETED)


# -- policy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    window_days: int
    refund_only_before_shipment: bool = True
    refund_only_after_shipment: bool = False
    return_refund_enabled: bool = True
    exchange_enabled: bool = True
    return_shipping_paid_by_merchant: bool = False
    return_address: str | None = None
    is_default: bool = True


def get_policy(session: Session, merchant_id: int, settings: Settings) -> Policy:
    row = repo.policy(session, merchant_id)
    if row is None:
        return Policy(window_days=settings.aftersales_window_days)
    return Policy(
        window_days=row.window_days,
        refund_only_before_shipment=row.refund_only_before_shipment,
        refund_only_after_shipment=row.refund_only_after_shipment,
        return_refund_enabled=row.return_refund_enabled,
        exchange_enabled=row.exchange_enabled,
        return_shipping_paid_by_merchant=row.return_shipping_paid_by_merchant,
        return_address=row.return_address,
        is_default=False,
    )


def put_policy(
    session: Session, merchant_id: int, data: PolicyIn, settings: Settings, *, actor: Actor
) -> Policy:
    values = data.model_dump()
    row = repo.policy(session, merchant_id)
    if row is None:
        row = AftersalePolicy(merchant_id=merchant_id, **values)
        session.add(row)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:  # a concurrent first PUT created it: update that one
            row = repo.policy(session, merchant_id)
            assert row is not None
            for key, value in values.items():
                setattr(row, key, value)
    else:
        for key, value in values.items():
            setattr(row, key, value)
    session.flush()
    audit.record(session, merchant_id, "aftersale_policy", row.id, "updated", actor=actor, data=values)
    return get_policy(session, merchant_id, settings)


# -- reads -------------------------------------------------------------------------------------


def get(session: Session, merchant_id: int, aftersale_id: int, *, lock: bool = False) -> AfterSale:
    aftersale = repo.get(session, merchant_id, aftersale_id, lock=lock)
    if aftersale is None:
        raise not_found("售后单", "After-sale")
    return aftersale


def get_for_member(
    session: Session, merchant_id: int, member_id: int, aftersale_id: int, *, lock: bool = False
) -> AfterSale:
    aftersale = get(session, merchant_id, aftersale_id, lock=lock)
    if aftersale.member_id != member_id:
        raise not_found("售后单", "After-sale")
    return aftersale


def lines(session: Session, aftersale: AfterSale) -> list[AfterSaleLine]:
    return repo.lines_of(session, aftersale.merchant_id, aftersale.id)


# -- create ------------------------------------------------------------------------------------


def _request_hash(order_id: int, data: AfterSaleCreate) -> str:
    canonical = json.dumps({"order_id": order_id, **data.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _quantity_error(path: str, code: str, message: str, zh: str) -> DomainError:
    """``aftersale_quantity_invalid`` with one field error: ``message`` in English, ``zh`` in zh-CN."""
    return DomainError("aftersale_quantity_invalid", fields=[FieldError(path, code, message, zh)])


def _check_kind(order: Any, kind: str, policy: Policy, *, ships: bool) -> None:
    """``ships``: the order has a physical line. An order of virtual lines only (a paid card) was
    never shipped, whatever its status says: refund-only follows the before-shipment rule, and
    there is nothing to return or exchange."""
    shipped = ships and order.status in SHIPPED_STATUSES
    if kind == REFUND_ONLY:
        allowed = policy.refund_only_after_shipment if shipped else policy.refund_only_before_shipment
    elif kind == RETURN_REFUND:
        allowed = shipped and policy.return_refund_enabled
    else:
        allowed = shipped and policy.exchange_enabled
    if not allowed:
        raise DomainError("aftersale_kind_not_allowed", kind=kind)


def window_deadline(order: Any, policy: Policy, settings: Settings) -> dt.datetime | None:
    """The last moment a request may be made, or None while the order has not shipped."""
    if order.completed_at is not None:
        anchor: dt.datetime = order.completed_at
    elif order.shipped_at is not None:
        anchor = order.shipped_at + dt.timedelta(days=settings.order_auto_complete_days)
    else:
        return None
    return anchor + dt.timedelta(days=policy.window_days)


def create(
    session: Session,
    merchant_id: int,
    member_id: int,
    order_id: int,
    data: AfterSaleCreate,
    settings: Settings,
    *,
    idempotency_key: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[AfterSale, bool]:
    """Open an after-sale request; returns ``(aftersale, created)``.

    With an ``idempotency_key`` a retried request returns the first result (``created`` False);
    the same key with a different body is ``idempotency_key_reused``.
    """
    now = now or utcnow()
    request_hash = _request_hash(order_id, data)
    if idempotency_key:
        existing = repo.by_idempotency_key(session, merchant_id, member_id, idempotency_key)
        if existing is not None:
            if existing.request_hash != request_hash:
                raise DomainError("idempotency_key_reused")
            return existing, False

    order = orders_service.get_member_order(session, merchant_id, member_id, order_id)
    if order.status not in PAID_STATUSES:
        raise DomainError("aftersale_order_not_eligible", status=order.status)
    policy = get_policy(session, merchant_id, settings)
    order_lines = {line.id: line for line in orders_service.order_lines(session, merchant_id, order_id)}
    _check_kind(order, data.kind, policy, ships=any(not line.is_virtual for line in order_lines.values()))
    deadline = window_deadline(order, policy, settings)
    if deadline is not None and now > deadline:
        raise DomainError("aftersale_window_closed", days=policy.window_days)

    open_on = {ol.open_order_line_id for ol in repo.open_lines(session, merchant_id, order_lines)}
    seen: set[int] = set()
    new_lines: list[AfterSaleLine] = []
    for i, item in enumerate(data.lines):
        path = f"body.lines.{i}"
        line = order_lines.get(item.order_line_id)
        if line is None:
            raise _quantity_error(f"{path}.order_line_id", "not_in_order", "not a line of this order", "不是此订单的商品行")
        if line.id in seen:
            raise _quantity_error(f"{path}.order_line_id", "duplicate_line", "this line appears twice", "该商品行出现了两次")
        seen.add(line.id)
        if line.id in open_on:
            raise _quantity_error(
                f"{path}.order_line_id", "line_in_open_aftersale", "this line already has an open after-sale",
                "该商品行已有进行中的售后"
            )
        if line.is_virtual and data.kind != REFUND_ONLY:
            raise _quantity_error(
                f"{path}.order_line_id", "virtual_line", "a virtual item has nothing to send back: ask for a refund",
                "虚拟商品无需寄回，请申请仅退款"
            )
        available = line.quantity - line.refunded_quantity
        if item.quantity < 1 or item.quantity > available:
            raise _quantity_error(f"{path}.quantity", "quantity_out_of_range", f"between 1 and {available}",
                                  f"应在 1 到 {available} 之间")
        exchange_sku_id = None
        if item.exchange_sku_id is not None:
            if data.kind != EXCHANGE:
                raise _quantity_error(f"{path}.exchange_sku_id", "exchange_only", "only for exchanges", "仅换货时可填写")
            sku = repo.sku(session, merchant_id, item.exchange_sku_id)
            if (
                sku is None
                or not sku.active
                or sku.product_id != line.product_id
                or sku.sale_price != line.sale_price
            ):
                raise DomainError(
                    "aftersale_exchange_sku_invalid",
                    fields=[
                        FieldError(
                            f"{path}.exchange_sku_id", "invalid_sku", "same product, same price, active",
                            "须为同一商品、同一价格且在售的规格",
                        )
                    ],
                )
            exchange_sku_id = sku.id
        new_lines.append(
            AfterSaleLine(
                merchant_id=merchant_id,
                order_line_id=line.id,
                open_order_line_id=line.id,
                sku_id=line.sku_id,
                title=line.title,
                spec_text=line.spec_text,
                quantity=item.quantity,
                amount=orders_service.line_refund_amount(line, item.quantity),
                refund_amount=0,
                exchange_sku_id=exchange_sku_id,
            )
        )

    computed = sum(as_line.amount for as_line in new_lines)
    refunds = data.kind != EXCHANGE
    for as_line in new_lines:
        as_line.refund_amount = as_line.amount if refunds else 0
    aftersale = AfterSale(
        merchant_id=merchant_id,
        order_id=order.id,
        member_id=member_id,
        kind=data.kind,
        status=REQUESTED,
        reason_code=data.reason_code,
        description=data.description,
        images=list(data.images),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        computed_amount=computed,
        refund_amount=computed if refunds else 0,
        return_shipping_paid_by_merchant=policy.return_shipping_paid_by_merchant,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(aftersale)
            session.flush()
            for as_line in new_lines:
                as_line.aftersale_id = aftersale.id
                session.add(as_line)
            session.flush()
    except IntegrityError as exc:
        # A concurrent request took one of the lines (or the same idempotency key) first.
        if idempotency_key:
            existing = repo.by_idempotency_key(session, merchant_id, member_id, idempotency_key)
            if existing is not None and existing.request_hash == request_hash:
                return existing, False
        raise _quantity_error(
            "body.lines", "line_in_open_aftersale", "a line already has an open after-sale",
            "有商品行已有进行中的售后"
        ) from exc
    audit.record(
        session,
        merchant_id,
        SUBJECT,
        aftersale.id,
        "requested",
        to_state=REQUESTED,
        actor=("customer", member_id),
        data={
            "kind": data.kind,
            "order_id": order.id,
            "computed_amount": computed,
            "lines": [[ln.order_line_id, ln.quantity] for ln in new_lines],
        },
    )
    emit(
        session,
        merchant_id,
        "aftersale.requested",
        _event_payload(aftersale),
        key=f"aftersale:{aftersale.id}",
    )
    return aftersale, True


# -- transitions -------------------------------------------------------------------------------


def _require(aftersale: AfterSale, *statuses: str, kinds: tuple[str, ...] | None = None) -> None:
    if aftersale.status not in statuses or (kinds is not None and aftersale.kind not in kinds):
        raise DomainError("aftersale_state_invalid", status=aftersale.status)


def _move(
    session: Session,
    aftersale: AfterSale,
    to_state: str,
    action: str,
    actor: Actor,
    data: dict[str, Any] | None = None,
) -> None:
    from_state = aftersale.status
    aftersale.status = to_state
    aftersale.updated_at = utcnow()
    audit.record(
        session,
        aftersale.merchant_id,
        SUBJECT,
        aftersale.id,
        action,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        data=data,
    )


def _close(session: Session, aftersale: AfterSale) -> None:
    """Free the order lines for a later after-sale."""
    for line in lines(session, aftersale):
        line.open_order_line_id = None
    session.flush()


def _event_payload(aftersale: AfterSale) -> dict[str, Any]:
    return {
        "aftersale_id": aftersale.id,
        "order_id": aftersale.order_id,
        "member_id": aftersale.member_id,
        "kind": aftersale.kind,
        "status": aftersale.status,
        "refund_amount": aftersale.refund_amount,
    }


def _recompute(session: Session, aftersale: AfterSale, as_lines: list[AfterSaleLine]) -> int:
    """Re-check the lines against the order now and refresh their paid shares."""
    order_lines = {
        line.id: line
        for line in orders_service.order_lines(session, aftersale.merchant_id, aftersale.order_id)
    }
    for i, as_line in enumerate(as_lines):
        line = order_lines[as_line.order_line_id]
        available = line.quantity - line.refunded_quantity
        if as_line.quantity > available:
            raise _quantity_error(
                f"lines.{i}.quantity",
                "quantity_out_of_range",
                f"only {available} left to refund on this line",
                f"此商品行仅剩 {available} 件可退",
            )
        as_line.amount = orders_service.line_refund_amount(line, as_line.quantity)
    return sum(line.amount for line in as_lines)


def approve(
    session: Session,
    merchant_id: int,
    aftersale_id: int,
    *,
    actor: Actor,
    refund_amount: int | None = None,
    note: str | None = None,
) -> AfterSale:
    aftersale = get(session, merchant_id, aftersale_id, lock=True)
    _require(aftersale, REQUESTED)
    as_lines = lines(session, aftersale)
    computed = _recompute(session, aftersale, as_lines)
    if aftersale.kind == EXCHANGE:
        if refund_amount is not None:
            raise DomainError("aftersale_amount_invalid", max=0)
        amount = 0
        parts = [0] * len(as_lines)
    else:
        amount = computed if refund_amount is None else refund_amount
        if not (1 if computed else 0) <= amount <= computed:
            raise DomainError("aftersale_amount_invalid", max=computed)
        parts = allocate(amount, [line.amount for line in as_lines])
    for line, part in zip(as_lines, parts, strict=True):
        line.refund_amount = part
    aftersale.computed_amount = computed
    aftersale.refund_amount = amount
    aftersale.reviewer_id = actor[1] if actor[0] == "staff" else None
    aftersale.reviewed_at = utcnow()
    aftersale.review_note = note
    _move(
        session,
        aftersale,
        APPROVED,
        "approved",
        actor,
        {"refund_amount": amount, "computed_amount": computed},
    )
    if aftersale.kind == REFUND_ONLY:
        _start_refund(session, aftersale, as_lines, actor)
    return aftersale


def reject(
    session: Session, merchant_id: int, aftersale_id: int, *, reason: str | None, actor: Actor
) -> AfterSale:
    reason = (reason or "").strip()
    if not reason:
        raise DomainError("aftersale_reject_reason_required")
    aftersale = get(session, merchant_id, aftersale_id, lock=True)
    _require(aftersale, REQUESTED)
    aftersale.reject_reason = reason
    aftersale.reviewer_id = actor[1] if actor[0] == "staff" else None
    aftersale.reviewed_at = utcnow()
    _move(session, aftersale, REJECTED, "rejected", actor, {"reason": reason})
    _close(session, aftersale)
    return aftersale


def _complete(
    session: Session, aftersale: AfterSale, reason: str, actor: Actor, data: dict[str, Any] | None = None
) -> None:
    """Finish an after-sale (refunded, exchanged, or nothing left to pay back) and tell subscribers once."""
    aftersale.completed_at = utcnow()
    _move(session, aftersale, COMPLETED, reason, actor, data)
    _close(session, aftersale)
    emit(
        session, aftersale.merchant_id, "aftersale.completed", _event_payload(aftersale),
        key=f"aftersale:{aftersale.id}",
    )


def cancel(session: Session, merchant_id: int, member_id: int, aftersale_id: int) -> AfterSale:
    aftersale = get_for_member(session, merchant_id, member_id, aftersale_id, lock=True)
    _require(aftersale, *CUSTOMER_CANCELLABLE)
    aftersale.cancelled_at = utcnow()
    _move(session, aftersale, CANCELLED, "cancelled", ("customer", member_id))
    _close(session, aftersale)
    return aftersale


def submit_return_shipment(
    session: Session, merchant_id: int, member_id: int, aftersale_id: int, *, carrier: str, tracking_no: str
) -> AfterSale:
    """The customer ships the goods back. While still in transit the tracking may be corrected."""
    aftersale = get_for_member(session, merchant_id, member_id, aftersale_id, lock=True)
    _require(aftersale, APPROVED, AWAITING_RETURN, kinds=RETURN_KINDS)
    aftersale.return_carrier = carrier.strip()
    aftersale.return_tracking_no = tracking_no.strip()
    aftersale.return_shipped_at = utcnow()
    data = {"carrier": aftersale.return_carrier, "tracking_no": aftersale.return_tracking_no}
    if aftersale.status == APPROVED:
        _move(session, aftersale, AWAITING_RETURN, "return_shipped", ("customer", member_id), data)
    else:
        audit.record(
            session,
            merchant_id,
            SUBJECT,
            aftersale.id,
            "return_shipment_updated",
            from_state=AWAITING_RETURN,
            to_state=AWAITING_RETURN,
            actor=("customer", member_id),
            data=data,
        )
    return aftersale


def confirm_received(
    session: Session, merchant_id: int, aftersale_id: int, *, restock: bool, actor: Actor
) -> AfterSale:
    """The operator received the returned goods: restock (optionally), then refund or await the exchange."""
    aftersale = get(session, merchant_id, aftersale_id, lock=True)
    _require(aftersale, AWAITING_RETURN, kinds=RETURN_KINDS)
    as_lines = lines(session, aftersale)
    quantities: dict[int, int] = defaultdict(int)
    for line in as_lines:
        quantities[line.sku_id] += line.quantity
    if restock:
        stock.release(session, merchant_id, quantities)
    aftersale.restocked = restock
    aftersale.returned_at = utcnow()
    _move(
        session,
        aftersale,
        RETURNED,
        "received",
        actor,
        {"restock": restock, "quantities": {str(k): v for k, v in quantities.items()} if restock else {}},
    )
    if aftersale.kind == RETURN_REFUND:
        _recompute_for_refund(session, aftersale, as_lines)
        _start_refund(session, aftersale, as_lines, actor)
    return aftersale


def _recompute_for_refund(session: Session, aftersale: AfterSale, as_lines: list[AfterSaleLine]) -> None:
    """Check, just before refunding, that the approved units are still refundable."""
    order_lines = {
        line.id: line
        for line in orders_service.order_lines(session, aftersale.merchant_id, aftersale.order_id)
    }
    for i, as_line in enumerate(as_lines):
        line = order_lines[as_line.order_line_id]
        if as_line.quantity > line.quantity - line.refunded_quantity:
            raise _quantity_error(
                f"lines.{i}.quantity", "quantity_out_of_range", "already refunded elsewhere",
                "已在别处退款"
            )


def _start_refund(
    session: Session, aftersale: AfterSale, as_lines: list[AfterSaleLine], actor: Actor
) -> None:
    if aftersale.refund_amount == 0 and orders_service.get_order(
        session, aftersale.merchant_id, aftersale.order_id
    ).paid_amount > 0:  # fully discounted units (gifts) of a paid order: nothing to pay back
        _complete(session, aftersale, "completed_without_refund", actor)
        return
    # A zero-paid order (coupons, points-only exchange) refunds its lines with a refund of 0 that
    # succeeds at once (payments.service.request_refund): order.refunded returns its points/coupon.
    aftersale.refund_attempts = (aftersale.refund_attempts or 0) + 1
    key = f"aftersale:{aftersale.id}"
    if aftersale.refund_attempts > 1:  # a retry after a failed refund is a new refund
        key = f"{key}:{aftersale.refund_attempts}"
    refund = payments_service.request_refund(
        session,
        aftersale.merchant_id,
        aftersale.order_id,
        lines=[(line.order_line_id, line.quantity) for line in as_lines],
        amount=aftersale.refund_amount,
        reason=f"aftersale:{aftersale.kind}:{aftersale.reason_code}",
        idempotency_key=key,
        actor=actor,
        aftersale_id=aftersale.id,
    )
    aftersale.refund_id = refund.id
    aftersale.refund_requested_at = utcnow()
    _move(
        session,
        aftersale,
        REFUNDING,
        "refund_requested",
        actor,
        {"refund_id": refund.id, "amount": aftersale.refund_amount, "freight_amount": refund.freight_amount},
    )


def ship_exchange(
    session: Session,
    merchant_id: int,
    aftersale_id: int,
    settings: Settings,
    *,
    carrier: str,
    tracking_no: str,
    actor: Actor,
) -> AfterSale:
    """Ship the replacement: its units are taken from stock (all or nothing)."""
    aftersale = get(session, merchant_id, aftersale_id, lock=True)
    _require(aftersale, RETURNED, kinds=(EXCHANGE,))
    quantities: dict[int, int] = defaultdict(int)
    for line in lines(session, aftersale):
        quantities[line.exchange_sku_id or line.sku_id] += line.quantity
    stock.reserve(session, merchant_id, quantities)
    aftersale.exchange_carrier = carrier.strip()
    aftersale.exchange_tracking_no = tracking_no.strip()
    aftersale.exchange_shipped_at = utcnow()
    _move(
        session,
        aftersale,
        EXCHANGE_SHIPPED,
        "exchange_shipped",
        actor,
        {
            "carrier": aftersale.exchange_carrier,
            "tracking_no": aftersale.exchange_tracking_no,
            "quantities": {str(k): v for k, v in quantities.items()},
        },
    )
    enqueue(
        session,
        merchant_id,
        "aftersales.auto_complete_exchange",
        {"aftersale_id": aftersale.id},
        run_at=aftersale.exchange_shipped_at + dt.timedelta(days=settings.order_auto_complete_days),
        dedupe_key=f"aftersale:{aftersale.id}:auto_complete",
    )
    return aftersale


def complete_exchange(
    session: Session, merchant_id: int, aftersale_id: int, *, actor: Actor, member_id: int | None = None
) -> AfterSale:
    """The replacement arrived: confirmed by the customer, the operator, or the auto-complete timer."""
    if member_id is not None:
        aftersale = get_for_member(session, merchant_id, member_id, aftersale_id, lock=True)
    else:
        aftersale = get(session, merchant_id, aftersale_id, lock=True)
    _require(aftersale, EXCHANGE_SHIPPED)
    _complete(session, aftersale, "completed", actor)
    return aftersale


def on_refunded(session: Session, merchant_id: int, payload: dict[str, Any]) -> AfterSale | None:
    """``order.refunded`` arrived: complete the after-sale waiting for that refund (idempotent)."""
    refund_id = payload.get("refund_id")
    if refund_id is None:
        return None
    aftersale = repo.by_refund_id(session, merchant_id, int(refund_id), lock=True)
    if aftersale is None or aftersale.status != REFUNDING:
        return aftersale
    data: dict[str, Any] = {"refund_id": refund_id, "amount": payload.get("amount")}
    if aftersale.kind == REFUND_ONLY:
        order = orders_service.get_order(session, merchant_id, aftersale.order_id)
        if order.shipped_at is None:
            # Refunded before shipment: those units never leave the warehouse.
            quantities: dict[int, int] = defaultdict(int)
            for line in lines(session, aftersale):
                quantities[line.sku_id] += line.quantity
            stock.release(session, merchant_id, quantities)
            aftersale.restocked = True
            data["restocked"] = {str(k): v for k, v in quantities.items()}
    _complete(session, aftersale, "refunded", ("system", None), data)
    return aftersale


def on_refund_failed(session: Session, merchant_id: int, payload: dict[str, Any]) -> AfterSale | None:
    """``order.refund_failed``: back to ``approved`` / ``returned`` so the operator can retry."""
    refund_id = payload.get("refund_id")
    if refund_id is None:
        return None
    aftersale = repo.by_refund_id(session, merchant_id, int(refund_id), lock=True)
    if aftersale is None or aftersale.status != REFUNDING:
        return aftersale
    back = APPROVED if aftersale.kind == REFUND_ONLY else RETURNED
    aftersale.refund_id = None
    aftersale.refund_requested_at = None
    _move(
        session,
        aftersale,
        back,
        "refund_failed",
        ("system", None),
        {"refund_id": refund_id, "reason": str(payload.get("reason") or "")[:200]},
    )
    return aftersale


def retry_refund(session: Session, merchant_id: int, aftersale_id: int, *, actor: Actor) -> AfterSale:
    """Request the refund again after the provider refused it (a new refund, a new key)."""
    aftersale = get(session, merchant_id, aftersale_id, lock=True)
    waiting = (aftersale.kind == REFUND_ONLY and aftersale.status == APPROVED) or (
        aftersale.kind == RETURN_REFUND and aftersale.status == RETURNED
    )
    if not waiting:
        raise DomainError("aftersale_state_invalid", status=aftersale.status)
    as_lines = lines(session, aftersale)
    _recompute_for_refund(session, aftersale, as_lines)
    _start_refund(session, aftersale, as_lines, actor)
    return aftersale
