"""Flash sales: activities, items, sessions, pricing, the purchase through the gate, release.

Lifecycle of an activity::

    draft ──start──► scheduled ──(starts_at: job)──► active ──(ends_at: job, or end)──► ended

Its *effective* status is computed from the clock (a scheduled activity past ``starts_at`` is
active even before its job ran), so a late worker never opens or closes a sale at the wrong
time; the jobs only do the bookkeeping (load Redis, return unsold stock).

Buying (``checkout.submit`` with ``options={"flash_sale": {"item_id": N}}``, or ``buy``):

1. The ITEM_PROMOTIONS stage (``apply_to_pricing``) checks the activity is in a session slot
   now (else ``flash_sale_not_started`` / ``flash_sale_ended``), prices the line at the flash
   price (``ctx.discount``) and flags it (``activity_stock`` keeps it out of the normal stock
   reservation; ``no_coupon`` / ``no_points`` / ``no_order_promotions`` carry the stacking
   rules to later stages).
2. The submit hook (``take_units``) acquires through the gate — Redis first when configured,
   then the database conditional updates in the order transaction — and writes the
   ``FlashSalePurchase`` ledger row. A refusal raises 409 ``flash_sale_sold_out`` /
   ``flash_sale_limit_reached`` and the whole submit rolls back (Redis units are given back by
   the rollback compensation, see ``gate.py``). Between two session slots of a running
   activity the stage refuses with ``flash_sale_outside_session`` (with the next start).
3. ``order.cancelled`` (customer, operator, payment timeout) → ``release_order``: the ledger
   row goes reserved → released exactly once and the units return to the activity (or to the
   SKU if the activity already ended). ``order.paid`` → the row becomes paid.

Services never commit.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import redis
from sqlalchemy.orm import Session

from siyu.catalog import stock
from siyu.catalog.models import KIND_VIRTUAL, Product, Sku
from siyu.flash_sales import cache, gate
from siyu.flash_sales import repository as repo
from siyu.flash_sales.models import (
    ACTIVE,
    DRAFT,
    ENDED,
    PAID,
    REFUNDED,
    RELEASED,
    RESERVED,
    SCHEDULED,
    FlashSale,
    FlashSaleItem,
    FlashSalePurchase,
)
from siyu.flash_sales.schemas import (
    BuyIn,
    FlashSaleDetailOut,
    FlashSaleIn,
    FlashSaleItemIn,
    FlashSaleItemOut,
    FlashSaleItemUpdate,
    FlashSaleOut,
    FlashSaleStatsOut,
    FlashSaleUpdate,
    ItemStatsOut,
    SessionOut,
    Slot,
    StoreItemDetailOut,
    StoreItemOut,
)
from siyu.kit import audit
from siyu.kit.errors import DomainError, catalogue, invalid, not_found, register_messages
from siyu.kit.outbox import enqueue
from siyu.kit.timeutil import utcnow
from siyu.orders import checkout
from siyu.orders import service as orders_service
from siyu.orders.freight import VIRTUAL
from siyu.orders.models import Order
from siyu.orders.pricing import ITEM_PROMOTIONS, PricingContext
from siyu.orders.schemas import CheckoutIn
from siyu.promotions.service import virtual_product_refused
from siyu.tenancy import service as tenancy_service

log = logging.getLogger("siyu.flash_sales")

_MESSAGES = {
    "flash_sale_not_started": (409, "秒杀尚未开始", "The flash sale has not started yet"),
    "flash_sale_ended": (409, "秒杀已结束", "The flash sale has ended"),
    "flash_sale_outside_session": (
        409,
        "当前不在秒杀场次内，下一场 {next_session_local} 开始",
        "Not inside a flash-sale session now; the next one starts at {next_session_local} (store time)",
    ),
    "flash_sale_sold_out": (409, "手慢了，秒杀商品已抢光", "The flash-sale item is sold out"),
    "flash_sale_limit_reached": (
        409,
        "该秒杀商品每人限购 {limit} 件",
        "The flash-sale item is limited to {limit} per member",
    ),
    "flash_sale_state_invalid": (
        409,
        "秒杀活动当前状态（{status}）不允许此操作",
        "The flash sale cannot do this in its state ({status})",
    ),
}
register_messages({k: v for k, v in _MESSAGES.items() if k not in catalogue()})

FLAG = "flash_sale"
ID_MAX = 2**63 - 1  # BIGINT: a larger id would fail in the query (a 500)
RESERVATION = "flash_sale"
PREACQUIRED = "siyu.flash_sales.preacquired"
MAX_SESSION_DAYS = 400
Actor = tuple[str, int | None]


def _sale_not_found() -> DomainError:
    return not_found("秒杀活动", "Flash sale")


def _item_not_found() -> DomainError:
    return not_found("秒杀商品", "Flash-sale item")


def _aware(value: dt.datetime, path: str) -> dt.datetime:
    if value.tzinfo is None:
        raise invalid(path, "timezone_required", "give the time with its UTC offset", "时间需带时区偏移（如 +08:00）")
    return value.astimezone(dt.UTC)


# -- session slots ---------------------------------------------------------------------------------


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def check_slots(slots: list[Slot], path: str = "slots") -> list[dict[str, str]]:
    """Each slot starts before it ends; slots do not overlap. Returned sorted by start."""
    spans = []
    for i, slot in enumerate(slots):
        start, end = _minutes(slot.start), _minutes(slot.end)  # Slot's patterns: start before 24:00
        if end <= start:
            raise invalid(f"{path}.{i}.end", "slot_end_before_start", "a slot must end after it starts",
                          "场次结束时间须晚于开始时间")
        spans.append((start, end, i, slot))
    spans.sort()
    for (_, prev_end, _, _), (start, _, i, _) in itertools.pairwise(spans):
        if start < prev_end:
            raise invalid(f"{path}.{i}", "slots_overlap", "session slots must not overlap", "场次时间不能重叠")
    return [{"start": s.start, "end": s.end} for _, _, _, s in spans]


def _day_sessions(sale: FlashSale, tz: ZoneInfo, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
    out = []
    for slot in sale.slots:
        start = dt.datetime.combine(day, dt.time.min, tzinfo=tz) + dt.timedelta(minutes=_minutes(slot["start"]))
        end = dt.datetime.combine(day, dt.time.min, tzinfo=tz) + dt.timedelta(minutes=_minutes(slot["end"]))
        start_utc, end_utc = max(start.astimezone(dt.UTC), sale.starts_at), min(end.astimezone(dt.UTC), sale.ends_at)
        if start_utc < end_utc:
            out.append((start_utc, end_utc))
    return out


def sessions_between(
    sale: FlashSale, tz_name: str, since: dt.datetime, until: dt.datetime
) -> list[tuple[dt.datetime, dt.datetime]]:
    """The activity's sessions (UTC start, end) that overlap ``[since, until)``."""
    lo, hi = max(since, sale.starts_at), min(until, sale.ends_at)
    if lo >= hi:
        return []
    if not sale.slots:
        return [(sale.starts_at, sale.ends_at)]
    tz = ZoneInfo(tz_name)
    day, last = lo.astimezone(tz).date() - dt.timedelta(days=1), hi.astimezone(tz).date()
    out: list[tuple[dt.datetime, dt.datetime]] = []
    for _ in range(MAX_SESSION_DAYS):
        if day > last:
            break
        out += [(s, e) for s, e in _day_sessions(sale, tz, day) if e > lo and s < hi]
        day += dt.timedelta(days=1)
    return out


