"""Rotating ``SIYU_SECRET_KEY``: re-seal every stored secret with the current key.

The operator's sequence (README, "Rotating the secret key"):

1. set the new ``SIYU_SECRET_KEY`` and move the old one to ``SIYU_SECRET_KEY_PREVIOUS`` on
   every API and worker process (values sealed with the old key keep opening; new values are
   sealed with the new one);
2. run ``siyu secrets rotate``: every value of every column in ``kit.sealed_columns`` that
   opens only with a previous key (or is a legacy unbound ``v1`` value) is encrypted again with
   the current key, bound to its place;
3. when it reports no value left on a previous key and none unreadable, remove
   ``SIYU_SECRET_KEY_PREVIOUS``.

Properties:

- **Batches**: each column is walked in id order, ``batch_size`` rows per transaction, so a
  large table never holds one long transaction and a crash loses at most one batch.
- **Idempotent and resumable**: a value already sealed with the current key is left as it is
  (checked by opening it), so a second run changes nothing and an interrupted run simply
  continues when started again.
- **Safe next to live writes**: a value is replaced only if it is still the one that was read
  (``UPDATE ... WHERE id = :id AND <column> = :old``); a value written meanwhile by the app (with
  the current key) is counted as ``raced`` and left alone.
- **Nothing is lost**: a value that no configured key opens is counted as ``unreadable``, listed
  and left untouched (it may open once the right previous key is configured); the command then
  exits non-zero so the previous key is not removed by mistake.
- The key never reaches the database; token and API-key digests use no secret and need nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag

from siyu.kit.sealed_columns import SEALED_COLUMNS, SealedColumn

MAX_LISTED = 50  # unreadable values listed by place (the count is always exact)


@dataclass
class ColumnCount:
    column: SealedColumn
    resealed: int = 0  # opened with a previous key (or unbound v1): written again with the current key
    current: int = 0  # already sealed with the current key: unchanged
    unreadable: int = 0  # no configured key opens it: unchanged
    raced: int = 0  # changed by someone else between the read and the write: unchanged


@dataclass(frozen=True)
class Unreadable:
    column: str  # "<table>.<column>"
    merchant_id: int
    row_id: int


@dataclass
class RotationReport:
    columns: list[ColumnCount] = field(default_factory=list)
    unreadable_places: list[Unreadable] = field(default_factory=list)

    def total(self, what: str) -> int:
        return sum(getattr(c, what) for c in self.columns)


def rotate(
    engine: sa.Engine,
    secret_key: str,
    previous: Sequence[str],
    *,
    merchant_ids: Iterable[int] | None = None,
    batch_size: int = 500,
    columns: Sequence[SealedColumn] = SEALED_COLUMNS,
    progress: Callable[[ColumnCount], None] | None = None,
) -> RotationReport:
    """Re-seal with ``secret_key`` every value of ``columns`` (all merchants', or only those of
    ``merchant_ids``) that opens with one of ``previous`` or is an unbound ``v1`` value.
    ``progress`` is called after each committed batch."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    only = None if merchant_ids is None else sorted({int(m) for m in merchant_ids})
    report = RotationReport()
    for column in columns:
        count = ColumnCount(column)
        report.columns.append(count)
        _rotate_column(engine, column, secret_key, previous, only, batch_size, count, report, progress)
    return report


def _rotate_column(
    engine: sa.Engine,
    column: SealedColumn,
    secret_key: str,
    previous: Sequence[str],
    only: list[int] | None,
    batch_size: int,
    count: ColumnCount,
    report: RotationReport,
    progress: Callable[[ColumnCount], None] | None,
) -> None:
    box = column.box(secret_key, list(previous))
    t = sa.table(
        column.table,
        sa.column("id", sa.BigInteger),
        *([] if column.merchant_column == "id" else [sa.column(column.merchant_column, sa.BigInteger)]),
        sa.column(column.column, sa.Text),
    )
    row_id, merchant, value = t.c.id, t.c[column.merchant_column], t.c[column.column]
    last_id = 0
    while True:
        query = sa.select(row_id, merchant, value).where(row_id > last_id, value.is_not(None))
        if only is not None:
            if not only:
                return
            query = query.where(merchant.in_(only))
        with engine.begin() as conn:
            rows = conn.execute(query.order_by(row_id).limit(batch_size)).all()
            if not rows:
                return
            for rid, mid, token in rows:
                if not token:
                    continue
                aad = column.aad(mid, rid)
                try:
                    opened = box.unseal(token, aad=aad)
                except (InvalidTag, ValueError):
                    count.unreadable += 1
                    if len(report.unreadable_places) < MAX_LISTED:
                        report.unreadable_places.append(Unreadable(column.name, mid, rid))
                    continue
                if not opened.stale:
                    count.current += 1
                    continue
                fresh = box.encrypt(opened.plaintext, aad=aad)
                done = conn.execute(sa.update(t).where(row_id == rid, value == token).values({column.column: fresh}))
                if done.rowcount == 1:
                    count.resealed += 1
                else:
                    count.raced += 1
            last_id = rows[-1][0]
        if progress is not None:
            progress(count)
