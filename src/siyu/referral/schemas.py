"""Referral and distribution request and response bodies. Money in fen; rates in basis points
(100 bp = 1%); times aware (UTC in responses).

Rates are validated by the service (``commission_rate_invalid``) rather than by the schema, so a
rate above 100% gets its own stable error code.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from siyu.kit.validation_messages import register_field_messages

register_field_messages({"real_name_not_printable": ("姓名应为可打印的文字", "A real name is printable text")})


def printable_name(value: str | None) -> str | None:
    """A real name trimmed; blank or with control characters is ``real_name_not_printable`` (the
    value itself is never echoed: it is personal data)."""
    if value is None:
        return None
    value = value.strip()
    if not value or any(not ch.isprintable() for ch in value):
        raise PydanticCustomError("real_name_not_printable", "A real name is printable text")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PointsReward(Strict):
    kind: Literal["points"]
    points: int = Field(ge=1, le=1_000_000)


class CouponReward(Strict):
    kind: Literal["coupon"]
    template_id: int = Field(ge=1, description="coupon template id (coupons module)")


Reward = Annotated[PointsReward | CouponReward, Field(discriminator="kind")]


class SettingsIn(Strict):
    enabled: bool = True
    binding_rule: Literal["first", "window", "latest"] = Field(
        default="first",
        description="first: the first inviter forever; window: only within window_days of the first visit; "
        "latest: the latest inviter wins until the first paid order",
    )
    window_days: int = Field(default=7, ge=0, le=3650)
    share_path: str = Field(default="pages/index", min_length=1, max_length=200)
    inviter_rewards: list[Reward] = Field(default_factory=list, max_length=5)
    invitee_rewards: list[Reward] = Field(default_factory=list, max_length=5)
    tiers: Literal[1, 2] = 2
    auto_approve_distributors: bool = False
    min_withdrawal: int = Field(default=100, ge=0, description="fen")
    payout_provider: str = Field(
        default="manual", max_length=32,
        description="a registered payout provider (else 422 payout_provider_unknown); one that needs the merchant's "
        "WeChat Pay credentials only once they are set (else 409 payout_provider_not_configured)",
    )


class SettingsOut(SettingsIn):
    model_config = ConfigDict(from_attributes=True, extra="ignore")


class BindIn(Strict):
    code: str = Field(min_length=1, max_length=16, description="the inviter's invite code")


class MyReferralOut(BaseModel):
    member_id: int
    code: str
    share_path: str = Field(description="mini-program path that carries the code, e.g. pages/index?inviter=CODE")
    inviter_member_id: int | None
    bound_at: dt.datetime | None
    locked: bool
    invitee_count: int


class MemberReferralOut(BaseModel):
    member_id: int
    code: str
    inviter_member_id: int | None
    bound_at: dt.datetime | None
    bind_source: str | None
    first_paid_order_id: int | None
    locked_at: dt.datetime | None
    invitee_count: int
    distributor_id: int | None
    distributor_status: str | None


class BindOut(BaseModel):
    member_id: int
    inviter_member_id: int
    bound_at: dt.datetime
    changed: bool


class InviteeOut(BaseModel):
    member_id: int
    nickname: str | None
    bound_at: dt.datetime | None
    registered_at: dt.datetime
    has_bought: bool
    paid_orders: int
    paid_amount: int


class RewardOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    invitee_member_id: int
    beneficiary_member_id: int
    role: str
    kind: str
    points: int
    coupon_template_id: int | None
    order_id: int
    status: str
    detail: str | None
    granted_at: dt.datetime | None
    revoked_at: dt.datetime | None
    created_at: dt.datetime


Rank = Annotated[int, Field(ge=-1_000_000, le=1_000_000, description="higher ranks above lower ones")]


# A commission rate in basis points, 0-10000 (0-100%): stated in the document, refused by the service
# with its own code (422 ``commission_rate_invalid``, which clients and tests know), so Pydantic does
# not check it a second time.
RATE_RULE = "basis points, 0-10000 (else 422 commission_rate_invalid)"
RateBp = Annotated[int, Field(json_schema_extra={"minimum": 0, "maximum": 10000})]


class LevelIn(Strict):
    name: str = Field(min_length=1, max_length=32)
    rank: Rank = 0
    tier1_rate_bp: RateBp = Field(description=f"commission on direct sales (1000 = 10%), {RATE_RULE}")
    tier2_rate_bp: RateBp = Field(default=0, description=f"commission on the sales of invited distributors, {RATE_RULE}")
    is_default: bool = False


class LevelUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=32)
    rank: Rank | None = None
    tier1_rate_bp: RateBp | None = Field(default=None, description=RATE_RULE)
    tier2_rate_bp: RateBp | None = Field(default=None, description=RATE_RULE)
    is_default: bool | None = None


class LevelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    rank: int
    tier1_rate_bp: int
    tier2_rate_bp: int
    is_default: bool


class ApplyIn(Strict):
    """Needs the merchant's referral programme enabled (else 409 ``referral_disabled``); one application per
    member (409 ``distributor_already_applied``), again only after a rejection."""

    real_name: str | None = Field(default=None, min_length=1, max_length=32, description="printable text")
    phone: str | None = Field(
        default=None, min_length=5, max_length=20, pattern=r"^[0-9+\- ]+$",
        description="digits, with +, - or spaces (as an address's phone)",
    )
    note: str | None = Field(default=None, max_length=200)

    @field_validator("real_name")
    @classmethod
    def _clean_name(cls, value: str | None) -> str | None:
        return printable_name(value)


class ReviewIn(Strict):
    note: str | None = Field(default=None, max_length=200)


class ApproveDistributorIn(Strict):
    level_id: int | None = Field(default=None, description="default: the default level")
    note: str | None = Field(default=None, max_length=200)


class DistributorUpdate(Strict):
    level_id: int | None = None
    status: Literal["approved", "disabled"] | None = None


class AccountOut(BaseModel):
    pending: int
    frozen: int
    available: int
    withdrawing: int
    withdrawn: int
    debt: int


class DistributorOut(BaseModel):
    """``real_name`` / ``phone`` in clear only on the admin detail for ``finance:read`` (finance,
    owner); everywhere else they are None and the masked copies show."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    member_id: int
    level_id: int | None
    status: str
    real_name: str | None = None
    real_name_masked: str | None
    phone: str | None = None
    phone_masked: str | None
    note: str | None
    review_note: str | None
    applied_at: dt.datetime
    reviewed_at: dt.datetime | None
    pending: int
    frozen: int
    available: int
    withdrawing: int
    withdrawn: int
    debt: int