def session_at(sale: FlashSale, tz_name: str, now: dt.datetime) -> tuple[str, tuple[dt.datetime, dt.datetime] | None]:
    """``("current", session)``, ``("upcoming", next session)`` or ``("ended", None)`` as of ``now``
    (``"draft"`` for an unpublished activity)."""
    if sale.status == DRAFT:
        return DRAFT, None
    if sale.status == ENDED or now >= sale.ends_at:
        return ENDED, None
    for start, end in sessions_between(sale, tz_name, min(now, sale.starts_at), sale.ends_at):
        if start <= now < end:
            return "current", (start, end)
        if start > now:
            return "upcoming", (start, end)
    return ENDED, None


def effective_status(sale: FlashSale, now: dt.datetime) -> str:
    if sale.status in (DRAFT, ENDED):
        return sale.status
    if now >= sale.ends_at:
        return ENDED
    return ACTIVE if now >= sale.starts_at else SCHEDULED


def item_limit(item: FlashSaleItem, sale: FlashSale) -> int:
    return item.per_member_limit or sale.per_member_limit


def _timezone(session: Session, merchant_id: int) -> str:
    return tenancy_service.get_merchant(session, merchant_id).timezone


# -- redis helpers -----------------------------------------------------------------------------------


def db_snapshot(session: Session, merchant_id: int, item_id: int) -> gate.Snapshot:
    """What Redis should hold for an item, from the database (the truth)."""
    found = repo.item(session, merchant_id, item_id, refresh=True)
    if found is None or found.closed:
        return 0, {}
    return found.activity_stock - found.sold, repo.member_units(session, merchant_id, item_id)


def redis_gate(session: Session, client: redis.Redis | None = None) -> gate.RedisGate | None:
    client = client if client is not None else gate.redis_for(session)
    if client is None:
        return None
    return gate.gate_for(client, gate.prefix_for(session)).with_loader(lambda m, i: db_snapshot(session, m, i))


def _after_commit_redis(session: Session, fn: Callable[[gate.RedisGate], None]) -> None:
    rg = redis_gate(session)
    if rg is not None:
        gate.on_commit(session, lambda: fn(rg))


def load_redis(session: Session, merchant_id: int, sale_id: int, *, force: bool = False) -> int:
    """Load (``force``: rewrite) the Redis keys of the activity's open items from the database."""
    rg = redis_gate(session)
    if rg is None:
        return 0
    count = 0
    for it in repo.items(session, merchant_id, [sale_id]):
        if it.closed:
            continue
        remaining, members = db_snapshot(session, merchant_id, it.id)
        rg.load(merchant_id, it.id, remaining, members, force=force)
        count += 1
    return count


# -- admin: activities -------------------------------------------------------------------------------


def get_flash_sale(session: Session, merchant_id: int, sale_id: int, *, lock: bool = False) -> FlashSale:
    found = repo.flash_sale(session, merchant_id, sale_id, lock=lock)
    if found is None:
        raise _sale_not_found()
    return found


def _check_window(starts_at: dt.datetime, ends_at: dt.datetime) -> None:
    if ends_at <= starts_at:
        raise invalid("ends_at", "window_invalid", "ends_at must be after starts_at", "结束时间须晚于开始时间")


def create_flash_sale(session: Session, merchant_id: int, data: FlashSaleIn, *, actor: Actor) -> FlashSale:
    starts_at, ends_at = _aware(data.starts_at, "starts_at"), _aware(data.ends_at, "ends_at")
    _check_window(starts_at, ends_at)
    sale = FlashSale(
        merchant_id=merchant_id, name=data.name.strip(), status=DRAFT, starts_at=starts_at, ends_at=ends_at,
        slots=check_slots(data.slots), allows_coupons=data.allows_coupons, allows_points=data.allows_points,
        allows_order_promotions=data.allows_order_promotions, free_shipping=data.free_shipping,
        per_member_limit=data.per_member_limit,
    )
    session.add(sale)
    session.flush()
    for i, item_in in enumerate(data.items):
        add_item(session, merchant_id, sale.id, item_in, actor=actor, path=f"items.{i}")
    audit.record(session, merchant_id, "flash_sale", sale.id, "created", to_state=DRAFT, actor=actor)
    return sale


