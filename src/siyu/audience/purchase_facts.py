"""The purchase facts that segments read from order lines: ``member_id`` and ``bought_at``.

Product and category purchase conditions ("bought category C in the last 180 days", "spent
≥ ¥200 on product P") used to join the paid orders to their lines: the cost grew with every paid
order of the window, not with the lines of the named products (2.5 s at 200k members). Each order
line now carries two copies of its order's facts:

- ``member_id``: the order's member, always;
- ``bought_at``: the order's ``paid_at`` while the order counts as bought (its status is one of
  ``PAID_STATUSES``: paid, shipped, completed), NULL otherwise (pending, cancelled, or closed by
  a full refund; a refund that fails reopens the order and sets it again).

The partial index ``ix_order_lines_bought`` (merchant, product, bought_at, member, order,
amounts; lines with ``bought_at``) then answers a condition from the index alone, reading only
the lines of its products in its window. Refunded amounts are the line's own columns, so partial
refunds need nothing here.

The copies are kept by SQLAlchemy events, in the same flush (so the same transaction) as the
change of the order, whichever module makes it:

- an ``Order`` whose status, ``paid_at`` or member changes in a flush: its lines are updated with
  one ``UPDATE`` when the derived values change (paying, closing, reopening; shipping and
  completing change nothing here and cost nothing);
- an ``OrderLine`` instance inserted through the ORM: the values are copied from its order (from
  the session when the order is loaded there, else with one ``SELECT``).

Checkout writes its lines with Core ``INSERT`` while the order is pending: they start with NULLs,
which is right (not bought), and the payment's order update fills both. Writes that bypass the
ORM for orders that are already paid (the CSV import's bulk inserts, ``COPY`` in
``siyu.demo.generator``) call ``sync_orders`` or ``backfill`` themselves: nothing here listens to
every statement (that would cost every request). ``backfill`` is also the data step of the
migration that adds the columns. So ``member_id`` is only guaranteed on lines that are bought.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Table, bindparam, case, event, inspect, select, update
from sqlalchemy.orm import InstanceState, Mapper, Session, object_session
from sqlalchemy.orm.util import identity_key

from siyu.orders import models as om

_LINES: Table = om.OrderLine.__table__  # type: ignore[assignment]
_ORDERS: Table = om.Order.__table__  # type: ignore[assignment]
_UNKNOWN = object()
_CHUNK = 5000


def bought_at(status: str | None, paid_at: dt.datetime | None) -> dt.datetime | None:
    """The ``bought_at`` of the lines of an order in ``status`` paid at ``paid_at``."""
    return paid_at if status in om.PAID_STATUSES else None


def _derived_from_orders() -> dict[str, Any]:
    """``member_id`` / ``bought_at`` of the lines as SQL over the joined ``orders`` row."""
    return {
        "member_id": _ORDERS.c.member_id,
        "bought_at": case((_ORDERS.c.status.in_(om.PAID_STATUSES), _ORDERS.c.paid_at), else_=None),
    }


def sync_orders(connection: Connection | Session, merchant_id: int, order_ids: Iterable[int]) -> None:
    """Recompute the lines' copies for these orders from the orders table (after a bulk write)."""
    ids = sorted({int(i) for i in order_ids})
    for lo in range(0, len(ids), _CHUNK):
        connection.execute(
            update(_LINES)
            .where(
                _LINES.c.merchant_id == merchant_id,
                _LINES.c.order_id.in_(ids[lo : lo + _CHUNK]),
                _ORDERS.c.id == _LINES.c.order_id,
                _ORDERS.c.merchant_id == _LINES.c.merchant_id,
            )
            .values(**_derived_from_orders())
        )


def backfill(connection: Connection | Session, merchant_id: int | None = None) -> int:
    """Set the copies of every line (of one merchant, or all) from its order; returns the rows.

    One ``UPDATE ... FROM orders`` on PostgreSQL and SQLite (≥ 3.33): the migration's data step,
    and the generator's (which writes with ``COPY``)."""
    stmt = update(_LINES).where(_ORDERS.c.id == _LINES.c.order_id, _ORDERS.c.merchant_id == _LINES.c.merchant_id)
    if merchant_id is not None:
        stmt = stmt.where(_LINES.c.merchant_id == merchant_id)
    result = connection.execute(stmt.values(**_derived_from_orders()))
    return int(getattr(result, "rowcount", 0) or 0)


# -- ORM events ------------------------------------------------------------------------------------

# built once: the payment pays for executing it, not for building it
_SET_FACTS = (
    update(_LINES)
    .where(_LINES.c.merchant_id == bindparam("f_merchant"), _LINES.c.order_id == bindparam("f_order"))
    .values(member_id=bindparam("f_member"), bought_at=bindparam("f_at", type_=_LINES.c.bought_at.type))
)


def _before(state: InstanceState[Any], key: str) -> Any:
    """The attribute's value before this flush, or ``_UNKNOWN`` when the session never loaded it."""
    history = state.attrs[key].history
    if not history.has_changes():
        return history.unchanged[0] if history.unchanged else _UNKNOWN
    return history.deleted[0] if history.deleted else _UNKNOWN


@event.listens_for(om.Order, "after_update")
def _order_updated(mapper: Mapper[Any], connection: Connection, target: om.Order) -> None:
    state = inspect(target)
    new = (target.member_id, bought_at(target.status, target.paid_at))
    if not any(state.attrs[k].history.has_changes() for k in ("status", "paid_at", "member_id")):
        return
    old_status, old_paid, old_member = (_before(state, k) for k in ("status", "paid_at", "member_id"))
    if _UNKNOWN not in (old_status, old_paid, old_member) and (old_member, bought_at(old_status, old_paid)) == new:
        return  # e.g. paid -> shipped -> completed: still bought at the same time
    connection.execute(
        _SET_FACTS, {"f_merchant": target.merchant_id, "f_order": target.id, "f_member": new[0], "f_at": new[1]}
    )


@event.listens_for(om.OrderLine, "before_insert")
def _line_inserting(mapper: Mapper[Any], connection: Connection, target: om.OrderLine) -> None:
    session = object_session(target)
    order = None
    if session is not None and target.order_id is not None:
        order = session.identity_map.get(identity_key(om.Order, target.order_id))
    if order is not None and not inspect(order).unloaded & {"member_id", "status", "paid_at"}:
        target.member_id, target.bought_at = order.member_id, bought_at(order.status, order.paid_at)
        return
    row = connection.execute(
        select(_ORDERS.c.member_id, _ORDERS.c.status, _ORDERS.c.paid_at).where(_ORDERS.c.id == target.order_id)
    ).first()
    if row is not None:
        target.member_id, target.bought_at = row.member_id, bought_at(row.status, row.paid_at)
