"""Queries for carts, addresses, freight templates, orders, lines and shipments.

Every query filters on ``merchant_id``; customer-facing ones also on ``member_id``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    BigInteger,
    Select,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from siyu.catalog.models import Product, Sku
from siyu.db.dialect import for_update, int_array_text, is_postgres, run_sql_pg
from siyu.kit.audit import AuditEvent
from siyu.orders.models import Address, CartItem, FreightTemplate, Order, OrderLine, Shipment
from siyu.tenancy.models import Merchant

# -- catalog reads (SKU with its product) -----------------------------------------------------------


# Hot-path statements are built once with bound parameters: building a SELECT with its WHERE
# clause costs more Python than SQLAlchemy's compiled-statement cache saves.
_SKUS_WITH_PRODUCTS = (
    select(Sku, Product)
    .join(Product, Product.id == Sku.product_id)
    .where(
        Sku.merchant_id == bindparam("merchant_id"),
        Product.merchant_id == bindparam("merchant_id"),
        Sku.id.in_(bindparam("ids", expanding=True)),
    )
)


def skus_with_products(session: Session, merchant_id: int, sku_ids: Iterable[int]) -> dict[int, tuple[Sku, Product]]:
    ids = sorted(set(sku_ids))
    if not ids:
        return {}
    rows = session.execute(_SKUS_WITH_PRODUCTS, {"merchant_id": merchant_id, "ids": ids}).all()
    return {sku.id: (sku, product) for sku, product in rows}


# The checkout's read of the SKUs it prices: plain columns (no ORM instances to build) and the
# merchant's time zone as one more column, so pricing needs no separate read of the merchant.
# Table columns, not the mapped attributes: a Core statement skips the ORM's compile and
# result-loading layers (same SQL, same rows; the attribute and column names are the same).
_S, _P, _M = Sku.__table__.c, Product.__table__.c, Merchant.__table__.c  # type: ignore[attr-defined]
_CHECKOUT_SKUS = (
    select(
        _S.id, _S.specs, _S.list_price, _S.sale_price, _S.cost_price, _S.weight_g, _S.stock, _S.image_url,
        _S.active, _P.id.label("product_id"), _P.category_id, _P.title, _P.spec_names,
        _P.images, _P.status, _P.free_shipping, _P.coupons_allowed, _P.bonus_points,
        _P.freight_template_id, _P.kind,
        select(_M.timezone).where(_M.id == bindparam("merchant_id")).scalar_subquery()
        .label("merchant_timezone"),
    )
    .select_from(Sku.__table__.join(Product.__table__, _P.id == _S.product_id))
    .where(
        _S.merchant_id == bindparam("merchant_id"),
        _P.merchant_id == bindparam("merchant_id"),
    )
)
# PostgreSQL: ``skus.id = ANY(:ids)`` with the ids as ONE array parameter, so the statement is
# the same for any number of SKUs (an expanding IN is re-rendered per call and its text differs
# per count, which costs a post-compile step every call and a prepared statement per count).
# The array travels as its text ``{1,2,3}`` (``db.dialect.int_array_text``): psycopg dumps a
# Python list element by element, with a type look-up per call.
_CHECKOUT_SKUS_PG = _CHECKOUT_SKUS.where(
    _S.id == any_(cast(bindparam("id_array", type_=Text()), ARRAY(BigInteger())))
)
_CHECKOUT_SKUS = _CHECKOUT_SKUS.where(_S.id.in_(bindparam("ids", expanding=True)))
_CHECKOUT_SKUS_WITH: dict[tuple[bool, tuple[int, ...]], Any] = {}


def checkout_skus(
    session: Session, merchant_id: int, sku_ids: Iterable[int], *, extra: Sequence[Any] = (),
    params: dict[str, Any] | None = None,
) -> dict[int, Any]:
    """sku_id -> a row with the SKU's and its product's columns the pricing needs, plus
    ``merchant_timezone``; SKUs of other merchants are simply absent.

    ``extra``: more labelled columns read in the same round trip (the pricing probes), with
    the bind ``params`` they need; each row then ends with them."""
    ids = sorted(set(sku_ids))
    if not ids:
        return {}
    postgres = is_postgres(session)
    stmt: Any = _CHECKOUT_SKUS_PG if postgres else _CHECKOUT_SKUS
    if extra:
        key = (postgres, tuple(id(c) for c in extra))
        found = _CHECKOUT_SKUS_WITH.get(key)
        if found is None:
            found = _CHECKOUT_SKUS_WITH[key] = stmt.add_columns(*extra)
        stmt = found
    rows = session.execute(
        stmt, {**(params or {}), "merchant_id": merchant_id, **({"id_array": int_array_text(ids)} if postgres else {"ids": ids})}
    )
    return {row.id: row for row in rows}


# -- cart ---------------------------------------------------------------------------------------------


def cart_items(session: Session, merchant_id: int, member_id: int) -> list[CartItem]:
    stmt = (
        select(CartItem)
        .where(CartItem.merchant_id == merchant_id, CartItem.member_id == member_id)
        .order_by(CartItem.id.desc())
    )
    return list(session.scalars(stmt))


def cart_item(session: Session, merchant_id: int, member_id: int, item_id: int) -> CartItem | None:
    return session.scalar(
        select(CartItem).where(
            CartItem.merchant_id == merchant_id, CartItem.member_id == member_id, CartItem.id == item_id
        )
    )


def cart_item_by_sku(session: Session, merchant_id: int, member_id: int, sku_id: int) -> CartItem | None:
    return session.scalar(
        select(CartItem).where(
            CartItem.merchant_id == merchant_id, CartItem.member_id == member_id, CartItem.sku_id == sku_id
        )
    )


def set_cart_selected(
    session: Session, merchant_id: int, member_id: int, item_ids: list[int] | None, selected: bool
) -> None:
    stmt = update(CartItem).where(CartItem.merchant_id == merchant_id, CartItem.member_id == member_id)
    if item_ids is not None:
        stmt = stmt.where(CartItem.id.in_(item_ids))
    session.execute(stmt.values(selected=selected).execution_options(synchronize_session="fetch"))


def remove_cart_skus(session: Session, merchant_id: int, member_id: int, sku_ids: Iterable[int]) -> None:
    ids = list(set(sku_ids))
    if not ids:
        return
    session.execute(
        delete(CartItem)
        .where(CartItem.merchant_id == merchant_id, CartItem.member_id == member_id, CartItem.sku_id.in_(ids))
        .execution_options(synchronize_session="fetch")
    )


# -- addresses ----------------------------------------------------------------------------------------


def addresses(session: Session, merchant_id: int, member_id: int) -> list[Address]:
    stmt = select(Address).where(
        Address.merchant_id == merchant_id, Address.member_id == member_id, Address.deleted.is_(False)
    )
    return list(session.scalars(stmt.order_by(Address.is_default.desc(), Address.id.desc())))


_ADDRESS = select(Address).where(
    Address.merchant_id == bindparam("merchant_id"),
    Address.member_id == bindparam("member_id"),
    Address.id == bindparam("address_id"),
    Address.deleted.is_(False),
)
_DEFAULT_ADDRESS = (
    select(Address)
    .where(
        Address.merchant_id == bindparam("merchant_id"),
        Address.member_id == bindparam("member_id"),
        Address.deleted.is_(False),
        Address.is_default.is_(True),
    )
    .order_by(Address.id.desc())
    .limit(1)
)


def address(session: Session, merchant_id: int, member_id: int, address_id: int) -> Address | None:
    params = {"merchant_id": merchant_id, "member_id": member_id, "address_id": address_id}
    return session.scalar(_ADDRESS, params)


def default_address(session: Session, merchant_id: int, member_id: int) -> Address | None:
    return session.scalar(_DEFAULT_ADDRESS, {"merchant_id": merchant_id, "member_id": member_id})


# The checkout reads the address as plain columns (what the order's snapshot and the preview's
# ``AddressOut`` need), not as a session instance: it only reads it.
_A = Address.__table__.c  # type: ignore[attr-defined]  # Core columns: see _CHECKOUT_SKUS
_ADDRESS_COLUMNS = (_A.id, _A.name, _A.phone, _A.province, _A.city, _A.district, _A.detail, _A.postal_code, _A.is_default)
_CHECKOUT_ADDRESS = (
    select(*_ADDRESS_COLUMNS)
    .where(
        _A.merchant_id == bindparam("merchant_id"),
        _A.member_id == bindparam("member_id"),
        _A.id == bindparam("address_id"),
        _A.deleted.is_(False),
    )
)
_CHECKOUT_DEFAULT_ADDRESS = (
    select(*_ADDRESS_COLUMNS)
    .where(
        _A.merchant_id == bindparam("merchant_id"),
        _A.member_id == bindparam("member_id"),
        _A.deleted.is_(False),
        _A.is_default.is_(True),
    )
    .order_by(_A.id.desc())
    .limit(1)
)


# PostgreSQL: the same address as ONE json column that the checkout's SKU read carries along
# (``checkout_skus(extra=[CHECKOUT_ADDRESS_COLUMN])``, bind parameters ``merchant_id``,
# ``member_id``, ``address_id``): an uncorrelated scalar subquery, evaluated once per statement,
# that spares the submit a round trip. ``address_id`` NULL: the default address.
_ADDRESS_ID = cast(bindparam("address_id"), BigInteger())
CHECKOUT_ADDRESS_COLUMN = (
    select(func.json_build_array(*_ADDRESS_COLUMNS))
    .where(
        _A.merchant_id == bindparam("merchant_id"),
        _A.member_id == bindparam("member_id"),
        _A.deleted.is_(False),
        or_(and_(_ADDRESS_ID.is_(None), _A.is_default.is_(True)), _A.id == _ADDRESS_ID),
    )
    .order_by(_A.id.desc())
    .limit(1)
    .scalar_subquery()
    .label("checkout_address")
)
_ADDRESS_KEYS = tuple(c.name for c in _ADDRESS_COLUMNS)


def address_record(value: Sequence[Any] | None) -> Any | None:
    """``CHECKOUT_ADDRESS_COLUMN``'s value as the read-only record ``checkout_address`` returns."""
    return None if value is None else SimpleNamespace(**dict(zip(_ADDRESS_KEYS, value, strict=True)))


