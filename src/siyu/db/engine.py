"""Engine construction with the per-dialect tuning.

SQLite (embedded default): WAL journal, a busy timeout, foreign keys on, and every transaction
opened with ``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing half-way
with "database is locked" on upgrade from a read lock. One in-process worker on SQLite.

PostgreSQL: a connection pool sized from settings, ``READ COMMITTED``; concurrency control is
done with conditional updates, row locks and ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import NullPool


def make_engine(url: str, *, pool_size: int = 20, max_overflow: int = 20, echo: bool = False) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, echo=echo)
    if parsed.drivername in ("postgresql", "postgres"):
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        echo=echo,
    )
    _ping_when_idle(engine)
    return engine


IDLE_PING_SECONDS = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """``pool_pre_ping``, only for a connection that sat in the pool for more than a few seconds.

    ``pool_pre_ping`` costs a ``SELECT 1`` round trip on every checkout, i.e. on every request;
    a connection handed back a moment ago is not worth it. One idle for longer (the server may
    have restarted, a proxy may have dropped it) is pinged, and a dead one is replaced before
    use (``DisconnectionError`` makes the pool retry with a fresh connection), as with
    ``pool_pre_ping``.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["siyu_checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.get("siyu_checked_in")
        if checked_in is None or time.monotonic() - checked_in <= IDLE_PING_SECONDS:
            return  # new (just connected) or recently used
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # a connection that cannot answer SELECT 1 is not worth keeping
            raise DisconnectionError() from exc


def _sqlite_engine(url: str, *, echo: bool) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        echo=echo,
        connect_args={"check_same_thread": False, "timeout": 30},
        poolclass=NullPool if parsed.database in (None, "", ":memory:") else None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite so BEGIN IMMEDIATE can be issued.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
