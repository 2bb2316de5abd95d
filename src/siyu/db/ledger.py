"""PostgreSQL statements for the points ledger's hot path (award and spend).

``loyalty.service.award`` / ``spend`` run thousands of times a second; on PostgreSQL each is one
round trip of data-modifying CTEs (two for a spend that raced another writer of the same account)
instead of half a dozen ORM statements. Each function returns None on another database: the caller then takes its portable
multi-statement path (SQLite has no concurrent writers, its ``BEGIN IMMEDIATE`` serialises them).

The statements keep the ledger's locking rule: lots move only under the member's ``points_accounts`` row lock
(the row is updated first; the one-statement spend checks the row is the version its lots were read with).

- award: the account upsert (``balance + n``, the row lock) feeds the entry insert
  (``ON CONFLICT (merchant_id, idempotency_key) DO NOTHING``), which feeds the lot insert; the
  statement also returns what the caller needs to validate its cached rules (the settings row's
  ``updated_at`` and the merchant's zone) and whether any level has a ``min_points`` threshold.
  A key that already exists returns no entry: the caller takes the credit back.
- spend, uncontended (``spend_points_at_once``): debit, entry, lots and uses in one statement,
  which writes nothing unless the account row is still the version of its snapshot (see
  ``_SPEND_ONE``); otherwise the caller debits and runs the next one.
- spend, after the caller's debit (``spend_points``): the caller has already debited the account (conditional ``balance >= n`` update, which
  took the row lock). Only then does this statement start, so its snapshot sees every lot
  change of the transactions that held the lock before (READ COMMITTED takes one snapshot per
  statement; reading lots in the same statement as the lock would see lots as of before the
  wait). It inserts the entry and, if that was new, takes the open lots soonest-expiry first
  (never-expiring last, then oldest) by a running sum, and records each take in
  ``points_lot_uses``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from sqlalchemy import column, text
from sqlalchemy.orm import Session

from siyu.db.dialect import is_postgres


class AwardResult(NamedTuple):
    entry_id: int | None  # None: the idempotency key already existed (the account was still credited)
    balance: int  # the account balance after the credit
    account_id: int
    rules_version: dt.datetime | None  # loyalty_settings.updated_at (None: no settings row)
    timezone: str | None  # merchants.timezone
    ladder_uses_points: bool  # some level has min_points set


class SpendResult(NamedTuple):
    entry_id: int | None  # None: the idempotency key already existed; nothing else was written
    taken: int  # points taken from lots (equals the spend unless the lots were short)


_AWARD = text("""
WITH acct AS (
    INSERT INTO points_accounts AS a (merchant_id, member_id, balance, earned_total, spent_total, updated_at)
    VALUES (:m, :member, :points, :earned, 0, :now)
    ON CONFLICT (merchant_id, member_id) DO UPDATE
        SET balance = a.balance + EXCLUDED.balance, earned_total = a.earned_total + EXCLUDED.earned_total,
            updated_at = EXCLUDED.updated_at
    RETURNING a.id, a.balance
), entry AS (
    INSERT INTO points_entries
        (merchant_id, member_id, delta, kind, reason, ref, idempotency_key, balance_after, shortfall,
         reverses_entry_id, created_at)
    SELECT :m, :member, :points, CAST(:kind AS varchar), CAST(:reason AS varchar), CAST(:ref AS varchar),
           CAST(:key AS varchar), acct.balance, 0, NULL, :now
    FROM acct
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
    RETURNING id
), lot AS (
    INSERT INTO points_lots (merchant_id, member_id, entry_id, points, remaining, expires_at, created_at)
    SELECT :m, :member, entry.id, :points, :points, CAST(:expires AS timestamptz), :now FROM entry
)
SELECT entry.id, acct.balance, acct.id,
       (SELECT s.updated_at FROM loyalty_settings s WHERE s.merchant_id = :m),
       (SELECT t.timezone FROM merchants t WHERE t.id = :m),
       EXISTS (SELECT 1 FROM loyalty_levels v WHERE v.merchant_id = :m AND v.min_points IS NOT NULL)
FROM acct LEFT JOIN entry ON true
""").columns(*(column(c) for c in ("entry_id", "balance", "account_id", "rules_version", "timezone", "ladder")))

# The CTEs both spends end with: once ``entry`` inserted a new entry, take the open lots
# soonest-expiry first (never-expiring last, then oldest) by a running sum, and record each take.
# Each statement names its result columns (``.columns``, untyped: the driver's values as they
# come): SQLAlchemy then caches the result metadata with the compiled statement instead of
# building it from the cursor description on every call (a tenth of an award's Python calls).
_TAKE_LOTS = """), open AS (
    SELECT l.id, l.remaining,
           sum(l.remaining) OVER (ORDER BY l.expires_at ASC NULLS LAST, l.id ROWS UNBOUNDED PRECEDING) AS upto
    FROM points_lots l
    WHERE l.merchant_id = :m AND l.member_id = :member AND l.remaining > 0 AND l.expired_at IS NULL
      AND EXISTS (SELECT 1 FROM entry)
), takes AS (
    SELECT id, LEAST(remaining, :points - (upto - remaining)) AS take FROM open WHERE upto - remaining < :points
), moved AS (
    UPDATE points_lots l SET remaining = l.remaining - t.take FROM takes t
    WHERE l.id = t.id
    RETURNING l.id, t.take
), uses AS (
    INSERT INTO points_lot_uses (merchant_id, entry_id, lot_id, points, returned)
    SELECT :m, entry.id, moved.id, moved.take, 0 FROM moved, entry
)
"""

_SPEND = text(
    """
