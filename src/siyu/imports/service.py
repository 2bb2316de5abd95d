"""CSV import: validate everything first, then write everything in one transaction.

- ``dry_run``: parse and validate both files and report every bad row; nothing is written.
- A real run with any bad row raises ``import_has_errors`` carrying the per-row errors as field
  errors (``orders.csv:12.amount_fen``), and the request's transaction writes nothing.
- Re-running an import skips the external ids it already created (``imported_*`` tables), so a
  retried upload is harmless.
- Historical orders are written as completed, paid orders; member statistics (and so lifecycle,
  RFM and predictions) are rebuilt from the orders afterwards with set-based statements.
Bulk writes use multi-row INSERT ... RETURNING with ``sort_by_parameter_order`` so the ids come
back in input order.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationError
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from siyu.audience import repository as audience_repo
from siyu.audience.purchase_facts import bought_at
from siyu.catalog.models import Product, Sku
from siyu.imports.models import ImportedMember, ImportedOrder
from siyu.imports.schemas import ImportReport, MemberRow, OrderRow, RowError
from siyu.kit.errors import DomainError, FieldError, register_messages
from siyu.kit.timeutil import utcnow
from siyu.kit.validation_messages import field_message
from siyu.members.models import Member
from siyu.orders import models as om

CHUNK = 2000

register_messages(
    {
        "import_has_errors": (
            422,
            "导入文件有 {count} 处错误，未导入任何数据",
            "The files have {count} errors; nothing was imported",
        ),
        "import_empty": (422, "请至少提供会员或订单文件", "Provide a members file, an orders file or both"),
    }
)


class _RowError(RowError):
    """A bad row, its message in zh-CN too: a refused import's field errors pick the language;
    the dry run's report shows ``RowError``'s fields only (``message`` in English)."""

    message_zh: str = Field(exclude=True)


@dataclass
class _Parsed:
    members: list[tuple[int, MemberRow]] = field(default_factory=list)
    orders: list[tuple[int, OrderRow]] = field(default_factory=list)
    errors: list[_RowError] = field(default_factory=list)


def _rows(text: str, file: str, required: Iterable[str], errors: list[_RowError]) -> list[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        errors.append(_RowError(file=file, row=1, field=None, code="missing_columns",
                                message=f"missing columns: {', '.join(missing)}",
                                message_zh=f"缺少列：{', '.join(missing)}"))
        return []
    return [(i + 2, row) for i, row in enumerate(reader)]


def _validate(model: type[MemberRow] | type[OrderRow], raw: dict[str, str], file: str, line: int, errors: list[_RowError]) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        for e in exc.errors():
            errors.append(_RowError(file=file, row=line, field=".".join(str(p) for p in e["loc"]) or None,
                                    code=e["type"], message=field_message(e["type"], "en", e.get("ctx")),
                                    message_zh=field_message(e["type"], "zh-CN", e.get("ctx"))))
        return None


def parse(members_csv: str | None, orders_csv: str | None) -> _Parsed:
    parsed = _Parsed()
    if members_csv:
        seen: set[str] = set()
        for line, raw in _rows(members_csv, "members.csv", ("external_id",), parsed.errors):
            row = _validate(MemberRow, raw, "members.csv", line, parsed.errors)
            if row is None:
                continue
            if row.external_id in seen:
                parsed.errors.append(_RowError(file="members.csv", row=line, field="external_id", code="duplicate",
                                               message=f"external_id {row.external_id} appears twice",
                                               message_zh=f"external_id {row.external_id} 出现了两次"))
                continue
            seen.add(row.external_id)
            parsed.members.append((line, row))
    if orders_csv:
        seen_o: set[str] = set()
        for line, raw in _rows(orders_csv, "orders.csv", ("external_order_id", "member_external_id", "paid_at", "amount_fen"), parsed.errors):
            order = _validate(OrderRow, raw, "orders.csv", line, parsed.errors)
            if order is None:
                continue
            if order.external_order_id in seen_o:
                parsed.errors.append(_RowError(file="orders.csv", row=line, field="external_order_id", code="duplicate",
                                               message=f"external_order_id {order.external_order_id} appears twice",
                                               message_zh=f"external_order_id {order.external_order_id} 出现了两次"))
                continue
            seen_o.add(order.external_order_id)
            parsed.orders.append((line, order))
    return parsed


def _existing(session: Session, model: type[ImportedMember] | type[ImportedOrder], merchant_id: int, ids: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    target = model.member_id if model is ImportedMember else model.order_id  # type: ignore[union-attr]
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        stmt = select(model.external_id, target).where(model.merchant_id == merchant_id, model.external_id.in_(chunk))
        out.update({e: int(i) for e, i in session.execute(stmt).all()})
    return out


def _by_place(e: RowError) -> tuple[str, int]:
    return e.file, e.row


def run_import(
    session: Session, merchant_id: int, *, members_csv: str | None, orders_csv: str | None, dry_run: bool
) -> ImportReport:
    if not members_csv and not orders_csv:
        raise DomainError("import_empty")
    parsed = parse(members_csv, orders_csv)
    errors = parsed.errors
    known_members = _existing(session, ImportedMember, merchant_id, [r.external_id for _, r in parsed.members])
    new_members = [(line, r) for line, r in parsed.members if r.external_id not in known_members]
    file_member_ids = {r.external_id for _, r in parsed.members}
    referenced = sorted({o.member_external_id for _, o in parsed.orders} - file_member_ids - set(known_members))
    known_members.update(_existing(session, ImportedMember, merchant_id, referenced))
    known_orders = _existing(session, ImportedOrder, merchant_id, [o.external_order_id for _, o in parsed.orders])
    sku_codes = sorted({o.sku_code for _, o in parsed.orders if o.sku_code})
    skus: dict[str, tuple[int, int, str]] = {}
    for start in range(0, len(sku_codes), CHUNK):
        stmt = (
            select(Sku.sku_code, Sku.id, Sku.product_id, Product.title)
            .join(Product, Product.id == Sku.product_id)
            .where(Sku.merchant_id == merchant_id, Sku.sku_code.in_(sku_codes[start : start + CHUNK]))
        )
        skus.update({c: (i, p, t) for c, i, p, t in session.execute(stmt).all()})
    new_orders: list[tuple[int, OrderRow]] = []
    for line, order in parsed.orders:
        if order.external_order_id in known_orders:
            continue
        if order.member_external_id not in file_member_ids and order.member_external_id not in known_members:
            errors.append(_RowError(file="orders.csv", row=line, field="member_external_id", code="member_unknown",
                                    message=f"no member {order.member_external_id} in members.csv or earlier imports",
                                    message_zh=f"members.csv 和以往导入中都没有会员 {order.member_external_id}"))
            continue
        if order.sku_code and order.sku_code not in skus:
            errors.append(_RowError(file="orders.csv", row=line, field="sku_code", code="sku_unknown",
                                    message=f"no SKU {order.sku_code}", message_zh=f"SKU {order.sku_code} 不存在"))
            continue
        new_orders.append((line, order))
    errors.sort(key=_by_place)
    report = ImportReport(
        dry_run=dry_run, members_seen=len(parsed.members), members_created=0 if dry_run else len(new_members),
        members_skipped=len(parsed.members) - len(new_members), orders_seen=len(parsed.orders),
        orders_created=0 if dry_run else len(new_orders), orders_skipped=len(parsed.orders) - len(new_orders) - sum(
            1 for e in errors if e.file == "orders.csv" and e.code in ("member_unknown", "sku_unknown")
        ),
        errors=list(errors), committed=False,
    )
    if dry_run:
        return report
    if errors:
        raise DomainError(
            "import_has_errors", count=len(errors),
            fields=[FieldError(path=f"{e.file}:{e.row}" + (f".{e.field}" if e.field else ""), code=e.code,
                               message=e.message, message_zh=e.message_zh)
                    for e in errors[:500]],
        )
    member_ids = _write_members(session, merchant_id, new_members)
    known_members.update(member_ids)
    _write_orders(session, merchant_id, new_orders, known_members, skus)
    touched = {known_members[o.member_external_id] for _, o in new_orders} | set(member_ids.values())
    audience_repo.rebuild_stats(session, merchant_id, sorted(touched))
    report.committed = True
    return report


def _write_members(session: Session, merchant_id: int, rows: list[tuple[int, MemberRow]]) -> dict[str, int]:
    now = utcnow()
    out: dict[str, int] = {}
    for start in range(0, len(rows), CHUNK):
        chunk = [r for _, r in rows[start : start + CHUNK]]
        values = [
            {"merchant_id": merchant_id, "nickname": r.nickname, "phone": r.phone, "gender": r.gender,
             "province": r.province, "city": r.city, "registered_at": r.registered_at or now,
             "registration_channel": r.registration_channel or "import", "status": "active",
             "created_at": now, "updated_at": now}
            for r in chunk
        ]
        ids = session.execute(insert(Member).returning(Member.id, sort_by_parameter_order=True), values).scalars().all()
        out.update({r.external_id: int(i) for r, i in zip(chunk, ids, strict=True)})
        session.execute(insert(ImportedMember), [
            {"merchant_id": merchant_id, "external_id": r.external_id, "member_id": int(i), "imported_at": now}
            for r, i in zip(chunk, ids, strict=True)
        ])
    return out


def _write_orders(
    session: Session, merchant_id: int, rows: list[tuple[int, OrderRow]], members: dict[str, int],
    skus: dict[str, tuple[int, int, str]],
) -> None:
    now = utcnow()
    for start in range(0, len(rows), CHUNK):
        chunk = [r for _, r in rows[start : start + CHUNK]]
        values = [
            {"merchant_id": merchant_id, "order_no": f"IMP{merchant_id}-{r.external_order_id}"[:32],
             "member_id": members[r.member_external_id], "status": om.COMPLETED, "refund_status": om.REFUND_NONE,
             "idempotency_key": f"import:{r.external_order_id}"[:80], "request_hash": "import",
             "goods_amount": r.amount_fen, "discount_amount": 0, "points_used": 0, "freight_amount": 0,
             "payable_amount": r.amount_fen, "paid_amount": r.amount_fen, "refunded_amount": 0, "pricing": [],
             "address": {}, "channel": "import", "paid_at": r.paid_at, "completed_at": r.paid_at,
             "created_at": r.paid_at, "updated_at": now}
            for r in chunk
        ]
        ids = session.execute(insert(om.Order).returning(om.Order.id, sort_by_parameter_order=True), values).scalars().all()
        lines = []
        for r, order_id in zip(chunk, ids, strict=True):
            sku_id, product_id, title = skus.get(r.sku_code or "", (0, 0, "历史订单 (imported)"))
            unit = r.amount_fen // r.quantity
            lines.append(
                {"merchant_id": merchant_id, "order_id": int(order_id), "product_id": product_id, "sku_id": sku_id,
                 "title": title[:120], "spec_text": "", "quantity": r.quantity, "list_price": unit, "sale_price": unit,
                 "cost_price": 0, "goods_amount": r.amount_fen, "discounts": {}, "discount_amount": 0,
                 "payable_amount": r.amount_fen, "bonus_points": 0, "refunded_quantity": 0, "refunded_amount": 0,
                 # the purchase facts segments read (a bulk insert passes no ORM event)
                 "member_id": members[r.member_external_id], "bought_at": bought_at(om.COMPLETED, r.paid_at)}
            )
        session.execute(insert(om.OrderLine), lines)
        session.execute(insert(ImportedOrder), [
            {"merchant_id": merchant_id, "external_id": r.external_order_id, "order_id": int(i), "imported_at": now}
            for r, i in zip(chunk, ids, strict=True)
        ])
