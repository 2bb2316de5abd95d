"""Query plans of compiled segment statements, for the tests that pin an index."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session


def compiled_sql(s: Session, stmt: Any) -> tuple[str, dict[str, Any]]:
    """The statement's SQL for this session's dialect, with expanding parameters rendered."""
    compiled = stmt.compile(dialect=s.get_bind().dialect, compile_kwargs={"render_postcompile": True})
    return str(compiled), dict(compiled.params)


def postgres_plan(s: Session, sql: str, params: dict[str, Any], *, vacuum: str) -> str:
    """``EXPLAIN`` on PostgreSQL once ``vacuum`` is vacuumed (the visibility map set, as autovacuum
    leaves a settled table) and with sequential and bitmap scans off (test tables are tiny)."""
    with s.get_bind().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:  # type: ignore[union-attr]
        conn.exec_driver_sql(f"VACUUM (ANALYZE) {vacuum}")
    for setting in ("enable_seqscan", "enable_bitmapscan"):
        s.execute(text(f"SET LOCAL {setting} = off"))
    return "\n".join(r[0] for r in s.connection().exec_driver_sql("EXPLAIN " + sql, params))