WITH entry AS (
    INSERT INTO points_entries
        (merchant_id, member_id, delta, kind, reason, ref, idempotency_key, balance_after, shortfall,
         reverses_entry_id, created_at)
    VALUES (:m, :member, -CAST(:points AS integer), CAST(:kind AS varchar), CAST(:reason AS varchar),
            CAST(:ref AS varchar), CAST(:key AS varchar), :balance, 0, NULL, :now)
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
    RETURNING id
"""
    + _TAKE_LOTS
    + """SELECT entry.id, (SELECT coalesce(sum(take), 0) FROM moved) FROM (SELECT 1) AS one LEFT JOIN entry ON true
"""
).columns(column("entry_id"), column("taken"))


# The spend in ONE statement when nobody changed the account since the statement's snapshot.
# ``snap`` reads the account row's physical address (ctid) in the snapshot; the debit updates the
# row only at that address. A transaction that changed the account after the snapshot was taken
# (and so possibly its lots: every path that moves lots moves the balance in the same
# transaction) left a newer row version at another address: READ COMMITTED re-checks the WHERE
# clause on that newer version, the ctid no longer matches, nothing is updated, and, since the
# entry and the lots hang off the debit's RETURNING, nothing at all is written. The caller then
# takes the two-statement path. An insufficient balance also writes nothing.
_SPEND_ONE = text(
    """
WITH snap AS (
    SELECT ctid AS row_id FROM points_accounts WHERE merchant_id = :m AND member_id = :member
), acct AS (
    UPDATE points_accounts a
    SET balance = a.balance - :points, spent_total = a.spent_total + :spent, updated_at = :now
    FROM snap
    WHERE a.merchant_id = :m AND a.member_id = :member AND a.ctid = snap.row_id AND a.balance >= :points
    RETURNING a.id, a.balance
), entry AS (
    INSERT INTO points_entries
        (merchant_id, member_id, delta, kind, reason, ref, idempotency_key, balance_after, shortfall,
         reverses_entry_id, created_at)
    SELECT :m, :member, -CAST(:points AS integer), CAST(:kind AS varchar), CAST(:reason AS varchar),
           CAST(:ref AS varchar), CAST(:key AS varchar), acct.balance, 0, NULL, :now
    FROM acct
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
    RETURNING id
"""
    + _TAKE_LOTS
    + """SELECT acct.id, acct.balance, entry.id, (SELECT coalesce(sum(take), 0) FROM moved)
FROM (SELECT 1) AS one LEFT JOIN acct ON true LEFT JOIN entry ON true
"""
).columns(*(column(c) for c in ("account_id", "balance", "entry_id", "taken")))


class SpendOneResult(NamedTuple):
    account_id: (
        int | None
    )  # None: nothing was written (balance short, no account, or changed since the snapshot)
    balance: int | None
    entry_id: int | None  # None with an account_id: the key existed; the account was still debited
    taken: int


def spend_points_at_once(
    session: Session,
    *,
    merchant_id: int,
    member_id: int,
    points: int,
    spent: int,
    kind: str,
    reason: str,
    ref: str | None,
    key: str,
    now: dt.datetime,
) -> SpendOneResult | None:
    """Debit, entry, lots and their uses in one statement (PostgreSQL; None elsewhere). See ``_SPEND_ONE``."""
    if not is_postgres(session):
        return None
    session.flush()
    row: Any = (
        session.connection()
        .execute(
            _SPEND_ONE,
            {
                "m": merchant_id,
                "member": member_id,
                "points": points,
                "spent": spent,
                "kind": kind,
                "reason": reason,
                "ref": ref,
                "key": key,
                "now": now,
            },
        )
        .one()
    )
    return SpendOneResult(row[0], row[1], row[2], int(row[3]))


def award_points(
    session: Session,
    *,
    merchant_id: int,
    member_id: int,
    points: int,
    earned: int,
    kind: str,
    reason: str,
    ref: str | None,
    key: str,
    expires_at: dt.datetime | None,
    now: dt.datetime,
) -> AwardResult | None:
    """Credit the account, insert the entry and its lot, in one statement (PostgreSQL; None elsewhere)."""
    if not is_postgres(session):
        return None
    session.flush()  # pending ORM changes first, as a query would autoflush them
    row: Any = (
        session.connection()
        .execute(
            _AWARD,
            {
                "m": merchant_id,
                "member": member_id,
                "points": points,
                "earned": earned,
                "kind": kind,
                "reason": reason,
                "ref": ref,
                "key": key,
                "expires": expires_at,
                "now": now,
            },
        )
        .one()
    )
    return AwardResult(row[0], int(row[1]), int(row[2]), row[3], row[4], bool(row[5]))


def spend_points(
    session: Session,
    *,
    merchant_id: int,
    member_id: int,
    points: int,
    kind: str,
    reason: str,
    ref: str | None,
    key: str,
    balance: int,
    now: dt.datetime,
) -> SpendResult | None:
    """After the caller's debit: insert the entry, take the lots, record the uses (PostgreSQL; None elsewhere)."""
    if not is_postgres(session):
        return None
    session.flush()
    row: Any = (
        session.connection()
        .execute(
            _SPEND,
            {
                "m": merchant_id,
                "member": member_id,
                "points": points,
                "kind": kind,
                "reason": reason,
                "ref": ref,
                "key": key,
                "balance": balance,
                "now": now,
            },
        )
        .one()
    )
    return SpendResult(row[0], int(row[1]))
