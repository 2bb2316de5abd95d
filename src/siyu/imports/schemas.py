"""Row shapes of the two CSV files and the import report."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator

MEMBER_COLUMNS = ("external_id", "nickname", "phone", "gender", "province", "city", "registered_at", "registration_channel")
ORDER_COLUMNS = ("external_order_id", "member_external_id", "paid_at", "amount_fen", "sku_code", "quantity")


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone(dt.timedelta(hours=8)))


class MemberRow(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    external_id: str = Field(min_length=1, max_length=64)
    nickname: str | None = Field(default=None, max_length=64)
    phone: str | None = Field(default=None, pattern=r"^\+?\d{5,20}$")
    gender: str | None = Field(default=None, pattern="^(male|female|unknown)$")
    province: str | None = Field(default=None, max_length=32)
    city: str | None = Field(default=None, max_length=32)
    registered_at: dt.datetime | None = None
    registration_channel: str | None = Field(default=None, max_length=64)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("registered_at")
    @classmethod
    def _tz(cls, v: dt.datetime | None) -> dt.datetime | None:
        return _aware(v) if v else v


class OrderRow(BaseModel):
    """One historical paid order. Times without an offset are taken as China time (UTC+8)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    external_order_id: str = Field(min_length=1, max_length=64)
    member_external_id: str = Field(min_length=1, max_length=64)
    paid_at: dt.datetime
    amount_fen: int = Field(ge=0, le=10**11)
    sku_code: str | None = Field(default=None, max_length=64)
    quantity: int = Field(default=1, ge=1, le=100_000)

    @field_validator("sku_code", mode="before")
    @classmethod
    def _blank_is_none(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("quantity", mode="before")
    @classmethod
    def _default_quantity(cls, v: object) -> object:
        return 1 if v in ("", None) else v

    @field_validator("paid_at")
    @classmethod
    def _tz(cls, v: dt.datetime) -> dt.datetime:
        return _aware(v)


class RowError(BaseModel):
    file: str
    row: int  # 1-based line number in the file, header = line 1
    field: str | None
    code: str
    message: str


class ImportReport(BaseModel):
    dry_run: bool
    members_seen: int
    members_created: int
    members_skipped: int  # already imported earlier
    orders_seen: int
    orders_created: int
    orders_skipped: int
    errors: list[RowError]
    committed: bool
