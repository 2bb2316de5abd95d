"""The Redis key prefix of the flash-sale gate is a setting (``SIYU_FLASH_SALE_REDIS_PREFIX``), so
two deployments can share one Redis: the app (its startup binding) and the worker (its jobs)
write only under their own prefix, and a buy through one deployment leaves the other's keys alone."""

from __future__ import annotations

import datetime as dt

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.app import create_app
from siyu.config import Settings
from siyu.kit.timeutil import utcnow
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.factories.orders import make_sku
from tests.flash_sales.helpers import create_sale, login, redis_state, submit


def test_the_prefix_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().flash_sale_redis_prefix == "siyu:fs"
    monkeypatch.setenv("SIYU_FLASH_SALE_REDIS_PREFIX", "shop-b:fs")
    assert Settings().flash_sale_redis_prefix == "shop-b:fs"


def test_two_deployments_on_one_redis_keep_to_their_own_prefixes(
    settings: Settings, redis_url: str, rclient: redis.Redis, fs_prefix: str, tenant: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    other = f"{fs_prefix}-other"
    mine = settings.model_copy(update={"redis_url": redis_url, "flash_sale_redis_prefix": fs_prefix})
    sku = make_sku(session_factory, tenant.id, price=10000, stock=20)
    try:
        with TestClient(create_app(mine)) as client:
            sale = create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 3}])
            item = int(sale["items"][0]["id"])
            assert redis_state(rclient, fs_prefix, tenant.id, item) == (3, {})  # loaded by start
            # A second deployment's keys for the same ids (its own merchant 1, item 1 ...).
            rclient.set(f"{other}:{{{tenant.id}:{item}}}:stock", 99)
            headers, member = login(client, tenant)
            r = submit(client, headers, sku, item)
            assert r.status_code == 201, r.text
            assert redis_state(rclient, fs_prefix, tenant.id, item) == (2, {member: 1})
            assert redis_state(rclient, other, tenant.id, item) == (99, {})
            assert not list(rclient.scan_iter(f"siyu:fs:{{{tenant.id}:{item}}}:*"))  # never the default prefix

        # The worker's reconcile (its own process: no app binding) rewrites under the setting's prefix.
        rclient.delete(f"{fs_prefix}:{{{tenant.id}:{item}}}:stock", f"{fs_prefix}:{{{tenant.id}:{item}}}:members")
        Worker(session_factory, mine, merchant_id=tenant.id, redis=rclient).drain(
            now=utcnow() + dt.timedelta(minutes=2)
        )
        assert redis_state(rclient, fs_prefix, tenant.id, item) == (2, {member: 1})
        assert not list(rclient.scan_iter(f"siyu:fs:{{{tenant.id}:{item}}}:*"))
    finally:
        for key in rclient.scan_iter(f"{other}:*"):
            rclient.delete(key)
