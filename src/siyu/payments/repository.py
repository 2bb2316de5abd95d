"""Queries for payments, refunds and notification logs. Every query filters on ``merchant_id``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from siyu.db.dialect import for_update
from siyu.kit.outbox import Schedule
from siyu.payments.models import (
    ACCEPTED,
    DUPLICATE,
    PAYMENT_CREATED,
    PAYMENT_SUCCEEDED,
    Payment,
    PaymentNotification,
    Refund,
)


def _locked(stmt: Select[Any], session: Session, lock: bool) -> Select[Any]:
    if lock:
        return for_update(stmt, session).execution_options(populate_existing=True)
    return stmt


# -- payments --------------------------------------------------------------------------------------


def payment(session: Session, merchant_id: int, payment_id: int, *, lock: bool = False) -> Payment | None:
    stmt = select(Payment).where(Payment.merchant_id == merchant_id, Payment.id == payment_id)
    return session.scalar(_locked(stmt, session, lock))


def payment_by_out_trade_no(
    session: Session, merchant_id: int, out_trade_no: str, *, lock: bool = False
) -> Payment | None:
    stmt = select(Payment).where(Payment.merchant_id == merchant_id, Payment.out_trade_no == out_trade_no)
    return session.scalar(_locked(stmt, session, lock))


def open_payment(session: Session, merchant_id: int, order_id: int) -> Payment | None:
    stmt = select(Payment).where(
        Payment.merchant_id == merchant_id, Payment.open_order_id == order_id, Payment.status == PAYMENT_CREATED
    )
    return session.scalar(stmt.execution_options(populate_existing=True))


def order_payments(session: Session, merchant_id: int, order_id: int) -> list[Payment]:
    stmt = select(Payment).where(Payment.merchant_id == merchant_id, Payment.order_id == order_id)
    return list(session.scalars(stmt.order_by(Payment.id)))


def applied_payment(
    session: Session, merchant_id: int, order_id: int, *, exclude_id: int | None = None
) -> Payment | None:
    """The succeeded payment the order was marked paid with (the one refunds go against)."""
    stmt = select(Payment).where(
        Payment.merchant_id == merchant_id,
        Payment.order_id == order_id,
        Payment.status == PAYMENT_SUCCEEDED,
        Payment.unapplied_reason.is_(None),
    )
    if exclude_id is not None:
        stmt = stmt.where(Payment.id != exclude_id)
    return session.scalar(stmt.order_by(Payment.id).limit(1))


def stale_created_payments(session: Session, merchant_id: int, older_than: dt.datetime, limit: int) -> list[Payment]:
    stmt = select(Payment).where(
        Payment.merchant_id == merchant_id, Payment.status == PAYMENT_CREATED, Payment.created_at <= older_than
    )
    return list(session.scalars(stmt.order_by(Payment.created_at, Payment.id).limit(limit)))


def search_payments(
    merchant_id: int,
    *,
    status: str | None = None,
    order_id: int | None = None,
    out_trade_no: str | None = None,
    provider: str | None = None,
    created_from: dt.datetime | None = None,
    created_to: dt.datetime | None = None,
) -> Select[Any]:
    stmt = select(Payment).where(Payment.merchant_id == merchant_id)
    if status:
        stmt = stmt.where(Payment.status == status)
    if order_id is not None:
        stmt = stmt.where(Payment.order_id == order_id)
    if out_trade_no:
        stmt = stmt.where(Payment.out_trade_no == out_trade_no)
    if provider:
        stmt = stmt.where(Payment.provider == provider)
    if created_from is not None:
        stmt = stmt.where(Payment.created_at >= created_from)
    if created_to is not None:
        stmt = stmt.where(Payment.created_at < created_to)
    return stmt


# -- refunds ---------------------------------------------------------------------------------------


def refund(session: Session, merchant_id: int, refund_id: int, *, lock: bool = False) -> Refund | None:
    stmt = select(Refund).where(Refund.merchant_id == merchant_id, Refund.id == refund_id)
    return session.scalar(_locked(stmt, session, lock))


def refund_by_out_refund_no(
    session: Session, merchant_id: int, out_refund_no: str, *, lock: bool = False
) -> Refund | None:
    stmt = select(Refund).where(Refund.merchant_id == merchant_id, Refund.out_refund_no == out_refund_no)
    return session.scalar(_locked(stmt, session, lock))


def refund_by_idempotency_key(session: Session, merchant_id: int, key: str) -> Refund | None:
    stmt = select(Refund).where(Refund.merchant_id == merchant_id, Refund.idempotency_key == key)
    return session.scalar(stmt.execution_options(populate_existing=True))


def payment_refunds(session: Session, merchant_id: int, payment_id: int) -> list[Refund]:
    stmt = select(Refund).where(Refund.merchant_id == merchant_id, Refund.payment_id == payment_id)
    return list(session.scalars(stmt.order_by(Refund.id)))


def search_refunds(
    merchant_id: int,
    *,
    status: str | None = None,
    order_id: int | None = None,
    aftersale_id: int | None = None,
    created_from: dt.datetime | None = None,
    created_to: dt.datetime | None = None,
) -> Select[Any]:
    stmt = select(Refund).where(Refund.merchant_id == merchant_id)
    if status:
        stmt = stmt.where(Refund.status == status)
    if order_id is not None:
        stmt = stmt.where(Refund.order_id == order_id)
    if aftersale_id is not None:
        stmt = stmt.where(Refund.aftersale_id == aftersale_id)
    if created_from is not None:
        stmt = stmt.where(Refund.created_at >= created_from)
    if created_to is not None:
        stmt = stmt.where(Refund.created_at < created_to)
    return stmt


# -- notifications ---------------------------------------------------------------------------------


def accepted_digest(session: Session, merchant_id: int, notification_id: str) -> str | None:
    """The content digest of an earlier accepted delivery of this notification id, if any."""
    stmt = select(PaymentNotification.content_digest).where(
        PaymentNotification.merchant_id == merchant_id,
        PaymentNotification.notification_id == notification_id,
        PaymentNotification.outcome.in_((ACCEPTED, DUPLICATE)),
    )
    return session.scalar(stmt.order_by(PaymentNotification.id).limit(1))


def notifications(session: Session, merchant_id: int, *, reference: str | None = None) -> list[PaymentNotification]:
    stmt = select(PaymentNotification).where(PaymentNotification.merchant_id == merchant_id)
    if reference is not None:
        stmt = stmt.where(PaymentNotification.reference == reference)
    return list(session.scalars(stmt.order_by(PaymentNotification.id)))


# -- schedules -------------------------------------------------------------------------------------


def schedule_exists(session: Session, merchant_id: int, name: str) -> bool:
    stmt = select(Schedule.id).where(Schedule.merchant_id == merchant_id, Schedule.name == name)
    return session.scalar(stmt) is not None
