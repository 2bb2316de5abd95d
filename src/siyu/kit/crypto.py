"""Secrets at rest and opaque tokens, built on ``cryptography`` and ``hashlib`` only.

- ``SecretBox`` encrypts merchant credentials (pay keys, app secrets) with AES-256-GCM under
  a key derived from ``SIYU_SECRET_KEY`` by HKDF-SHA256; each value gets a random nonce and is
  stored as ``v1:<base64(nonce|ciphertext)>``.
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


class SecretBox:
    PREFIX = "v1:"

    def __init__(self, secret_key: str, purpose: bytes = b"siyu/merchant-credentials") -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret_key.encode())
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), self.PREFIX.encode())
        return self.PREFIX + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, token: str) -> str:
        if not token.startswith(self.PREFIX):
            raise ValueError("unknown secret format")
        raw = base64.b64decode(token[len(self.PREFIX) :])
        return self._aead.decrypt(raw[:12], raw[12:], self.PREFIX.encode()).decode()


def new_token(prefix: str) -> str:
    """A bearer token such as ``sk_staff_<43 url-safe chars>``; the prefix tells humans what it is."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
