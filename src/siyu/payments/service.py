"""Payments and refunds: the state changes. Services never commit and never call a provider;
endpoints and job handlers read what they need, commit, call the provider, then call back here.

Payment (``models.PAYMENT_*``)::

    created ──SUCCESS (notification / sandbox complete / reconciliation)──► succeeded
       └──── NOTPAY and the order is no longer payable (reconciliation) ──► closed

``apply_transaction`` is the single path that records a provider's SUCCESS, whoever reports it.
It locks the payment row, so a notification delivered any number of times, concurrently or
not, records the payment once (and ``UNIQUE (merchant_id, transaction_id)`` backs it). The
payment is then applied to its order with ``orders.service.mark_paid``; when the order cannot
take it (cancelled meanwhile, or already paid by another attempt) the payment is kept as
succeeded-but-unapplied and refunded in full automatically.

Refund (``models.REFUND_*``)::

    pending ──submit──► processing ──► succeeded
       │                    └────────► failed   (amount released on the order)
       └──► succeeded / failed          (the provider answered at once)

``request_refund`` books the amount on the order (``orders.service.reserve_refund``, which
refuses more than was paid) in the caller's transaction and enqueues ``payments.submit_refund``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.kit import audit
from siyu.kit.errors import DomainError, invalid, not_found, register_messages
from siyu.kit.events import emit
from siyu.kit.money import allocate, percent_of
from siyu.kit.outbox import enqueue
from siyu.kit.timeutil import utcnow
from siyu.members import service as members_service
from siyu.orders import repository as orders_repo
from siyu.orders import service as orders_service
from siyu.orders.models import CANCELLED, PENDING_PAYMENT, Order
from siyu.payments import repository as repo
from siyu.payments.models import (
    ACCEPTED,
    DUPLICATE,
    PAYMENT_CLOSED,
    PAYMENT_CREATED,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    REFUND_FAILED,
    REFUND_PENDING,
    REFUND_PROCESSING,
    REFUND_SUCCEEDED,
    SANDBOX,
    Payment,
    PaymentNotification,
    Refund,
)
from siyu.payments.providers import (
    REFUND_ABNORMAL,
    REFUND_CLOSED,
    REFUND_SUCCESS,
    TRADE_SUCCESS,
    RefundResult,
    TransactionResult,
)
from siyu.tenancy import service as tenancy_service
from siyu.tenancy.models import Merchant
from siyu.worker.runner import add_schedule

log = logging.getLogger("siyu.payments")

register_messages(
    {
        "payment_not_required": (409, "该订单无需支付", "This order needs no payment"),
        "payment_expired": (409, "订单已超过支付期限", "The payment deadline of this order has passed"),
        "sandbox_disabled": (
            409,
            "该商户未使用沙箱支付，不能模拟付款",
            "This merchant does not use the sandbox provider; payments cannot be simulated",
        ),
        "payment_not_open": (409, "该支付单当前状态（{status}）不能完成", "This payment cannot complete ({status})"),
        "refund_no_payment": (409, "订单没有可退款的支付记录", "The order has no payment to refund"),
        "refund_target_required": (
            422,
            "请指定退款的订单行或金额",
            "Give the order lines or the amount to refund",
        ),
    }
)

Actor = tuple[str, int | None]
SYSTEM: Actor = ("system", None)

RECONCILE_SCHEDULE = "payments.reconcile"
RECONCILE_CRON = "*/5 * * * *"
RECONCILE_AFTER = dt.timedelta(minutes=5)  # a created payment this old is queried by the sweep
RECONCILE_BATCH = 100
REFUND_POLL_DELAYS = (30, 60, 120, 300, 600, 1800, 3600)  # seconds between refund status queries
IDEMPOTENCY_KEY_MAX = 80


class Rejected(Exception):
    """A provider report that must change nothing; ``reason`` is logged with the notification."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Applied:
    outcome: str  # accepted | duplicate
    payment_id: int | None = None
    refund_id: int | None = None


def new_reference(prefix: str) -> str:
    """``out_trade_no`` / ``out_refund_no``: prefix, UTC time, random hex (≤ 32 chars, [0-9A-Za-z])."""
    return f"{prefix}{utcnow():%Y%m%d%H%M%S}{secrets.token_hex(7)}"