def checkout_address(session: Session, merchant_id: int, member_id: int, address_id: int | None) -> Any | None:
    """The member's address ``address_id`` (None: the default one) as a read-only row, or None."""
    params: dict[str, Any] = {"merchant_id": merchant_id, "member_id": member_id}
    if address_id is None:
        return session.execute(_CHECKOUT_DEFAULT_ADDRESS, params).first()
    return session.execute(_CHECKOUT_ADDRESS, {**params, "address_id": address_id}).first()


def clear_default_address(session: Session, merchant_id: int, member_id: int, except_id: int | None) -> None:
    stmt = update(Address).where(
        Address.merchant_id == merchant_id, Address.member_id == member_id, Address.is_default.is_(True)
    )
    if except_id is not None:
        stmt = stmt.where(Address.id != except_id)
    session.execute(stmt.values(is_default=False).execution_options(synchronize_session="fetch"))


# -- freight templates --------------------------------------------------------------------------------


def freight_templates(session: Session, merchant_id: int) -> list[FreightTemplate]:
    stmt = select(FreightTemplate).where(FreightTemplate.merchant_id == merchant_id).order_by(FreightTemplate.id)
    return list(session.scalars(stmt))


def freight_template(session: Session, merchant_id: int, template_id: int) -> FreightTemplate | None:
    return session.scalar(
        select(FreightTemplate).where(FreightTemplate.merchant_id == merchant_id, FreightTemplate.id == template_id)
    )


