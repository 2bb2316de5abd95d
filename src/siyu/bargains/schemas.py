"""Bargain request and response bodies. Money in fen; times aware (UTC in responses)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from siyu.activities.schemas import CouponChoiceIn, StackingIn, StackingOut, StackingUpdate

# Bounds of the columns the numbers land in: a larger value would fail in the database (a 500).
INT_MAX = 2_147_483_647  # INTEGER: money in fen, counts
ID_MAX = 2**63 - 1  # BIGINT: ids

class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BargainActivityIn(Strict, StackingIn):
    """``ends_at`` is after ``starts_at`` (else 422 ``window_invalid``). The SKU exists (404) and is
    not a virtual product; ``floor_price`` is below the start price (422 ``floor_not_below_start``)
    and the start price less the floor is at least ``helpers_needed`` fen, one per helper
    (422 ``cut_below_one_fen``)."""

    name: str = Field(min_length=1, max_length=64)
    sku_id: int = Field(ge=1, le=ID_MAX)
    start_price: int | None = Field(default=None, ge=1, le=INT_MAX, description="fen; omitted: the SKU's sale price")
    floor_price: int = Field(ge=0, le=INT_MAX, description="fen, the lowest price friends can cut to")
    helpers_needed: int = Field(ge=1, le=500, description="H friends reach the floor")
    valid_hours: int = Field(default=24, ge=1, le=24 * 30, description="how long a bargain lasts")
    new_users_only: bool = Field(default=False, description="helpers must be members without a paid order")
    per_member_limit: int = Field(default=1, ge=1, le=99, description="bargains a member may start")
    starts_at: dt.datetime = Field(description="ISO 8601 with offset")
    ends_at: dt.datetime


class BargainActivityUpdate(Strict, StackingUpdate):
    """Only the fields given change. ``name`` and ``ends_at`` change any time; every other field
    locks at the start: once the activity runs, a change to it is 409 ``bargain_state_invalid``
    (with the status) and changes nothing. Prices and ``helpers_needed`` are fixed once created.
    A null is 422 ``required``; ``ends_at`` stays after ``starts_at`` (422 ``window_invalid``)."""

    name: str | None = Field(default=None, min_length=1, max_length=64, description="any time")
    valid_hours: int | None = Field(default=None, ge=1, le=24 * 30, description="before the start only")
    new_users_only: bool | None = Field(default=None, description="before the start only")
    per_member_limit: int | None = Field(default=None, ge=1, le=99, description="before the start only")
    ends_at: dt.datetime | None = Field(default=None, description="any time (after starts_at)")


class BargainStartIn(Strict):
    """No fields: the body may be omitted or ``{}``; an unknown key is 422."""


class BargainHelpIn(Strict):
    """No fields: the body may be omitted or ``{}``; an unknown key is 422."""


class BargainActivityOut(StackingOut):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    status: str
    product_id: int
    sku_id: int
    start_price: int
    floor_price: int
    helpers_needed: int
    valid_hours: int
    new_users_only: bool
    per_member_limit: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    created_at: dt.datetime


class BargainActivityAdminOut(BargainActivityOut):
    effective_status: str = Field(description="scheduled | active | ended | disabled, as of now")
    bargains: dict[str, int] = Field(description="bargains by status")


class HelpOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    seq: int
    helper_member_id: int
    amount: int
    created_at: dt.datetime


class BargainOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    activity_id: int
    member_id: int
    sku_id: int
    start_price: int
    floor_price: int
    current_price: int
    helpers_needed: int
    helped_count: int
    cut_total: int
    status: str
    expires_at: dt.datetime
    floor_reached_at: dt.datetime | None
    order_id: int | None
    created_at: dt.datetime


class BargainAdminOut(BargainOut):
    cuts: list[int]
    seed: int


# -- store ---------------------------------------------------------------------------------------


class StoreActivityOut(StackingOut):
    id: int
    name: str
    status: str = Field(description="scheduled | active | ended")
    product_id: int
    sku_id: int
    title: str
    spec_text: str
    image_url: str | None
    start_price: int
    floor_price: int
    helpers_needed: int
    valid_hours: int
    new_users_only: bool
    per_member_limit: int = Field(description="bargains a member may start")
    starts_at: dt.datetime
    ends_at: dt.datetime


class StoreHelpOut(BaseModel):
    seq: int
    nickname: str = Field(description="masked")
    avatar_url: str | None
    amount: int


class StoreBargainOut(BaseModel):
    """The bargain's share page."""

    bargain_id: int
    activity_id: int
    title: str
    image_url: str | None
    initiator_nickname: str
    start_price: int
    floor_price: int
    current_price: int
    helpers_needed: int
    helped_count: int
    status: str
    expires_at: dt.datetime
    helps: list[StoreHelpOut]
    mine: bool = Field(description="the caller started it")


class HelpResultOut(BaseModel):
    bargain_id: int
    seq: int
    cut: int
    current_price: int
    helped_count: int
    helpers_needed: int
    floor_reached: bool


class BargainBuyIn(Strict, CouponChoiceIn):
    address_id: int | None = Field(default=None, ge=1, le=ID_MAX)
    remark: str | None = Field(default=None, max_length=200)


class BargainActivityStatsOut(BaseModel):
    """A bargain activity's usage for ROI: bargains by outcome, helps, and the paid orders' money (fen)."""

    activity_id: int
    bargains_started: int
    bargains_active: int = Field(description="still collecting helps")
    bargains_floor_reached: int = Field(description="at the floor price, not ordered yet")
    bargains_ordered: int = Field(description="bought (an order was placed)")
    bargains_expired: int
    helps: int
    helpers: int = Field(description="distinct members who helped")
    paid_orders: int = Field(description="orders paid, shipped or completed")
    paid_units: int = Field(description="units of those orders' bargain lines, net of refunds")
    gmv: int = Field(description="those lines' payable net of refunds, fen")
    discount_given: int = Field(description="what those lines were given off the sale price, fen")
