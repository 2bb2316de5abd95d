"""The buy-now refusal path over HTTP: once the item is sold out in Redis, an attempt by a member
who holds no unit is answered 409 without one database statement (token and item from the
per-process caches, "sold out" from the Lua gate). A member who holds units still gets the
database (a retry of a granted request replays its order). Changes to the activity made in this
process reach the cached item at once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import Tenant
from tests.factories.orders import make_sku
from tests.flash_sales.helpers import ADMIN, STORE, bound, buy, create_sale, item_row, login


class Spy:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.checkouts = 0

    def execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def checkout(self, *args: Any) -> None:
        self.checkouts += 1

    def reset(self) -> None:
        self.statements.clear()
        self.checkouts = 0


@pytest.fixture
def http(app: Any, rclient: redis.Redis, fs_prefix: str) -> Iterator[tuple[TestClient, Spy]]:
    engine: Engine = app.state.engine
    spy = Spy()
    event.listen(engine, "before_cursor_execute", spy.execute)
    event.listen(engine, "checkout", spy.checkout)  # kept by the pool the app's shutdown recreates
    with TestClient(app) as client, bound(engine, rclient, fs_prefix):
        yield client, spy
    event.remove(engine, "before_cursor_execute", spy.execute)  # the app (and its engine) ends with the test


def test_a_sold_out_refusal_touches_no_database(
    http: tuple[TestClient, Spy], tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    client, spy = http
    sku = make_sku(session_factory, tenant.id, price=10000, stock=20)
    item = int(create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 1}],
                           per_member_limit=2)["items"][0]["id"])
    winner, _ = login(client, tenant)
    loser, _ = login(client, tenant)
    key = uuid.uuid4().hex
    first = buy(client, winner, item, key)
    assert first.status_code == 201, first.text
    assert buy(client, loser, item).json()["code"] == "flash_sale_sold_out"  # warms the loser's token

    spy.reset()
    for _ in range(5):
        r = buy(client, loser, item)
        assert r.status_code == 409 and r.json()["code"] == "flash_sale_sold_out"
    assert spy.statements == [] and spy.checkouts == 0

    # The winner holds a unit (limit 2): its retry reaches the database and replays the order.
    again = buy(client, winner, item, key)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert spy.checkouts >= 1
    # ... and a new attempt of the winner is a plain "sold out" from the database gate.
    assert buy(client, winner, item).json()["code"] == "flash_sale_sold_out"
    assert item_row(session_factory, item).sold == 1


def test_changes_in_this_process_reach_the_cached_item_at_once(
    http: tuple[TestClient, Spy], tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    client, _ = http
    sku = make_sku(session_factory, tenant.id, price=10000, stock=20)
    sale = create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 5}],
                       per_member_limit=1)
    item = int(sale["items"][0]["id"])
    headers, _ = login(client, tenant)
    r = client.post(f"{STORE}/flash-sales/{item}/buy", json={"quantity": 2},
                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
    assert r.json()["code"] == "flash_sale_limit_reached"  # the item is cached now, with limit 1
    r = client.patch(f"{ADMIN}/flash-sales/{sale['id']}/items/{item}", json={"per_member_limit": 2},
                     headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    r = client.post(f"{STORE}/flash-sales/{item}/buy", json={"quantity": 2},
                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    assert client.post(f"{ADMIN}/flash-sales/{sale['id']}/end", headers=tenant.admin_headers).status_code == 200
    assert buy(client, login(client, tenant)[0], item).json()["code"] == "flash_sale_ended"


def test_a_retry_after_the_session_closed_replays_its_order(
    http: tuple[TestClient, Spy], tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    client, _ = http
    sku = make_sku(session_factory, tenant.id, price=10000, stock=20)
    sale = create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 5}])
    item = int(sale["items"][0]["id"])
    headers, _ = login(client, tenant)
    key = uuid.uuid4().hex
    first = buy(client, headers, item, key)
    assert first.status_code == 201, first.text
    assert client.post(f"{ADMIN}/flash-sales/{sale['id']}/end", headers=tenant.admin_headers).status_code == 200
    again = buy(client, headers, item, key)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text
    assert buy(client, headers, item).json()["code"] == "flash_sale_ended"


def test_a_member_at_the_limit_is_refused_by_two_reads_and_a_retry_still_replays(
    http: tuple[TestClient, Spy], tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    client, spy = http
    sku = make_sku(session_factory, tenant.id, price=10000, stock=20)
    item = int(create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 5}],
                           per_member_limit=1)["items"][0]["id"])
    headers, member = login(client, tenant)
    key = uuid.uuid4().hex
    first = buy(client, headers, item, key)
    assert first.status_code == 201, first.text

    spy.reset()
    r = buy(client, headers, item)  # a new key: Redis says "limit", the database confirms it
    assert r.status_code == 409 and r.json()["code"] == "flash_sale_limit_reached"
    queries = [st for st in spy.statements if not st.upper().startswith("BEGIN")]  # SQLite's BEGIN IMMEDIATE
    assert len(queries) == 2, queries  # the key's order, the member's counter: no submit
    assert all(st.lstrip().upper().startswith("SELECT") for st in queries)

    again = buy(client, headers, item, key)  # the same key: replayed, not refused
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert item_row(session_factory, item).sold == 1 and member > 0