def content_digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


# -- reads -----------------------------------------------------------------------------------------


def get_payment(session: Session, merchant_id: int, payment_id: int) -> Payment:
    found = repo.payment(session, merchant_id, payment_id)
    if found is None:
        raise not_found("支付单", "Payment")
    return found


def get_refund(session: Session, merchant_id: int, refund_id: int) -> Refund:
    found = repo.refund(session, merchant_id, refund_id)
    if found is None:
        raise not_found("退款单", "Refund")
    return found


def get_member_payment(session: Session, merchant_id: int, member_id: int, out_trade_no: str) -> Payment:
    found = repo.payment_by_out_trade_no(session, merchant_id, out_trade_no)
    if found is None or found.member_id != member_id:
        raise not_found("支付单", "Payment")
    return found


# -- paying ----------------------------------------------------------------------------------------


def ensure_reconcile_schedule(session: Session, merchant: Merchant) -> None:
    if not repo.schedule_exists(session, merchant.id, RECONCILE_SCHEDULE):
        try:
            with session.begin_nested():
                add_schedule(session, merchant.id, RECONCILE_SCHEDULE, "payments.reconcile", RECONCILE_CRON, merchant.timezone)
        except IntegrityError:
            pass  # a concurrent request created it


def prepare_payment(session: Session, merchant_id: int, member_id: int, order_id: int) -> tuple[Payment, Order]:
    """The open payment attempt of the customer's own pending order, created if there is none."""
    order = orders_service.get_member_order(session, merchant_id, member_id, order_id)
    if order.status != PENDING_PAYMENT:
        raise DomainError("order_not_payable", status=order.status)
    if order.payable_amount <= 0:
        raise DomainError("payment_not_required")
    now = utcnow()
    if order.pay_deadline is not None and order.pay_deadline <= now:
        raise DomainError("payment_expired")
    merchant = tenancy_service.get_merchant(session, merchant_id)
    existing = repo.open_payment(session, merchant_id, order.id)
    if existing is not None:
        if existing.amount == order.payable_amount and existing.provider == merchant.pay_provider:
            return existing, order
        # The merchant switched provider: retire this attempt; reconciliation closes it remotely.
        existing.open_order_id = None
        session.flush()
    payment = Payment(
        merchant_id=merchant_id, order_id=order.id, member_id=member_id, out_trade_no=new_reference("P"),
        provider=merchant.pay_provider, amount=order.payable_amount, status=PAYMENT_CREATED, open_order_id=order.id,
        description=f"订单 {order.order_no}", expires_at=order.pay_deadline, fee_amount=0,
    )
    session.add(payment)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        winner = repo.open_payment(session, merchant_id, order.id)  # a concurrent pay request won
        if winner is None:
            raise DomainError("conflict") from None
        return winner, order
    audit.record(
        session, merchant_id, "payment", payment.id, "created", to_state=PAYMENT_CREATED,
        actor=("customer", member_id), data={"order_id": order.id, "amount": payment.amount, "provider": payment.provider},
    )
    ensure_reconcile_schedule(session, merchant)
    if order.pay_deadline is not None:
        enqueue(
            session, merchant_id, "payments.reconcile", {"order_id": order.id},
            run_at=order.pay_deadline + dt.timedelta(minutes=1), dedupe_key=f"payments.reconcile:order:{order.id}",
        )
    session.flush()
    return payment, order


def payer_openid(session: Session, merchant_id: int, member_id: int) -> str | None:
    return members_service.get_member(session, merchant_id, member_id).openid


def record_prepay(session: Session, merchant_id: int, payment_id: int, prepay_id: str) -> str:
    """Store the provider's prepay id (the first one wins when two requests raced)."""
    payment = repo.payment(session, merchant_id, payment_id, lock=True)
    if payment is None:
        raise not_found("支付单", "Payment")
    if payment.prepay_id is None:
        payment.prepay_id = prepay_id
        session.flush()
    return payment.prepay_id


def _lock_order(session: Session, merchant_id: int, order_id: int) -> Order:
    order = orders_repo.order(session, merchant_id, order_id, lock=True)
    if order is None:
        raise not_found("订单", "Order")
    return order


