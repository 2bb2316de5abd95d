"""The flash-sale jobs through the worker: activation at ``starts_at`` (with Redis loaded by it or
by the minutely reconcile), the end at ``ends_at`` returning unsold stock to the SKU and clearing
Redis (once, however often it runs), and a rescheduled activity's old jobs finding nothing to do."""

from __future__ import annotations

import datetime as dt

import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.flash_sales import service
from siyu.flash_sales.models import FlashSale
from siyu.kit.timeutil import utcnow
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.factories.orders import make_sku, sku_stock
from tests.flash_sales.helpers import ADMIN, item_row, make_sale, redis_state, window


def _sale_row(factory: sessionmaker[Session], sale_id: int) -> FlashSale:
    with factory() as s:
        found = s.get(FlashSale, sale_id)
        assert found is not None
        return found


def test_the_worker_activates_at_the_start_with_redis_loaded_and_the_end_returns_unsold_stock_once(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant, redis_bound: redis.Redis,
    fs_prefix: str,
) -> None:
    sku = make_sku(session_factory, tenant.id, stock=30)
    starts, ends = dt.timedelta(hours=1), dt.timedelta(hours=3)
    sale_id, (item,) = make_sale(session_factory, tenant.id, [{"sku_id": sku, "flash_price": 1, "activity_stock": 12}],
                                 **window(starts, ends))
    assert _sale_row(session_factory, sale_id).status == "scheduled"
    redis_bound.delete(*[f"{fs_prefix}:{{{tenant.id}:{item}}}:stock", f"{fs_prefix}:{{{tenant.id}:{item}}}:members"])
    worker = Worker(session_factory, settings, merchant_id=tenant.id, redis=redis_bound)

    worker.drain(now=utcnow() + dt.timedelta(minutes=30))  # before the start: still scheduled
    assert _sale_row(session_factory, sale_id).status == "scheduled"
    worker.drain(now=utcnow() + starts + dt.timedelta(minutes=1))
    assert _sale_row(session_factory, sale_id).status == "active"
    assert redis_state(redis_bound, fs_prefix, tenant.id, item) == (12, {})

    worker.drain(now=utcnow() + ends + dt.timedelta(minutes=1))
    sale = _sale_row(session_factory, sale_id)
    assert sale.status == "ended" and sale.ended_at is not None
    row = item_row(session_factory, item)
    assert (row.closed, row.activity_stock, row.returned_stock) == (True, 0, 12)
    assert sku_stock(session_factory, sku) == 30
    assert redis_state(redis_bound, fs_prefix, tenant.id, item) is None
    # The end and the reconcile's catch-up run again: nothing moves twice.
    worker.drain(now=utcnow() + ends + dt.timedelta(minutes=5))
    from siyu.db.session import unit_of_work

    with unit_of_work(session_factory) as s:
        assert service.end_due(s, tenant.id, utcnow() + ends + dt.timedelta(minutes=6)) == 0
    assert sku_stock(session_factory, sku) == 30 and item_row(session_factory, item).returned_stock == 12


def test_a_rescheduled_activity_starts_and_ends_at_its_new_times(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, stock=30)
    sale_id, _ = make_sale(session_factory, tenant.id, [{"sku_id": sku, "flash_price": 1, "activity_stock": 5}],
                           **window(dt.timedelta(hours=1), dt.timedelta(hours=2)))
    r = client.patch(f"{ADMIN}/flash-sales/{sale_id}", headers=tenant.admin_headers,
                     json=window(dt.timedelta(hours=5), dt.timedelta(hours=6)))
    assert r.status_code == 200, r.text
    worker = Worker(session_factory, settings, merchant_id=tenant.id)
    worker.drain(now=utcnow() + dt.timedelta(hours=2, minutes=30))  # the old start and end have passed
    assert _sale_row(session_factory, sale_id).status == "scheduled"
    assert sku_stock(session_factory, sku) == 25
    worker.drain(now=utcnow() + dt.timedelta(hours=5, minutes=10))
    assert _sale_row(session_factory, sale_id).status == "active"
    worker.drain(now=utcnow() + dt.timedelta(hours=6, minutes=10))
    assert _sale_row(session_factory, sale_id).status == "ended" and sku_stock(session_factory, sku) == 30


def test_admin_list_filters_by_status(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, stock=30)
    draft, _ = make_sale(session_factory, tenant.id, [{"sku_id": sku, "flash_price": 1, "activity_stock": 1}],
                         start=False)
    running, _ = make_sale(session_factory, tenant.id, [{"sku_id": sku, "flash_price": 1, "activity_stock": 1}])
    r = client.get(f"{ADMIN}/flash-sales", headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["total"] == 2
    assert [x["id"] for x in r.json()["items"]] == [running, draft]  # newest first
    r = client.get(f"{ADMIN}/flash-sales", params={"status": "draft"}, headers=tenant.admin_headers)
    assert [x["id"] for x in r.json()["items"]] == [draft]
    r = client.get(f"{ADMIN}/flash-sales", params={"status": "bogus"}, headers=tenant.admin_headers)
    assert r.status_code == 422
