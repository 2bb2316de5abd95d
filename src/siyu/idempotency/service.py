"""Idempotency-Key for admin creates: the key's rules, the claim, the stored answer, retention.

Semantics (as Stripe's): without a key a request behaves as it always did. With one, the first
request claims ``(merchant, scope, key)`` in its own transaction before it creates anything and
stores its answer in the same row before it commits; a retry after that commit gets the stored
answer back (the API answers it with 200 and ``Idempotent-Replayed: true``); the same key with
a different request (another body or other path parameters) is 409 ``idempotency_key_reused``.
A request that fails rolls its claim back with everything else, so an error is never stored and
a corrected retry with the same key may succeed.

Two requests with one key at once: on PostgreSQL the second one's claim waits on the unique
index until the first commits (then it replays) or rolls back (then it claims the key itself),
so exactly one creates; SQLite serialises writers anyway (``BEGIN IMMEDIATE``).

An answer that no configured key opens (``SIYU_SECRET_KEY`` changed and the old one is neither in
``SIYU_SECRET_KEY_PREVIOUS`` nor was ``siyu secrets rotate`` run) is 409
``idempotency_answer_unavailable``: the first request did create, so running the create again
would duplicate it, and there is nothing to replay. The client looks the result up (or uses a
new key to create again deliberately); the key frees itself after its retention. Never a 500.

Retention: a key is kept ``RETENTION`` (24 h). A key older than that is treated as unused (its
row is replaced), and each merchant's nightly purge (``tasks``, a recurring job) deletes the
rows past it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy.orm import Session

from siyu.idempotency import repository as repo
from siyu.idempotency.models import IdempotentRequest
from siyu.kit.crypto import SecretBox
from siyu.kit.errors import DomainError, FieldError, register_messages
from siyu.kit.sealed_columns import sealed_column
from siyu.kit.timeutil import utcnow

RETENTION = dt.timedelta(hours=24)
KEY_MAX_LENGTH = 120
HEADER = "Idempotency-Key"
PURGE_JOB = "idempotency.purge"
SEALED = sealed_column("idempotent_requests", "response_enc")

log = logging.getLogger(__name__)

register_messages(
    {
        "idempotency_key_invalid": (
            422,
            "Idempotency-Key 须为 1 到 120 个字符（去掉首尾空格后）",
            "The Idempotency-Key header must be 1 to 120 characters (leading and trailing spaces removed)",
        ),
        "idempotency_answer_unavailable": (
            409,
            "使用此 Idempotency-Key 的首次请求已完成，但其保存的应答已无法读取（服务器密钥已更换）："
            "请查询该资源确认结果，不要用此键重试；如需再次创建，请使用新的键",
            "The first request with this Idempotency-Key was completed, but its stored answer can no longer "
            "be read (the server's secret key changed): look the result up instead of retrying with this key; "
            "use a new key to create again",
        ),
    }
)


def check_key(raw: str) -> str:
    """The key as stored: trimmed, 1 to ``KEY_MAX_LENGTH`` characters, else 422 ``idempotency_key_invalid``."""
    key = raw.strip()
    if not key:
        raise _invalid_key("blank", "must not be empty", "不能为空")
    if len(key) > KEY_MAX_LENGTH:
        raise _invalid_key("too_long", f"at most {KEY_MAX_LENGTH} characters", f"最多 {KEY_MAX_LENGTH} 个字符")
    return key


def _invalid_key(code: str, message: str, zh: str) -> DomainError:
    return DomainError("idempotency_key_invalid", fields=[FieldError(f"header.{HEADER}", code, message, zh)])


def request_hash(inputs: dict[str, Any]) -> str:
    """SHA-256 of the request's values (JSON-ready: path, query and body), keys sorted."""
    text = json.dumps(inputs, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Claimed:
    """The key is this request's: create, then ``complete`` (all in the claiming transaction)."""

    row: IdempotentRequest


@dataclass(frozen=True)
class Stored:
    """An earlier request with this key and these values committed: answer ``body`` again."""

    status_code: int
    body: bytes


def claim(
    session: Session, merchant_id: int, scope: str, key: str, digest: str, *, secret_key: str,
    now: dt.datetime | None = None,
) -> Claimed | Stored:
    """Claim ``key`` for this request, or the stored answer of the request that holds it.

    Raises 409 ``idempotency_key_reused`` when the holder's values differ from ``digest``."""
    now = now or utcnow()
    cutoff = now - RETENTION
    values = {"merchant_id": merchant_id, "scope": scope, "key": key, "request_hash": digest,
              "status_code": None, "response_enc": None, "created_at": now}
    for _ in range(3):
        row = repo.insert_claim(session, values)
        if row is not None:
            return Claimed(row)
        found = repo.find(session, merchant_id, scope, key)
        if found is None:
            continue  # purged between the two statements: claim it again
        if found.created_at < cutoff:
            repo.delete_expired(session, found, cutoff)  # past its retention: the key is free again
            continue
        if found.request_hash != digest:
            raise DomainError("idempotency_key_reused")
        if found.status_code is None or found.response_enc is None:
            raise DomainError("conflict")  # cannot be committed without its answer; never a replay of nothing
        return Stored(found.status_code, _open_answer(found, secret_key).encode())
    raise DomainError("conflict")  # the key changed hands three times in a row: the client retries


def complete(session: Session, claimed: Claimed, status_code: int, body: bytes, *, secret_key: str) -> None:
    """Store the create's answer in its claimed row (the transaction's commit keeps both or neither)."""
    row = claimed.row
    row.status_code = status_code
    row.response_enc = _box(secret_key).encrypt(body.decode(), aad=_aad(row))


def release(session: Session, claimed: Claimed) -> None:
    """Give the key back (an endpoint answered an error without raising): nothing is stored."""
    session.delete(claimed.row)


def purge(session: Session, merchant_id: int, now: dt.datetime) -> int:
    """Delete the merchant's keys past their retention; the number deleted."""
    return repo.delete_older_than(session, merchant_id, now - RETENTION)


def _open_answer(row: IdempotentRequest, secret_key: str) -> str:
    """The stored answer in clear; 409 ``idempotency_answer_unavailable`` when no key opens it."""
    assert row.response_enc is not None
    try:
        return _box(secret_key).decrypt(row.response_enc, aad=_aad(row))
    except (InvalidTag, ValueError):
        log.warning(
            "idempotent answer %s id=%s (merchant %s) opens with no configured secret key: "
            "was SIYU_SECRET_KEY changed without SIYU_SECRET_KEY_PREVIOUS?",
            SEALED.name, row.id, row.merchant_id,
        )
        raise DomainError("idempotency_answer_unavailable") from None


def _box(secret_key: str) -> SecretBox:
    # built per use: the derived keys are cached in kit.crypto, and the previous secrets declared
    # for this one (SIYU_SECRET_KEY_PREVIOUS) are looked up each time
    return SEALED.box(secret_key)


def _aad(row: IdempotentRequest) -> str:
    return SEALED.aad(row.merchant_id, row.id)
