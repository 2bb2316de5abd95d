"""A short per-process cache of what the buy-now refusal path needs about an item: its activity's
window, session slots, status and limits, and the merchant's time zone.

Most buy-now attempts of a flash sale lose. With the token cache (``tenancy.token_cache``) and
this one, a losing attempt is answered from memory and one Redis script: no database session
ever connects.

Correctness does not rest on it. A *grant* re-reads the item and its activity in the order
transaction (the pricing stage) and the database gate decides with the fresh limit; a stale
entry can only make a refusal late or early:

- *in this process* it is never stale: any committed ORM change to an activity or an item
  (publish, reschedule, a new limit, end, delete) drops the whole cache when its transaction
  ends (``before_flush`` marks the session, ``after_transaction_end`` clears);
- *changed by another process*: for at most ``TTL_SECONDS`` (2 s) an attempt may be refused
  as not started / ended by the old window or limit, or let through to Redis and the database,
  which then decide with the new one. Ending an activity also removes its Redis keys, so
  attempts are refused ``flash_sale_sold_out`` at once in every process.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction

from siyu.flash_sales.models import FlashSale, FlashSaleItem

TTL_SECONDS = 2.0
MAX_ENTRIES = 10_000
_DIRTY = "siyu.flash_sales.cache_dirty"

Entry = tuple[FlashSaleItem, FlashSale, str]  # detached copies, and the merchant's time zone

_lock = threading.Lock()
_caches: weakref.WeakKeyDictionary[Engine, dict[tuple[int, int], tuple[float, Entry]]] = weakref.WeakKeyDictionary()
_generation = 0


def _clock() -> float:
    return time.monotonic()


def _engine(session: Session) -> Engine | None:
    try:
        bind = session.get_bind()
    except Exception:
        return None
    return bind if isinstance(bind, Engine) else bind.engine


def _detached_item(item: FlashSaleItem) -> FlashSaleItem:
    return FlashSaleItem(
        id=item.id, merchant_id=item.merchant_id, flash_sale_id=item.flash_sale_id, sku_id=item.sku_id,
        product_id=item.product_id, flash_price=item.flash_price, activity_stock=item.activity_stock,
        sold=item.sold, per_member_limit=item.per_member_limit, sort=item.sort, closed=item.closed,
        returned_stock=item.returned_stock,
    )


def _detached_sale(sale: FlashSale) -> FlashSale:
    return FlashSale(
        id=sale.id, merchant_id=sale.merchant_id, name=sale.name, status=sale.status, starts_at=sale.starts_at,
        ends_at=sale.ends_at, slots=list(sale.slots or []), allows_coupons=sale.allows_coupons,
        allows_points=sale.allows_points, allows_order_promotions=sale.allows_order_promotions,
        free_shipping=sale.free_shipping, per_member_limit=sale.per_member_limit,
    )


def peek(session: Session, merchant_id: int, item_id: int) -> Entry | None:
    """The cached entry if fresh, else None (never reads the database)."""
    engine = _engine(session)
    cache = _caches.get(engine) if engine is not None else None
    if cache is None:
        return None
    hit = cache.get((merchant_id, item_id))
    return hit[1] if hit is not None and _clock() < hit[0] else None


def item_with_sale(
    session: Session, merchant_id: int, item_id: int,
    load: Callable[[], tuple[FlashSaleItem, FlashSale, str] | None],
) -> Entry | None:
    """The cached (detached, read-only) item, activity and time zone, else ``load()`` them."""
    engine = _engine(session)
    cache = _caches.get(engine) if engine is not None else None
    if cache is not None:
        hit = cache.get((merchant_id, item_id))
        if hit is not None and _clock() < hit[0]:
            return hit[1]
    generation = _generation
    found = load()
    if found is None or engine is None or session.info.get(_DIRTY):
        return found
    item, sale, tz = found
    entry = (_detached_item(item), _detached_sale(sale), tz)
    with _lock:
        if generation == _generation:
            cache = _caches.get(engine)
            if cache is None:
                cache = _caches[engine] = {}
            if len(cache) >= MAX_ENTRIES:
                cache.clear()
            cache[(merchant_id, item_id)] = (_clock() + TTL_SECONDS, entry)
    return entry


def clear() -> None:
    global _generation
    with _lock:
        _generation += 1
        for cache in _caches.values():
            cache.clear()


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    if any(isinstance(o, (FlashSale, FlashSaleItem)) for o in (*session.dirty, *session.deleted)):
        session.info[_DIRTY] = True


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and session.info.pop(_DIRTY, False):
        clear()
