"""Payment jobs. Each reads what it needs, commits (the job stays leased), calls the provider
with no transaction open, then writes the answer through the service.

- ``payments.submit_refund`` {refund_id}: send a refund; a refused request fails it (booking
  released), a network error / 5xx retries with the worker's backoff (same ``out_refund_no``,
  which WeChat Pay treats idempotently).
- ``payments.query_refund`` {refund_id, poll}: ask about a ``processing`` refund (backs off).
- ``payments.reconcile`` {order_id?}: ask the provider about open payment attempts — those of one
  order (enqueued for its payment deadline + 1 minute), or every attempt older than
  ``service.RECONCILE_AFTER`` (the per-merchant schedule, every 5 minutes). SUCCESS is applied
  through ``service.apply_transaction`` (the notification path); an unpaid attempt whose order
  is no longer payable is closed at the provider and locally.
"""

from __future__ import annotations

import datetime as dt
import logging

from siyu.kit.crypto import SecretBox
from siyu.payments import providers, service
from siyu.payments import repository as repo
from siyu.payments.models import PAYMENT_CREATED, REFUND_PROCESSING, WECHATPAY
from siyu.payments.providers import TRADE_CLOSED, TRADE_NOTPAY, TRADE_SUCCESS, TRADE_USERPAYING, ProviderError
from siyu.tenancy import service as tenancy_service
from siyu.worker.registry import JobContext, job_handler

log = logging.getLogger("siyu.payments")


def _job_clock(ctx: JobContext) -> dt.datetime:
    """Now, or the slot a scheduled run was due for when the worker runs ahead (tests, catch-up)."""
    now = ctx.now()
    slot = ctx.payload.get("scheduled_for")
    if isinstance(slot, str):
        try:
            return max(now, dt.datetime.fromisoformat(slot).astimezone(dt.UTC))
        except ValueError:
            return now
    return now


def _provider(ctx: JobContext) -> providers.Provider:
    merchant = tenancy_service.get_merchant(ctx.session, ctx.merchant_id)
    return providers.provider_for(merchant, SecretBox(ctx.settings.secret_key), ctx.settings)


@job_handler("payments.submit_refund")
def submit_refund(ctx: JobContext) -> None:
    sub = service.refund_submission(ctx.session, ctx.merchant_id, int(ctx.payload["refund_id"]))
    if sub is None:
        return
    pay = _provider(ctx)
    ctx.session.commit()
    try:
        result = pay.refund(
            out_trade_no=sub.out_trade_no, out_refund_no=sub.out_refund_no, amount=sub.amount, total=sub.total,
            reason=sub.reason,
        )
    except ProviderError as exc:
        if exc.retryable:
            raise
        service.fail_refund_by_id(ctx.session, ctx.merchant_id, sub.refund_id, reason=exc.code, source="submit")
        return
    try:
        service.apply_refund_result(ctx.session, ctx.merchant_id, result, source="submit")
    except service.Rejected as exc:
        log.error("refund %s: provider answer not applied (%s)", sub.refund_id, exc.reason)


@job_handler("payments.query_refund")
def query_refund(ctx: JobContext) -> None:
    refund_id = int(ctx.payload["refund_id"])
    poll = int(ctx.payload.get("poll", 0))
    refund = repo.refund(ctx.session, ctx.merchant_id, refund_id)
    if refund is None or refund.status != REFUND_PROCESSING:
        return
    out_refund_no = refund.out_refund_no
    pay = _provider(ctx)
    ctx.session.commit()
    try:
        result = pay.query_refund(out_refund_no)
    except ProviderError as exc:
        if exc.retryable:
            raise
        result = None
    if result is not None:
        try:
            service.apply_refund_result(ctx.session, ctx.merchant_id, result, source="query")
        except service.Rejected as exc:
            log.error("refund %s: query answer not applied (%s)", refund_id, exc.reason)
    refund = repo.refund(ctx.session, ctx.merchant_id, refund_id, lock=True)
    if refund is not None and refund.status == REFUND_PROCESSING:
        service.schedule_refund_query(ctx.session, refund, poll=poll + 1)


@job_handler("payments.reconcile")
def reconcile(ctx: JobContext) -> None:
    order_id = ctx.payload.get("order_id")
    if order_id is not None:
        candidates = [
            p for p in repo.order_payments(ctx.session, ctx.merchant_id, int(order_id)) if p.status == PAYMENT_CREATED
        ]
    else:
        candidates = repo.stale_created_payments(
            ctx.session, ctx.merchant_id, _job_clock(ctx) - service.RECONCILE_AFTER, service.RECONCILE_BATCH
        )
    if not candidates:
        return
    work = [(p.id, p.out_trade_no, p.provider) for p in candidates]
    pay = _provider(ctx)
    ctx.session.commit()
    for payment_id, out_trade_no, provider_name in work:
        if provider_name != pay.name:
            continue  # made with the merchant's previous provider; nothing to ask
        try:
            result = pay.query(out_trade_no)
        except ProviderError as exc:
            log.warning("reconcile: query of %s failed: %s", out_trade_no, exc)
            continue
        if result.trade_state == TRADE_SUCCESS:
            merchant = tenancy_service.get_merchant(ctx.session, ctx.merchant_id)
            try:
                service.apply_transaction(ctx.session, merchant, result, source="reconcile")
            except service.Rejected as exc:
                log.error("reconcile: %s reported paid but not applied (%s)", out_trade_no, exc.reason)
                ctx.session.rollback()
                continue
            ctx.session.commit()
            continue
        if result.trade_state == TRADE_USERPAYING:
            continue
        payment = repo.payment(ctx.session, ctx.merchant_id, payment_id)
        if payment is None or payment.status != PAYMENT_CREATED:
            ctx.session.rollback()
            continue
        if result.trade_state != TRADE_NOTPAY:
            # CLOSED / REVOKED / PAYERROR: the provider already ended the attempt.
            if result.trade_state == TRADE_CLOSED:
                service.close_payment(
                    ctx.session, ctx.merchant_id, payment_id, trade_state=result.trade_state, reason="provider_closed"
                )
            else:
                service.record_failed_payment(ctx.session, ctx.merchant_id, payment_id, result.trade_state)
            ctx.session.commit()
            continue
        if not service.should_close(ctx.session, ctx.merchant_id, payment):
            ctx.session.rollback()
            continue
        ctx.session.commit()
        if pay.name == WECHATPAY:
            try:
                pay.close(out_trade_no)
            except ProviderError as exc:
                log.warning("reconcile: close of %s failed: %s", out_trade_no, exc)
                continue
        service.close_payment(ctx.session, ctx.merchant_id, payment_id, trade_state=TRADE_NOTPAY, reason="order_not_payable")
        ctx.session.commit()