def update_flash_sale(
    session: Session, merchant_id: int, sale_id: int, data: FlashSaleUpdate, *, actor: Actor, now: dt.datetime | None = None
) -> FlashSale:
    """Rules can change until the activity starts (a published one before its start reschedules)."""
    now = now or utcnow()
    sale = get_flash_sale(session, merchant_id, sale_id, lock=True)
    if effective_status(sale, now) not in (DRAFT, SCHEDULED):
        raise DomainError("flash_sale_state_invalid", status=effective_status(sale, now))
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None:
            raise invalid(key, "required", f"{key} cannot be null", f"{key} 不能为 null")
    starts_at = _aware(data.starts_at, "starts_at") if data.starts_at is not None else sale.starts_at
    ends_at = _aware(data.ends_at, "ends_at") if data.ends_at is not None else sale.ends_at
    _check_window(starts_at, ends_at)
    if sale.status == SCHEDULED and starts_at <= now:
        raise invalid("starts_at", "in_the_past", "a published activity cannot be moved to start in the past",
                      "已发布的活动不能把开始时间改到过去")
    if data.slots is not None:
        sale.slots = check_slots(data.slots)
    for key in ("allows_coupons", "allows_points", "allows_order_promotions", "free_shipping", "per_member_limit"):
        if key in changes:
            setattr(sale, key, changes[key])
    if data.name is not None:
        sale.name = data.name.strip()
    sale.starts_at, sale.ends_at = starts_at, ends_at
    session.flush()
    if sale.status == SCHEDULED:
        _schedule_jobs(session, sale)
    audit.record(session, merchant_id, "flash_sale", sale.id, "updated", actor=actor, data={"fields": sorted(changes)})
    return sale


def _schedule_jobs(session: Session, sale: FlashSale) -> None:
    """Activation (load Redis) at the start and the end (return stock) at the end; the keys carry
    the times, so a rescheduled activity gets new jobs and the old ones find nothing to do."""
    m = sale.merchant_id
    enqueue(
        session, m, "flash_sales.activate", {"flash_sale_id": sale.id}, run_at=sale.starts_at,
        dedupe_key=f"flash_sale:{sale.id}:activate:{sale.starts_at.isoformat()}",
    )
    enqueue(
        session, m, "flash_sales.end", {"flash_sale_id": sale.id}, run_at=sale.ends_at,
        dedupe_key=f"flash_sale:{sale.id}:end:{sale.ends_at.isoformat()}",
    )


def start(
    session: Session, merchant_id: int, sale_id: int, *, actor: Actor, now: dt.datetime | None = None
) -> FlashSale:
    """Publish: draft → scheduled (or straight to active inside the window). Loads Redis."""
    from siyu.worker.runner import add_schedule

    now = now or utcnow()
    sale = get_flash_sale(session, merchant_id, sale_id, lock=True)
    if sale.status != DRAFT:
        raise DomainError("flash_sale_state_invalid", status=effective_status(sale, now))
    if now >= sale.ends_at:
        raise invalid("ends_at", "in_the_past", "the activity's window is already over", "活动时间已结束")
    if not repo.items(session, merchant_id, [sale.id]):
        raise invalid("items", "items_required", "add at least one item before starting", "请先添加至少一个商品再开始")
    sale.status = ACTIVE if now >= sale.starts_at else SCHEDULED
    sale.started_at = now
    session.flush()
    _schedule_jobs(session, sale)
    add_schedule(
        session, merchant_id, "flash_sales.reconcile", "flash_sales.reconcile", "* * * * *",
        _timezone(session, merchant_id),
    )
    audit.record(session, merchant_id, "flash_sale", sale.id, "started", from_state=DRAFT, to_state=sale.status, actor=actor)
    load_redis(session, merchant_id, sale.id)
    return sale


def activate_if_due(session: Session, merchant_id: int, sale_id: int, now: dt.datetime) -> bool:
    sale = repo.flash_sale(session, merchant_id, sale_id, lock=True)
    if sale is None or sale.status not in (SCHEDULED, ACTIVE) or now >= sale.ends_at:
        return False
    if sale.status == SCHEDULED:
        if now < sale.starts_at:
            return False
        sale.status = ACTIVE
        audit.record(session, merchant_id, "flash_sale", sale.id, "activated", from_state=SCHEDULED, to_state=ACTIVE)
        session.flush()
    load_redis(session, merchant_id, sale.id)
    return True


def end(
    session: Session, merchant_id: int, sale_id: int, *, actor: Actor, now: dt.datetime | None = None,
    only_if_due: bool = False,
) -> FlashSale | None:
    """End the activity: no more sales, unsold activity stock back to the SKUs, Redis keys gone.

    Idempotent per item (``close_items`` moves each item once). ``only_if_due`` (the job) does
    nothing before ``ends_at`` or on an activity already ended.
    """
    now = now or utcnow()
    sale = repo.flash_sale(session, merchant_id, sale_id, lock=True)
    if sale is None:
        if only_if_due:
            return None
        raise _sale_not_found()
    if sale.status == ENDED:
        if only_if_due:
            return None
        raise DomainError("flash_sale_state_invalid", status=ENDED)
    if only_if_due and (sale.status == DRAFT or now < sale.ends_at):
        return None
    from_state = sale.status
    sale.status = ENDED
    sale.ended_at = now
    returned = repo.close_items(session, merchant_id, sale.id)
    back: dict[int, int] = {}
    for _, sku_id, units in returned:
        if units > 0:
            back[sku_id] = back.get(sku_id, 0) + units
    stock.release(session, merchant_id, back)
    session.flush()
    audit.record(
        session, merchant_id, "flash_sale", sale.id, "ended", from_state=from_state, to_state=ENDED, actor=actor,
        data={"returned": {str(k): v for k, v in back.items()}},
    )
    item_ids = [item_id for item_id, _, _ in returned]

    def _clear(rg: gate.RedisGate) -> None:
        for item_id in item_ids:
            rg.clear(merchant_id, item_id)

    _after_commit_redis(session, _clear)
    return sale


# -- admin: items ----------------------------------------------------------------------------------------


def _sku(session: Session, merchant_id: int, sku_id: int) -> tuple[Sku, Product]:
    found = repo.skus_with_products(session, merchant_id, [sku_id]).get(sku_id)
    if found is None:
        raise DomainError("sku_not_found", sku_id=sku_id)
    return found


