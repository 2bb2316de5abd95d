"""Coupon request and response bodies. Money in fen; times aware (UTC in responses).

Rules a schema cannot express (percent range, cap sign, scope ids, validity) are checked by
``service.validate_template`` so each gets its own stable field code.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["fixed", "percent", "threshold", "free_shipping"]
Scope = Literal["all", "categories", "products"]
ValidityMode = Literal["fixed", "relative"]
Channel = Literal["claim", "registration", "after_payment", "code", "operator", "api"]
TemplateStatus = Literal["draft", "active", "stopped"]

# Bounds of the columns the numbers land in: a larger value would fail in the database (a 500).
INT_MAX = 2_147_483_647  # INTEGER: money in fen, counts, limits
ID_MAX = 2**63 - 1  # BIGINT: ids
Id = Annotated[int, Field(ge=1, le=ID_MAX)]
CouponStatus = Literal["unused", "locked", "used", "expired", "voided"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemplateFields(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=500)
    kind: Kind | None = None
    amount: int | None = Field(default=None, le=INT_MAX, description="fen off (fixed, threshold)")
    threshold: int | None = Field(default=None, le=INT_MAX, description="minimum spend on eligible lines, fen (0: none)")
    percent_off: int | None = Field(default=None, description="integer percent off (15 = 15% off); or percent_off_bp")
    percent_off_bp: int | None = Field(default=None, description="basis points off (1550 = 15.5% off)")
    max_discount: int | None = Field(default=None, le=INT_MAX, description="cap of a percent coupon, fen")
    scope: Scope | None = None
    scope_ids: list[int] | None = Field(default=None, description="category or product ids of the scope")
    excluded_product_ids: list[int] | None = None
    stackable: bool | None = Field(
        default=None, description="may be combined with one stackable coupon of the other kind (discount + free shipping)"
    )
    validity_mode: ValidityMode | None = None
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    valid_days: int | None = Field(default=None, description="relative validity: days after receipt")
    issue_starts_at: dt.datetime | None = None
    issue_ends_at: dt.datetime | None = None
    total_quantity: int | None = Field(default=None, le=INT_MAX, description="omitted/null: unlimited")
    per_member_limit: int | None = Field(default=None, le=INT_MAX)
    channels: list[Channel] | None = None
    after_payment_min_amount: int | None = Field(default=None, le=INT_MAX, description="after_payment: paid amount needed, fen")
    expiry_reminder_days: int | None = Field(default=None, description="coupon.expiring this many days before (0: off)")
    status: TemplateStatus | None = None


class TemplateIn(TemplateFields):
    name: str = Field(min_length=1, max_length=64)  # type: ignore[assignment]
    kind: Kind  # type: ignore[assignment]


class TemplateUpdate(TemplateFields):
    pass


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str | None
    kind: str
    amount: int
    threshold: int
    percent_off_bp: int
    max_discount: int | None
    scope: str
    scope_ids: list[int]
    excluded_product_ids: list[int]
    stackable: bool
    validity_mode: str
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    valid_days: int | None
    issue_starts_at: dt.datetime | None
    issue_ends_at: dt.datetime | None
    total_quantity: int | None
    issued: int
    per_member_limit: int
    channels: list[str]
    after_payment_min_amount: int
    expiry_reminder_days: int
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime


class ClaimableOut(BaseModel):
    template: TemplateOut
    remaining: int | None
    received: int
    can_claim: bool
    reason: str | None = None


class CouponOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    template_id: int
    member_id: int
    code: str
    status: str
    source: str
    valid_from: dt.datetime
    valid_until: dt.datetime
    order_id: int | None
    discount_amount: int
    order_amount: int
    locked_at: dt.datetime | None
    used_at: dt.datetime | None
    returned_at: dt.datetime | None
    created_at: dt.datetime


class WalletCouponOut(CouponOut):
    name: str
    kind: str
    amount: int
    threshold: int
    percent_off_bp: int
    max_discount: int | None
    scope: str
    stackable: bool


class ClaimIn(Strict):
    pass


class RedeemIn(Strict):
    code: str = Field(min_length=4, max_length=32)


class CodesIn(Strict):
    count: int = Field(ge=1, le=10000)


class CodesOut(BaseModel):
    template_id: int
    codes: list[str]


class IssueIn(Strict):
    """Bulk issue to members matching all the given conditions (at least one condition)."""

    batch_key: str = Field(min_length=1, max_length=60, description="idempotency: re-sending the batch issues nothing twice")
    member_ids: list[Id] | None = Field(default=None, max_length=10000)
    province: str | None = None
    city: str | None = None
    gender: Literal["male", "female", "unknown"] | None = None
    tag_id: Id | None = None


class IssueOut(BaseModel):
    matched: int
    issued: int
    already: int
    refused: dict[str, int]
    queued: bool = Field(default=False, description="large audiences are issued by a background job")


class TemplateStatsOut(BaseModel):
    template_id: int
    total_quantity: int | None
    issued: int
    claimed: int
    by_source: dict[str, int]
    by_status: dict[str, int]
    used: int
    discount_given: int
    gmv: int
    use_rate_bp: int
    codes_total: int
    codes_redeemed: int
