"""Rotation tests: a fresh database per test (a rotation walks every merchant's rows, and the
session's shared database holds other tests' values sealed with the suite's key), and a clean
key ring (``kit.crypto``'s previous keys declared per secret) for each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from siyu.api.routes import import_all_models
from siyu.config import get_settings
from siyu.db.base import Base
from siyu.db.engine import make_engine
from siyu.db.session import make_session_factory
from siyu.kit import crypto
from tests.conftest import create_pg_database, drop_pg_database


@pytest.fixture(autouse=True)
def _clean_key_ring(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(crypto, "_PREVIOUS", {})
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def fresh_url(db_url: str, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'rotation.sqlite'}"
        return
    name = f"siyu_test_{os.getpid()}_rot_{uuid.uuid4().hex[:6]}"
    url = create_pg_database(name)
    yield url
    drop_pg_database(name)


@pytest.fixture
def fresh_engine(fresh_url: str) -> Iterator[Engine]:
    import_all_models()
    engine = make_engine(fresh_url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def fresh_factory(fresh_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(fresh_engine)