def freight_templates_by_ids(session: Session, merchant_id: int, ids: Iterable[int]) -> dict[int, FreightTemplate]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    stmt = select(FreightTemplate).where(FreightTemplate.merchant_id == merchant_id, FreightTemplate.id.in_(wanted))
    return {t.id: t for t in session.scalars(stmt)}


def default_freight_template(session: Session, merchant_id: int) -> FreightTemplate | None:
    return session.scalar(
        select(FreightTemplate)
        .where(FreightTemplate.merchant_id == merchant_id, FreightTemplate.is_default.is_(True))
        .order_by(FreightTemplate.id.desc())
        .limit(1)
    )


def clear_default_freight(session: Session, merchant_id: int, except_id: int) -> None:
    session.execute(
        update(FreightTemplate)
        .where(
            FreightTemplate.merchant_id == merchant_id,
            FreightTemplate.is_default.is_(True),
            FreightTemplate.id != except_id,
        )
        .values(is_default=False)
        .execution_options(synchronize_session="fetch")
    )


# -- orders -------------------------------------------------------------------------------------------


def order(session: Session, merchant_id: int, order_id: int, *, lock: bool = False) -> Order | None:
    stmt = select(Order).where(Order.merchant_id == merchant_id, Order.id == order_id)
    if lock:
        stmt = for_update(stmt, session).execution_options(populate_existing=True)
    return session.scalar(stmt)


