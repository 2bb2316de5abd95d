"""A short per-process cache of what the buy-now refusal path needs about an item: its activity's
window, session slots, status and limits, and the merchant's time zone.

Most buy-now attempts of a flash sale lose. With the token cache (``tenancy.token_cache``) and
this one, a losing attempt is answered from memory and one Redis script: no database session
ever connects.

Correctness does not rest on it. A *grant* re-reads the item and its activity in the order
transaction (the pricing stage) and the database gate decides with the fresh limit; a stale
entry can only make a refusal late or early:

- *in this process* it is never stale: any ORM change to an activity or an item (publish,
  reschedule, a new limit, end, delete) drops the whole cache when its transaction ends
  (``kit.local_cache``);
- *changed by another process*: for at most ``TTL_SECONDS`` (2 s) an attempt may be refused
  as not started / ended by the old window or limit, or let through to Redis and the database,
  which then decide with the new one. Ending an activity also removes its Redis keys, so
  attempts are refused ``flash_sale_sold_out`` at once in every process.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from siyu.flash_sales.models import FlashSale, FlashSaleItem
from siyu.kit.local_cache import LocalCache

TTL_SECONDS = 2.0
MAX_ENTRIES = 10_000

Entry = tuple[FlashSaleItem, FlashSale, str]  # detached copies, and the merchant's time zone

CACHE: LocalCache[Entry] = LocalCache(
    "flash_sales.items", ttl=TTL_SECONDS, max_entries=MAX_ENTRIES, watch=(FlashSale, FlashSaleItem)
)


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
    return CACHE.get(session, (merchant_id, item_id))


def item_with_sale(
    session: Session, merchant_id: int, item_id: int,
    load: Callable[[], tuple[FlashSaleItem, FlashSale, str] | None],
) -> Entry | None:
    """The cached (detached, read-only) item, activity and time zone, else ``load()`` them."""
    hit = CACHE.get(session, (merchant_id, item_id))
    if hit is not None:
        return hit
    generation = CACHE.generation()
    found = load()
    if found is None:
        return None
    item, sale, tz = found
    entry = (_detached_item(item), _detached_sale(sale), tz)
    CACHE.put(session, (merchant_id, item_id), entry, read_at=generation)
    return entry


def clear() -> None:
    CACHE.clear()
