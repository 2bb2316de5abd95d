"""Every column that holds a ``SecretBox`` ciphertext, in one list: ``SEALED_COLUMNS``.

The code that seals a column takes its purpose (the HKDF ``info`` of its key) from here, and
``siyu secrets rotate`` (``tenancy.rotation``) re-seals exactly these columns with the current
``SIYU_SECRET_KEY``, so a sealed column left out of this list would become unreadable when the
previous secret is removed. The convention: **a column holding ciphertext is named ``*_enc``**;
``tests/secrets`` fails when a model has an ``*_enc`` column not listed here (or one listed
here that no model has).

Every value is bound to its place (``kit.crypto.bind``): ``<table>.<column>|m=<merchant>|id=<row
id>``; ``merchant_column`` names the column holding the merchant id (``id`` on ``merchants``
itself, whose row id is the merchant id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from siyu.kit.crypto import SecretBox, bind

MERCHANT_CREDENTIALS_PURPOSE: Final = b"siyu/merchant-credentials"  # SecretBox's default purpose
DISTRIBUTOR_PII_PURPOSE: Final = b"siyu/distributor-pii"
PAYEE_NAME_PURPOSE: Final = b"siyu/payee-names"
IDEMPOTENT_RESPONSE_PURPOSE: Final = b"siyu/idempotent-responses"


@dataclass(frozen=True)
class SealedColumn:
    table: str
    column: str
    purpose: bytes
    merchant_column: str = "merchant_id"
    what: str = ""  # for people: what the column holds

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"

    def aad(self, merchant_id: int, row_id: int) -> str:
        """The associated data of this column's value in one row (``kit.crypto.bind``)."""
        return bind(self.table, self.column, merchant_id, row_id)

    def box(self, secret_key: str, previous: tuple[str, ...] | list[str] | None = None) -> SecretBox:
        return SecretBox(secret_key, self.purpose, previous=previous)


SEALED_COLUMNS: Final[tuple[SealedColumn, ...]] = (
    SealedColumn("merchants", "wechat_app_secret_enc", MERCHANT_CREDENTIALS_PURPOSE, "id", "mini-program AppSecret"),
    SealedColumn("merchants", "pay_private_key_enc", MERCHANT_CREDENTIALS_PURPOSE, "id", "WeChat Pay private key"),
    SealedColumn("merchants", "pay_apiv3_key_enc", MERCHANT_CREDENTIALS_PURPOSE, "id", "WeChat Pay APIv3 key"),
    SealedColumn("merchants", "pay_platform_keys_enc", MERCHANT_CREDENTIALS_PURPOSE, "id", "WeChat Pay platform keys"),
    SealedColumn("distributors", "real_name_enc", DISTRIBUTOR_PII_PURPOSE, what="distributor's real name"),
    SealedColumn("distributors", "phone_enc", DISTRIBUTOR_PII_PURPOSE, what="distributor's phone"),
    SealedColumn("withdrawals", "payee_name_enc", PAYEE_NAME_PURPOSE, what="payee's real name"),
    SealedColumn("idempotent_requests", "response_enc", IDEMPOTENT_RESPONSE_PURPOSE, what="stored create answer"),
)


def sealed_column(table: str, column: str) -> SealedColumn:
    """The registered column ``table.column``; ``KeyError`` when it is not registered."""
    for entry in SEALED_COLUMNS:
        if entry.table == table and entry.column == column:
            return entry
    raise KeyError(f"{table}.{column} is not a registered sealed column (kit.sealed_columns)")


def columns_of(table: str) -> tuple[str, ...]:
    """The sealed columns of ``table``, in registry order."""
    return tuple(entry.column for entry in SEALED_COLUMNS if entry.table == table)