def apply_transaction(
    session: Session, merchant: Merchant, result: TransactionResult, *, source: str, actor: Actor = SYSTEM
) -> Applied:
    """Record a provider-reported SUCCESS once; the one path for notifications, the sandbox and
    reconciliation. Raises ``Rejected`` (nothing written) for anything that does not match."""
    if not result.out_trade_no:
        raise Rejected("out_trade_no_missing")
    payment = repo.payment_by_out_trade_no(session, merchant.id, result.out_trade_no, lock=True)
    if payment is None:
        raise Rejected("unknown_out_trade_no")
    if result.trade_state != TRADE_SUCCESS:
        raise Rejected("trade_state_not_success")
    if result.amount_total != payment.amount:
        raise Rejected("amount_mismatch")
    if not result.transaction_id:
        raise Rejected("transaction_id_missing")
    if payment.status == PAYMENT_SUCCEEDED:
        if payment.transaction_id == result.transaction_id:
            return Applied(DUPLICATE, payment_id=payment.id)
        raise Rejected("transaction_mismatch")
    # The order row is locked before the payment changes, so two attempts of one order that
    # succeed at the same time are applied one after the other.
    order = _lock_order(session, merchant.id, payment.order_id)
    from_state = payment.status
    paid_at = _mark_succeeded(payment, result, merchant)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Rejected("transaction_id_reused") from None
    audit.record(
        session, merchant.id, "payment", payment.id, "succeeded", from_state=from_state, to_state=PAYMENT_SUCCEEDED,
        actor=actor, data={"source": source, "transaction_id": result.transaction_id, "amount": payment.amount},
    )
    other = repo.applied_payment(session, merchant.id, order.id, exclude_id=payment.id)
    unapplied: str | None = None
    if other is not None or order.paid_at is not None:
        unapplied = "order_already_paid"  # another attempt paid it: this money goes back
    else:
        try:
            with session.begin_nested():
                orders_service.mark_paid(
                    session, merchant.id, order.id, amount=payment.amount, paid_at=paid_at, actor=actor
                )
        except DomainError as exc:
            if exc.code not in ("order_not_payable", "payment_amount_mismatch"):
                raise
            unapplied = exc.code
    if unapplied is not None:
        payment.unapplied_reason = unapplied
        session.flush()
        _auto_refund(session, merchant.id, payment, order, reason=unapplied)
    return Applied(ACCEPTED, payment_id=payment.id)


def _mark_succeeded(payment: Payment, result: TransactionResult, merchant: Merchant) -> dt.datetime:
    """The fields a provider-reported SUCCESS sets on a payment; returns when it was paid."""
    paid_at = result.success_time or utcnow()
    payment.status = PAYMENT_SUCCEEDED
    payment.transaction_id = result.transaction_id
    payment.trade_state = result.trade_state
    payment.payer_openid = result.payer_openid or payment.payer_openid
    payment.paid_at = paid_at
    payment.open_order_id = None
    payment.fee_amount = percent_of(payment.amount, merchant.pay_fee_bp)
    return paid_at


def _sandbox_result(payment: Payment, payer: str | None, success_time: dt.datetime) -> TransactionResult:
    """What the sandbox reports for a payment the customer 'paid' (no money moves)."""
    return TransactionResult(
        out_trade_no=payment.out_trade_no, trade_state=TRADE_SUCCESS, transaction_id=f"SBX{payment.out_trade_no}",
        amount_total=payment.amount, payer_openid=payer, success_time=success_time,
    )


