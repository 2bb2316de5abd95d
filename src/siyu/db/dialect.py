"""The only place that knows which database we are on.

Repositories call these helpers instead of branching on the dialect themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import ClauseElement, Select, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def dialect_name(session: Session) -> str:
    return session.get_bind().dialect.name


def is_postgres(session: Session) -> bool:
    return dialect_name(session) == "postgresql"


def for_update(stmt: Select[Any], session: Session, *, skip_locked: bool = False) -> Select[Any]:
    """Row locks on PostgreSQL. SQLite has none: its ``BEGIN IMMEDIATE`` already serialises writers."""
    if is_postgres(session):
        return stmt.with_for_update(skip_locked=skip_locked)
    return stmt


def insert_ignore(session: Session, table: Table, values: dict[str, Any], conflict_cols: list[str]) -> bool:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING``; returns True when a row was inserted.

    Decided by the returned row, not ``rowcount``: on PostgreSQL SQLAlchemy adds its own
    RETURNING for the primary key and the driver then reports ``rowcount`` -1 for a conflict,
    which read as "inserted".
    """
    postgres = is_postgres(session)
    if any(isinstance(v, ClauseElement) for v in values.values()):  # SQL expressions: built per call
        insert = postgresql.insert if postgres else sqlite.insert
        stmt: Any = (
            insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict_cols)
            .returning(table.c[conflict_cols[0]])
        )
        return session.execute(stmt).first() is not None
    # Plain values travel as parameters of a statement built once per table, column set and
    # dialect: building and cache-keying a fresh INSERT per call cost more than running it.
    key = (table.name, tuple(values), tuple(conflict_cols), postgres)
    stmt = _INSERT_IGNORE.get(key)
    if stmt is None:
        insert = postgresql.insert if postgres else sqlite.insert
        stmt = _INSERT_IGNORE[key] = (
            insert(table).on_conflict_do_nothing(index_elements=conflict_cols).returning(table.c[conflict_cols[0]])
        )
    return session.execute(stmt, values).first() is not None


_INSERT_IGNORE: dict[tuple[str, tuple[str, ...], tuple[str, ...], bool], Any] = {}


def insert_or_add_capped(
    session: Session, table: Table, values: dict[str, Any], conflict_cols: list[str], column: str, cap: int
) -> bool:
    """One statement: insert the row, or on conflict add ``values[column]`` to the existing row's
    ``column`` only while the sum stays ``<= cap``::

        INSERT ... ON CONFLICT (conflict_cols) DO UPDATE SET column = t.column + EXCLUDED.column
         WHERE t.column + EXCLUDED.column <= :cap RETURNING ...

    True when the row was inserted or raised; False when the cap refused (the existing row is
    then locked on PostgreSQL, as by a refused conditional UPDATE). The caller makes sure an
    inserted value is within the cap. Plain values only (a statement built once per shape).
    """
    postgres = is_postgres(session)
    key = (table.name, tuple(values), tuple(conflict_cols), column, postgres)
    stmt = _INSERT_OR_ADD.get(key)
    if stmt is None:
        insert = postgresql.insert if postgres else sqlite.insert
        ins: Any = insert(table)
        total = table.c[column] + ins.excluded[column]
        stmt = _INSERT_OR_ADD[key] = ins.on_conflict_do_update(
            index_elements=conflict_cols, set_={column: total}, where=total <= bindparam("cap")
        ).returning(table.c[conflict_cols[0]])
    return session.execute(stmt, {**values, "cap": cap}).first() is not None


_INSERT_OR_ADD: dict[tuple[str, tuple[str, ...], tuple[str, ...], str, bool], Any] = {}


