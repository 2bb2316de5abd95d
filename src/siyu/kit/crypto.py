"""Secrets at rest and opaque tokens, built on ``cryptography`` and ``hashlib`` only.

- ``SecretBox`` encrypts values at rest (merchant credentials, payees' and distributors' real
  names) with AES-256-GCM (``cryptography``'s ``AESGCM``) under a key derived from
  ``SIYU_SECRET_KEY`` by HKDF-SHA256 with a per-use ``purpose``; each value gets a random
  96-bit nonce.
- **Associated data binds a ciphertext to its place.** ``encrypt(value, aad=bind(...))`` stores
  ``v2:<base64(nonce|ciphertext)>`` sealed with the associated data ``v2|<table>.<column>|
  m=<merchant id>|id=<row id>``: copying that ciphertext into another row or column (a
  database-level attacker swapping a victim's name or pay key into their own row, or a bug)
  fails to decrypt (``InvalidTag``) instead of silently yielding the other row's secret. The
  version is part of the associated data, so a ``v2`` value cannot be downgraded either.
- ``v1:<...>`` values (written before this binding, associated data ``v1:`` only) still decrypt,
  with or without ``aad``: ``is_legacy`` says a value should be re-encrypted with its binding
  (``reseal``) the next time its row is written or by a migration step.
- Tokens are 32 random bytes; only their SHA-256 is stored, so a database leak reveals none.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

V1 = "v1:"
V2 = "v2:"
_NONCE = 12


def bind(table: str, column: str, merchant_id: int, row_id: int | str) -> str:
    """The associated data of a value stored in ``table.column`` of one row: the merchant and the
    row's id (``row_id`` of a merchant-level row is the merchant id)."""
    if not table or not column or "|" in table + column:
        raise ValueError("table and column name the place of the value")
    return f"{table}.{column}|m={int(merchant_id)}|id={row_id}"


class SecretBox:
    PREFIX = V2  # what ``encrypt(..., aad=...)`` writes

    def __init__(self, secret_key: str, purpose: bytes = b"siyu/merchant-credentials") -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret_key.encode())
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str, *, aad: str | None = None) -> str:
        """``aad`` (``bind(...)``) gives a ``v2`` value bound to its place; without it a legacy,
        unbound ``v1`` value (kept for callers not yet passing their binding)."""
        nonce = os.urandom(_NONCE)
        if aad is None:
            sealed = self._aead.encrypt(nonce, plaintext.encode(), V1.encode())
            return V1 + base64.b64encode(nonce + sealed).decode()
        sealed = self._aead.encrypt(nonce, plaintext.encode(), _v2_aad(aad))
        return V2 + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, token: str, *, aad: str | None = None) -> str:
        """The plaintext; ``cryptography.exceptions.InvalidTag`` on a wrong key, tampering or a
        ``v2`` value read with another binding; ``ValueError`` on an unknown format or a ``v2``
        value read without its binding."""
        if token.startswith(V1):
            raw = base64.b64decode(token[len(V1):])
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], V1.encode()).decode()
        if token.startswith(V2):
            if aad is None:
                raise ValueError("a v2 secret is bound to its place: pass its aad")
            raw = base64.b64decode(token[len(V2):])
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _v2_aad(aad)).decode()
        raise ValueError("unknown secret format")

    def reseal(self, token: str, *, aad: str) -> str:
        """A legacy ``v1`` value re-encrypted bound to ``aad`` (a ``v2`` value checked and kept)."""
        if token.startswith(V2):
            self.decrypt(token, aad=aad)
            return token
        return self.encrypt(self.decrypt(token), aad=aad)


def is_legacy(token: str | None) -> bool:
    """Whether a stored value is an unbound ``v1`` ciphertext (to be resealed with its binding)."""
    return bool(token) and str(token).startswith(V1)


def _v2_aad(aad: str) -> bytes:
    return ("v2|" + aad).encode()


def new_token(prefix: str) -> str:
    """A bearer token such as ``sk_staff_<43 url-safe chars>``; the prefix tells humans what it is."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
