"""One Alembic history that takes an empty database to exactly the models, on both dialects."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
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


def test_upgrade_empty_sqlite_to_head(tmp_path: Path) -> None:
    _on_fresh_sqlite(tmp_path, _assert_matches_models)


def _on_fresh_postgresql(name: str, check: Callable[[Engine], None]) -> None:
    """Run ``check`` on a throw-away PostgreSQL database (skipped without a server, failed in CI)."""
    name = f"{name}_{os.getpid()}"
    try:
        url = create_pg_database(name)
    except Exception as exc:  # same policy as the db fixture
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    engine = make_engine(url)
    try:
        check(engine)
    finally:
        engine.dispose()
        drop_pg_database(name)


def _on_fresh_sqlite(path: Path, check: Callable[[Engine], None]) -> None:
    engine = make_engine(f"sqlite:///{path / 'm.sqlite'}")
    try:
        check(engine)
    finally:
        engine.dispose()


def test_upgrade_empty_postgresql_to_head() -> None:
    _on_fresh_postgresql("siyu_migrations", _assert_matches_models)


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
            int: 1,
            bool: False,
            str: "x",
            dt.datetime: dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            dict: "{}",
            list: "[]",
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
        _fill(
            conn,
            "flash_sales",
            id=1,
            merchant_id=1,
            starts_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            ends_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
            per_member_limit=1,
        )
        for item_id, stock, sold, closed in [(1, 20, 7, False), (2, 5, 5, False), (3, 9, 9, True)]:
            _fill(
                conn,
                "flash_sale_items",
                id=item_id,
                merchant_id=1,
                flash_sale_id=1,
                sku_id=item_id,
                activity_stock=stock,
                sold=sold,
                closed=closed,
                flash_price=100,
                returned_stock=0,
                per_member_limit=None,
            )
    upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT item_id, shard, remaining FROM flash_sale_stock_shards")).all()
    left = {item: sorted(r for i, _, r in rows if i == item) for item in (1, 2, 3)}
    assert left == {1: [1, 1, 1, 2, 2, 2, 2, 2], 2: [0] * 8, 3: [0] * 8}  # 13 left over 8 shards
    assert sorted(s for i, s, _ in rows if i == 1) == list(range(8))
    downgrade(engine, "0002")  # and back: sold is recomputed from the shards
    with engine.connect() as conn:
        sold_back = {row[0]: row[1] for row in conn.execute(text("SELECT id, sold FROM flash_sale_items"))}
    assert sold_back == {1: 7, 2: 5, 3: 9}


def test_0003_moves_flash_sale_stock_into_shards_sqlite(tmp_path: Path) -> None:
    _on_fresh_sqlite(tmp_path, _shards_from_sold)


def test_0003_moves_flash_sale_stock_into_shards_postgresql() -> None:
    _on_fresh_postgresql("siyu_migrations_0003", _shards_from_sold)


# -- 0004: lines learn their purchase facts; distributors' name and phone are encrypted --------------


def _facts_and_encryption(engine: Engine) -> None:
    from siyu.config import get_settings
    from siyu.referral.pii import phone_of, real_name_of

    paid_at = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
    upgrade(engine, "0003")
    with engine.begin() as conn:
        _fill(conn, "merchants", id=1, status="active")
        _fill(conn, "members", id=7, merchant_id=1)
        _fill(conn, "members", id=8, merchant_id=1, openid="o8")
        _fill(conn, "products", id=1, merchant_id=1)
        _fill(conn, "skus", id=1, merchant_id=1, product_id=1, sku_code="S1")
        for order_id, status, at in [
            (1, "completed", paid_at),
            (2, "pending_payment", None),
            (3, "closed", paid_at),
        ]:
            _fill(
                conn,
                "orders",
                id=order_id,
                merchant_id=1,
                member_id=7,
                status=status,
                paid_at=at,
                order_no=f"N{order_id}",
                idempotency_key=f"k{order_id}",
            )
            _fill(conn, "order_lines", id=order_id, merchant_id=1, order_id=order_id, product_id=1, sku_id=1)
        _fill(conn, "distributors", id=5, merchant_id=1, member_id=7, real_name="张三丰", phone="13812345678")
        _fill(conn, "distributors", id=6, merchant_id=1, member_id=8, real_name=None, phone=None)
    upgrade(engine)
    with engine.connect() as conn:
        lines = {
            r[0]: (r[1], r[2])
            for r in conn.execute(text("SELECT order_id, member_id, bought_at FROM order_lines"))
        }
        dists = {
            r[0]: r
            for r in conn.execute(
                text(
                    "SELECT id, merchant_id, real_name_enc, real_name_masked, phone_enc, phone_masked FROM distributors"
                )
            )
        }
    assert {k: (m, b is not None) for k, (m, b) in lines.items()} == {
        1: (7, True),
        2: (7, False),
        3: (7, False),
    }
    assert "2026-03-01" in str(lines[1][1])
    key = get_settings().secret_key
    row = dists[5]
    assert "张三丰" not in row[2] and "13812345678" not in row[4]
    assert (row[3], row[5]) == ("张**丰", "138****5678")
    dist = SimpleNamespace(id=5, merchant_id=1, real_name_enc=row[2], phone_enc=row[4])
    assert (real_name_of(dist, key), phone_of(dist, key)) == ("张三丰", "13812345678")  # type: ignore[arg-type]
    assert dists[6][2:] == (None, None, None, None)
    downgrade(engine, "0003")  # and back: the plaintext returns
    with engine.connect() as conn:
        back = {
            r[0]: (r[1], r[2]) for r in conn.execute(text("SELECT id, real_name, phone FROM distributors"))
        }
    assert back == {5: ("张三丰", "13812345678"), 6: (None, None)}


def test_0004_purchase_facts_and_distributor_encryption_sqlite(tmp_path: Path) -> None:
    _on_fresh_sqlite(tmp_path, _facts_and_encryption)


def test_0004_purchase_facts_and_distributor_encryption_postgresql() -> None:
    _on_fresh_postgresql("siyu_migrations_0004", _facts_and_encryption)
