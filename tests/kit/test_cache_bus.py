"""``kit.cache_bus``: a change to a watched row in one process drops the other processes'
``LocalCache`` through Redis pub/sub, and losing Redis fails nothing.

The unit tests use two buses on one channel: each stands for a process (its own origin id).
The end-to-end test runs real ``siyu serve`` processes: a bearer token revoked through one is
refused by the other at once, while a process without Redis still accepts it from its cache
(the 30 s bound the bus removes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from siyu.kit import cache_bus
from siyu.kit.cache_bus import CacheBus
from siyu.kit.local_cache import LocalCache


class _Base(DeclarativeBase):
    pass


class Gadget(_Base):
    __tablename__ = "gadgets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


def _until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{tmp_path / 'g.db'}")
    _Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add(Gadget(id=1, name="a"))
    return engine


@pytest.fixture
def cache() -> Iterator[LocalCache[str]]:
    c: LocalCache[str] = LocalCache(f"test.bus.{uuid.uuid4().hex[:8]}", ttl=60.0, max_entries=10, watch=(Gadget,))
    yield c
    c.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def _put(cache: LocalCache[str], engine: Engine, value: str) -> None:
    with Session(engine) as s:
        cache.put(s, 1, value, read_at=cache.generation())


def _cached(cache: LocalCache[str], engine: Engine) -> str | None:
    with Session(engine) as s:
        return cache.get(s, 1)


def test_a_change_announced_by_another_process_drops_the_cache_here(
    cache: LocalCache[str], engine: Engine, client: redis.Redis
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    here = CacheBus(client, prefix=prefix).start()
    elsewhere = CacheBus(client, prefix=prefix)  # publishes only, with its own origin
    try:
        _put(cache, engine, "cached")
        assert _cached(cache, engine) == "cached"
        elsewhere.publish(cache.name)
        assert _until(lambda: _cached(cache, engine) is None, 5), "the other process's change did not drop the entry"
        assert here.received == 1
        # A read that was in flight when the drop arrived is not stored either.
        read_at = cache.generation()
        elsewhere.publish(cache.name)
        assert _until(lambda: here.received == 2, 5)
        with Session(engine) as s:
            cache.put(s, 1, "stale", read_at=read_at)
        assert _cached(cache, engine) is None
    finally:
        here.stop()


def test_a_committed_change_here_is_announced_and_the_own_echo_is_ignored(
    cache: LocalCache[str], engine: Engine, client: redis.Redis
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    listener = client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(f"{prefix}local-cache")
    here = CacheBus(client, prefix=prefix).start()
    try:
        with Session(engine) as s, s.begin():
            s.get(Gadget, 1).name = "b"  # type: ignore[union-attr]
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.5)
        assert message is not None
        origin, _, name = message["data"].decode().partition(" ")
        assert (origin, name) == (here.origin, cache.name)
        time.sleep(0.3)
        assert here.received == 0  # its own announcement is not acted on again
        # A transaction that changed nothing watched announces nothing.
        with Session(engine) as s, s.begin():
            s.get(Gadget, 1)
        assert listener.get_message(timeout=0.5) is None
    finally:
        here.stop()
        listener.close()


def test_an_unreachable_redis_fails_nothing_and_the_local_drop_still_happens(
    cache: LocalCache[str], engine: Engine
) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2,
                       retry=Retry(NoBackoff(), 0))
    bus = CacheBus(dead, reconnect_seconds=0.1).start(wait_seconds=0.5)
    try:
        _put(cache, engine, "cached")
        with Session(engine) as s, s.begin():
            s.get(Gadget, 1).name = "c"  # type: ignore[union-attr]
        assert _cached(cache, engine) is None
        # The listener, unable to subscribe, drops every cache each time it retries.
        _put(cache, engine, "again")
        assert _until(lambda: _cached(cache, engine) is None, 5)
    finally:
        bus.stop()
    assert bus not in cache_bus._BUSES


# -- end to end: real API processes ---------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(port: int, token: str) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/api/admin/v1/me", headers={"Authorization": f"Bearer {token}"},
                     timeout=5).status_code


def test_a_token_revoked_through_one_api_process_is_refused_by_another_at_once(
    tmp_path: Path, redis_url: str
) -> None:
    from siyu.db.engine import make_engine
    from siyu.db.migrate import upgrade
    from siyu.db.session import make_session_factory, unit_of_work
    from siyu.tenancy import service

    db_url = f"sqlite:///{tmp_path / 'siyu.sqlite'}"
    engine = make_engine(db_url)
    upgrade(engine)
    with unit_of_work(make_session_factory(engine)) as s:
        merchant = service.create_merchant(s, code="bus", name="Bus store")
        service.create_staff(s, merchant.id, username="owner", password="owner-pass-1", role="owner")
    engine.dispose()

    base_env = {**os.environ, "SIYU_DATA_DIR": str(tmp_path), "SIYU_DATABASE_URL": db_url, "SIYU_ENV": "test",
                "SIYU_SECRET_KEY": "bus-test-secret"}
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    try:
        for name, redis_env in (("a", redis_url), ("b", redis_url), ("no_redis", "")):
            port = _free_port()
            servers[name] = port, subprocess.Popen(
                [sys.executable, "-c", "from siyu.cli import app; app()", "serve", "--port", str(port)],
                env={**base_env, "SIYU_REDIS_URL": redis_env},
            )
        for port, _ in servers.values():
            assert _until(lambda p=port: _healthy(p), 120), "an API process did not start"

        login = httpx.post(f"http://127.0.0.1:{servers['a'][0]}/api/admin/v1/auth/login",
                           json={"merchant": "bus", "username": "owner", "password": "owner-pass-1"}, timeout=10)
        token = login.json()["token"]
        for port, _ in servers.values():
            assert _status(port, token) == 200  # each process now holds the token in its cache

        started = time.monotonic()
        assert httpx.post(f"http://127.0.0.1:{servers['a'][0]}/api/admin/v1/auth/logout",
                          headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 204
        assert _until(lambda: _status(servers["b"][0], token) == 401, 5), "process b still accepts the revoked token"
        elapsed = time.monotonic() - started
        assert elapsed < 5
        # Without Redis the cached token is still accepted (the TTL bound the bus removes).
        assert _status(servers["no_redis"][0], token) == 200
    finally:
        for _, proc in servers.values():
            proc.terminate()
        for _, proc in servers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False