def order_by_no(session: Session, merchant_id: int, order_no: str) -> Order | None:
    return session.scalar(select(Order).where(Order.merchant_id == merchant_id, Order.order_no == order_no))


def order_by_idempotency_key(session: Session, merchant_id: int, member_id: int, key: str) -> Order | None:
    stmt = select(Order).where(
        Order.merchant_id == merchant_id, Order.member_id == member_id, Order.idempotency_key == key
    )
    return session.scalar(stmt.execution_options(populate_existing=True))


_ORDER_LINES: Table = OrderLine.__table__  # type: ignore[assignment]
_INSERT_ORDER_LINES = insert(_ORDER_LINES).returning(_ORDER_LINES.c.id, sort_by_parameter_order=True)


def insert_order_lines(session: Session, rows: list[dict[str, Any]]) -> list[SimpleNamespace]:
    """Write an order's lines in one statement (Core: no ORM instances to build and track).

    Each row must carry every column but ``id``; what comes back, in ``rows`` order, is each row
    with its new ``id`` as a plain read-only record (for the response), not a session instance.
    """
    if not rows:
        return []
    ids = session.execute(_INSERT_ORDER_LINES, rows).scalars().all()
    return [SimpleNamespace(**row, id=line_id) for row, line_id in zip(rows, ids, strict=True)]


_INSERT_AUDIT_EVENT = insert(AuditEvent.__table__)  # type: ignore[arg-type]

_ORDER_WRITE_SQL: dict[tuple[tuple[str, ...], ...], str] = {}


def insert_order_with_lines_pg(
    session: Session, order: dict[str, Any], lines: list[dict[str, Any]], audit: dict[str, Any],
    auto_cancel: dict[str, Any] | None = None,
) -> tuple[int, list[int]] | None:
    """PostgreSQL: the order row, its lines and its audit event in ONE statement; ``(order id,
    line ids in ``lines`` order)``, or None when a unique constraint refused the order (then
    nothing at all was written).

    A data-modifying CTE: ``INSERT INTO orders ... ON CONFLICT DO NOTHING RETURNING id`` feeds the
    lines' and the audit event's ``INSERT ... SELECT ... FROM o``, so a refused order (a retry of
    its idempotency key won, or an order_no collision) writes no line and no event. Like the
    single INSERT it replaces, a conflicting row of a transaction in flight makes it wait for
    that transaction. Each row group travels as ONE JSON document read with
    ``jsonb_populate_record(set)`` (typed by the table's own row type), so the statement text is
    the same for any number of lines and psycopg prepares it (the multi-row VALUES it replaces
    changed with the line count and passed the driver's cached-parameter limit at 3 lines).
    Lines are inserted in ``ORDER BY ordinality``: their ids come from the sequence in that
    order, so the ids sorted ascending are the lines in ``lines`` order (the correlation
    SQLAlchemy's own insertmanyvalues relies on for PostgreSQL).

    ``order``, each line (without ``order_id``) and ``audit`` (without ``subject_id``) carry
    every column but ``id`` that they want written (timestamps aware); ``lines`` is not empty.

    ``auto_cancel``: the columns of the order's ``orders.auto_cancel`` job but its payload and
    dedupe key (``{"order_id": id}`` and ``order:<id>:auto_cancel``, what ``kit.outbox.enqueue``
    writes for it, ``ON CONFLICT DO NOTHING`` on the dedupe key alike), written in the same
    statement; jobs become visible to workers at commit, like any outbox row.
    """
    import pydantic_core

    key = (tuple(order), tuple(lines[0]), tuple(audit), tuple(auto_cancel or ()))
    stmt = _ORDER_WRITE_SQL.get(key)
    if stmt is None:
        oc, lc, ac, jc = (", ".join(cols) for cols in key)
        r_lc, r_ac, r_jc = (", ".join(f"r.{c}" for c in cols) for cols in key[1:])
        job = (
            f", j AS (INSERT INTO jobs (payload, dedupe_key, {jc}) "
            f"SELECT jsonb_build_object('order_id', o.id), 'order:' || o.id || '\\:auto_cancel', {r_jc} "  # \\: is text()'s escaped colon
            f"FROM o, jsonb_populate_record(CAST(NULL AS jobs), CAST(:job_doc AS jsonb)) AS r "
            f"ON CONFLICT (merchant_id, dedupe_key) DO NOTHING) "
        ) if auto_cancel else " "
        stmt = _ORDER_WRITE_SQL[key] = (
            f"WITH o AS (INSERT INTO orders ({oc}) SELECT {oc} "
            f"FROM jsonb_populate_record(CAST(NULL AS orders), CAST(:order_doc AS jsonb)) "
            f"ON CONFLICT DO NOTHING RETURNING id), "
            f"l AS (INSERT INTO order_lines (order_id, {lc}) SELECT o.id, {r_lc} "
            f"FROM o, jsonb_populate_recordset(CAST(NULL AS order_lines), CAST(:lines_doc AS jsonb)) "
            f"WITH ORDINALITY AS r ORDER BY r.ordinality RETURNING id), "
            f"a AS (INSERT INTO audit_events (subject_id, {ac}) SELECT o.id, {r_ac} "
            f"FROM o, jsonb_populate_record(CAST(NULL AS audit_events), CAST(:audit_doc AS jsonb)) AS r)"
            f"{job}SELECT o.id, ARRAY(SELECT id FROM l ORDER BY id) FROM o"
        )
    to_json = pydantic_core.to_json
    params = {
        "order_doc": to_json(order).decode(), "lines_doc": to_json(lines).decode(),
        "audit_doc": to_json(audit).decode(),
    }
    if auto_cancel:
        params["job_doc"] = to_json(auto_cancel).decode()
    row = run_sql_pg(session, stmt, params).first()  # plain SQL, plain values: the driver-level path
    if row is None:
        return None
    order_id, line_ids = row
    if len(line_ids) != len(lines):  # cannot happen: every line row was inserted with the order
        raise RuntimeError(f"order {order_id}: {len(line_ids)} line ids for {len(lines)} lines")
    return int(order_id), [int(i) for i in line_ids]


