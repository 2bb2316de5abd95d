"""Test fixtures: every database test runs on SQLite and on PostgreSQL.

- ``db`` is parametrised ``sqlite`` / ``postgresql``. PostgreSQL comes from
  ``SIYU_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``); a fresh
  database ``siyu_test_<pid>`` is created for the run and dropped after. Without PostgreSQL the
  PostgreSQL half is skipped with a visible reason — except when ``CI=true``, where it fails.
- Redis (``SIYU_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/15``) likewise.
- Each test owns its data by creating its own merchant (every row is scoped by merchant).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from siyu.api.routes import import_all_models
from siyu.config import Settings
from siyu.db.base import Base
from siyu.db.engine import make_engine
from siyu.db.session import make_session_factory, unit_of_work

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_URL = os.environ.get("SIYU_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SIYU_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} not reachable ({type(exc).__name__}: {exc})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true makes it mandatory")
    pytest.skip(f"{message}; set it up to run these tests")


def _admin_pg_url() -> str:
    return str(make_url(PG_URL).set(drivername="postgresql+psycopg").render_as_string(hide_password=False))


def create_pg_database(name: str) -> str:
    admin = create_engine(_admin_pg_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return str(make_url(_admin_pg_url()).set(database=name).render_as_string(hide_password=False))


def drop_pg_database(name: str) -> None:
    admin = create_engine(_admin_pg_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'siyu-test.sqlite'}"
        return
    name = f"siyu_test_{os.getpid()}"
    try:
        url = create_pg_database(name)
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    yield url
    drop_pg_database(name)


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    import_all_models()
    eng = make_engine(db_url, pool_size=40, max_overflow=80)
    Base.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for arranging and asserting; the test commits what it arranges."""
    s = session_factory()
    try:
        yield s
    finally:
        s.rollback()
        s.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        _unavailable("Redis", exc)
    return REDIS_URL


@pytest.fixture(scope="session")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=db_url,
        data_dir=Path(tmp_path_factory.mktemp("data")),
        secret_key="test-secret",
        env="test",
        redis_url="",
        public_base_url="http://testserver",
        worker_poll_seconds=0.05,
        db_pool_size=40,
        db_max_overflow=80,
    )


@pytest.fixture(scope="session")
def app(settings: Settings, engine: Engine):  # type: ignore[no-untyped-def]
    from siyu.app import create_app

    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app) as c:
        yield c


@dataclass
class Tenant:
    """A fresh merchant with an owner account, for one test."""

    id: int
    code: str
    owner_id: int
    owner_token: str

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.owner_token}"}

    @property
    def store_headers(self) -> dict[str, str]:
        return {"X-Siyu-Merchant": self.code}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def tenant(session_factory: sessionmaker[Session]) -> Tenant:
    import datetime as dt

    from siyu.tenancy import service

    code = unique("m")
    with unit_of_work(session_factory) as s:
        merchant = service.create_merchant(s, code=code, name=f"Test store {code}")
        owner = service.create_staff(s, merchant.id, username="owner", password="owner-pass-1", role="owner")
        token, _ = service.login_staff(
            s, merchant_code=code, username="owner", password="owner-pass-1", ttl=dt.timedelta(hours=1)
        )
        return Tenant(id=merchant.id, code=code, owner_id=owner.id, owner_token=token)


def staff_headers(factory: sessionmaker[Session], tenant: Tenant, role: str) -> dict[str, str]:
    """A new staff member of ``tenant`` with ``role``, logged in: their Authorization header."""
    import datetime as dt

    from siyu.tenancy import service

    username = f"{role}-{uuid.uuid4().hex[:6]}"
    with unit_of_work(factory) as s:
        service.create_staff(s, tenant.id, username=username, password="pass-word-1", role=role)
        token, _ = service.login_staff(
            s, merchant_code=tenant.code, username=username, password="pass-word-1", ttl=dt.timedelta(hours=1)
        )
    return {"Authorization": f"Bearer {token}"}


def customer_login(client: TestClient, tenant: Tenant, name: str | None = None) -> dict[str, str]:
    """Log a customer into the store through the sandbox WeChat login; returns auth headers."""
    code = f"sandbox-{name or uuid.uuid4().hex[:12]}"
    resp = client.post("/api/store/v1/auth/wechat-login", json={"code": code}, headers=tenant.store_headers)
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> None:
    """Argon2 at its production cost takes ~50 ms a hash; tests create hundreds of accounts."""
    from argon2 import PasswordHasher

    from siyu.tenancy import service

    service._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
