"""The pool pings a connection only when it sat idle for a while, and replaces a dead one
before use (what ``pool_pre_ping`` did on every checkout, without its round trip per request)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from siyu.config import Settings
from siyu.db import engine as engine_module
from siyu.db.engine import make_engine


def _pg_only(settings: Settings) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite connections are files, not sockets: the idle ping is PostgreSQL's")


def _counting_pings(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    real = engine.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings.append(1)
        return bool(real(dbapi_conn))

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def test_a_connection_used_a_moment_ago_is_not_pinged(
    db_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pg_only(settings)
    engine = make_engine(db_url, pool_size=1, max_overflow=0)
    try:
        pings = _counting_pings(engine, monkeypatch)
        for _ in range(5):
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
        assert pings == []
    finally:
        engine.dispose()


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced_before_use(
    db_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pg_only(settings)
    engine = make_engine(db_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            first_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        monkeypatch.setattr(engine_module, "IDLE_PING_SECONDS", -1.0)  # every pooled connection counts as idle
        pings = _counting_pings(engine, monkeypatch)
        with engine.connect() as conn:  # alive: pinged, kept
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == first_pid
        assert len(pings) == 1
        killer = make_engine(db_url, pool_size=1, max_overflow=0)
        try:
            with killer.connect() as conn:
                assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid}).scalar() is True
        finally:
            killer.dispose()
        with engine.connect() as conn:  # dead: the ping fails, the pool connects again, the caller never sees it
            new_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        assert new_pid != first_pid and len(pings) == 2
    finally:
        engine.dispose()
