"""Queries of ``idempotent_requests``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from siyu.db.dialect import insert_entity_or_nothing
from siyu.idempotency.models import IdempotentRequest


def insert_claim(session: Session, values: dict[str, Any]) -> IdempotentRequest | None:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING``: the new row, or None when the key is taken.

    On PostgreSQL a row of the same key written by a transaction still in flight makes the
    statement wait for that transaction (the unique index), like a plain INSERT would: None then
    means it committed, and ``find`` reads its row. Nothing failed, so no savepoint is needed."""
    row: IdempotentRequest | None = insert_entity_or_nothing(session, IdempotentRequest, values)
    return row


def find(session: Session, merchant_id: int, scope: str, key: str) -> IdempotentRequest | None:
    stmt = (
        select(IdempotentRequest)
        .where(
            IdempotentRequest.merchant_id == merchant_id,
            IdempotentRequest.scope == scope,
            IdempotentRequest.key == key,
        )
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).first()


def delete_expired(session: Session, row: IdempotentRequest, cutoff: dt.datetime) -> None:
    """Delete one row created before ``cutoff`` (a no-op when another request already did)."""
    session.execute(
        delete(IdempotentRequest)
        .where(IdempotentRequest.id == row.id, IdempotentRequest.created_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    session.expunge(row)


def delete_older_than(session: Session, merchant_id: int, cutoff: dt.datetime) -> int:
    result: Any = session.execute(
        delete(IdempotentRequest)
        .where(IdempotentRequest.merchant_id == merchant_id, IdempotentRequest.created_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)

