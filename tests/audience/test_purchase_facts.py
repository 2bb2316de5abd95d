"""The order lines' purchase facts (``member_id``, ``bought_at``) follow their order through the
real flows — checkout, payment, shipping, a full refund closing the order, a failed refund
reopening it — and through ORM bulk inserts and the backfill; product purchase conditions read
them. On SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import purchase_facts, segments
from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from siyu.orders import models as om
from siyu.orders import service
from tests.audience.plans import compiled_sql, postgres_plan
from tests.conftest import Tenant
from tests.factories.orders import buyer, make_sku, submit_order

STAFF = ("staff", 1)


def _facts_in(s: Session, merchant_id: int, order_id: int) -> set[tuple[int | None, dt.datetime | None]]:
    line = om.OrderLine
    rows = s.execute(
        select(line.member_id, line.bought_at).where(line.merchant_id == merchant_id, line.order_id == order_id)
    ).all()
    assert rows, "the order has lines"
    return {(r.member_id, r.bought_at) for r in rows}


def _facts(factory: sessionmaker[Session], merchant_id: int, order_id: int) -> set[tuple[int | None, dt.datetime | None]]:
    with factory() as s:
        return _facts_in(s, merchant_id, order_id)


def _derived(factory: sessionmaker[Session], merchant_id: int) -> tuple[list[Any], list[Any]]:
    """Every line's copies as stored, and as derived from its order."""
    o, line = om.Order, om.OrderLine
    with factory() as s:
        rows = s.execute(
            select(line.id, line.member_id, line.bought_at, o.member_id, o.status, o.paid_at)
            .join(o, o.id == line.order_id)
            .where(line.merchant_id == merchant_id)
            .order_by(line.id)
        ).all()
    # the member is guaranteed on the lines that are bought (checkout's lines start without it)
    stored = [(r[0], r[1] if r[2] is not None else None, r[2]) for r in rows]
    derived = [(r[0], r[3] if r[4] in om.PAID_STATUSES else None, r[5] if r[4] in om.PAID_STATUSES else None) for r in rows]
    assert all(r[1] == r[3] for r in rows if r[1] is not None), "a line never names another member"
    return stored, derived


def _buyers_of(factory: sessionmaker[Session], merchant_id: int, node: dict[str, Any]) -> set[int]:
    with factory() as s:
        result = segments.preview(s, merchant_id, segments.parse_definition(node), sample=100, now=utcnow())
    return {int(r["member_id"]) for r in result.sample}