def insert_audit_event(session: Session, row: dict[str, Any]) -> None:
    """One audit row (every column given), written now with a statement built once: the submit's
    hot path skips the unit-of-work flush that ``kit.audit.record``'s ``session.add`` costs."""
    session.execute(_INSERT_AUDIT_EVENT, row)


def order_lines(session: Session, merchant_id: int, order_id: int, *, lock: bool = False) -> list[OrderLine]:
    stmt = (
        select(OrderLine)
        .where(OrderLine.merchant_id == merchant_id, OrderLine.order_id == order_id)
        .order_by(OrderLine.id)
    )
    if lock:
        stmt = for_update(stmt, session).execution_options(populate_existing=True)
    return list(session.scalars(stmt))


def shipments(session: Session, merchant_id: int, order_id: int) -> list[Shipment]:
    stmt = (
        select(Shipment)
        .where(Shipment.merchant_id == merchant_id, Shipment.order_id == order_id)
        .order_by(Shipment.id)
    )
    return list(session.scalars(stmt))


def order_audit(session: Session, merchant_id: int, order_id: int) -> list[AuditEvent]:
    stmt = (
        select(AuditEvent)
        .where(
            AuditEvent.merchant_id == merchant_id,
            AuditEvent.subject_type == "order",
            AuditEvent.subject_id == order_id,
        )
        .order_by(AuditEvent.id)
    )
    return list(session.scalars(stmt))


def search_orders(
    merchant_id: int,
    *,
    member_id: int | None = None,
    status: str | None = None,
    order_no: str | None = None,
    created_from: dt.datetime | None = None,
    created_to: dt.datetime | None = None,
) -> Select[Any]:
    stmt = select(Order).where(Order.merchant_id == merchant_id)
    if member_id is not None:
        stmt = stmt.where(Order.member_id == member_id)
    if status:
        stmt = stmt.where(Order.status == status)
    if order_no:
        stmt = stmt.where(Order.order_no == order_no)
    if created_from is not None:
        stmt = stmt.where(Order.created_at >= created_from)
    if created_to is not None:
        stmt = stmt.where(Order.created_at < created_to)
    return stmt
