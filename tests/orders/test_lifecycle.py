"""The order state machine, payment recording, refund booking and the order timers."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.audit import AuditEvent
from siyu.kit.errors import DomainError
from siyu.kit.outbox import Job
from siyu.kit.timeutil import utcnow
from siyu.orders import service
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
    Order,
    OrderLine,
)
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.factories.orders import buyer, make_sku, sku_stock, submit_order

STAFF = ("staff", 1)


def _order(factory: sessionmaker[Session], tenant: Tenant, *, stock: int = 10, qty: int = 2, price: int = 1000) -> Order:
    sku = make_sku(factory, tenant.id, stock=stock, price=price)
    member = buyer(factory, tenant.id)
    return submit_order(factory, tenant.id, member, [(sku, qty)])


def _get(factory: sessionmaker[Session], tenant: Tenant, order_id: int) -> Order:
    with factory() as s:
        return service.get_order(s, tenant.id, order_id)


def _pay(factory: sessionmaker[Session], tenant: Tenant, order: Order, amount: int | None = None) -> Order:
    with unit_of_work(factory) as s:
        return service.mark_paid(
            s, tenant.id, order.id, amount=order.payable_amount if amount is None else amount,
            paid_at=utcnow(), actor=("payment", 1),
        )


def _ship(factory: sessionmaker[Session], tenant: Tenant, order_id: int) -> Order:
    with unit_of_work(factory) as s:
        return service.ship(s, tenant.id, order_id, carrier="SF", tracking_no="SF1234567890", actor=STAFF)


def _expect(code: str, fn, *args, **kw) -> DomainError:  # type: ignore[no-untyped-def]
    with pytest.raises(DomainError) as err:
        fn(*args, **kw)
    assert err.value.code == code, err.value
    return err.value


def test_happy_path_is_audited_step_by_step(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    order = _order(session_factory, tenant)
    paid = _pay(session_factory, tenant, order)
    assert paid.status == PAID and paid.paid_amount == order.payable_amount and paid.paid_at is not None
    _ship(session_factory, tenant, order.id)
    with unit_of_work(session_factory) as s:
        service.complete(s, tenant.id, order.id, actor=("customer", order.member_id))
    done = _get(session_factory, tenant, order.id)
    assert done.status == COMPLETED and done.shipped_at and done.completed_at
    with session_factory() as s:
        trail = [
            (e.from_state, e.to_state, e.actor_type)
            for e in s.scalars(
                select(AuditEvent)
                .where(AuditEvent.merchant_id == tenant.id, AuditEvent.subject_type == "order",
                       AuditEvent.subject_id == order.id)
                .order_by(AuditEvent.id)
            )
        ]
        assert s.scalars(select(OrderLine.id).where(OrderLine.order_id == order.id)).first()
    assert trail == [
        (None, PENDING_PAYMENT, "customer"), (PENDING_PAYMENT, PAID, "payment"), (PAID, SHIPPED, "staff"),
        (SHIPPED, COMPLETED, "customer"),
    ]


def test_illegal_transitions_are_409_with_both_states(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    order = _order(session_factory, tenant)
    err = _expect("order_state_invalid", _ship, session_factory, tenant, order.id)
    assert err.status == 409 and "pending_payment" in err.message("en") and "shipped" in err.message("en")
    with unit_of_work(session_factory) as s:
        _expect("order_state_invalid", service.complete, s, tenant.id, order.id, actor=STAFF)
    _pay(session_factory, tenant, order)
    with unit_of_work(session_factory) as s:
        _expect("order_state_invalid", service.cancel, s, tenant.id, order.id, reason="operator", actor=STAFF)
    _ship(session_factory, tenant, order.id)
    _expect("order_state_invalid", _ship, session_factory, tenant, order.id)
    assert _get(session_factory, tenant, order.id).status == SHIPPED


def test_cancel_releases_stock_and_cannot_be_paid_after(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    order = _order(session_factory, tenant, stock=10, qty=3)
    with session_factory() as s:
        (line,) = service.order_lines(s, tenant.id, order.id)
    assert sku_stock(session_factory, line.sku_id) == 7
    with unit_of_work(session_factory) as s:
        service.cancel(s, tenant.id, order.id, reason="customer", actor=("customer", order.member_id))
    assert sku_stock(session_factory, line.sku_id) == 10
    cancelled = _get(session_factory, tenant, order.id)
    assert cancelled.status == CANCELLED and cancelled.cancel_reason == "customer"
    err = _expect("order_not_payable", _pay, session_factory, tenant, order)
    assert err.status == 409
    with unit_of_work(session_factory) as s:  # cancelling twice does not release twice
        _expect("order_state_invalid", service.cancel, s, tenant.id, order.id, reason="x", actor=STAFF)
    assert sku_stock(session_factory, line.sku_id) == 10


def test_mark_paid_checks_amount_and_is_idempotent(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    order = _order(session_factory, tenant)
    err = _expect("payment_amount_mismatch", _pay, session_factory, tenant, order, order.payable_amount - 1)
    assert _get(session_factory, tenant, order.id).status == PENDING_PAYMENT and err.status == 409
    first = _pay(session_factory, tenant, order)
    again = _pay(session_factory, tenant, order)
    assert again.paid_at == first.paid_at and again.status == PAID
    _expect("order_not_payable", _pay, session_factory, tenant, order, order.payable_amount + 1)
    with session_factory() as s:
        paid_events = s.scalars(
            select(AuditEvent).where(AuditEvent.subject_id == order.id, AuditEvent.merchant_id == tenant.id,
                                     AuditEvent.action == "paid")
        ).all()
    assert len(paid_events) == 1


def test_other_merchant_cannot_touch_the_order(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    from siyu.tenancy import service as tenancy_service
    from tests.conftest import unique

    order = _order(session_factory, tenant)
    with unit_of_work(session_factory) as s:
        other = tenancy_service.create_merchant(s, code=unique("o"), name="Other").id
    with unit_of_work(session_factory) as s:
        _expect("not_found", service.mark_paid, s, other, order.id, amount=order.payable_amount, paid_at=utcnow(),
                actor=STAFF)
        _expect("not_found", service.get_order_by_no, s, other, order.order_no)
        assert service.get_order_by_no(s, tenant.id, order.order_no).id == order.id
        assert service.order_lines(s, other, order.id) == []


def test_timeout_job_cancels_and_releases_stock(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    order = _order(session_factory, tenant, stock=5, qty=5)
    with session_factory() as s:
        (line,) = service.order_lines(s, tenant.id, order.id)
    assert sku_stock(session_factory, line.sku_id) == 0
    worker = Worker(session_factory, settings, merchant_id=tenant.id)
    worker.drain(now=utcnow())  # before the deadline: the job is not due
    assert _get(session_factory, tenant, order.id).status == PENDING_PAYMENT
    assert order.pay_deadline is not None
    worker.drain(now=order.pay_deadline + dt.timedelta(seconds=1))
    cancelled = _get(session_factory, tenant, order.id)
    assert cancelled.status == CANCELLED and cancelled.cancel_reason == "timeout"
    assert sku_stock(session_factory, line.sku_id) == 5
    with session_factory() as s:
        job = s.scalar(select(Job).where(Job.merchant_id == tenant.id, Job.kind == "orders.auto_cancel"))
        assert job is not None and job.status == "done"


def test_paid_order_is_not_cancelled_by_the_timeout(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    order = _order(session_factory, tenant, stock=5, qty=2)
    _pay(session_factory, tenant, order)
    assert order.pay_deadline is not None
    Worker(session_factory, settings, merchant_id=tenant.id).drain(now=order.pay_deadline + dt.timedelta(minutes=1))
    assert _get(session_factory, tenant, order.id).status == PAID
    with session_factory() as s:
        (line,) = service.order_lines(s, tenant.id, order.id)
    assert sku_stock(session_factory, line.sku_id) == 3


def test_auto_complete_after_shipping(session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant) -> None:
    order = _order(session_factory, tenant)
    _pay(session_factory, tenant, order)
    shipped = _ship(session_factory, tenant, order.id)
    assert shipped.shipped_at is not None
    worker = Worker(session_factory, settings, merchant_id=tenant.id)
    worker.drain(now=shipped.shipped_at + dt.timedelta(days=1))
    assert _get(session_factory, tenant, order.id).status == SHIPPED
    worker.drain(now=shipped.shipped_at + dt.timedelta(days=settings.order_auto_complete_days, seconds=1))
    assert _get(session_factory, tenant, order.id).status == COMPLETED


def test_refund_booking_partial_full_and_release(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    order = _order(session_factory, tenant, qty=3, price=1001)
    _pay(session_factory, tenant, order)
    with session_factory() as s:
        (line,) = service.order_lines(s, tenant.id, order.id)
    paid = order.payable_amount
    one = service.line_refund_amount(line, 1)
    with unit_of_work(session_factory) as s:
        o = service.reserve_refund(s, tenant.id, order.id, amount=one, lines=[(line.id, 1, one)])
        assert (o.refund_status, o.refunded_amount, o.status) == (REFUND_PARTIAL, one, PAID)
    # more than what is left, on the order or on the line: refused, nothing changes
    with unit_of_work(session_factory) as s:
        _expect("refund_exceeds_paid", service.reserve_refund, s, tenant.id, order.id, amount=paid, lines=[])
    with unit_of_work(session_factory) as s:
        _expect("refund_quantity_invalid", service.reserve_refund, s, tenant.id, order.id, amount=1,
                lines=[(line.id, 3, 1)])
    with unit_of_work(session_factory) as s:
        _expect("not_found", service.reserve_refund, s, tenant.id, order.id, amount=1, lines=[(line.id + 999, 1, 1)])
    assert _get(session_factory, tenant, order.id).refunded_amount == one
    # the rest: order closes
    with unit_of_work(session_factory) as s:
        rest = paid - one
        line_rest = line.payable_amount - one
        o = service.reserve_refund(s, tenant.id, order.id, amount=rest, lines=[(line.id, 2, line_rest)])
        assert (o.refund_status, o.status, o.closed_from) == (REFUND_FULL, CLOSED, PAID)
    # the provider refused the second refund: release reopens the order
    with unit_of_work(session_factory) as s:
        o = service.release_refund(s, tenant.id, order.id, amount=paid - one, lines=[(line.id, 2, line.payable_amount - one)])
        assert (o.refund_status, o.status, o.refunded_amount) == (REFUND_PARTIAL, PAID, one)
    with unit_of_work(session_factory) as s:
        _expect("refund_release_invalid", service.release_refund, s, tenant.id, order.id, amount=one + 1, lines=[])
    with unit_of_work(session_factory) as s:
        o = service.release_refund(s, tenant.id, order.id, amount=one, lines=[(line.id, 1, one)])
        assert (o.refund_status, o.refunded_amount) == (REFUND_NONE, 0)
    with session_factory() as s:
        (fresh,) = service.order_lines(s, tenant.id, order.id)
    assert (fresh.refunded_quantity, fresh.refunded_amount) == (0, 0)


def test_refund_of_an_unpaid_order_is_refused(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    order = _order(session_factory, tenant)
    with unit_of_work(session_factory) as s:
        _expect("order_state_invalid", service.reserve_refund, s, tenant.id, order.id, amount=1, lines=[])
    assert _get(session_factory, tenant, order.id).refunded_amount == 0


def test_failed_refund_reopens_a_shipped_order_which_still_auto_completes(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    order = _order(session_factory, tenant)
    _pay(session_factory, tenant, order)
    shipped = _ship(session_factory, tenant, order.id)
    paid = order.payable_amount
    with unit_of_work(session_factory) as s:
        assert service.reserve_refund(s, tenant.id, order.id, amount=paid, lines=[]).status == CLOSED
    assert shipped.shipped_at is not None
    later = shipped.shipped_at + dt.timedelta(days=settings.order_auto_complete_days, seconds=1)
    worker = Worker(session_factory, settings, merchant_id=tenant.id)
    worker.drain(now=later)  # the auto-complete job finds the order closed and does nothing
    assert _get(session_factory, tenant, order.id).status == CLOSED
    with unit_of_work(session_factory) as s:
        reopened = service.release_refund(s, tenant.id, order.id, amount=paid, lines=[])
        assert (reopened.status, reopened.refund_status, reopened.closed_at) == (SHIPPED, REFUND_NONE, None)
    worker.drain(now=later + dt.timedelta(seconds=1))
    assert _get(session_factory, tenant, order.id).status == COMPLETED
