"""Request and response bodies of the tenancy endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from siyu.tenancy.permissions import Role

CODE_PATTERN = r"^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$"


class LoginIn(BaseModel):
    merchant: str = Field(description="merchant code, e.g. 'demo-optical'")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


class TokenOut(BaseModel):
    token: str
    token_type: str = "bearer"
    expires_at: dt.datetime | None


class StaffCreate(BaseModel):
    username: str = Field(
        min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$",
        description="unique in the merchant (else 409 username_taken)",
    )
    display_name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=200)
    role: Role
    phone: str | None = Field(default=None, max_length=20)


class StaffUpdate(BaseModel):
    """The last active owner keeps the owner role and stays active (else 409
    ``cannot_demote_last_owner``)."""

    display_name: str | None = Field(default=None, min_length=1, max_length=64)
    role: Role | None = None
    active: bool | None = None
    password: str | None = Field(default=None, min_length=8, max_length=200)


class StaffOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    username: str
    display_name: str
    role: str
    active: bool
    phone: str | None
    created_at: dt.datetime


class MeOut(BaseModel):
    merchant_id: int
    merchant_code: str
    merchant_name: str
    staff: StaffOut | None
    role: str
    permissions: list[str]


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=80)
    role: Role = Role.OPERATOR


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str | None
    role: str | None
    created_at: dt.datetime


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="shown once; store it now")


class MerchantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    code: str
    name: str
    timezone: str
    status: str
    wechat_appid: str | None
    pay_provider: str
    pay_mchid: str | None
    pay_serial_no: str | None
    pay_fee_bp: int
    has_wechat_secret: bool = False
    has_pay_keys: bool = False


class MerchantUpdate(BaseModel):
    """Credentials are write-only: they are stored encrypted and never returned."""

    name: str | None = Field(default=None, min_length=1, max_length=120)
    timezone: str | None = Field(
        default=None, examples=["Asia/Shanghai"],
        description="an IANA time zone name such as Asia/Shanghai (else 422 invalid_timezone); null leaves it",
    )
    wechat_appid: str | None = Field(default=None, max_length=64)
    wechat_app_secret: str | None = Field(default=None, max_length=128)
    pay_provider: str | None = Field(default=None, pattern="^(sandbox|wechatpay)$")
    pay_mchid: str | None = Field(default=None, max_length=32)
    pay_serial_no: str | None = Field(default=None, max_length=64)
    pay_private_key_pem: str | None = None
    pay_apiv3_key: str | None = Field(default=None, min_length=32, max_length=32)
    pay_platform_keys: dict[str, str] | None = Field(default=None, description="serial -> PEM")
    pay_fee_bp: int | None = Field(default=None, ge=0, le=10000)
