"""Store API: pay an order (and, in the sandbox, complete the payment). Admin API: payments,
refunds. Provider API (``/api/pay``): WeChat Pay payment and refund notifications.

Notifications own their transactions (no ``DbSession``): the merchant's keys are read first,
the signature is verified with no transaction open, the change is applied in one transaction,
and the log row of a rejected notification is written in a transaction of its own, so a
rejection leaves the log row and nothing else. Answers follow WeChat Pay v3: success (and a
duplicate) is ``204`` with no body; a rejection is 4xx/5xx ``{"code": "FAIL", "message": ...}``
(WeChat Pay then retries, which is harmless for a forgery).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker

from siyu.api.deps import AppSettings, Customer, DbSession, StaffPrincipal, require
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.crypto import SecretBox
from siyu.kit.errors import DomainError
from siyu.kit.pagination import Page, PageParams, apply_sort, page_params, paginate
from siyu.payments import providers, service
from siyu.payments import repository as repo
from siyu.payments.models import (
    PAYMENT_STATUSES,
    REFUND_STATUSES,
    REJECTED,
    WECHATPAY,
    Payment,
    Refund,
)
from siyu.payments.schemas import NotificationOut, PaymentOut, PayOut, RefundIn, RefundOut
from siyu.tenancy import repository as tenancy_repo
from siyu.tenancy import service as tenancy_service

log = logging.getLogger("siyu.payments")

store = APIRouter(tags=["store: payments"])
admin = APIRouter(tags=["admin: payments & refunds"])
provider = APIRouter(tags=["provider callbacks"])


# -- store -----------------------------------------------------------------------------------------


@store.post("/orders/{order_id}/pay", response_model=PayOut, summary="Start (or resume) paying my order")
def pay_order(order_id: int, customer: Customer, session: DbSession, request: Request, settings: AppSettings) -> PayOut:
    payment, _ = service.prepare_payment(session, customer.merchant_id, customer.member_id, order_id)
    merchant = tenancy_service.get_merchant(session, customer.merchant_id)
    pay = providers.provider_for(merchant, request.app.state.secret_box, settings)
    payment_id, out_trade_no, amount = payment.id, payment.out_trade_no, payment.amount
    prepay_id, description, expires_at = payment.prepay_id, payment.description, payment.expires_at
    openid = service.payer_openid(session, customer.merchant_id, customer.member_id)
    session.commit()  # nothing stays open while the provider is called
    if prepay_id is None and payment.provider == WECHATPAY:
        try:
            new_prepay = pay.create_payment(
                out_trade_no=out_trade_no, amount=amount, description=description, payer_openid=openid,
                expires_at=expires_at,
            )
        except providers.ProviderError as exc:
            raise DomainError("provider_error", detail=exc.code) from exc
        if new_prepay:
            prepay_id = service.record_prepay(session, customer.merchant_id, payment_id, new_prepay)
    params = pay.payment_params(prepay_id=prepay_id, out_trade_no=out_trade_no)
    return PayOut(provider=pay.name, out_trade_no=out_trade_no, amount=amount, params=params)


@store.post(
    "/sandbox/payments/{out_trade_no}/complete", response_model=PaymentOut,
    summary="SANDBOX ONLY: simulate the customer paying (demo merchants on the sandbox provider)",
)
def complete_sandbox_payment(out_trade_no: str, customer: Customer, session: DbSession) -> PaymentOut:
    payment = service.complete_sandbox_payment(session, customer.merchant_id, customer.member_id, out_trade_no)
    return PaymentOut.model_validate(payment)


# -- admin: payments -------------------------------------------------------------------------------

PAYMENT_SORTS = {"created_at": Payment.created_at, "amount": Payment.amount, "paid_at": Payment.paid_at}
REFUND_SORTS = {"created_at": Refund.created_at, "amount": Refund.amount}


@admin.get("/payments", response_model=Page[PaymentOut])
def list_payments(
    session: DbSession,
    p: StaffPrincipal = Depends(require("payments:read")),
    params: PageParams = Depends(page_params),
    status_: Annotated[str | None, Query(alias="status", pattern="^(" + "|".join(PAYMENT_STATUSES) + ")$")] = None,
    order_id: int | None = None,
    out_trade_no: str | None = None,
    provider_: Annotated[str | None, Query(alias="provider", pattern="^(sandbox|wechatpay)$")] = None,
    created_from: dt.datetime | None = None,
    created_to: dt.datetime | None = None,
) -> Page[PaymentOut]:
    stmt = repo.search_payments(
        p.merchant_id, status=status_, order_id=order_id, out_trade_no=out_trade_no, provider=provider_,
        created_from=created_from, created_to=created_to,
    )
    stmt = apply_sort(stmt, params.sort, PAYMENT_SORTS, Payment.id.desc())
    rows, total = paginate(session, stmt, params)
    return Page[PaymentOut](
        items=[PaymentOut.model_validate(r) for r in rows], total=total, page=params.page, page_size=params.page_size
    )


class PaymentDetailOut(PaymentOut):
    refunds: list[RefundOut]
    notifications: list[NotificationOut]


@admin.get("/payments/{payment_id}", response_model=PaymentDetailOut)
def payment_detail(
    payment_id: int, session: DbSession, p: StaffPrincipal = Depends(require("payments:read"))
) -> PaymentDetailOut:
    payment = service.get_payment(session, p.merchant_id, payment_id)
    return PaymentDetailOut(
        **PaymentOut.model_validate(payment).model_dump(),
        refunds=[RefundOut.model_validate(r) for r in repo.payment_refunds(session, p.merchant_id, payment.id)],
        notifications=[
            NotificationOut.model_validate(n)
            for n in repo.notifications(session, p.merchant_id, reference=payment.out_trade_no)
        ],
    )


# -- admin: refunds --------------------------------------------------------------------------------


@admin.post(
    "/orders/{order_id}/refunds", response_model=RefundOut, status_code=status.HTTP_201_CREATED,
    summary="Refund order lines (units) or an amount; Idempotency-Key required",
)
def create_refund(
    order_id: int,
    body: RefundIn,
    session: DbSession,
    response: Response,
    p: StaffPrincipal = Depends(require("refunds:write")),
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> RefundOut:
    key = service.check_idempotency_key(idempotency_key)
    existing = repo.refund_by_idempotency_key(session, p.merchant_id, key)
    refund = service.request_refund(
        session, p.merchant_id, order_id,
        lines=[(ln.order_line_id, ln.quantity) for ln in body.lines] if body.lines else None,
        amount=body.amount, reason=body.reason, idempotency_key=key, actor=p.actor,
    )
    if existing is not None and existing.id == refund.id:
        response.status_code = status.HTTP_200_OK  # a retry: the first result
    return RefundOut.model_validate(refund)


@admin.get("/refunds", response_model=Page[RefundOut])
def list_refunds(
    session: DbSession,
    p: StaffPrincipal = Depends(require("refunds:read")),
    params: PageParams = Depends(page_params),
    status_: Annotated[str | None, Query(alias="status", pattern="^(" + "|".join(REFUND_STATUSES) + ")$")] = None,
    order_id: int | None = None,
    aftersale_id: int | None = None,
    created_from: dt.datetime | None = None,
    created_to: dt.datetime | None = None,
) -> Page[RefundOut]:
    stmt = repo.search_refunds(
        p.merchant_id, status=status_, order_id=order_id, aftersale_id=aftersale_id,
        created_from=created_from, created_to=created_to,
    )
    stmt = apply_sort(stmt, params.sort, REFUND_SORTS, Refund.id.desc())
    rows, total = paginate(session, stmt, params)
    return Page[RefundOut](
        items=[RefundOut.model_validate(r) for r in rows], total=total, page=params.page, page_size=params.page_size
    )


@admin.get("/refunds/{refund_id}", response_model=RefundOut)
def refund_detail(refund_id: int, session: DbSession, p: StaffPrincipal = Depends(require("refunds:read"))) -> RefundOut:
    return RefundOut.model_validate(service.get_refund(session, p.merchant_id, refund_id))


@admin.get("/orders/{order_id}/payments", response_model=list[PaymentOut], summary="Payment attempts of an order")
def order_payments(
    order_id: int, session: DbSession, p: StaffPrincipal = Depends(require("payments:read"))
) -> list[PaymentOut]:
    from siyu.orders import service as orders_service

    orders_service.get_order(session, p.merchant_id, order_id)
    return [PaymentOut.model_validate(x) for x in repo.order_payments(session, p.merchant_id, order_id)]


# -- provider callbacks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackAnswer:
    status: int
    message: str | None = None  # None: success (204, no body)
    outcome: str | None = None
    reason: str | None = None

    def response(self) -> Response:
        if self.message is None:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        return JSONResponse({"code": "FAIL", "message": self.message}, status_code=self.status)


REJECTION_STATUS = {
    "unknown_merchant": 404,
    "not_configured": 404,
    "unknown_out_trade_no": 404,
    "unknown_out_refund_no": 404,
    "internal_error": 500,
}
SIGNATURE_REASONS = ("bad_signature", "unknown_serial", "stale_timestamp", "missing_headers")
PAYMENT_EVENTS = ("TRANSACTION.SUCCESS",)
REFUND_EVENTS = ("REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED")


def _rejected(reason: str) -> CallbackAnswer:
    code = REJECTION_STATUS.get(reason, 401 if reason in SIGNATURE_REASONS else 400)
    return CallbackAnswer(code, f"rejected: {reason}", outcome=REJECTED, reason=reason)


def process_notification(
    session_factory: sessionmaker[Session],
    settings: Settings,
    box: SecretBox,
    merchant_code: str,
    kind: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: dt.datetime | None = None,
) -> CallbackAnswer:
    """Verify and apply one WeChat Pay notification (``kind``: ``payment`` or ``refund``)."""
    with session_factory() as s:
        merchant = tenancy_repo.merchant_by_code(s, merchant_code)
        if merchant is None:
            log.warning("notification for unknown merchant %r", merchant_code)
            return _rejected("unknown_merchant")
        merchant_id = merchant.id
        creds: providers.WechatPayCredentials | None = None
        if merchant.pay_provider == WECHATPAY:
            try:
                creds = providers.wechatpay_credentials(merchant, box)
            except DomainError:
                creds = None
        s.rollback()

    def reject(reason: str, **extra: Any) -> CallbackAnswer:
        with unit_of_work(session_factory) as s:
            service.log_notification(s, merchant_id, provider=WECHATPAY, kind=kind, outcome=REJECTED, reason=reason, **extra)
        log.warning("rejected %s notification for merchant %s: %s", kind, merchant_id, reason)
        return _rejected(reason)

    if creds is None:
        return reject("not_configured")
    try:
        verified = providers.verify_wechat_notification(creds, headers, body, now=now)
    except providers.NotificationRejected as exc:
        return reject(exc.reason)
    digest = service.content_digest({"event_type": verified.event_type, "resource": verified.resource})
    extra: dict[str, Any] = {
        "notification_id": verified.id, "event_type": verified.event_type, "digest": digest,
        "reference": str(verified.resource.get("out_refund_no" if kind == "refund" else "out_trade_no") or "")[:64]
        or None,
    }
    try:
        with unit_of_work(session_factory) as s:
            service.check_replay(s, merchant_id, verified.id, digest)
            if kind == "payment":
                if verified.event_type not in PAYMENT_EVENTS:
                    raise service.Rejected("unexpected_event_type")
                result = providers.transaction_from_resource(verified.resource)
                if result.mchid != creds.mchid:
                    raise service.Rejected("mchid_mismatch")
                if result.appid != creds.appid:
                    raise service.Rejected("appid_mismatch")
                merchant = tenancy_service.get_merchant(s, merchant_id)
                applied = service.apply_transaction(s, merchant, result, source="notification")
            else:
                if verified.event_type not in REFUND_EVENTS:
                    raise service.Rejected("unexpected_event_type")
                refund_result = providers.refund_from_resource(verified.resource)
                if refund_result.mchid != creds.mchid:
                    raise service.Rejected("mchid_mismatch")
                applied = service.apply_refund_result(
                    s, merchant_id, refund_result, source="notification", expect_amount=True
                )
            service.log_notification(s, merchant_id, provider=WECHATPAY, kind=kind, outcome=applied.outcome, **extra)
    except service.Rejected as exc:
        return reject(exc.reason, **extra)
    except Exception:
        log.exception("notification for merchant %s failed", merchant_id)
        return reject("internal_error", **extra)
    return CallbackAnswer(204, outcome=applied.outcome)


async def _notification(request: Request, merchant_code: str, kind: str) -> Response:
    body = await request.body()
    app = request.app
    answer = await run_in_threadpool(
        process_notification, app.state.session_factory, app.state.settings, app.state.secret_box, merchant_code,
        kind, dict(request.headers), body,
    )
    return answer.response()


@provider.post(
    "/wechat/notify/{merchant_code}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
    summary="WeChat Pay payment notification (TRANSACTION.SUCCESS)",
)
async def wechat_notify(merchant_code: str, request: Request) -> Response:
    return await _notification(request, merchant_code, "payment")


@provider.post(
    "/wechat/refund-notify/{merchant_code}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
    summary="WeChat Pay refund notification (REFUND.SUCCESS / ABNORMAL / CLOSED)",
)
async def wechat_refund_notify(merchant_code: str, request: Request) -> Response:
    return await _notification(request, merchant_code, "refund")

