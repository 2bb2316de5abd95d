"""On PostgreSQL the submit writes the order, its lines and its audit event in ONE statement
(``repository.insert_order_with_lines_pg``), with its auto-cancel job; SQLite keeps one statement each. Either way the
lines come back matched to their ids, and an order refused by its key writes nothing else."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.audit import AuditEvent
from siyu.kit.outbox import Job
from siyu.orders import checkout
from siyu.orders.models import Order, OrderLine
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.factories.orders import buyer, make_sku

TIMEOUT = dt.timedelta(minutes=30)


def _body(items: list[tuple[int, int]]) -> CheckoutIn:
    return CheckoutIn.model_validate({"items": [{"sku_id": k, "quantity": q} for k, q in items]})


def test_order_lines_and_audit_are_one_statement_and_lines_match_their_ids(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    skus = [make_sku(session_factory, tenant.id, price=1000 * (i + 1)) for i in range(5)]
    member = buyer(session_factory, tenant.id)
    items = [(skus[3], 1), (skus[0], 2), (skus[4], 3), (skus[1], 1), (skus[2], 2)]  # not in id order
    statements: list[str] = []
    with unit_of_work(session_factory) as s:
        bind = s.connection().engine
        listener = lambda *args: statements.append(" ".join(args[2].split()))  # noqa: E731
        event.listen(bind, "before_cursor_execute", listener)
        try:
            order, created = checkout.submit(
                s, tenant.id, member, _body(items), idempotency_key="one-write", payment_timeout=TIMEOUT
            )
        finally:
            event.remove(bind, "before_cursor_execute", listener)
        written = [(ln.id, ln.sku_id, ln.quantity, ln.goods_amount) for ln in checkout.new_order_lines(s, order)]
        order_id = order.id
    assert created
    writes = [sql for sql in statements if sql.startswith(("INSERT INTO orders", "INSERT INTO order_lines",
                                                            "INSERT INTO audit_events", "WITH o AS"))]
    if settings.is_sqlite:
        # (SQLite's insertmanyvalues with RETURNING sends one INSERT per line)
        assert list(dict.fromkeys(w.split()[2] for w in writes)) == ["orders", "order_lines", "audit_events"]
    else:
        assert len(writes) == 1 and writes[0].startswith("WITH o AS (INSERT INTO orders"), writes
        assert "INSERT INTO order_lines" in writes[0] and "INSERT INTO audit_events" in writes[0]
    with session_factory() as s:
        stored = [
            (ln.id, ln.sku_id, ln.quantity, ln.goods_amount)
            for ln in s.scalars(select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.id))
        ]
        audit = list(s.scalars(select(AuditEvent).where(AuditEvent.subject_type == "order",
                                                        AuditEvent.subject_id == order_id)))
        row = s.get(Order, order_id)
        assert row is not None
        jobs = [(j.kind, j.payload, j.dedupe_key, j.status, j.run_at, j.attempts)
                for j in s.scalars(select(Job).where(Job.merchant_id == tenant.id))]
    assert written == stored and len(stored) == 5
    assert [sku for _, sku, _, _ in stored] == [sku for sku, _ in items]  # written in the selection's order
    assert [(a.action, a.to_state, a.data) for a in audit] == [
        ("submitted", "pending_payment", {"payable_amount": row.payable_amount, "order_no": row.order_no})
    ]
    # the payment deadline's job, as kit.outbox.enqueue writes it (with the order on PostgreSQL)
    assert jobs == [("orders.auto_cancel", {"order_id": order_id}, f"order:{order_id}:auto_cancel", "pending",
                     row.pay_deadline, 0)]
    assert any(sql.startswith("WITH o AS") and "INSERT INTO jobs" in sql for sql in statements) != settings.is_sqlite


def test_a_replayed_key_writes_no_second_set_of_lines_or_events(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    a, b = make_sku(session_factory, tenant.id), make_sku(session_factory, tenant.id)
    member = buyer(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        first, _ = checkout.submit(s, tenant.id, member, _body([(a, 1), (b, 1)]), idempotency_key="replay",
                                   payment_timeout=TIMEOUT)
        first_id = first.id
    with unit_of_work(session_factory) as s:
        again, created = checkout.submit(s, tenant.id, member, _body([(a, 1), (b, 1)]), idempotency_key="replay",
                                         payment_timeout=TIMEOUT)
        assert not created and again.id == first_id
    with session_factory() as s:
        lines = s.scalar(select(func.count()).select_from(OrderLine).where(OrderLine.merchant_id == tenant.id))
        events = s.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.merchant_id == tenant.id, AuditEvent.subject_type == "order"))
        jobs = s.scalar(select(func.count()).select_from(Job).where(Job.merchant_id == tenant.id))
    assert (lines, events, jobs) == (2, 1, 1)
