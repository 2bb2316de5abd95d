"""Distributors' and payees' personal data at rest: real names and phones.

- Encrypted with ``SecretBox`` (AES-256-GCM, ``cryptography``) under a key derived from
  ``SIYU_SECRET_KEY`` with its own purpose per kind of data, and **bound to its place**
  (associated data ``<table>.<column>|m=<merchant>|id=<row id>``, ``kit.crypto.bind``): a
  ciphertext copied into another distributor's or withdrawal's row does not decrypt.
- A masked copy sits next to each value (``张**丰`` / ``138****5678``) for lists, statements and
  the distributor's own view; the plaintext is decrypted only for the payout that needs it and
  for staff with the ``finance:read`` permission (finance, owner) on the distributor's detail.
- ``encrypt_plaintext_columns(connection, secret_key)`` is the data step of the migration that
  replaces ``distributors.real_name`` / ``phone`` by the encrypted columns: it must run in
  Python (the key never reaches the database) after the new columns exist and before the old
  ones are dropped, and it is idempotent (rows already encrypted are skipped).
- The columns are registered in ``kit.sealed_columns`` (their purposes come from there), so
  ``siyu secrets rotate`` re-seals them when ``SIYU_SECRET_KEY`` changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from siyu.kit.crypto import SecretBox, bind
from siyu.kit.masking import mask_nickname
from siyu.kit.sealed_columns import DISTRIBUTOR_PII_PURPOSE, PAYEE_NAME_PURPOSE

if TYPE_CHECKING:
    from siyu.referral.models import Distributor, Withdrawal

def distributor_box(secret_key: str) -> SecretBox:
    """Encrypts distributors' names and phones. Opens values sealed with the previous secrets
    declared for ``secret_key`` too (``SIYU_SECRET_KEY_PREVIOUS``, ``kit.crypto``)."""
    return SecretBox(secret_key, DISTRIBUTOR_PII_PURPOSE)


def payee_box(secret_key: str) -> SecretBox:
    """Encrypts payees' real names on withdrawals (its own key, derived from ``SIYU_SECRET_KEY``)."""
    return SecretBox(secret_key, PAYEE_NAME_PURPOSE)


def mask_name(name: str) -> str:
    """``张三丰`` → ``张**丰``, ``张三`` → ``张*`` (the house style, ``kit.masking``)."""
    return mask_nickname(name)


def mask_phone(phone: str) -> str:
    """``13812345678`` → ``138****5678``; shorter numbers keep only their last two digits."""
    phone = phone.strip()
    if len(phone) >= 11:
        return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    return "*" * max(1, len(phone) - 2) + phone[-2:]


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


# -- distributors ------------------------------------------------------------------------------------


def _aad(merchant_id: int, row_id: int, column: str) -> str:
    return bind("distributors", column, merchant_id, row_id)


def seal_distributor(dist: Distributor, real_name: str | None, phone: str | None, secret_key: str) -> None:
    """Set the distributor's name and phone (encrypted + masked); the row must have its id."""
    assert dist.id is not None, "flush the distributor first: its id is part of the binding"
    box = distributor_box(secret_key)
    name, tel = _clean(real_name), _clean(phone)
    dist.real_name_enc = box.encrypt(name, aad=_aad(dist.merchant_id, dist.id, "real_name_enc")) if name else None
    dist.real_name_masked = mask_name(name) if name else None
    dist.phone_enc = box.encrypt(tel, aad=_aad(dist.merchant_id, dist.id, "phone_enc")) if tel else None
    dist.phone_masked = mask_phone(tel) if tel else None


def real_name_of(dist: Distributor, secret_key: str) -> str | None:
    if not dist.real_name_enc:
        return None
    return distributor_box(secret_key).decrypt(dist.real_name_enc, aad=_aad(dist.merchant_id, dist.id, "real_name_enc"))


def phone_of(dist: Distributor, secret_key: str) -> str | None:
    if not dist.phone_enc:
        return None
    return distributor_box(secret_key).decrypt(dist.phone_enc, aad=_aad(dist.merchant_id, dist.id, "phone_enc"))


# -- withdrawals -------------------------------------------------------------------------------------


def seal_payee(w: Withdrawal, name: str, secret_key: str) -> None:
    assert w.id is not None, "flush the withdrawal first: its id is part of the binding"
    w.payee_name_enc = payee_box(secret_key).encrypt(name, aad=bind("withdrawals", "payee_name_enc", w.merchant_id, w.id))
    w.payee_name_masked = mask_name(name)


def payee_name_of(w: Withdrawal, secret_key: str) -> str | None:
    """The payee's name (``v1`` values written before the binding still decrypt)."""
    if not w.payee_name_enc:
        return None
    return payee_box(secret_key).decrypt(
        w.payee_name_enc, aad=bind("withdrawals", "payee_name_enc", w.merchant_id, w.id)
    )


# -- migration data step -----------------------------------------------------------------------------


def encrypt_plaintext_columns(connection: sa.Connection, secret_key: str, *, batch: int = 500) -> int:
    """Encrypt ``distributors.real_name`` / ``phone`` (plaintext, old schema) into
    ``real_name_enc`` / ``real_name_masked`` / ``phone_enc`` / ``phone_masked`` and null the
    plaintext; legacy ``v1`` payee names on withdrawals are resealed with their binding.
    Returns the number of distributor rows changed. Call it from the migration (``op.get_bind()``)
    between adding the new columns and dropping the old ones; safe to run twice."""
    box = distributor_box(secret_key)
    d = sa.table(
        "distributors", sa.column("id", sa.BigInteger), sa.column("merchant_id", sa.BigInteger),
        sa.column("real_name", sa.String), sa.column("phone", sa.String),
        sa.column("real_name_enc", sa.String), sa.column("real_name_masked", sa.String),
        sa.column("phone_enc", sa.String), sa.column("phone_masked", sa.String),
    )
    changed, last_id = 0, 0
    while True:
        rows = connection.execute(
            sa.select(d.c.id, d.c.merchant_id, d.c.real_name, d.c.phone)
            .where(d.c.id > last_id, sa.or_(d.c.real_name.is_not(None), d.c.phone.is_not(None)))
            .order_by(d.c.id).limit(batch)
        ).all()
        if not rows:
            break
        for row_id, merchant_id, real_name, phone in rows:
            values: dict[str, Any] = {"real_name": None, "phone": None}
            name, tel = _clean(real_name), _clean(phone)
            if name:
                values["real_name_enc"] = box.encrypt(name, aad=_aad(merchant_id, row_id, "real_name_enc"))
                values["real_name_masked"] = mask_name(name)
            if tel:
                values["phone_enc"] = box.encrypt(tel, aad=_aad(merchant_id, row_id, "phone_enc"))
                values["phone_masked"] = mask_phone(tel)
            connection.execute(sa.update(d).where(d.c.id == row_id).values(values))
            changed += 1
        last_id = rows[-1][0]
    w = sa.table("withdrawals", sa.column("id", sa.BigInteger), sa.column("merchant_id", sa.BigInteger),
                 sa.column("payee_name_enc", sa.String))
    pbox = payee_box(secret_key)
    for row_id, merchant_id, enc in connection.execute(
        sa.select(w.c.id, w.c.merchant_id, w.c.payee_name_enc).where(w.c.payee_name_enc.like("v1:%"))
    ).all():
        resealed = pbox.reseal(enc, aad=bind("withdrawals", "payee_name_enc", merchant_id, row_id))
        connection.execute(sa.update(w).where(w.c.id == row_id).values(payee_name_enc=resealed))
    return changed