def record_historical_payment(
    session: Session, merchant: Merchant, order: Order, *, out_trade_no: str | None = None, source: str = "history"
) -> Payment:
    """A succeeded sandbox payment for an order written as history (the demo seed), so it can be
    refunded like any order paid through the sandbox.

    The same ``Payment`` row, sandbox transaction and fields (``_mark_succeeded``) as the sandbox
    path, for ``order.paid_amount`` at ``order.paid_at``; it is not applied through
    ``orders.service.mark_paid`` (the history already has the order paid) and emits no
    ``order.paid`` (points and stats of history are seeded as history). Audited ``succeeded``
    with ``source``.
    """
    if order.paid_at is None or order.paid_amount <= 0:
        raise ValueError("only a paid order has a payment to record")
    payment = Payment(
        merchant_id=merchant.id, order_id=order.id, member_id=order.member_id,
        out_trade_no=out_trade_no or new_reference("P"), provider=SANDBOX, amount=order.paid_amount,
        status=PAYMENT_CREATED, open_order_id=None, description=f"订单 {order.order_no}",
        expires_at=order.pay_deadline, fee_amount=0, created_at=order.created_at,
    )
    payer = members_service.get_member(session, merchant.id, order.member_id).openid
    _mark_succeeded(payment, _sandbox_result(payment, payer, order.paid_at), merchant)
    session.add(payment)
    session.flush()
    audit.record(
        session, merchant.id, "payment", payment.id, "succeeded", from_state=PAYMENT_CREATED,
        to_state=PAYMENT_SUCCEEDED,
        data={"source": source, "transaction_id": payment.transaction_id, "amount": payment.amount},
    )
    return payment


def record_historical_refund(
    session: Session,
    payment: Payment,
    *,
    lines: list[tuple[int, int, int]],
    amount: int,
    succeeded_at: dt.datetime,
    reason: str,
    source: str = "history",
) -> Refund:
    """A succeeded refund of a payment recorded by ``record_historical_payment``, for an order
    written as already refunded (booked on the order by the history itself: no reservation, no
    ``order.refunded``). ``lines``: ``(order_line_id, quantity, amount)``."""
    refund = Refund(
        merchant_id=payment.merchant_id, order_id=payment.order_id, payment_id=payment.id,
        member_id=payment.member_id, out_refund_no=f"R{payment.out_trade_no[1:]}"[:32], amount=amount,
        lines=[{"order_line_id": lid, "quantity": q, "amount": a} for lid, q, a in lines],
        status=REFUND_SUCCEEDED, reason=reason[:80], reserved=True, automatic=False,
        idempotency_key=f"{source}:payment:{payment.id}"[:IDEMPOTENCY_KEY_MAX],
        request_hash=content_digest({"history": payment.id, "amount": amount}), requested_by_type="system",
        provider_status=REFUND_SUCCESS, provider_refund_id=f"SBXR{payment.out_trade_no}"[:64],
        submitted_at=succeeded_at, succeeded_at=succeeded_at, created_at=succeeded_at,
    )
    session.add(refund)
    session.flush()
    audit.record(
        session, payment.merchant_id, "refund", refund.id, "succeeded", to_state=REFUND_SUCCEEDED,
        data={"source": source, "amount": amount, "freight_amount": refund.freight_amount},
    )
    return refund


def complete_sandbox_payment(session: Session, merchant_id: int, member_id: int, out_trade_no: str) -> Payment:
    """SANDBOX: pretend the customer paid, and record it exactly like a verified notification."""
    merchant = tenancy_service.get_merchant(session, merchant_id)
    if merchant.pay_provider != SANDBOX:
        raise DomainError("sandbox_disabled")
    payment = get_member_payment(session, merchant_id, member_id, out_trade_no)
    if payment.provider != SANDBOX:
        raise DomainError("sandbox_disabled")
    if payment.status == PAYMENT_SUCCEEDED:
        return payment
    if payment.status != PAYMENT_CREATED:
        raise DomainError("payment_not_open", status=payment.status)
    result = _sandbox_result(payment, payer_openid(session, merchant_id, member_id), utcnow())
    try:
        apply_transaction(session, merchant, result, source="sandbox", actor=("customer", member_id))
    except Rejected as exc:  # cannot happen for a result built from the payment itself
        raise DomainError("payment_not_open", status=exc.reason) from exc
    return get_payment(session, merchant_id, payment.id)


