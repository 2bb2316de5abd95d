"""One Alembic history that takes an empty database to exactly the models, on both dialects."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, inspect, text

from siyu.api.routes import import_all_models
from siyu.db.base import Base
from siyu.db.engine import make_engine
from siyu.db.migrate import downgrade, heads, upgrade
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


# -- 0003: flash-sale stock moves from flash_sale_items.sold into shard rows ------------------------


def _fill(conn: Connection, table: str, **given: Any) -> None:
    """Insert one row, giving every NOT NULL column without a default a value of its type."""
    values = dict(given)
    for col in inspect(conn).get_columns(table):
        if col["name"] in values or col["nullable"] or col.get("default") is not None or col["name"] == "id":
            continue
        kind: Any
        try:
            kind = col["type"].python_type
        except NotImplementedError:
            kind = str
        if "JSON" in str(col["type"]).upper():
            values[col["name"]] = "[]"
            continue
        values[col["name"]] = {
            int: 1, bool: False, str: "x", dt.datetime: dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            dict: "{}", list: "[]",
        }.get(kind, "x")
    cols = ", ".join(values)
    conn.execute(text(f"INSERT INTO {table} ({cols}) VALUES ({', '.join(':' + c for c in values)})"), values)


def _shards_from_sold(engine: Engine) -> None:
    upgrade(engine, "0002")
    with engine.begin() as conn:
        _fill(conn, "merchants", id=1, status="active")
        _fill(conn, "products", id=1, merchant_id=1)
        for sku_id in (1, 2, 3):
            _fill(conn, "skus", id=sku_id, merchant_id=1, product_id=1, sku_code=f"S{sku_id}")
        _fill(conn, "flash_sales", id=1, merchant_id=1, starts_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
              ends_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC), per_member_limit=1)
        for item_id, stock, sold, closed in [(1, 20, 7, False), (2, 5, 5, False), (3, 9, 9, True)]:
            _fill(conn, "flash_sale_items", id=item_id, merchant_id=1, flash_sale_id=1, sku_id=item_id,
                  activity_stock=stock, sold=sold, closed=closed, flash_price=100, returned_stock=0,
                  per_member_limit=None)
    upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT item_id, shard, remaining FROM flash_sale_stock_shards")).all()
    left = {item: sorted(r for i, _, r in rows if i == item) for item in (1, 2, 3)}
    assert left == {1: [1, 1, 1, 2, 2, 2, 2, 2], 2: [0] * 8, 3: [0] * 8}  # 13 left over 8 shards
    assert sorted(s for i, s, _ in rows if i == 1) == list(range(8))
    downgrade(engine, "0002")  # and back: sold is recomputed from the shards
    with engine.connect() as conn:
        sold = {row[0]: row[1] for row in conn.execute(text("SELECT id, sold FROM flash_sale_items"))}
    assert sold == {1: 7, 2: 5, 3: 9}


def test_0003_moves_flash_sale_stock_into_shards_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'm.sqlite'}")
    try:
        _shards_from_sold(engine)
    finally:
        engine.dispose()


def test_0003_moves_flash_sale_stock_into_shards_postgresql() -> None:
    name = f"siyu_migrations_0003_{os.getpid()}"
    try:
        url = create_pg_database(name)
    except Exception as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    engine = make_engine(url)
    try:
        _shards_from_sold(engine)
    finally:
        engine.dispose()
        drop_pg_database(name)