def test_lines_follow_payment_refund_and_reopening(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    m = tenant.id
    sku = make_sku(session_factory, m, price=5000)
    member = buyer(session_factory, m)
    order = submit_order(session_factory, m, member, [(sku, 2)])
    with session_factory() as s:
        product_id = s.scalar(select(om.OrderLine.product_id).where(om.OrderLine.order_id == order.id))
    bought = {"type": "purchase", "product_ids": [product_id], "within_days": 30}
    spent = {"type": "purchase", "product_ids": [product_id], "min_amount": order.payable_amount}

    # pending (checkout writes its lines with Core inserts): nothing is bought
    assert {at for _, at in _facts(session_factory, m, order.id)} == {None}
    assert _buyers_of(session_factory, m, bought) == set()

    with unit_of_work(session_factory) as s:
        paid = service.mark_paid(s, m, order.id, amount=order.payable_amount, paid_at=utcnow(), actor=("payment", 1))
        paid_at = paid.paid_at
    assert _facts(session_factory, m, order.id) == {(member, paid_at)}
    assert _buyers_of(session_factory, m, bought) == {member}
    assert _buyers_of(session_factory, m, spent) == {member}

    with unit_of_work(session_factory) as s:  # shipping keeps the order bought, at the same time
        service.ship(s, m, order.id, carrier="SF", tracking_no="SF1234567890", actor=STAFF)
    assert _facts(session_factory, m, order.id) == {(member, paid_at)}

    with session_factory() as s:
        lines = [(ln.id, ln.quantity, ln.payable_amount) for ln in service.order_lines(s, m, order.id)]
    with unit_of_work(session_factory) as s:  # a full refund closes it: no longer bought
        closed = service.reserve_refund(s, m, order.id, amount=order.payable_amount, lines=lines)
        assert closed.status == om.CLOSED
    assert _facts(session_factory, m, order.id) == {(member, None)}
    assert _buyers_of(session_factory, m, bought) == set()
    assert _buyers_of(session_factory, m, {"type": "not", "node": bought}) == {member}

    with unit_of_work(session_factory) as s:  # the refund failed: reopened where it was
        reopened = service.release_refund(s, m, order.id, amount=order.payable_amount, lines=lines)
        assert reopened.status == om.SHIPPED
    assert _facts(session_factory, m, order.id) == {(member, paid_at)}
    assert _buyers_of(session_factory, m, bought) == {member}

    stored, derived = _derived(session_factory, m)
    assert stored == derived


def test_a_partial_refund_lowers_the_amount_but_keeps_the_purchase(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    m = tenant.id
    sku = make_sku(session_factory, m, price=5000)
    member = buyer(session_factory, m)
    order = submit_order(session_factory, m, member, [(sku, 2)])
    with unit_of_work(session_factory) as s:
        service.mark_paid(s, m, order.id, amount=order.payable_amount, paid_at=utcnow(), actor=("payment", 1))
    with session_factory() as s:
        (line,) = service.order_lines(s, m, order.id)
        line_id, product_id, payable = line.id, line.product_id, line.payable_amount
    with unit_of_work(session_factory) as s:
        service.reserve_refund(s, m, order.id, amount=payable // 2, lines=[(line_id, 1, payable // 2)])
    assert _buyers_of(session_factory, m, {"type": "purchase", "product_ids": [product_id]}) == {member}
    assert _buyers_of(session_factory, m, {"type": "purchase", "product_ids": [product_id], "min_amount": payable}) == set()
    assert _buyers_of(
        session_factory, m, {"type": "purchase", "product_ids": [product_id], "min_amount": payable - payable // 2}
    ) == {member}


def test_bulk_writers_sync_and_the_backfill_set_the_copies(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    """Bulk writes of orders that are already paid (as the CSV import does) call ``sync_orders``."""
    m = tenant.id
    member = buyer(session_factory, m)
    paid_at = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
    with unit_of_work(session_factory) as s:
        order_ids = s.execute(
            insert(om.Order).returning(om.Order.id, sort_by_parameter_order=True),
            [
                {"merchant_id": m, "order_no": uuid.uuid4().hex[:20], "member_id": member, "status": status,
                 "idempotency_key": uuid.uuid4().hex, "request_hash": "x", "goods_amount": 100, "payable_amount": 100,
                 "paid_amount": 100 if at else 0, "paid_at": at}
                for status, at in ((om.COMPLETED, paid_at), (om.CANCELLED, None))
            ],
        ).scalars().all()
        s.execute(insert(om.OrderLine), [
            {"merchant_id": m, "order_id": oid, "product_id": 7, "sku_id": 1, "title": "t", "quantity": 1,
             "list_price": 100, "sale_price": 100, "goods_amount": 100, "payable_amount": 100}
            for oid in order_ids for _ in range(2)
        ])
        assert {at for _, at in _facts_in(s, m, order_ids[0])} == {None}  # bulk inserts fire no ORM event
        purchase_facts.sync_orders(s, m, order_ids)
    assert _facts(session_factory, m, order_ids[0]) == {(member, paid_at)}
    assert _facts(session_factory, m, order_ids[1]) == {(member, None)}
    stored, derived = _derived(session_factory, m)
    assert stored == derived

    # the migration's data step: lines written before the columns existed
    with unit_of_work(session_factory) as s:
        s.execute(update(om.OrderLine).where(om.OrderLine.merchant_id == m).values(member_id=None, bought_at=None))
    with unit_of_work(session_factory) as s:
        assert purchase_facts.backfill(s, m) == 4
    stored, derived = _derived(session_factory, m)
    assert stored == derived and stored[0][2] == paid_at


def test_lines_of_an_order_not_in_the_session_copy_it_from_the_database(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    m = tenant.id
    member = buyer(session_factory, m)
    paid_at = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
    with unit_of_work(session_factory) as s:
        order = om.Order(merchant_id=m, order_no=uuid.uuid4().hex[:20], member_id=member, status=om.PAID,
                         idempotency_key=uuid.uuid4().hex, request_hash="x", goods_amount=100, payable_amount=100,
                         paid_amount=100, paid_at=paid_at)
        s.add(order)
        s.flush()
        order_id = order.id
    with unit_of_work(session_factory) as s:
        s.add(om.OrderLine(merchant_id=m, order_id=order_id, product_id=7, sku_id=1, title="t", quantity=1,
                           list_price=100, sale_price=100, goods_amount=100, payable_amount=100))
    assert _facts(session_factory, m, order_id) == {(member, paid_at)}


def test_product_conditions_read_only_the_bought_lines_index(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    """Both dialects answer a product condition from ``ix_order_lines_bought`` alone (PostgreSQL:
    index-only scan once the visibility map is set; SQLite: a covering index), without orders."""

    from siyu.audience.compiler import Compiler

    m = tenant.id
    member = buyer(session_factory, m)
    with unit_of_work(session_factory) as s:
        order = om.Order(merchant_id=m, order_no=uuid.uuid4().hex[:20], member_id=member, status=om.COMPLETED,
                         idempotency_key=uuid.uuid4().hex, request_hash="x", goods_amount=100, payable_amount=100,
                         paid_amount=100, paid_at=utcnow())
        s.add(order)
        s.flush()
        s.add(om.OrderLine(merchant_id=m, order_id=order.id, product_id=7, sku_id=1, title="t", quantity=1,
                           list_price=100, sale_price=100, goods_amount=100, payable_amount=100))
        # lines of an unpaid order: outside the partial index, so reading all of the merchant's
        # lines costs the planner more than the bought ones (a lone line made that a coin toss)
        cart = om.Order(merchant_id=m, order_no=uuid.uuid4().hex[:20], member_id=member, status=om.PENDING_PAYMENT,
                        idempotency_key=uuid.uuid4().hex, request_hash="x", goods_amount=100, payable_amount=100)
        s.add(cart)
        s.flush()
        s.execute(insert(om.OrderLine), [
            {"merchant_id": m, "order_id": cart.id, "product_id": 7, "sku_id": 1, "title": "t", "quantity": 1,
             "list_price": 100, "sale_price": 100, "goods_amount": 100, "payable_amount": 100}
            for _ in range(2000)
        ])
    for node in (
        {"type": "purchase", "product_ids": [7], "within_days": 180},
        {"type": "purchase", "product_ids": [7, 8], "within_days": 90, "min_amount": 100, "min_orders": 1},
    ):
        with session_factory() as s:
            stmt = Compiler(s, m, utcnow()).members(segments.parse_definition(node).root)
            bind = s.get_bind()
            sql, params = compiled_sql(s, stmt)
            assert "orders." not in sql.replace("order_lines.", "")
            if bind.dialect.name == "postgresql":
                plan = postgres_plan(s, sql, params, vacuum="order_lines")
                assert "Index Only Scan using ix_order_lines_bought" in plan, plan
            else:
                rows = s.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + sql, tuple(params.values())).all()
                plan = "\n".join(str(r[-1]) for r in rows)
                assert "COVERING INDEX ix_order_lines_bought" in plan, plan
            s.rollback()
        assert _buyers_of(session_factory, m, node) == {member}