def close_payment(session: Session, merchant_id: int, payment_id: int, *, trade_state: str, reason: str) -> bool:
    """Close an open attempt the provider reports unpaid (after the remote close, for WeChat Pay)."""
    payment = repo.payment(session, merchant_id, payment_id, lock=True)
    if payment is None or payment.status != PAYMENT_CREATED:
        return False
    payment.status = PAYMENT_CLOSED
    payment.trade_state = trade_state
    payment.open_order_id = None
    payment.closed_at = utcnow()
    audit.record(
        session, merchant_id, "payment", payment.id, "closed", from_state=PAYMENT_CREATED, to_state=PAYMENT_CLOSED,
        data={"reason": reason, "trade_state": trade_state},
    )
    session.flush()
    return True


def should_close(session: Session, merchant_id: int, payment: Payment) -> bool:
    """An unpaid attempt is closed once nobody can pay it any more: its order is not pending, or
    it was retired (a newer attempt replaced it)."""
    order = orders_repo.order(session, merchant_id, payment.order_id)
    if order is None or order.status == CANCELLED or order.status != PENDING_PAYMENT:
        return True
    return payment.open_order_id is None


def record_failed_payment(session: Session, merchant_id: int, payment_id: int, trade_state: str) -> None:
    payment = repo.payment(session, merchant_id, payment_id, lock=True)
    if payment is None or payment.status != PAYMENT_CREATED:
        return
    payment.status = PAYMENT_FAILED
    payment.trade_state = trade_state
    payment.open_order_id = None
    audit.record(
        session, merchant_id, "payment", payment.id, "failed", from_state=PAYMENT_CREATED, to_state=PAYMENT_FAILED,
        data={"trade_state": trade_state},
    )
    session.flush()


# -- notifications log -----------------------------------------------------------------------------


def log_notification(
    session: Session,
    merchant_id: int,
    *,
    provider: str,
    kind: str,
    outcome: str,
    reason: str | None = None,
    notification_id: str | None = None,
    event_type: str | None = None,
    reference: str | None = None,
    digest: str | None = None,
) -> None:
    session.add(
        PaymentNotification(
            merchant_id=merchant_id, provider=provider, kind=kind, notification_id=(notification_id or None),
            event_type=event_type, reference=reference, content_digest=digest, outcome=outcome,
            reason=reason, received_at=utcnow(),
        )
    )
    session.flush()


def check_replay(session: Session, merchant_id: int, notification_id: str | None, digest: str) -> None:
    """The same notification id with other content is a forgery or a tampered replay."""
    if not notification_id:
        return
    earlier = repo.accepted_digest(session, merchant_id, notification_id)
    if earlier is not None and earlier != digest:
        raise Rejected("replay_content_mismatch")


# -- refunds ---------------------------------------------------------------------------------------


def check_idempotency_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise DomainError("idempotency_key_required")
    key = key.strip()
    if len(key) > IDEMPOTENCY_KEY_MAX:
        raise invalid("header.Idempotency-Key", "too_long", f"at most {IDEMPOTENCY_KEY_MAX} characters",
                      f"最多 {IDEMPOTENCY_KEY_MAX} 个字符")
    return key


def _refund_request_hash(order_id: int, lines: list[tuple[int, int]] | None, amount: int | None, reason: str,
                         aftersale_id: int | None) -> str:
    return content_digest(
        {"order_id": order_id, "lines": [list(t) for t in lines] if lines is not None else None, "amount": amount,
         "reason": reason, "aftersale_id": aftersale_id}
    )