def _check_price(flash_price: int, sku: Sku, path: str) -> None:
    if flash_price >= sku.sale_price:
        raise invalid(path, "price_not_below_sale_price", f"the flash price must be below the sale price {sku.sale_price}",
                      f"秒杀价须低于售价 {sku.sale_price}")


def _open_sale(session: Session, merchant_id: int, sale_id: int, now: dt.datetime) -> FlashSale:
    sale = get_flash_sale(session, merchant_id, sale_id, lock=True)
    status = effective_status(sale, now)
    if status == ENDED:
        raise DomainError("flash_sale_state_invalid", status=status)
    return sale


def add_item(
    session: Session, merchant_id: int, sale_id: int, data: FlashSaleItemIn, *, actor: Actor, path: str = "",
    now: dt.datetime | None = None,
) -> FlashSaleItem:
    """Add a SKU: its activity stock is taken out of the SKU's stock now (409 ``insufficient_stock``)."""
    prefix = f"{path}." if path else ""
    sale = _open_sale(session, merchant_id, sale_id, now or utcnow())
    sku, product = _sku(session, merchant_id, data.sku_id)
    if product.kind == KIND_VIRTUAL:  # a membership card is sold at its plan's price only
        raise virtual_product_refused(sku.id, f"{prefix}sku_id")
    _check_price(data.flash_price, sku, f"{prefix}flash_price")
    if any(it.sku_id == sku.id for it in repo.items(session, merchant_id, [sale.id])):
        raise invalid(f"{prefix}sku_id", "duplicate_sku", "the SKU is already in this activity", "该 SKU 已在本活动中")
    stock.reserve(session, merchant_id, {sku.id: data.activity_stock})
    item = FlashSaleItem(
        merchant_id=merchant_id, flash_sale_id=sale.id, sku_id=sku.id, product_id=product.id,
        flash_price=data.flash_price, activity_stock=data.activity_stock,
        per_member_limit=data.per_member_limit, sort=data.sort, closed=False, returned_stock=0,
    )
    session.add(item)
    session.flush()
    repo.create_shards(session, merchant_id, item.id, data.activity_stock)
    audit.record(
        session, merchant_id, "flash_sale", sale.id, "item_added", actor=actor,
        data={"item_id": item.id, "sku_id": sku.id, "activity_stock": data.activity_stock},
    )
    if sale.status != DRAFT:
        item_id, units = item.id, data.activity_stock

        def _load(rg: gate.RedisGate) -> None:
            rg.load(merchant_id, item_id, units, {})

        _after_commit_redis(session, _load)
    return item


def _item_of(session: Session, merchant_id: int, sale_id: int, item_id: int) -> FlashSaleItem:
    found = repo.item(session, merchant_id, item_id, refresh=True)
    if found is None or found.flash_sale_id != sale_id:
        raise _item_not_found()
    return found


def update_item(
    session: Session, merchant_id: int, sale_id: int, item_id: int, data: FlashSaleItemUpdate, *, actor: Actor,
    now: dt.datetime | None = None,
) -> FlashSaleItem:
    """Change the price (before the start), the limit, or the activity stock: raising takes more
    SKU stock, lowering (never below ``sold``) gives it back."""
    now = now or utcnow()
    sale = _open_sale(session, merchant_id, sale_id, now)
    item = _item_of(session, merchant_id, sale_id, item_id)
    changes = data.model_dump(exclude_unset=True)
    for key in ("flash_price", "activity_stock", "sort"):
        if key in changes and changes[key] is None:
            raise invalid(key, "required", f"{key} cannot be null", f"{key} 不能为 null")
    if data.flash_price is not None and data.flash_price != item.flash_price:
        if effective_status(sale, now) == ACTIVE:
            raise DomainError("flash_sale_state_invalid", status=ACTIVE)
        sku, _ = _sku(session, merchant_id, item.sku_id)
        _check_price(data.flash_price, sku, "flash_price")
        item.flash_price = data.flash_price
    if "per_member_limit" in changes:
        item.per_member_limit = data.per_member_limit
    if data.sort is not None:
        item.sort = data.sort
    session.flush()
    delta = 0 if data.activity_stock is None else data.activity_stock - item.activity_stock
    if delta > 0:
        stock.reserve(session, merchant_id, {item.sku_id: delta})
    if delta:
        if not repo.set_activity_stock(session, merchant_id, item.id, delta):
            raise invalid("activity_stock", "below_sold", "the activity stock cannot go below what was sold",
                          "活动库存不能少于已售数量")
        if delta < 0:
            stock.release(session, merchant_id, {item.sku_id: -delta})
        if sale.status != DRAFT:
            _after_commit_redis(session, lambda rg: rg.adjust(merchant_id, item_id, delta))
    audit.record(
        session, merchant_id, "flash_sale", sale.id, "item_updated", actor=actor,
        data={"item_id": item.id, "fields": sorted(changes), "stock_delta": delta},
    )
    session.refresh(item)
    return item


def delete_item(
    session: Session, merchant_id: int, sale_id: int, item_id: int, *, actor: Actor, now: dt.datetime | None = None
) -> None:
    """Remove an item nobody bought; its activity stock goes back to the SKU."""
    sale = _open_sale(session, merchant_id, sale_id, now or utcnow())
    item = _item_of(session, merchant_id, sale_id, item_id)
    units, sku_id = item.activity_stock, item.sku_id
    if repo.delete_item(session, merchant_id, item.id) is None:
        raise invalid("item_id", "item_has_sales", "an item with sales cannot be removed; end the activity instead",
                      "已有销量的商品不能移除，请改为结束活动")
    stock.release(session, merchant_id, {sku_id: units})
    session.delete(item)
    session.flush()
    audit.record(session, merchant_id, "flash_sale", sale.id, "item_removed", actor=actor, data={"item_id": item_id})
    _after_commit_redis(session, lambda rg: rg.clear(merchant_id, item_id))


# -- admin: reads ----------------------------------------------------------------------------------------


