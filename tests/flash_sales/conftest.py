"""Flash-sale fixtures: a Redis client with a key prefix of its own per test (several test runs
share one Redis database, and merchant ids repeat across the SQLite and PostgreSQL halves), and
the test engine bound to it (services and workers use the Redis gate)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine

from tests.flash_sales.helpers import bound


@pytest.fixture
def fs_prefix() -> str:
    return f"siyu-test:fs:{uuid.uuid4().hex[:12]}"


@pytest.fixture
def rclient(redis_url: str, fs_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, max_connections=200)
    yield client
    keys = list(client.scan_iter(f"{fs_prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_bound(engine: Engine, rclient: redis.Redis, fs_prefix: str) -> Iterator[redis.Redis]:
    """Sessions of the test engine (services, workers) use the Redis gate."""
    with bound(engine, rclient, fs_prefix):
        yield rclient