def request_refund(
    session: Session,
    merchant_id: int,
    order_id: int,
    *,
    lines: list[tuple[int, int]] | None,
    amount: int | None,
    reason: str,
    idempotency_key: str | None,
    actor: Actor,
    aftersale_id: int | None = None,
) -> Refund:
    """Book a refund on the order and queue its submission to the provider.

    ``lines`` are ``(order_line_id, quantity)``: each is worth ``orders.service.line_refund_amount``
    (the paid share of those units). Without lines, ``amount`` is a whole-order amount; with
    both, ``amount`` lowers the lines' share (allocated over them by largest remainder).

    Freight: when the lines are refunded at their full share (no lower ``amount``) and take the
    last goods of an order not yet shipped, the refund also gives back what is left of the
    freight (``orders.service.freight_to_refund``), so the order is refunded in full and closes;
    ``Refund.freight_amount`` is that part (``amount`` minus the lines' amounts). After shipment,
    or with a lowered amount, no freight is added (refund it as an amount if due). The same
    ``idempotency_key`` returns the first refund (another body with it is 409). More than what
    is left of the payment is 409 ``refund_exceeds_paid`` and changes nothing.

    A zero-paid order (``paid_amount == 0``: coupons, a points-only exchange) has no payment: a
    refund of its lines is a refund of amount 0 with no payment that succeeds here, without the
    provider, and emits ``order.refunded`` like any refund (points, coupon and promotion units
    come back); ``full`` then means every unit refunded. A refund by amount of such an order is
    ``refund_exceeds_paid`` (refundable 0).
    """
    key = check_idempotency_key(idempotency_key)
    reason = (reason or "")[:80]
    digest = _refund_request_hash(order_id, lines, amount, reason, aftersale_id)
    order = orders_repo.order(session, merchant_id, order_id)
    if order is None:
        raise not_found("订单", "Order")
    # Serialise refund requests of the order before looking at the key, so a concurrent retry
    # with the same key finds the first one instead of booking the amount twice.
    order = _lock_order(session, merchant_id, order_id)
    existing = repo.refund_by_idempotency_key(session, merchant_id, key)
    if existing is not None:
        if existing.request_hash != digest:
            raise DomainError("idempotency_key_reused")
        return existing
    zero_paid = order.paid_at is not None and order.paid_amount == 0
    payment = None if zero_paid else repo.applied_payment(session, merchant_id, order.id)
    if order.paid_at is None or (payment is None and not zero_paid):
        raise DomainError("refund_no_payment")

    booked: list[tuple[int, int, int]] = []
    freight = 0
    if lines:
        by_id = {ln.id: ln for ln in orders_service.order_lines(session, merchant_id, order.id)}
        seen: set[int] = set()
        shares: list[int] = []
        for i, (line_id, quantity) in enumerate(lines):
            if line_id in seen:
                raise invalid(f"lines.{i}.order_line_id", "duplicate_line", "each order line at most once",
                              "每个订单行只能出现一次")
            seen.add(line_id)
            line = by_id.get(line_id)
            if line is None:
                raise not_found("订单行", "Order line")
            shares.append(orders_service.line_refund_amount(line, quantity))
        share_total = sum(shares)
        if amount is None:
            amount = share_total
        elif amount > share_total:
            raise DomainError("refund_exceeds_paid", refundable=share_total)
        parts = shares if amount == share_total else allocate(amount, shares)
        booked = [(line_id, quantity, part) for (line_id, quantity), part in zip(lines, parts, strict=True)]
        if amount == share_total:  # a lowered amount is the merchant's final figure: no freight added
            freight = orders_service.freight_to_refund(session, merchant_id, order, booked)
            amount += freight
    elif amount is None:
        raise DomainError("refund_target_required")
    if amount <= 0 and not (zero_paid and booked):  # a zero-paid order refunds lines, never an amount
        raise DomainError("refund_exceeds_paid", refundable=order.paid_amount - order.refunded_amount)

    orders_service.reserve_refund(session, merchant_id, order.id, amount=amount, lines=booked, freight=freight)
    refund = Refund(
        merchant_id=merchant_id, order_id=order.id, payment_id=payment.id if payment is not None else None,
        member_id=order.member_id,
        out_refund_no=new_reference("R"), amount=amount,
        lines=[{"order_line_id": lid, "quantity": q, "amount": a} for lid, q, a in booked],
        status=REFUND_PENDING, reason=reason, reserved=True, automatic=False, idempotency_key=key,
        request_hash=digest, aftersale_id=aftersale_id, requested_by_type=actor[0], requested_by=actor[1],
    )
    session.add(refund)
    session.flush()
    audit.record(
        session, merchant_id, "refund", refund.id, "requested", to_state=REFUND_PENDING, actor=actor,
        data={"order_id": order.id, "amount": amount, "freight_amount": freight, "lines": refund.lines,
              "reason": reason},
    )
    if payment is None:  # zero-paid: no money moves, the refund succeeds now (order.refunded as any refund)
        refund.status = REFUND_SUCCEEDED
        refund.succeeded_at = utcnow()
        session.flush()
        audit.record(
            session, merchant_id, "refund", refund.id, "succeeded", from_state=REFUND_PENDING,
            to_state=REFUND_SUCCEEDED, actor=actor, data={"source": "zero_paid", "amount": 0},
        )
        _emit_refunded(session, refund)
        return refund
    _enqueue_submit(session, refund)
    return refund