class RuleIn(Strict):
    name: str = Field(min_length=1, max_length=64)
    product_id: int | None = Field(default=None, description="a product of this merchant (else 404)")
    level_id: int | None = Field(default=None, description="a distributor level of this merchant (else 404)")
    distributor_id: int | None = Field(default=None, description="a distributor of this merchant (else 404)")
    tier1_rate_bp: RateBp = Field(description=RATE_RULE)
    tier2_rate_bp: RateBp | None = Field(default=None, description=f"null: the level's tier-2 rate; {RATE_RULE}")
    enabled: bool = True


class RuleUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=64)
    tier1_rate_bp: RateBp | None = Field(default=None, description=RATE_RULE)
    tier2_rate_bp: RateBp | None = Field(default=None, description=RATE_RULE)
    enabled: bool | None = None


class RuleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    product_id: int | None
    level_id: int | None
    distributor_id: int | None
    tier1_rate_bp: int
    tier2_rate_bp: int | None
    enabled: bool


class CommissionLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    order_line_id: int
    product_id: int
    base_amount: int
    rate_bp: int
    amount: int
    refunded_base: int
    reversed_amount: int


class CommissionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    order_id: int
    buyer_member_id: int
    distributor_id: int
    tier: int
    base_amount: int
    amount: int
    reversed_amount: int
    status: str
    settle_at: dt.datetime | None
    frozen_at: dt.datetime | None
    settled_at: dt.datetime | None
    created_at: dt.datetime


class CommissionDetailOut(CommissionOut):
    lines: list[CommissionLineOut]


class LedgerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    entry: str
    amount: int
    commission_id: int | None
    withdrawal_id: int | None
    order_id: int | None
    d_pending: int
    d_frozen: int
    d_available: int
    d_withdrawing: int
    d_withdrawn: int
    d_debt: int
    at: dt.datetime


class WithdrawalIn(Strict):
    amount: int = Field(
        ge=1, description="fen; at least the programme's min_withdrawal (else 422 withdrawal_below_minimum) and at most "
        "the available balance (else 409 withdrawal_exceeds_balance)"
    )
    real_name: str | None = Field(
        default=None, min_length=1, max_length=32,
        description="the payee's real name as verified by WeChat; needed for WeChat transfers from "
        "200000 fen (default: the name given when applying as a distributor). Stored encrypted, "
        "answered masked, sent only when required",
    )

    @field_validator("real_name")
    @classmethod
    def _clean_name(cls, value: str | None) -> str | None:
        return printable_name(value)


class MarkPaidIn(Strict):
    reference: str = Field(min_length=1, max_length=80, description="bank / transfer reference")


class WithdrawalOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    distributor_id: int
    member_id: int
    amount: int
    status: str
    provider: str
    provider_reference: str | None
    provider_state: str | None = None  # an automatic payout in flight, e.g. WAIT_USER_CONFIRM
    provider_data: dict[str, Any] | None = None  # e.g. {"package_info": ...} for wx.requestMerchantTransfer
    review_note: str | None
    reviewed_at: dt.datetime | None
    paid_at: dt.datetime | None
    failed_at: dt.datetime | None = None
    payee_name_masked: str | None = None  # e.g. 张**丰 (kit.masking); the name itself is never answered
    created_at: dt.datetime


class RetryOut(BaseModel):
    granted: int
    still_pending: int


class CountAmount(BaseModel):
    count: int
    amount: int


class StatsOut(BaseModel):
    bound_members: int = Field(description="members bound to an inviter")
    converted_members: int = Field(description="bound members who paid an order")
    rewards: dict[str, int] = Field(description="reward rows by status")
    distributors: dict[str, int] = Field(description="distributors by status")
    commissions: dict[str, CountAmount] = Field(description="by status; amount net of reversals, fen")
    withdrawals: dict[str, CountAmount] = Field(description="by status, fen")