def detail(session: Session, merchant_id: int, sale: FlashSale, now: dt.datetime | None = None) -> FlashSaleDetailOut:
    return FlashSaleDetailOut(
        **FlashSaleOut.model_validate(sale).model_dump(),
        effective_status=effective_status(sale, now or utcnow()),
        items=[FlashSaleItemOut.model_validate(i) for i in repo.items(session, merchant_id, [sale.id])],
    )


def stats(session: Session, merchant_id: int, sale_id: int) -> FlashSaleStatsOut:
    sale = get_flash_sale(session, merchant_id, sale_id)
    per_item = repo.purchase_stats(session, merchant_id, sale.id)
    rows = []
    for it in repo.items(session, merchant_id, [sale.id]):
        by_status = per_item.get(it.id, {})

        def units(status: str, by: dict[str, dict[str, int]] = by_status) -> int:
            return by.get(status, {}).get("units", 0)

        paid = by_status.get(PAID, {})
        rows.append(
            ItemStatsOut(
                item_id=it.id, sku_id=it.sku_id, activity_stock=it.activity_stock + it.returned_stock, sold=it.sold,
                reserved_units=units(RESERVED), paid_units=units(PAID), paid_orders=paid.get("orders", 0),
                released_units=units(RELEASED) + units(REFUNDED), gmv=paid.get("amount", 0),
            )
        )
    return FlashSaleStatsOut(
        flash_sale_id=sale.id, activity_stock=sum(r.activity_stock for r in rows), sold=sum(r.sold for r in rows),
        reserved_units=sum(r.reserved_units for r in rows), paid_units=sum(r.paid_units for r in rows),
        paid_orders=sum(r.paid_orders for r in rows), released_units=sum(r.released_units for r in rows),
        gmv=sum(r.gmv for r in rows), items=rows,
    )


# -- pricing stage and submit hook ---------------------------------------------------------------------


def _option_item_id(options: dict[str, Any]) -> int:
    raw = options.get(FLAG)
    item_id = raw.get("item_id") if isinstance(raw, dict) else None
    if not isinstance(item_id, int) or isinstance(item_id, bool) or not 0 < item_id <= ID_MAX:
        raise invalid("options.flash_sale.item_id", "required", "give the flash-sale item id", "请提供秒杀商品 ID（item_id）")
    return item_id