def _enqueue_submit(session: Session, refund: Refund) -> None:
    enqueue(
        session, refund.merchant_id, "payments.submit_refund", {"refund_id": refund.id},
        dedupe_key=f"refund:{refund.id}:submit", max_attempts=12,
    )


def _auto_refund(session: Session, merchant_id: int, payment: Payment, order: Order, *, reason: str) -> Refund:
    """Give back a payment its order could not take. Not booked on the order (it was never paid
    with this money), so no ``order.refunded`` event either."""
    key = f"auto:payment:{payment.id}"
    existing = repo.refund_by_idempotency_key(session, merchant_id, key)
    if existing is not None:
        return existing
    refund = Refund(
        merchant_id=merchant_id, order_id=order.id, payment_id=payment.id, member_id=payment.member_id,
        out_refund_no=new_reference("R"), amount=payment.amount, lines=[], status=REFUND_PENDING, reason=reason,
        reserved=False, automatic=True, idempotency_key=key, request_hash=content_digest({"auto": payment.id}),
        requested_by_type="system",
    )
    session.add(refund)
    session.flush()
    audit.record(
        session, merchant_id, "refund", refund.id, "requested", to_state=REFUND_PENDING,
        data={"order_id": order.id, "amount": refund.amount, "automatic": True, "reason": reason,
              "payment_id": payment.id},
    )
    _enqueue_submit(session, refund)
    return refund


@dataclass(frozen=True)
class RefundSubmission:
    """What the submit job sends, read before the transaction is committed."""

    refund_id: int
    out_trade_no: str
    out_refund_no: str
    amount: int
    total: int
    reason: str


def refund_submission(session: Session, merchant_id: int, refund_id: int) -> RefundSubmission | None:
    """The refund to send, or None when it no longer needs sending."""
    refund = repo.refund(session, merchant_id, refund_id, lock=True)
    if refund is None or refund.status not in (REFUND_PENDING, REFUND_PROCESSING):
        return None
    payment = repo.payment(session, merchant_id, refund.payment_id) if refund.payment_id is not None else None
    if payment is None:
        return None
    if refund.submitted_at is None:
        refund.submitted_at = utcnow()
    return RefundSubmission(
        refund_id=refund.id, out_trade_no=payment.out_trade_no, out_refund_no=refund.out_refund_no,
        amount=refund.amount, total=payment.amount, reason=refund.reason or "退款",
    )


def apply_refund_result(
    session: Session, merchant_id: int, result: RefundResult, *, source: str, expect_amount: bool = False
) -> Applied:
    """Record what the provider says about a refund (answer, query, or verified notification).

    SUCCESS → succeeded (``order.refunded`` emitted for refunds booked on the order); CLOSED /
    ABNORMAL → failed and the booking released; PROCESSING → processing and a status query is
    scheduled. A final refund is never changed again: a repeated report is a duplicate, a
    contradicting one is rejected (and logged for an operator).
    """
    refund = repo.refund_by_out_refund_no(session, merchant_id, result.out_refund_no, lock=True)
    if refund is None:
        raise Rejected("unknown_out_refund_no")
    if (expect_amount or result.amount is not None) and result.amount != refund.amount:
        raise Rejected("amount_mismatch")
    status = result.status
    if refund.status in (REFUND_SUCCEEDED, REFUND_FAILED):
        same = (refund.status == REFUND_SUCCEEDED) == (status == REFUND_SUCCESS)
        if same or status not in (REFUND_SUCCESS, REFUND_CLOSED, REFUND_ABNORMAL):
            return Applied(DUPLICATE, refund_id=refund.id)
        log.error("refund %s is %s but the provider now says %s", refund.id, refund.status, status)
        raise Rejected("refund_state_conflict")
    from_state = refund.status
    refund.provider_status = status
    if result.provider_refund_id:
        refund.provider_refund_id = result.provider_refund_id
    if status == REFUND_SUCCESS:
        refund.status = REFUND_SUCCEEDED
        refund.succeeded_at = result.success_time or utcnow()
        session.flush()
        audit.record(
            session, merchant_id, "refund", refund.id, "succeeded", from_state=from_state, to_state=REFUND_SUCCEEDED,
            data={"source": source, "amount": refund.amount, "provider_refund_id": refund.provider_refund_id},
        )
        if refund.reserved:
            _emit_refunded(session, refund)
    elif status in (REFUND_CLOSED, REFUND_ABNORMAL):
        fail_refund(session, refund, reason=f"provider:{status}", source=source)
    else:
        refund.status = REFUND_PROCESSING
        session.flush()
        if from_state != REFUND_PROCESSING:
            audit.record(
                session, merchant_id, "refund", refund.id, "processing", from_state=from_state,
                to_state=REFUND_PROCESSING, data={"source": source},
            )
            schedule_refund_query(session, refund, poll=0)
    return Applied(ACCEPTED, refund_id=refund.id)


