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
- **Key rotation.** A box may know *previous* secrets (``SIYU_SECRET_KEY_PREVIOUS``): it always
  encrypts with the current secret and opens a value with the current one first, then each
  previous one. ``unseal`` says whether a value was opened with a previous secret (or is an
  unbound ``v1``), and ``reseal`` re-encrypts exactly those; ``siyu secrets rotate``
  (``kit.sealed_columns``, ``tenancy.rotation``) does it for every stored value, after which
  the previous secrets can be dropped. The stored format does not change (a ``v1``/``v2``
  value says nothing about its key: the key is found by trying).
  A box built from a secret alone (``SecretBox(settings.secret_key)``, as the app, the workers
  and ``referral.pii`` do) uses the previous secrets declared for that secret with
  ``declare_previous_keys`` — ``config.Settings`` declares its own when it is built — so no
  caller has to carry them; ``previous=`` overrides that.
- Tokens are 32 random bytes; only their SHA-256 is stored, so a database leak reveals none.
  ``token_digest`` uses no secret: rotating ``SIYU_SECRET_KEY`` logs nobody out and keeps every
  API key working.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
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


class Unsealed(NamedTuple):
    """A value opened by ``SecretBox.unseal``: its plaintext, and whether it should be written
    again (``stale``: opened with a previous secret, or an unbound ``v1`` read with its binding)."""

    plaintext: str
    stale: bool


_PREVIOUS: dict[str, tuple[str, ...]] = {}


def declare_previous_keys(secret_key: str, previous: Iterable[str]) -> None:
    """The older secrets that a box built from ``secret_key`` alone also opens values with (in
    this order); an empty ``previous`` forgets them. The last declaration for a secret wins."""
    _PREVIOUS[secret_key] = tuple(dict.fromkeys(k for k in previous if k and k != secret_key))


def previous_keys(secret_key: str) -> tuple[str, ...]:
    """The previous secrets declared for ``secret_key`` (none by default)."""
    return _PREVIOUS.get(secret_key, ())


@lru_cache(maxsize=64)
def _aead(secret_key: str, purpose: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret_key.encode())
    return AESGCM(key)


class SecretBox:
    PREFIX = V2  # what ``encrypt(..., aad=...)`` writes

    def __init__(
        self, secret_key: str, purpose: bytes = b"siyu/merchant-credentials", *, previous: Sequence[str] | None = None
    ) -> None:
        self._aead = _aead(secret_key, purpose)
        olds = previous_keys(secret_key) if previous is None else previous
        self._previous = tuple(_aead(k, purpose) for k in dict.fromkeys(olds) if k and k != secret_key)

    def encrypt(self, plaintext: str, *, aad: str | None = None) -> str:
        """``aad`` (``bind(...)``) gives a ``v2`` value bound to its place; without it a legacy,
        unbound ``v1`` value (kept for callers not yet passing their binding). Always with the
        current secret."""
        nonce = os.urandom(_NONCE)
        if aad is None:
            sealed = self._aead.encrypt(nonce, plaintext.encode(), V1.encode())
            return V1 + base64.b64encode(nonce + sealed).decode()
        sealed = self._aead.encrypt(nonce, plaintext.encode(), _v2_aad(aad))
        return V2 + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, token: str, *, aad: str | None = None) -> str:
        """The plaintext; ``cryptography.exceptions.InvalidTag`` on a wrong key (the current and
        every previous one), tampering or a ``v2`` value read with another binding;
        ``ValueError`` on an unknown format or a ``v2`` value read without its binding."""
        return self.unseal(token, aad=aad).plaintext

    def unseal(self, token: str, *, aad: str | None = None) -> Unsealed:
        """``decrypt``, telling whether the value was opened with a previous secret or is a legacy
        ``v1`` value given its binding: either way ``reseal`` would write it anew."""
        if token.startswith(V1):
            raw, associated = base64.b64decode(token[len(V1):]), V1.encode()
        elif token.startswith(V2):
            if aad is None:
                raise ValueError("a v2 secret is bound to its place: pass its aad")
            raw, associated = base64.b64decode(token[len(V2):]), _v2_aad(aad)
        else:
            raise ValueError("unknown secret format")
        legacy = token.startswith(V1) and aad is not None
        nonce, sealed = raw[:_NONCE], raw[_NONCE:]
        try:
            return Unsealed(self._aead.decrypt(nonce, sealed, associated).decode(), legacy)
        except InvalidTag:
            for older in self._previous:
                try:
                    return Unsealed(older.decrypt(nonce, sealed, associated).decode(), True)
                except InvalidTag:
                    continue
            raise

    def reseal(self, token: str, *, aad: str) -> str:
        """``token`` as it should be stored: a legacy ``v1`` value, or one sealed with a previous
        secret, re-encrypted with the current secret and bound to ``aad``; a current ``v2``
        value checked and kept as it is."""
        opened = self.unseal(token, aad=aad)
        return self.encrypt(opened.plaintext, aad=aad) if opened.stale else token


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
