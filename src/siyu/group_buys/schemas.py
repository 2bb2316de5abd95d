"""Group-buy request and response bodies. Money in fen; times aware (UTC in responses)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from siyu.activities.schemas import CouponChoiceIn, StackingIn, StackingOut, StackingUpdate

# Bounds of the columns the numbers land in: a larger value would fail in the database (a 500).
INT_MAX = 2_147_483_647  # INTEGER: money in fen, counts
ID_MAX = 2**63 - 1  # BIGINT: ids

class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GroupBuyIn(Strict, StackingIn):
    """``ends_at`` is after ``starts_at`` (else 422 ``window_invalid``), both with their UTC offset
    (else 422 ``timezone_required``). The SKU is this merchant's (else 404) and not of a virtual
    product (422 ``promotion_virtual_product``); ``group_price`` is below its sale price (422
    ``price_not_below_sale_price``), ``leader_price`` at most ``group_price`` (422
    ``leader_price_above_group_price``) and ``virtual_min_paid`` below ``team_size`` (422
    ``virtual_min_too_large``)."""

    name: str = Field(min_length=1, max_length=64)
    sku_id: int = Field(ge=1, le=ID_MAX)
    team_size: int = Field(ge=2, le=100, description="N members make a team")
    valid_hours: int = Field(default=24, ge=1, le=24 * 30, description="a team's time to fill up")
    group_price: int = Field(ge=0, le=INT_MAX, description="fen per unit, below the SKU's sale price")
    leader_price: int | None = Field(
        default=None, ge=0, le=INT_MAX,
        description="fen per unit for the leader (团长价), at most group_price (else 422 leader_price_above_group_price)",
    )
    per_member_limit: int = Field(default=1, ge=1, le=999, description="units per member in the activity")
    virtual_min_paid: int | None = Field(
        default=None, ge=1,
        description="virtual success: a team with at least K paid seats at its deadline succeeds; below team_size "
        "(else 422 virtual_min_too_large)",
    )
    starts_at: dt.datetime = Field(description="ISO 8601 with offset")
    ends_at: dt.datetime = Field(description="after starts_at (else 422 window_invalid)")


class GroupBuyUpdate(Strict, StackingUpdate):
    """Only the fields given change. ``name`` and ``ends_at`` change any time (an earlier end
    brings open teams' deadlines to it); every other field locks at the start: once the activity
    runs, a change to it is 409 ``group_buy_state_invalid`` (with the status) and changes nothing.
    A disabled or ended activity changes no more. Only ``leader_price`` and ``virtual_min_paid``
    may be null (none); another null is 422 ``required``. The activity after the change follows
    the price rules of a new one (``price_not_below_sale_price``, ``leader_price_above_group_price``,
    ``virtual_min_too_large``, ``window_invalid``)."""

    name: str | None = Field(default=None, min_length=1, max_length=64, description="any time")
    valid_hours: int | None = Field(default=None, ge=1, le=24 * 30, description="before the start only")
    group_price: int | None = Field(default=None, ge=0, le=INT_MAX, description="before the start only")
    leader_price: int | None = Field(default=None, ge=0, le=INT_MAX, description="before the start only")
    per_member_limit: int | None = Field(default=None, ge=1, le=999, description="before the start only")
    virtual_min_paid: int | None = Field(default=None, ge=1, description="before the start only")
    starts_at: dt.datetime | None = Field(default=None, description="before the start only")
    ends_at: dt.datetime | None = Field(default=None, description="any time (after starts_at)")


class GroupBuyOut(StackingOut):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    status: str
    product_id: int
    sku_id: int
    team_size: int
    valid_hours: int
    group_price: int
    leader_price: int | None
    per_member_limit: int
    virtual_min_paid: int | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    created_at: dt.datetime


class GroupBuyAdminOut(GroupBuyOut):
    effective_status: str = Field(description="scheduled | active | ended | disabled, as of now")
    teams_open: int
    teams_succeeded: int
    teams_failed: int


class TeamOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    group_buy_id: int
    leader_member_id: int
    size: int
    filled: int
    paid_count: int
    status: str = Field(description="pending (leader not paid) | open | success | failed | cancelled")
    virtual: bool
    expires_at: dt.datetime
    succeeded_at: dt.datetime | None
    failed_at: dt.datetime | None
    created_at: dt.datetime


class SeatOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    member_id: int
    order_id: int
    seat_no: int
    is_leader: bool
    quantity: int
    amount: int
    status: str
    refund_id: int | None


class TeamAdminOut(TeamOut):
    seats: list[SeatOut]


# -- store ---------------------------------------------------------------------------------------


class StoreTeamCard(BaseModel):
    team_id: int
    leader_nickname: str
    remaining_seats: int
    expires_at: dt.datetime


class StoreGroupBuyOut(StackingOut):
    id: int
    name: str
    status: str = Field(description="scheduled | active | ended")
    product_id: int
    sku_id: int
    title: str
    spec_text: str
    image_url: str | None
    list_price: int
    sale_price: int
    group_price: int
    leader_price: int | None
    team_size: int
    valid_hours: int
    per_member_limit: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    open_teams: list[StoreTeamCard] = Field(description="teams still waiting for members, soonest deadline first")


class StoreSeatOut(BaseModel):
    seat_no: int
    nickname: str = Field(description="masked, e.g. 张*")
    avatar_url: str | None
    is_leader: bool
    paid: bool


class StoreTeamOut(BaseModel):
    """The share page of a team."""

    team_id: int
    group_buy_id: int
    name: str
    title: str
    image_url: str | None
    group_price: int
    sale_price: int
    status: str = Field(
        description="pending (its leader has not paid: not open yet, cannot be joined, no seats shown) | open | "
        "success | failed | cancelled (the leader never paid: it never opened)"
    )
    size: int
    filled: int
    remaining_seats: int
    expires_at: dt.datetime = Field(description="open: the team's deadline; pending: when it is cancelled if still unpaid")
    seats: list[StoreSeatOut]


class GroupBuyOrderIn(Strict, CouponChoiceIn):
    quantity: int = Field(default=1, ge=1, le=999)
    address_id: int | None = Field(default=None, ge=1, le=ID_MAX)
    remark: str | None = Field(default=None, max_length=200)


class GroupBuyStatsOut(BaseModel):
    """A group buy's usage for ROI: teams, seats and money (fen). A seat is one member's order in a team."""

    group_buy_id: int
    teams_opened: int = Field(description="teams whose leader paid (open, succeeded or failed)")
    teams_pending: int = Field(description="leader's order not paid yet: not open, not joinable, not counted as opened")
    teams_cancelled: int = Field(description="the leader's order was cancelled unpaid: the team never opened")
    teams_open: int = Field(description="still waiting for members")
    teams_succeeded: int = Field(description="full, or successful by virtual success (counted in teams_virtual too)")
    teams_virtual: int
    teams_failed: int = Field(description="timed out: every paid member refunded")
    paid_seats: int = Field(description="seats paid and kept (not refunded)")
    paid_units: int
    gmv: int = Field(description="what the paid seats' lines cost the customers, fen")
    discount_given: int = Field(description="what those lines were given off the sale price, fen")
    refunded_seats: int
    refunded_amount: int = Field(description="the refunded seats' line amounts, fen")
    pending_seats: int = Field(description="taken, not paid yet")
    released_seats: int = Field(description="given back unpaid (order cancelled or team over)")