def schedule_refund_query(session: Session, refund: Refund, *, poll: int) -> None:
    if poll >= len(REFUND_POLL_DELAYS):
        log.warning("refund %s still processing after %s queries; waiting for the notification", refund.id, poll)
        return
    enqueue(
        session, refund.merchant_id, "payments.query_refund", {"refund_id": refund.id, "poll": poll},
        run_at=utcnow() + dt.timedelta(seconds=REFUND_POLL_DELAYS[poll]), dedupe_key=f"refund:{refund.id}:query:{poll}",
    )


def fail_refund(session: Session, refund: Refund, *, reason: str, source: str) -> None:
    """A definitive failure: release the booking on the order and mark the refund failed."""
    if refund.status in (REFUND_SUCCEEDED, REFUND_FAILED):
        return
    from_state = refund.status
    if refund.reserved:
        orders_service.release_refund(
            session, refund.merchant_id, refund.order_id, amount=refund.amount,
            lines=[(int(ln["order_line_id"]), int(ln["quantity"]), int(ln["amount"])) for ln in refund.lines],
        )
    refund.status = REFUND_FAILED
    refund.failed_at = utcnow()
    refund.failure_reason = reason[:200]
    session.flush()
    audit.record(
        session, refund.merchant_id, "refund", refund.id, "failed", from_state=from_state, to_state=REFUND_FAILED,
        data={"source": source, "reason": reason},
    )
    emit(
        session, refund.merchant_id, "order.refund_failed",
        {"order_id": refund.order_id, "member_id": refund.member_id, "refund_id": refund.id,
         "aftersale_id": refund.aftersale_id, "amount": refund.amount, "reason": reason},
        key=f"refund:{refund.id}",
    )


def fail_refund_by_id(session: Session, merchant_id: int, refund_id: int, *, reason: str, source: str) -> None:
    refund = repo.refund(session, merchant_id, refund_id, lock=True)
    if refund is not None:
        fail_refund(session, refund, reason=reason, source=source)


def _emit_refunded(session: Session, refund: Refund) -> None:
    order = orders_repo.order(session, refund.merchant_id, refund.order_id)
    assert order is not None
    if order.paid_amount == 0:
        # Nothing was paid, so "everything refunded" is every unit refunded (its refunds are
        # zero-amount and succeed when booked, so the booked quantities are the refunded ones).
        full = all(ln.refunded_quantity >= ln.quantity
                   for ln in orders_service.order_lines(session, refund.merchant_id, order.id))
    else:
        succeeded = session.scalars(
            select(Refund.amount).where(
                Refund.merchant_id == refund.merchant_id, Refund.order_id == refund.order_id,
                Refund.status == REFUND_SUCCEEDED, Refund.reserved.is_(True),
            )
        ).all()
        full = sum(succeeded) >= order.paid_amount
    emit(
        session, refund.merchant_id, "order.refunded",
        {"order_id": refund.order_id, "member_id": refund.member_id, "refund_id": refund.id, "amount": refund.amount,
         "freight_amount": refund.freight_amount, "lines": refund.lines, "full": full,
         "aftersale_id": refund.aftersale_id},
        key=f"refund:{refund.id}",
    )