def check_open(sale: FlashSale, tz: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The current session, or ``flash_sale_not_started`` (before the window),
    ``flash_sale_outside_session`` (inside the window, between two session slots) or
    ``flash_sale_ended`` (a draft is 404)."""
    state, span = session_at(sale, tz, now)
    if state == DRAFT:
        raise _item_not_found()
    if state == "upcoming" and span is not None and now >= sale.starts_at:
        # the message says the store's wall clock; the detail keeps the instant (UTC)
        raise DomainError("flash_sale_outside_session", next_session_starts_at=span[0].isoformat(),
                          next_session_local=span[0].astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M"))
    if state == "upcoming":
        raise DomainError("flash_sale_not_started")
    if state == ENDED or span is None:
        raise DomainError("flash_sale_ended")
    return span


def apply_to_pricing(ctx: PricingContext) -> None:
    """The ITEM_PROMOTIONS stage: price the flash-sale line at the flash price, inside a session."""
    if FLAG not in ctx.options:
        return
    item_id = _option_item_id(ctx.options)
    found = repo.item_with_sale(ctx.session, ctx.merchant_id, item_id)
    if found is None:
        raise _item_not_found()
    item, sale = found
    check_open(sale, ctx.timezone, ctx.now)
    if item.closed:
        raise DomainError("flash_sale_ended")
    idx = next((i for i, ln in enumerate(ctx.lines) if ln.sku_id == item.sku_id), None)
    if idx is None:
        raise invalid("options.flash_sale.item_id", "item_not_in_order", "the flash-sale SKU is not in this order",
                      "秒杀商品不在此订单中")
    line = ctx.lines[idx]
    if line.flags.get(VIRTUAL):  # made virtual (a card plan sells it) after the item was added
        raise virtual_product_refused(line.sku_id, "options.flash_sale.item_id")
    limit = item_limit(item, sale)
    if line.quantity > limit:
        raise DomainError("flash_sale_limit_reached", limit=limit)
    amount = max(0, line.amount - item.flash_price * line.quantity)
    ctx.discount(
        ITEM_PROMOTIONS, f"flash_sale:{sale.id}", "秒杀价", amount, [idx],
        details={"flash_sale_id": sale.id, "item_id": item.id, "flash_price": item.flash_price},
    )
    line.flags.update(
        {
            "activity": f"flash_sale:{sale.id}",
            "flash_sale_item_id": item.id,
            "no_coupon": not sale.allows_coupons,
            "no_points": not sale.allows_points,
            "no_order_promotions": not sale.allows_order_promotions,
            "activity_stock": True,
        }
    )
    # ``no_coupon`` carries the activity's rule; ``line.coupons_allowed`` stays the product's own
    # setting, so the coupon stage can tell the customer which of the two excluded the line.
    if sale.free_shipping:
        line.flags["free_shipping"] = True
    ctx.reservations[RESERVATION] = {
        "item_id": item.id, "flash_sale_id": sale.id, "line_index": idx, "quantity": line.quantity, "limit": limit,
    }


def _refused(outcome: gate.Refused, limit: int) -> DomainError:
    if outcome.reason == gate.LIMIT_REACHED:
        return DomainError("flash_sale_limit_reached", limit=limit)
    return DomainError("flash_sale_sold_out")


def acquire_redis(
    session: Session, merchant_id: int, item_id: int, member_id: int, qty: int, limit: int
) -> bool:
    """The Redis half of the gate, with its compensation tied to ``session``'s transaction.

    Returns True when Redis took the units (False: no Redis, or Redis unreachable — the database
    gate alone decides). Raises the refusal.
    """
    rg = redis_gate(session)
    if rg is None:
        return False
    try:
        outcome = rg.try_acquire(merchant_id, item_id, member_id, qty, limit)
    except redis.RedisError:
        log.warning("flash-sale Redis gate unavailable; the database gate decides alone", exc_info=True)
        return False
    if isinstance(outcome, gate.Refused):
        raise _refused(outcome, limit)
    gate.on_rollback(session, lambda: rg.release(merchant_id, item_id, member_id, qty))
    return True


def _mirror_redis(session: Session, merchant_id: int, item_id: int, member_id: int, qty: int) -> None:
    """Redis counts the units the database granted over its refusal (given back on rollback)."""
    rg = redis_gate(session)
    if rg is None:
        return
    try:
        rg.mirror(merchant_id, item_id, member_id, qty)
    except redis.RedisError:
        log.warning("flash-sale Redis mirror failed; reconcile will repair Redis", exc_info=True)
        return
    gate.on_rollback(session, lambda: rg.release(merchant_id, item_id, member_id, qty))


def take_units(ctx: PricingContext, order_id: int) -> None:
    """The submit hook: acquire through the gate(s) and write the ledger row."""
    res = ctx.reservations.get(RESERVATION)
    if not res:
        return
    session, merchant_id, member_id = ctx.session, ctx.merchant_id, ctx.member_id
    assert member_id is not None
    item_id, qty, limit = int(res["item_id"]), int(res["quantity"]), int(res["limit"])
    pre = session.info.pop(PREACQUIRED, None)
    mirror = False
    redis_took = pre == (merchant_id, item_id, member_id, qty)
    if not redis_took:
        try:
            redis_took = acquire_redis(session, merchant_id, item_id, member_id, qty, limit)
        except DomainError as exc:
            # Redis's "limit reached" may count a retry of this very request still in flight
            # (it waits behind our idempotency key and will replay our order): the database's
            # counter only holds committed or locked units, so it decides. "Sold out" is final.
            if exc.code != "flash_sale_limit_reached":
                raise
            mirror = True
    # Units Redis granted were free a moment ago (perhaps released by another process, which
    # this process's sold-out memo has not seen): the shards decide, not the memo.
    outcome = gate.DatabaseGate(session, use_memo=not redis_took).try_acquire(merchant_id, item_id, member_id, qty, limit)
    if isinstance(outcome, gate.Refused):
        raise _refused(outcome, limit)
    if mirror:
        _mirror_redis(session, merchant_id, item_id, member_id, qty)
    repo.add_purchase(
        session,
        FlashSalePurchase(
            merchant_id=merchant_id, flash_sale_id=int(res["flash_sale_id"]), item_id=item_id, member_id=member_id,
            order_id=order_id, quantity=qty, amount=ctx.lines[int(res["line_index"])].amount, status=RESERVED,
        ),
    )


# -- release, paid, reconcile ----------------------------------------------------------------------------


def _redis_release(merchant_id: int, item_id: int, member_id: int, qty: int) -> Callable[[gate.RedisGate], None]:
    def _release(rg: gate.RedisGate) -> None:
        rg.release(merchant_id, item_id, member_id, qty)

    return _release


def _give_back(session: Session, merchant_id: int, moved: list[tuple[int, int, int]]) -> int:
    """Return ledger rows' units to their activities (Redis after commit), or to the SKUs' normal
    stock for an activity that already ended; returns the units moved."""
    db = gate.DatabaseGate(session)
    back: dict[int, int] = {}
    total = 0
    for item_id, member_id, qty in moved:
        result = db.release_units(merchant_id, item_id, member_id, qty)
        total += qty
        if result is None:
            continue
        sku_id, closed = result
        if closed:  # the activity is over: the unit goes back to normal stock
            back[sku_id] = back.get(sku_id, 0) + qty
        else:
            _after_commit_redis(session, _redis_release(merchant_id, item_id, member_id, qty))
    stock.release(session, merchant_id, back)
    session.flush()
    return total


def release_order(session: Session, merchant_id: int, order_id: int, *, now: dt.datetime | None = None) -> int:
    """Give back the units of a cancelled order's purchases, exactly once; returns units released."""
    now = now or utcnow()
    return _give_back(session, merchant_id, repo.release_order_purchases(session, merchant_id, order_id, now))


def refund_order(session: Session, merchant_id: int, order_id: int, *, now: dt.datetime | None = None) -> int:
    """A full refund of a flash-sale order that never shipped: its units go back to the activity
    stock (and Redis, and the member's count), exactly once, as for a cancelled order; returns
    the units. Once shipped the goods have left the activity: the purchase stays as it is, and
    goods sent back reach the SKU's normal stock through the after-sale's restock."""
    now = now or utcnow()
    order = orders_service.get_order(session, merchant_id, order_id)
    if order.shipped_at is not None:
        return 0
    return _give_back(session, merchant_id, repo.refund_order_purchases(session, merchant_id, order_id, now))


def mark_paid(session: Session, merchant_id: int, order_id: int, *, now: dt.datetime | None = None) -> int:
    return repo.mark_order_paid(session, merchant_id, order_id, now or utcnow())


def reconcile(session: Session, merchant_id: int, client: redis.Redis | None) -> int:
    """Rewrite Redis from the database ledger for every published activity's open items."""
    if client is None:
        return 0
    gate.use_redis(session, client, prefix=gate.prefix_for(session))
    count = 0
    for sale in repo.published_flash_sales(session, merchant_id):
        count += load_redis(session, merchant_id, sale.id, force=True)
    return count


def end_due(session: Session, merchant_id: int, now: dt.datetime) -> int:
    ended = 0
    for sale_id in repo.due_to_end(session, merchant_id, now):
        if end(session, merchant_id, sale_id, actor=("system", None), now=now, only_if_due=True) is not None:
            ended += 1
    return ended


# -- store -------------------------------------------------------------------------------------------------


def _remaining(session: Session, merchant_id: int, items: list[FlashSaleItem]) -> dict[int, int]:
    out = {it.id: max(0, it.activity_stock - it.sold) if not it.closed else 0 for it in items}
    rg = redis_gate(session)
    if rg is not None:
        try:
            live = rg.remaining(merchant_id, [it.id for it in items if not it.closed])
        except redis.RedisError:
            live = {}
        out.update({k: max(0, v) for k, v in live.items()})
    return out


def _store_items(
    session: Session, merchant_id: int, sale: FlashSale, items: list[FlashSaleItem], remaining: dict[int, int]
) -> list[StoreItemOut]:
    cards = repo.skus_with_products(session, merchant_id, [it.sku_id for it in items])
    out = []
    for it in items:
        pair = cards.get(it.sku_id)
        if pair is None:
            continue
        sku, product = pair
        out.append(
            StoreItemOut(
                item_id=it.id, flash_sale_id=sale.id, sku_id=sku.id, product_id=product.id, title=product.title,
                spec_text=orders_service.spec_text(product, sku),
                image_url=sku.image_url or (product.images[0] if product.images else None),
                list_price=sku.list_price, sale_price=sku.sale_price, flash_price=it.flash_price,
                activity_stock=it.activity_stock, remaining=remaining.get(it.id, 0),
                per_member_limit=item_limit(it, sale), free_shipping=sale.free_shipping,
                allows_coupons=sale.allows_coupons, allows_points=sale.allows_points,
                allows_order_promotions=sale.allows_order_promotions,
            )
        )
    return out


def store_sessions(
    session: Session, merchant_id: int, *, now: dt.datetime | None = None, days: int = 2
) -> list[SessionOut]:
    """The current and upcoming sessions of today and the next ``days - 1`` local days."""
    now = now or utcnow()
    tz = _timezone(session, merchant_id)
    local_today = now.astimezone(ZoneInfo(tz)).date()
    until = dt.datetime.combine(local_today + dt.timedelta(days=days), dt.time.min, tzinfo=ZoneInfo(tz)).astimezone(dt.UTC)
    sales = repo.live_flash_sales(session, merchant_id, until, now)
    all_items = repo.items(session, merchant_id, [s.id for s in sales])
    remaining = _remaining(session, merchant_id, all_items)
    out: list[SessionOut] = []
    for sale in sales:
        items = [it for it in all_items if it.flash_sale_id == sale.id and not it.closed]
        if not items:
            continue
        cards = _store_items(session, merchant_id, sale, items, remaining)
        for start_at, end_at in sessions_between(sale, tz, now, until):
            out.append(
                SessionOut(
                    flash_sale_id=sale.id, name=sale.name, starts_at=start_at, ends_at=end_at,
                    status="current" if start_at <= now else "upcoming", items=cards,
                )
            )
    out.sort(key=lambda s: (s.starts_at, s.flash_sale_id))
    return out


def store_item(session: Session, merchant_id: int, item_id: int, *, now: dt.datetime | None = None) -> StoreItemDetailOut:
    now = now or utcnow()
    found = repo.item_with_sale(session, merchant_id, item_id)
    if found is None or found[1].status == DRAFT:
        raise _item_not_found()
    item, sale = found
    state, span = session_at(sale, _timezone(session, merchant_id), now)
    card = _store_items(session, merchant_id, sale, [item], _remaining(session, merchant_id, [item]))
    if not card:
        raise _item_not_found()
    return StoreItemDetailOut(
        **card[0].model_dump(), name=sale.name, status=state,
        session_starts_at=span[0] if span else None, session_ends_at=span[1] if span else None,
    )


def _buy_target(
    session: Session, merchant_id: int, item_id: int, *, cached_only: bool = False
) -> tuple[FlashSaleItem, FlashSale, str] | NeedsDatabase | None:
    def load() -> tuple[FlashSaleItem, FlashSale, str] | None:
        found = repo.item_with_sale(session, merchant_id, item_id)
        if found is None:
            return None
        return found[0], found[1], _timezone(session, merchant_id)

    if cached_only:
        hit = cache.peek(session, merchant_id, item_id)
        return NEEDS_DATABASE if hit is None else hit
    return cache.item_with_sale(session, merchant_id, item_id, load)


class NeedsDatabase:
    """``prepare_buy(cached_only=True)`` could not decide from memory and Redis alone.

    ``limit_in_redis``: the Lua gate already ran for this attempt and answered "limit reached"
    (nothing moved in Redis); the caller passes it on (``prepare_buy(redis_limit=True)``) so the
    database confirms it without a second Lua call."""

    __slots__ = ("limit_in_redis",)

    def __init__(self, *, limit_in_redis: bool = False) -> None:
        self.limit_in_redis = limit_in_redis


NEEDS_DATABASE = NeedsDatabase()
NEEDS_DATABASE_LIMIT = NeedsDatabase(limit_in_redis=True)


@dataclass
class BuyPlan:
    merchant_id: int
    member_id: int
    key: str
    checkout_body: CheckoutIn
    pre: tuple[int, int, int, int]
    acquired: bool


def prepare_buy(
    session: Session, merchant_id: int, member_id: int, item_id: int, body: BuyIn, *,
    idempotency_key: str | None, now: dt.datetime | None = None, cached_only: bool = False,
    redis_limit: bool = False,
) -> BuyPlan | NeedsDatabase:
    """The part of ``buy`` before the order: every check, and the Redis gate. Raises the refusals.

    ``cached_only``: touch no database (the caller runs on the event loop): returns a
    ``NeedsDatabase`` when the item is not cached, Redis has not loaded it, or a refusal needs
    the idempotency look-up; the caller then runs it again without ``cached_only``, in a thread,
    passing ``redis_limit=needs.limit_in_redis``: when the Lua gate already answered "limit
    reached" for this attempt it is not asked again (one Lua call per attempt).
    """
    now = now or utcnow()
    target = _buy_target(session, merchant_id, item_id, cached_only=cached_only)
    if isinstance(target, NeedsDatabase):
        return target
    if target is None or target[1].status == DRAFT:
        raise _item_not_found()
    item, sale, tz = target
    key = checkout.check_idempotency_key(idempotency_key)
    pre = (merchant_id, item.id, member_id, body.quantity)
    limit = item_limit(item, sale)
    acquired = False
    try:
        check_open(sale, tz, now)
        if item.closed:
            raise DomainError("flash_sale_ended")
        if body.quantity > limit:
            raise DomainError("flash_sale_limit_reached", limit=limit)
    except DomainError as exc:
        if exc.code == "flash_sale_not_started":
            raise
        if cached_only:
            return NEEDS_DATABASE
        if orders_service.order_by_idempotency_key(session, merchant_id, member_id, key) is None:
            raise
        # A retry of an order made while the sale was open: the submit replays it.
    else:
        outcome: bool | NeedsDatabase | _LimitInRedis = LIMIT_IN_REDIS
        if not redis_limit:
            outcome = _acquire_before_submit(session, merchant_id, item.id, member_id, body.quantity, limit,
                                             cached_only=cached_only)
        if isinstance(outcome, NeedsDatabase):
            return outcome
        if outcome is LIMIT_IN_REDIS:
            if cached_only:
                return NEEDS_DATABASE_LIMIT
            # Two plain reads instead of a whole submit: with no order under this key, and the
            # member's *committed* units already at the limit, every submit would be refused
            # (a retry of this key still in flight included: its own units would not fit either).
            # Otherwise the submit decides (it replays the key's order or waits for its twin).
            # The committed units are read FIRST: each read sees what was committed when it
            # started, so a twin that commits between them is seen by the key look-up (read in
            # the other order, its units were counted but its order was not: a false refusal).
            if (
                repo.member_bought(session, merchant_id, item.id, member_id) + body.quantity > limit
                and orders_service.order_by_idempotency_key(session, merchant_id, member_id, key) is None
            ):
                raise DomainError("flash_sale_limit_reached", limit=limit)
            outcome = False
        acquired = bool(outcome)
    # Built only now: a refusal (nearly every attempt) never validates an order body.
    checkout_body = CheckoutIn.model_validate(
        {
            "items": [{"sku_id": item.sku_id, "quantity": body.quantity}],
            "address_id": body.address_id,
            "remark": body.remark,
            "options": {FLAG: {"item_id": item.id}},
        }
    )
    return BuyPlan(merchant_id, member_id, key, checkout_body, pre, acquired)


def finish_buy(
    session: Session, plan: BuyPlan, *, payment_timeout: dt.timedelta, now: dt.datetime | None = None
) -> tuple[Order, bool]:
    """The order of a prepared buy (the database part)."""
    if plan.acquired:
        session.info[PREACQUIRED] = plan.pre
    try:
        order, created = checkout.submit(
            session, plan.merchant_id, plan.member_id, plan.checkout_body, idempotency_key=plan.key,
            payment_timeout=payment_timeout, now=now or utcnow(),
        )
    finally:
        session.info.pop(PREACQUIRED, None)
    if plan.acquired and not created:
        # A concurrent retry made the order: the units this attempt took in Redis are not
        # held by any order, give them back when this transaction ends (commit or not).
        _after_commit_redis(session, _redis_release(*plan.pre))
    return order, created


def buy(
    session: Session,
    merchant_id: int,
    member_id: int,
    item_id: int,
    body: BuyIn,
    *,
    idempotency_key: str | None,
    payment_timeout: dt.timedelta,
    now: dt.datetime | None = None,
) -> tuple[Order, bool]:
    """Buy now: the checkout submit with the flash-sale option for this item.

    The losing crowd is answered without the database: the item and its activity come from the
    per-process ``cache`` (checked: in a session, quantity within the limit), then the Redis Lua
    gate runs *before* any order work, and its "sold out" is the 409 (``session`` never connects).
    Only a member who holds units of the item gets the database on "sold out" (a retry of a
    granted request replays its order); Redis's "limit reached" is left to the submit too (it
    replays the first order of a retry, or its hook refuses). A granted attempt goes on to the
    submit, whose hook skips Redis and runs the database gate in the order transaction.

    A refusal as ended or between sessions first looks the idempotency key up (a retry after the
    session closed gets its order); "not started" cannot have an order and needs no look-up.
    One difference from a strict replay: a retry whose order was cancelled meanwhile and whose
    item then sold out is answered ``flash_sale_sold_out`` instead of the cancelled order.
    """
    now = now or utcnow()
    plan = prepare_buy(session, merchant_id, member_id, item_id, body, idempotency_key=idempotency_key, now=now)
    assert isinstance(plan, BuyPlan)
    return finish_buy(session, plan, payment_timeout=payment_timeout, now=now)


def _acquire_before_submit(
    session: Session, merchant_id: int, item_id: int, member_id: int, qty: int, limit: int, *,
    cached_only: bool = False,
) -> bool | NeedsDatabase | _LimitInRedis:
    """The Redis gate ahead of the order: True when it took the units (given back if the
    transaction does not commit); False when the database must decide (no Redis, Redis
    unreachable, "limit reached", or "sold out" to a member holding units). Raises the final
    "sold out". ``cached_only``: keys not loaded are ``NEEDS_DATABASE`` (loading reads the database)."""
    rg = redis_gate(session)
    if rg is None:
        return False
    if cached_only:
        rg = rg.with_loader(None)
    try:
        outcome = rg.try_acquire(merchant_id, item_id, member_id, qty, limit)
    except gate.GateNotLoaded:
        return NEEDS_DATABASE
    except redis.RedisError:
        log.warning("flash-sale Redis gate unavailable; the database gate decides alone", exc_info=True)
        return False
    if isinstance(outcome, gate.Refused):
        if outcome.reason == gate.SOLD_OUT and not outcome.holds_units:
            raise DomainError("flash_sale_sold_out")
        return LIMIT_IN_REDIS if outcome.reason == gate.LIMIT_REACHED else False
    gate.on_rollback(session, lambda: rg.release(merchant_id, item_id, member_id, qty))
    return True


class _LimitInRedis:
    """Redis counted the member at the limit: confirmed by the database before refusing."""


LIMIT_IN_REDIS = _LimitInRedis()