def insert_entity_or_nothing(session: Session, entity: type[Any], values: dict[str, Any]) -> Any | None:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING <every column>`` of one row, in one round trip.

    Returns the new instance (in the session's identity map, every column loaded) or None when
    any unique constraint refused the row. On PostgreSQL a conflicting row of a transaction still
    in flight makes the statement wait for that transaction, like a plain INSERT would; a caller
    that gets None can then read the committed winner. No savepoint is needed: nothing failed.

    The statement is Core (the ORM's bulk-insert path cost about as much Python as the rest of
    a checkout's writes together); the returned row becomes the instance as if a query had
    loaded it (``make_transient_to_detached`` + ``add``: persistent, no history, no flush).
    ``values`` are keyed by column name.
    """
    postgres = is_postgres(session)
    found = _INSERT_OR_NOTHING.get((entity, postgres))
    if found is None:  # built once per entity and dialect; the row comes as parameters
        from sqlalchemy import inspect

        insert = postgresql.insert if postgres else sqlite.insert
        attrs = [(prop.key, prop.columns[0]) for prop in inspect(entity).column_attrs]
        table = entity.__table__
        stmt = insert(table).on_conflict_do_nothing().returning(*(column for _, column in attrs))
        found = _INSERT_OR_NOTHING[(entity, postgres)] = (stmt, [key for key, _ in attrs])
    stmt, keys = found
    row = session.execute(stmt, values).first()
    if row is None:
        return None
    from sqlalchemy.orm import make_transient_to_detached

    instance = entity(**dict(zip(keys, row, strict=True)))
    make_transient_to_detached(instance)
    session.add(instance)
    return instance


_INSERT_OR_NOTHING: dict[tuple[type[Any], bool], tuple[Any, list[str]]] = {}


def loaded_instance(session: Session, entity: type[Any], values: dict[str, Any]) -> Any:
    """The instance of a row this transaction just wrote with a statement of its own, from the
    values written: in the session's identity map, persistent, every column loaded, no history
    (as if a query had read it back; ``make_transient_to_detached`` + ``add``, no flush).

    ``values`` must hold every mapped column (keyed by attribute name), the primary key
    included: a column left out would read as unloaded and cost a lazy SELECT later, so it is
    refused here instead. JSON values are kept as given (the row holds their JSON form).
    """
    from sqlalchemy import inspect
    from sqlalchemy.orm import make_transient_to_detached

    found = _COLUMN_KEYS.get(entity)
    if found is None:
        mapper = inspect(entity)
        found = _COLUMN_KEYS[entity] = (frozenset(prop.key for prop in mapper.column_attrs), mapper.class_manager)
    keys, manager = found
    if keys.symmetric_difference(values):
        raise ValueError(f"{entity.__name__}: columns missing or unknown: {sorted(keys.symmetric_difference(values))}")
    # As the ORM's loader fills a row's instance: no __init__, no attribute events (there is no
    # history to record), the values straight into the instance's dict.
    instance = manager.new_instance()
    instance.__dict__.update(values)
    make_transient_to_detached(instance)
    session.add(instance)
    return instance


_COLUMN_KEYS: dict[type[Any], tuple[frozenset[str], Any]] = {}


def insert_ignore_many(
    session: Session, table: Table, rows: list[dict[str, Any]], conflict_cols: list[str], returning: str
) -> list[Any]:
    """Bulk ``INSERT ... ON CONFLICT DO NOTHING RETURNING <col>``: the values of the rows inserted.

    One multi-row statement per call (both SQLite ≥ 3.35 and PostgreSQL support RETURNING).
    """
    if not rows:
        return []
    insert = postgresql.insert if is_postgres(session) else sqlite.insert
    stmt: Any = insert(table).on_conflict_do_nothing(index_elements=conflict_cols).returning(table.c[returning])
    return list(session.execute(stmt.values(rows)).scalars())


def plus_seconds(session: Session, column: Any, seconds: int) -> Any:
    """``column + seconds`` for a UTC timestamp column, in the database's own arithmetic."""
    from sqlalchemy import func, literal_column, text

    if is_postgres(session):
        return column + text(f"interval '{int(seconds)} seconds'")
    # SQLite stores our timestamps as ISO text; strftime keeps the microseconds comparable.
    return func.strftime("%Y-%m-%d %H:%M:%f", column, literal_column(f"'+{int(seconds)} seconds'"))


def epoch_seconds(session: Session, column: Any) -> Any:
    """Seconds since 1970 of a UTC timestamp column, as a number."""
    from sqlalchemy import Integer, cast, extract, func

    if is_postgres(session):
        return extract("epoch", column)
    return cast(func.strftime("%s", column), Integer)


def json_object(session: Session, pairs: dict[str, Any]) -> Any:
    """A JSON object built in SQL from ``{key: column expression}`` (one per row of an
    ``INSERT ... SELECT``): ``jsonb_build_object`` on PostgreSQL, ``json_object`` on SQLite
    (its text is how SQLite stores a JSON column). The keys are constants of the code."""
    from sqlalchemy import String, cast, func, literal

    args: list[Any] = []
    for key, value in pairs.items():
        args += [cast(literal(key), String), value]
    return func.jsonb_build_object(*args) if is_postgres(session) else func.json_object(*args)


def bulk_update(session: Session, table: Table, key_cols: list[str], rows: list[dict[str, Any]]) -> None:
    """Update many rows by key. PostgreSQL: COPY into a temporary table, then one UPDATE ... FROM;
    SQLite: an executemany UPDATE. ``rows`` all carry the same keys."""
    if not rows:
        return
    from sqlalchemy import and_, bindparam, update

    value_cols = [c for c in rows[0] if c not in key_cols]
    if is_postgres(session):
        conn = session.connection().connection.driver_connection
        assert conn is not None
        cols = key_cols + value_cols
        # One temporary table per column set: a second bulk update of the same table with
        # other columns in the same transaction must not find the first one's table.
        tmp = f"tmp_bulk_{table.name}_{hashlib.sha1(','.join(cols).encode()).hexdigest()[:8]}"
        types = ", ".join(f"{c} {table.c[c].type.compile(dialect=session.get_bind().dialect)}" for c in cols)
        with conn.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {tmp} ({types}) ON COMMIT DROP")
            cur.execute(f"TRUNCATE {tmp}")
            with cur.copy(f"COPY {tmp} ({', '.join(cols)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([row[c] for c in cols])
            sets = ", ".join(f"{c} = t.{c}" for c in value_cols)
            match = " AND ".join(f"{table.name}.{c} = t.{c}" for c in key_cols)
            cur.execute(f"UPDATE {table.name} SET {sets} FROM {tmp} t WHERE {match}")
        return
    stmt = (
        update(table)
        .where(and_(*(table.c[c] == bindparam(f"k_{c}") for c in key_cols)))
        .values({c: bindparam(f"v_{c}") for c in value_cols})
    )
    params = [{**{f"k_{c}": r[c] for c in key_cols}, **{f"v_{c}": r[c] for c in value_cols}} for r in rows]
    session.connection().execute(stmt, params)


def insert_ignore_rows(
    session: Session, table: Table, rows: list[dict[str, Any]], conflict_cols: list[str], returning: str
) -> list[Any]:
    """Like :func:`insert_ignore_many`, for hot paths with hundreds of rows per call.

    PostgreSQL: one ``INSERT ... SELECT ... FROM jsonb_to_recordset(:rows) ON CONFLICT DO NOTHING
    RETURNING`` — the rows travel as ONE JSON document (serialised by the C encoder), so neither
    SQLAlchemy nor the driver builds an SQL text with thousands of placeholders or dumps long
    arrays element by element (a batch of 500 events: about 3x less client CPU than one array per
    column, ~15x less than a multi-row VALUES). SQLite: an executemany with RETURNING
    (SQLAlchemy "insertmanyvalues", compiled once and cached). Every row carries the same keys;
    JSON values are Python objects, timestamps aware datetimes (sent as ISO-8601 with offset).
    """
    if not rows:
        return []
    if not is_postgres(session):
        insert = sqlite.insert(table).on_conflict_do_nothing(index_elements=conflict_cols).returning(table.c[returning])
        return list(session.execute(insert, rows).scalars())
    import datetime as dt
    import json

    from sqlalchemy import text

    def iso(value: Any) -> str:
        if isinstance(value, (dt.datetime, dt.date)):
            return value.isoformat()
        raise TypeError(f"cannot send {type(value).__name__} as JSON")

    dialect = session.get_bind().dialect
    cols = list(rows[0])
    record = ", ".join(f"{col} {table.c[col].type.compile(dialect=dialect)}" for col in cols)
    stmt = text(
        f"INSERT INTO {table.name} ({', '.join(cols)}) SELECT {', '.join(cols)} "
        f"FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({record}) "
        f"ON CONFLICT ({', '.join(conflict_cols)}) DO NOTHING RETURNING {returning}"
    )
    doc = json.dumps(rows, default=iso, ensure_ascii=False, separators=(",", ":"))
    return list(session.execute(stmt, {"rows": doc}).scalars())




def run_sql_pg(session: Session, sql: str, params: dict[str, Any]) -> Any:
    """PostgreSQL: execute ``sql`` (``:name`` parameters as in ``text()``, ``\\:`` for a literal
    colon) on the session's connection, in its transaction, and return the cursor result.

    For hot statements that are plain SQL with plain parameter values (no column types to apply
    in either direction): it goes through ``Connection.exec_driver_sql``, which skips the ORM
    session's execute layer and SQLAlchemy's compiled-statement set-up (about a third of the
    Python cost of a short statement); the engine's cursor events still fire, so statement
    counters and logs see it. The SQL is translated to the driver's ``%(name)s`` style once.
    """
    return session.connection().exec_driver_sql(driver_style(sql), params)


def driver_style(sql: str) -> str:
    """``text()``-style SQL (``:name``, ``\\:`` for a literal colon) in psycopg's ``%(name)s`` style (cached)."""
    driver_sql = _DRIVER_SQL.get(sql)
    if driver_sql is None:
        import re

        escaped = sql.replace("%", "%%")
        driver_sql = re.sub(r"(?<![:\\\w]):(\w+)", r"%(\1)s", escaped).replace("\\:", ":")
        _DRIVER_SQL[sql] = driver_sql
    return driver_sql


_DRIVER_SQL: dict[str, str] = {}


def int_array_text(values: Any) -> str:
    """Integers as PostgreSQL's array text ``{1,2,3}``, for a ``CAST(:p AS BIGINT[])`` parameter:
    psycopg sends a str as is, where a Python list is dumped element by element (with a dumper
    look-up per call)."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"


def take_many(
    session: Session, table: Table, column: str, merchant_id: int, amounts: dict[int, int], *, touch: str | None = None
) -> set[int]:
    """``column -= amount`` on every row ``id`` of ``amounts`` whose ``column >= amount``; the ids updated.

    All-or-nothing is the caller's: fewer ids back than asked means some row could not cover its
    amount, and the caller raises (its transaction then rolls back the decrements that were made).
    ``touch`` names a timestamp column set to now (UTC). Rows are row-locked in ``id`` order, as one
    conditional ``UPDATE`` per row in sorted order would, so two transactions never deadlock.

    PostgreSQL: ONE statement — a ``SELECT ... ORDER BY id FOR UPDATE`` (materialised CTE: the
    locks are taken in id order whatever join the planner picks for the update) joined with the
    amounts as two arrays. SQLite: one conditional UPDATE per row (``BEGIN IMMEDIATE`` already
    serialises writers; there a round trip is a function call).
    """
    from sqlalchemy import bindparam, update

    from siyu.kit.timeutil import utcnow

    ids = sorted(amounts)
    now = utcnow()
    if not ids:
        return set()
    if is_postgres(session):
        stmt = _take_sql(table, column, touch, conditional=True)
        result = run_sql_pg(session, stmt, _take_params(merchant_id, amounts, now))  # plain SQL, plain values
        return {int(row[0]) for row in result}
    done: set[int] = set()
    col = table.c[column]
    values: dict[str, Any] = {column: col - bindparam("amount")}
    if touch:
        values[touch] = bindparam("touched", type_=table.c[touch].type)
    one = (
        update(table)
        .where(table.c.merchant_id == bindparam("m"), table.c.id == bindparam("i"), col >= bindparam("amount"))
        .values(values)
    )
    for sku_id in ids:
        result = session.execute(one, {"m": merchant_id, "i": sku_id, "amount": amounts[sku_id], "touched": now})
        if getattr(result, "rowcount", 0) != 1:
            break  # the caller raises for the first id missing: no need to lock the rest
        done.add(sku_id)
    return done


def insert_from_select_ignore(
    session: Session, table: Table, columns: list[str], source: Select[Any], conflict_cols: list[str]
) -> int:
    """``INSERT INTO table (columns) <source> ON CONFLICT (conflict_cols) DO NOTHING``: set-based
    and safe when a concurrent transaction inserts the same key. Returns the rows inserted.

    ``source`` must have a WHERE clause: SQLite would otherwise read ``ON CONFLICT`` as the ``ON``
    of a join. Give it a ``NOT EXISTS`` on the conflict key as well when most rows exist
    already: the id default (a sequence value on PostgreSQL) is only drawn for the rows the
    SELECT produces, and a conflict found by the index costs no write."""
    insert = postgresql.insert if is_postgres(session) else sqlite.insert
    stmt: Any = insert(table).from_select(columns, source).on_conflict_do_nothing(index_elements=conflict_cols)
    result = session.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)


def take_many_at_commit(
    session: Session,
    table: Table,
    column: str,
    merchant_id: int,
    amounts: dict[int, int],
    *,
    touch: str | None = None,
    refused: Any,
) -> bool:
    """PostgreSQL: ``column -= amount`` on every row of ``amounts``, sent with the COMMIT
    (``db.final_write``); False on SQLite, where the caller takes at once (``take_many``).

    Unconditional: the table's ``CHECK (column >= 0)`` refuses a row that cannot cover its
    amount, which aborts the transaction; ``refused(session, error)`` then names the domain
    error. Rows are locked in id order, as in ``take_many``."""
    from siyu.db import final_write
    from siyu.kit.timeutil import utcnow

    if not is_postgres(session) or not amounts:
        return False
    sql = driver_style(_take_sql(table, column, touch, conditional=False))
    final_write.defer(session, sql, _take_params(merchant_id, amounts, utcnow()), refused)
    return True


def _take_sql(table: Table, column: str, touch: str | None, *, conditional: bool) -> str:
    """PostgreSQL: lock the rows in id order (a materialised CTE, whatever join the planner picks),
    then ``column -= amount``; ``conditional``: only rows that cover it, returning their ids."""
    key = (table.name, column, touch or "", conditional)
    sql = _TAKE_SQL.get(key)
    if sql is None:
        t = table.name
        sets = f"{column} = {t}.{column} - v.amount" + (f", {touch} = CAST(:touched AS TIMESTAMPTZ)" if touch else "")
        sql = _TAKE_SQL[key] = (
            f"WITH locked AS MATERIALIZED (SELECT id FROM {t} WHERE merchant_id = :merchant_id "
            f"AND id = ANY(CAST(:ids AS BIGINT[])) ORDER BY id FOR UPDATE) "
            f"UPDATE {t} SET {sets} "
            f"FROM locked JOIN unnest(CAST(:ids AS BIGINT[]), CAST(:amounts AS BIGINT[])) AS v(id, amount) "
            f"ON v.id = locked.id WHERE {t}.merchant_id = :merchant_id AND {t}.id = v.id"
            + (f" AND {t}.{column} >= v.amount RETURNING {t}.id" if conditional else "")
        )
    return sql


def _take_params(merchant_id: int, amounts: dict[int, int], now: Any) -> dict[str, Any]:
    ids = sorted(amounts)
    return {
        "merchant_id": merchant_id, "ids": int_array_text(ids), "amounts": int_array_text(amounts[i] for i in ids),
        "touched": now,
    }


_TAKE_SQL: dict[tuple[str, str, str, bool], str] = {}


def is_check_violation(error: BaseException, constraint_suffix: str) -> bool:
    """``error`` (a driver or SQLAlchemy error) is a CHECK constraint refusal whose name ends with ``constraint_suffix``."""
    original = getattr(error, "orig", error)
    diag = getattr(original, "diag", None)
    name = getattr(diag, "constraint_name", None) or ""
    return getattr(original, "sqlstate", None) == "23514" and name.endswith(constraint_suffix)


@contextmanager
def without_nested_loops(session: Session) -> Iterator[None]:
    """PostgreSQL: plan the statements of the block without nested-loop joins (hash or merge
    joins: linear in the rows joined whatever the estimates), then restore the setting.

    For set-based rebuilds right after a bulk load: the planner's statistics then still describe
    the tables as they were (a new merchant's rows estimated at ~1), and a nested loop that
    rescans a whole side per outer row — cheap for one row — went on for minutes. Only for
    blocks whose every join is meant to be over a large share of the rows on both sides: a
    single-row lookup wants its index probe. SQLite: nothing (its planner only nests loops and
    indexes the inner side itself). Two statements on PostgreSQL (read and set, restore)."""
    if not is_postgres(session):
        yield
        return
    from sqlalchemy import text

    previous = session.execute(
        text("SELECT current_setting('enable_nestloop'), set_config('enable_nestloop', 'off', true)")
    ).scalar_one()
    yield
    # Not in a ``finally``: after an error the transaction is aborted (a statement would fail
    # too), and its rollback, or the savepoint's, undoes the SET LOCAL anyway.
    session.execute(text("SELECT set_config('enable_nestloop', :previous, true)"), {"previous": previous})
