"""One Alembic history that takes an empty database to exactly the models, on both dialects."""

from __future__ import annotations

import os

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from siyu.api.routes import import_all_models
from siyu.db.base import Base
from siyu.db.engine import make_engine
from siyu.db.migrate import heads, upgrade
from tests.conftest import create_pg_database, drop_pg_database


def test_single_head() -> None:
    assert len(heads()) == 1


def _assert_matches_models(engine: Engine) -> None:
    import_all_models()
    upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"models and migrations differ: {diff[:5]}"
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    upgrade(engine)  # idempotent at head


def test_upgrade_empty_sqlite_to_head(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'm.sqlite'}")
    try:
        _assert_matches_models(engine)
    finally:
        engine.dispose()


def test_upgrade_empty_postgresql_to_head() -> None:
    name = f"siyu_migrations_{os.getpid()}"
    try:
        url = create_pg_database(name)
    except Exception as exc:  # same policy as the db fixture
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    engine = make_engine(url)
    try:
        _assert_matches_models(engine)
    finally:
        engine.dispose()
        drop_pg_database(name)
