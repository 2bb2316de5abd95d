"""Coupon request and response bodies. Money in fen; times aware (UTC in responses).

Rules a schema cannot express (percent range, cap sign, scope ids, validity) are checked by
``service.validate_template`` so each gets its own stable field code.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

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


MAX_VALID_DAYS = 3650  # service.MAX_DAYS


def _states(**bounds: int) -> dict[str, Any]:
    """JSON Schema keywords a field's OpenAPI document states while ``service.validate_template``
    enforces them with the template's own field codes (the whole template is checked there, also
    after a PATCH), so Pydantic does not check them a second time."""
    return bounds


# an id of the scope: positive (``id_invalid`` in ``validate_template``), at most BIGINT
_PositiveId = Annotated[int, Field(le=ID_MAX, json_schema_extra=_states(minimum=1))]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


LEVEL_RULE = (
    "level-exclusive coupon (等级专属券): only members whose effective level (the rules level, or an active paid "
    "card's level when higher: the level whose benefits apply now) is one of these loyalty levels may receive it, "
    "by any channel (self-claim and redeem code: 403 coupon_level_required, nothing changed; operator bulk issue: "
    "the others are counted in refused.coupon_level_required; registration / after-payment / other modules: not "
    "issued to the others). Empty or omitted: everyone. Checked at receipt only: a coupon already held stays "
    "usable at checkout when the member's level later drops. Ids must be the merchant's levels (422 "
    "coupon_level_unknown at level_ids); they may change after coupons were issued."
)

TEMPLATE_RULES = (
    "Each bound of a field is stated here and checked with its own field code (cap_negative, limit_invalid ...), "
    "as are the rules between fields: the kind decides which of amount / threshold / percent_off / max_discount "
    "apply; validity_mode fixed needs valid_until (after valid_from) and no valid_days, relative needs valid_days "
    "and no dates; issue_ends_at is after issue_starts_at; times carry a UTC offset (timezone_required). "
    + "level_ids: " + LEVEL_RULE
)


class TemplateFields(Strict):
    """The rules of a template (``TEMPLATE_RULES``, the models' description in the OpenAPI document),
    all checked by ``service.validate_template`` on the whole template, also after a PATCH."""

    model_config = ConfigDict(json_schema_extra={"description": TEMPLATE_RULES})

    name: str | None = Field(default=None, min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=500)
    kind: Kind | None = None
    amount: int | None = Field(
        default=None, le=INT_MAX, description="fen off: positive for fixed and threshold (at most the threshold), "
        "0 or omitted for the other kinds", json_schema_extra=_states(minimum=0),
    )
    threshold: int | None = Field(
        default=None, le=INT_MAX, description="minimum spend on eligible lines, fen (0: none; a threshold coupon needs one)",
        json_schema_extra=_states(minimum=0),
    )
    percent_off: int | None = Field(
        default=None, description="integer percent off (15 = 15% off), percent coupons only (1-100); or percent_off_bp, "
        "not both", json_schema_extra=_states(minimum=0, maximum=100),
    )
    percent_off_bp: int | None = Field(
        default=None, description="basis points off (1550 = 15.5% off), percent coupons only (1-10000)",
        json_schema_extra=_states(minimum=0, maximum=10000),
    )
    max_discount: int | None = Field(
        default=None, le=INT_MAX, description="cap of a percent coupon, fen (other kinds take none)",
        json_schema_extra=_states(minimum=0),
    )
    scope: Scope | None = None
    scope_ids: list[_PositiveId] | None = Field(
        default=None, description="category or product ids of the scope: required for categories/products, none for all"
    )
    excluded_product_ids: list[_PositiveId] | None = None
    stackable: bool | None = Field(
        default=None, description="may be combined with one stackable coupon of the other kind (discount + free shipping)"
    )
    validity_mode: ValidityMode | None = None
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    valid_days: int | None = Field(
        default=None, description=f"relative validity: days after receipt (1-{MAX_VALID_DAYS}); fixed validity takes none",
        json_schema_extra=_states(minimum=1, maximum=MAX_VALID_DAYS),
    )
    issue_starts_at: dt.datetime | None = None
    issue_ends_at: dt.datetime | None = None
    total_quantity: int | None = Field(
        default=None, le=INT_MAX, description="omitted/null: unlimited; never below what was issued",
        json_schema_extra=_states(minimum=1),
    )
    per_member_limit: int | None = Field(default=None, le=INT_MAX, json_schema_extra=_states(minimum=1))
    channels: list[Channel] | None = Field(default=None, json_schema_extra=_states(minItems=1))
    after_payment_min_amount: int | None = Field(
        default=None, le=INT_MAX, description="after_payment: paid amount needed, fen", json_schema_extra=_states(minimum=0)
    )
    expiry_reminder_days: int | None = Field(
        default=None, description="coupon.expiring this many days before (0: off)",
        json_schema_extra=_states(minimum=0, maximum=60),
    )
    level_ids: list[_PositiveId] | None = Field(default=None, max_length=100, description=LEVEL_RULE)
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
    level_ids: list[int] = Field(description=LEVEL_RULE)
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime


class LevelRef(BaseModel):
    id: int
    name: str


class ClaimableOut(BaseModel):
    """One template of the store's coupon centre (领券中心). A level-exclusive template is listed to
    every member, marked 会员专享 (the member sees what a higher level brings, which is the point of
    such a coupon); ``level_required`` names its levels, and for a member outside them
    ``can_claim`` is false with ``reason`` ``coupon_level_required``."""

    template: TemplateOut
    remaining: int | None
    received: int
    can_claim: bool
    reason: str | None = Field(default=None, description="why can_claim is false: an error code of the claim "
                               "(coupon_sold_out, coupon_limit_reached, coupon_not_started, coupon_level_required)")
    level_required: list[LevelRef] | None = Field(
        default=None, description="level-exclusive coupon: the levels that may claim it (null: everyone)"
    )


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
    """The template must have the ``code`` channel (409 ``coupon_channel_closed``)."""

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
