"""Running the Alembic history from code (``siyu db upgrade``, ``siyu demo``, tests)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, lambda cfg: command.upgrade(cfg, revision))


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, lambda cfg: command.downgrade(cfg, revision))


def _run(engine: Engine, step: Callable[[Config], None]) -> None:
    """Run ``step`` in one transaction.

    On SQLite a revision that changes a table other tables point at (batch mode copies it to a new
    table and drops the old one) would fail on ``PRAGMA foreign_keys=ON`` as soon as a child row
    exists. So, as SQLite's documentation prescribes for such changes, foreign keys are switched
    off for the migration (that pragma only works outside a transaction), checked with
    ``PRAGMA foreign_key_check`` before the commit, and switched on again.
    """
    # Alembic narrates each step at INFO ("Context impl SQLiteImpl..."); keep only what matters.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = alembic_config()
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        raw = conn.connection.driver_connection if sqlite else None
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                step(cfg)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"migration left rows pointing nowhere: {broken[:5]}")
        finally:
            if raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")


def heads() -> list[str]:
    return list(ScriptDirectory.from_config(alembic_config()).get_heads())
