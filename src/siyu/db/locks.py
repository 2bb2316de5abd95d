"""Transaction-scoped named locks.

PostgreSQL: ``pg_advisory_xact_lock`` on a 64-bit key derived from the name and a number (e.g.
a merchant id), released at commit or rollback. SQLite needs none: its ``BEGIN IMMEDIATE``
already serialises writers.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.orm import Session

from siyu.db.dialect import is_postgres


def lock_key(name: str, number: int) -> int:
    """A stable signed 64-bit key for (name, number)."""
    digest = hashlib.blake2b(f"{name}:{number}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def xact_lock(session: Session, name: str, number: int) -> None:
    """Wait for, then hold until the end of the transaction, the lock named (name, number)."""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name, number)})
