"""Builders for payment tests: a logged-in paying customer and orders made through the checkout
service (tests.factories.orders), plus read helpers for assertions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.outbox import Job
from siyu.orders.models import Order, OrderLine
from siyu.payments.models import Payment, PaymentNotification, Refund
from siyu.tenancy import service as tenancy_service
from tests.factories.orders import buyer, make_sku, submit_order


def paying_customer(factory: sessionmaker[Session], merchant_id: int) -> tuple[int, dict[str, str]]:
    """A member with a default address and a store bearer token: ``(member_id, headers)``."""
    member_id = buyer(factory, merchant_id)
    with unit_of_work(factory) as s:
        token, _ = tenancy_service.issue_customer_token(s, merchant_id, member_id, dt.timedelta(hours=1))
    return member_id, {"Authorization": f"Bearer {token}"}


def pending_order(
    factory: sessionmaker[Session],
    merchant_id: int,
    member_id: int,
    items: list[tuple[int, int]] | None = None,
    *,
    timeout_minutes: int = 30,
) -> int:
    """An order awaiting payment. ``items``: ``(unit price fen, quantity)``; default one line
    of 2 x 129.90 and one of 3 x 33.33 (amounts that do not split evenly)."""
    items = items or [(12990, 2), (3333, 3)]
    skus = [(make_sku(factory, merchant_id, price=price), qty) for price, qty in items]
    order = submit_order(factory, merchant_id, member_id, skus, timeout_minutes=timeout_minutes)
    return order.id


def order(factory: sessionmaker[Session], merchant_id: int, order_id: int) -> Order:
    with factory() as s:
        found = s.scalar(select(Order).where(Order.merchant_id == merchant_id, Order.id == order_id))
        assert found is not None
        return found


def order_lines(factory: sessionmaker[Session], merchant_id: int, order_id: int) -> list[OrderLine]:
    with factory() as s:
        stmt = select(OrderLine).where(OrderLine.merchant_id == merchant_id, OrderLine.order_id == order_id)
        return list(s.scalars(stmt.order_by(OrderLine.id)))


def payments(factory: sessionmaker[Session], merchant_id: int, order_id: int | None = None) -> list[Payment]:
    with factory() as s:
        stmt = select(Payment).where(Payment.merchant_id == merchant_id)
        if order_id is not None:
            stmt = stmt.where(Payment.order_id == order_id)
        return list(s.scalars(stmt.order_by(Payment.id)))


def refunds(factory: sessionmaker[Session], merchant_id: int, order_id: int | None = None) -> list[Refund]:
    with factory() as s:
        stmt = select(Refund).where(Refund.merchant_id == merchant_id)
        if order_id is not None:
            stmt = stmt.where(Refund.order_id == order_id)
        return list(s.scalars(stmt.order_by(Refund.id)))


def notification_log(factory: sessionmaker[Session], merchant_id: int) -> list[PaymentNotification]:
    with factory() as s:
        stmt = select(PaymentNotification).where(PaymentNotification.merchant_id == merchant_id)
        return list(s.scalars(stmt.order_by(PaymentNotification.id)))


def jobs(factory: sessionmaker[Session], merchant_id: int, kind: str | None = None, **payload: Any) -> list[Job]:
    with factory() as s:
        stmt = select(Job).where(Job.merchant_id == merchant_id)
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        found = list(s.scalars(stmt.order_by(Job.id)))
    return [j for j in found if all(j.payload.get(k) == v for k, v in payload.items())]


def job_count(factory: sessionmaker[Session], merchant_id: int, kind: str | None = None, **payload: Any) -> int:
    return len(jobs(factory, merchant_id, kind, **payload))


def count(factory: sessionmaker[Session], model: Any, merchant_id: int) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(model.merchant_id == merchant_id)) or 0)
