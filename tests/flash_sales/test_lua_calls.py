"""One Lua call per buy-now attempt: a refusal costs the Redis gate once, whether "sold out"
(answered on the event loop) or "limit reached" (confirmed by the database in a thread, which
does not ask Redis again)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import Tenant
from tests.factories.orders import make_sku
from tests.flash_sales.helpers import bound, buy, create_sale, item_row, login


class Commands:
    """The Redis commands the app's client sends (the gate's EVALSHA among them)."""

    def __init__(self, client: redis.Redis) -> None:
        self.sent: list[str] = []
        self._original = client.execute_command

        def execute_command(*args: Any, **options: Any) -> Any:
            self.sent.append(str(args[0]).upper())
            return self._original(*args, **options)

        client.execute_command = execute_command  # type: ignore[method-assign]


@pytest.fixture
def client_and_commands(app: Any, rclient: redis.Redis, fs_prefix: str) -> Iterator[tuple[TestClient, Commands]]:
    commands = Commands(rclient)
    with TestClient(app) as client, bound(app.state.engine, rclient, fs_prefix):
        yield client, commands


def test_each_refusal_is_one_lua_call(
    client_and_commands: tuple[TestClient, Commands], tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    client, commands = client_and_commands
    sku = make_sku(session_factory, tenant.id, price=10000, stock=20)
    item = int(create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 2}],
                           per_member_limit=1)["items"][0]["id"])
    buyer, _ = login(client, tenant)
    key = uuid.uuid4().hex
    assert buy(client, buyer, item, key).status_code == 201
    assert buy(client, buyer, item).json()["code"] == "flash_sale_limit_reached"  # warms the caches

    commands.sent.clear()
    for _ in range(3):  # a unit is left: Redis says "limit", the database confirms it
        r = buy(client, buyer, item)
        assert r.status_code == 409 and r.json()["code"] == "flash_sale_limit_reached", r.text
    assert commands.sent == ["EVALSHA"] * 3

    other, _ = login(client, tenant)
    assert buy(client, other, item).status_code == 201  # the last unit
    crowd, _ = login(client, tenant)
    assert buy(client, crowd, item).json()["code"] == "flash_sale_sold_out"  # warms the token
    commands.sent.clear()
    for _ in range(3):
        r = buy(client, crowd, item)
        assert r.status_code == 409 and r.json()["code"] == "flash_sale_sold_out", r.text
    assert commands.sent == ["EVALSHA"] * 3

    # The buyer's retry with its first key still replays its order (the database decides).
    again = buy(client, buyer, item, key)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert item_row(session_factory, item).sold == 2

