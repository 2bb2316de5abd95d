"""Home page slots: admin CRUD and reorder, and the live home page the store shows.

A slot's target is checked on write: a ``product`` or ``category`` target must be an id of this
merchant, a ``url`` must be http(s), a ``page`` must be given, ``none`` takes no value. On read
the home page shows only enabled slots within their schedule at ``now``, grouped by kind and
ordered by ``sort``; product targets carry a title/price snapshot, and a slot whose product is no
longer on sale (or whose category is gone or hidden) is left out rather than shown broken.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from siyu.catalog import repository as catalog_repo
from siyu.catalog import service as catalog_service
from siyu.kit.errors import DomainError, FieldError, invalid, not_found
from siyu.kit.pagination import Page, PageParams, apply_sort, paginate
from siyu.kit.timeutil import utcnow
from siyu.storefront import repository as repo
from siyu.storefront.models import SLOT_KINDS, HomeSlot
from siyu.storefront.schemas import CategoryRef, HomeItem, HomeOut, SlotIn, SlotOut, SlotUpdate

_TARGET_ZH = {"product": "商品", "category": "分类"}


def _target_value(session: Session, merchant_id: int, target_type: str, value: str | None) -> str | None:
    """The normalised target value, or a 422 on ``body.target_value``."""
    path = "body.target_value"
    value = (value or "").strip() or None
    if target_type == "none":
        if value is not None:
            raise invalid(path, "target_not_allowed", "target_value must be empty when target_type is none",
                          "target_type 为 none 时 target_value 须为空")
        return None
    if value is None:
        raise invalid(path, "target_required", f"target_value is required for target_type {target_type}",
                      f"target_type 为 {target_type} 时须填写 target_value")
    if target_type in ("product", "category"):
        if not value.isdigit():
            raise invalid(path, "invalid_target", f"target_value must be a {target_type} id",
                          f"target_value 须为{_TARGET_ZH[target_type]} ID")
        ref = int(value)
        exists = (
            catalog_repo.product_by_id(session, merchant_id, ref)
            if target_type == "product"
            else catalog_repo.category_by_id(session, merchant_id, ref)
        )
        if exists is None:
            raise invalid(path, "target_not_found", f"{target_type} {ref} does not exist", f"{_TARGET_ZH[target_type]} {ref} 不存在")
        return str(ref)
    if target_type == "url":
        if not value.lower().startswith(("https://", "http://")):
            raise invalid(path, "invalid_url", "target_value must be an http(s) URL", "target_value 须为 http(s) 网址")
        return value
    if any(ch.isspace() for ch in value):  # page
        raise invalid(path, "invalid_page", "a page path has no spaces", "页面路径不能包含空格")
    return value


def _check_schedule(starts_at: dt.datetime | None, ends_at: dt.datetime | None) -> None:
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise invalid("body.ends_at", "ends_before_start", "ends_at must be after starts_at", "结束时间须晚于开始时间")


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(dt.UTC) if value is not None else None


def get_slot(session: Session, merchant_id: int, slot_id: int) -> HomeSlot:
    slot = repo.slot_by_id(session, merchant_id, slot_id)
    if slot is None:
        raise not_found("首页位", "Home slot")
    return slot


def create_slot(session: Session, merchant_id: int, data: SlotIn) -> HomeSlot:
    fields = data.model_dump()
    fields["starts_at"], fields["ends_at"] = _utc(data.starts_at), _utc(data.ends_at)
    _check_schedule(fields["starts_at"], fields["ends_at"])
    fields["target_value"] = _target_value(session, merchant_id, data.target_type, data.target_value)
    slot = HomeSlot(merchant_id=merchant_id, **fields)
    session.add(slot)
    session.flush()
    return slot


def update_slot(session: Session, merchant_id: int, slot_id: int, data: SlotUpdate) -> HomeSlot:
    slot = get_slot(session, merchant_id, slot_id)
    fields: dict[str, Any] = data.model_dump(exclude_unset=True)
    nulls = [n for n in ("kind", "title", "target_type", "sort", "enabled") if n in fields and fields[n] is None]
    if nulls:
        raise DomainError(
            "validation_error", fields=[FieldError(f"body.{n}", "null_not_allowed", f"{n} cannot be null",
                                                   f"{n} 不能为 null") for n in nulls]
        )
    for key in ("starts_at", "ends_at"):
        if key in fields:
            fields[key] = _utc(fields[key])
    _check_schedule(fields.get("starts_at", slot.starts_at), fields.get("ends_at", slot.ends_at))
    if "target_type" in fields or "target_value" in fields:
        target_type = fields.get("target_type", slot.target_type)
        # Changing the type without a new value drops the old one (it meant something else).
        fields["target_value"] = _target_value(session, merchant_id, target_type, fields.get("target_value"))
    for key, val in fields.items():
        setattr(slot, key, val)
    session.flush()
    return slot


def delete_slot(session: Session, merchant_id: int, slot_id: int) -> None:
    session.delete(get_slot(session, merchant_id, slot_id))
    session.flush()


def reorder(session: Session, merchant_id: int, slot_ids: list[int]) -> list[HomeSlot]:
    """Give the listed slots ``sort`` = their position (0, 1, 2...); other slots keep theirs."""
    if len(set(slot_ids)) != len(slot_ids):
        raise invalid("body.ids", "duplicate_ids", "each slot id may appear once", "每个首页位 ID 只能出现一次")
    slots = repo.slots_by_ids(session, merchant_id, slot_ids)
    if len(slots) != len(slot_ids):
        raise not_found("首页位", "Home slot")
    for position, slot_id in enumerate(slot_ids):
        slots[slot_id].sort = position
    session.flush()
    return [slots[i] for i in slot_ids]


SORTS = {"id": HomeSlot.id, "sort": HomeSlot.sort, "kind": HomeSlot.kind, "created_at": HomeSlot.created_at}


def list_slots(
    session: Session, merchant_id: int, params: PageParams, *, kind: str | None = None, enabled: bool | None = None
) -> Page[SlotOut]:
    stmt = repo.search(merchant_id, kind=kind, enabled=enabled)
    if params.sort:
        stmt = apply_sort(stmt, params.sort, SORTS, HomeSlot.id)
    else:
        stmt = stmt.order_by(HomeSlot.kind, HomeSlot.sort, HomeSlot.id)
    rows, total = paginate(session, stmt, params)
    return Page(
        items=[SlotOut.model_validate(s) for s in rows], total=total, page=params.page, page_size=params.page_size
    )


def home(session: Session, merchant_id: int, now: dt.datetime | None = None) -> HomeOut:
    now = now or utcnow()
    slots = repo.live_slots(session, merchant_id, now)
    product_ids = [int(s.target_value) for s in slots if s.target_type == "product" and s.target_value]
    cards = catalog_service.product_cards(session, merchant_id, product_ids)
    categories = {}
    if any(s.target_type == "category" for s in slots):
        categories = {c.id: c for c in catalog_repo.categories(session, merchant_id, visible_only=True)}
    grouped: dict[str, list[HomeItem]] = {kind: [] for kind in SLOT_KINDS}
    for slot in slots:
        item = HomeItem(
            id=slot.id, title=slot.title, image_url=slot.image_url, target_type=slot.target_type,
            target_value=slot.target_value, sort=slot.sort,
        )
        if slot.target_type == "product":
            card = cards.get(int(slot.target_value or 0))
            if card is None:
                continue  # not on sale (or gone): leave the slot out
            item.product = card
        elif slot.target_type == "category":
            category = categories.get(int(slot.target_value or 0))
            if category is None:
                continue
            item.category = CategoryRef(id=category.id, name=category.name)
        grouped.setdefault(slot.kind, []).append(item)
    return HomeOut(generated_at=now, **{k: v for k, v in grouped.items() if k in SLOT_KINDS})
