"""Flash-sale request and response bodies. Money in fen; times aware (UTC in responses)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from siyu.activities.schemas import StackingIn, StackingOut, StackingUpdate

START_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d$"  # HH:MM, 00:00-23:59
END_PATTERN = r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$"  # also 24:00 (midnight) as an end


# Bounds of the columns the numbers land in: a larger value would fail in the database (a 500).
INT_MAX = 2_147_483_647  # INTEGER: money in fen, counts
ID_MAX = 2**63 - 1  # BIGINT: ids

class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Slot(Strict):
    """A daily session in the merchant's time zone, ``start`` inclusive, ``end`` exclusive. ``end``
    is after ``start`` (else 422 ``slot_end_before_start``) and the slots of an activity do not
    overlap (else 422 ``slots_overlap``)."""

    start: str = Field(pattern=START_PATTERN, examples=["10:00"], description="HH:MM, 00:00-23:59")
    end: str = Field(pattern=END_PATTERN, examples=["10:30"], description="HH:MM, after start (24:00 = midnight)")


class FlashSaleItemIn(Strict):
    """The SKU is this merchant's (else 404 ``sku_not_found``), not of a virtual product (422
    ``promotion_virtual_product``) and not yet in the activity (422 ``duplicate_sku``); its
    ``activity_stock`` is taken from the SKU's stock now (409 ``insufficient_stock``)."""

    sku_id: int = Field(ge=1, le=ID_MAX, description="a SKU of this merchant, once per activity (else 422 duplicate_sku)")
    flash_price: int = Field(
        ge=0, le=INT_MAX, description="fen, below the SKU's sale price (else 422 price_not_below_sale_price)"
    )
    activity_stock: int = Field(ge=1, le=INT_MAX, description="units carved out of the SKU's stock for the activity")
    per_member_limit: int | None = Field(default=None, ge=1, description="overrides the activity's limit")
    sort: int = Field(default=0, ge=-INT_MAX, le=INT_MAX)


class FlashSaleItemUpdate(Strict):
    """Only the fields given change; only ``per_member_limit`` may be null (the activity's limit),
    another null is 422 ``required``."""

    flash_price: int | None = Field(
        default=None, ge=0, le=INT_MAX,
        description="fen, below the SKU's sale price (else 422 price_not_below_sale_price); not once the activity "
        "runs (409 flash_sale_state_invalid)",
    )
    activity_stock: int | None = Field(
        default=None, ge=1, le=INT_MAX,
        description="raise (takes SKU stock, else 409 insufficient_stock) or lower (not below sold, else 422 below_sold)",
    )
    per_member_limit: int | None = Field(default=None, ge=1)
    sort: int | None = Field(default=None, ge=-INT_MAX, le=INT_MAX)


class FlashSaleIn(Strict, StackingIn):
    """``ends_at`` is after ``starts_at`` (else 422 ``window_invalid``); each item's SKU exists (404),
    appears once (422 ``duplicate_sku``) and its ``flash_price`` is below the SKU's sale price
    (422 ``price_not_below_sale_price``)."""

    name: str = Field(min_length=1, max_length=64)
    starts_at: dt.datetime = Field(description="ISO 8601 with offset")
    ends_at: dt.datetime
    slots: list[Slot] = Field(default_factory=list, max_length=24, description="empty: the whole window")
    per_member_limit: int = Field(default=1, ge=1, le=999)
    items: list[FlashSaleItemIn] = Field(default_factory=list, max_length=200)


class FlashSaleUpdate(Strict, StackingUpdate):
    """Only the fields given change, before the activity starts (else 409
    ``flash_sale_state_invalid``); a null is 422 ``required``. ``ends_at`` stays after ``starts_at``
    (422 ``window_invalid``), times carry their UTC offset (422 ``timezone_required``) and a
    published activity cannot be moved to start in the past (422 ``in_the_past``)."""

    name: str | None = Field(default=None, min_length=1, max_length=64)
    starts_at: dt.datetime | None = Field(default=None, description="a published activity: not in the past (else 422 in_the_past)")
    ends_at: dt.datetime | None = Field(default=None, description="after starts_at (else 422 window_invalid)")
    slots: list[Slot] | None = Field(default=None, max_length=24, description="replaces the slots; they do not overlap")
    per_member_limit: int | None = Field(default=None, ge=1, le=999)


class FlashSaleItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    flash_sale_id: int
    sku_id: int
    product_id: int
    flash_price: int
    activity_stock: int
    sold: int
    per_member_limit: int | None
    sort: int
    closed: bool
    returned_stock: int


class FlashSaleOut(StackingOut):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    status: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    slots: list[dict[str, Any]]
    per_member_limit: int
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    created_at: dt.datetime


class FlashSaleDetailOut(FlashSaleOut):
    effective_status: str = Field(description="status as of now (a scheduled activity past its start is active)")
    items: list[FlashSaleItemOut]


class ItemStatsOut(BaseModel):
    item_id: int
    sku_id: int
    activity_stock: int
    sold: int = Field(description="units reserved or paid (what the gate has handed out)")
    reserved_units: int
    paid_units: int
    paid_orders: int
    released_units: int
    gmv: int = Field(description="paid amount of the flash-sale lines, fen")


class FlashSaleStatsOut(BaseModel):
    flash_sale_id: int
    activity_stock: int
    sold: int
    reserved_units: int
    paid_units: int
    paid_orders: int
    released_units: int
    gmv: int
    items: list[ItemStatsOut]


# -- store ---------------------------------------------------------------------------------------


class StoreItemOut(StackingOut):
    item_id: int
    flash_sale_id: int
    sku_id: int
    product_id: int
    title: str
    spec_text: str
    image_url: str | None
    list_price: int
    sale_price: int
    flash_price: int
    activity_stock: int
    remaining: int
    per_member_limit: int


class SessionOut(BaseModel):
    """One session (场次): a slot on one local day, with the items on sale in it."""

    flash_sale_id: int
    name: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    status: str = Field(description="current | upcoming")
    items: list[StoreItemOut]


class StoreItemDetailOut(StoreItemOut):
    name: str
    status: str = Field(description="current | upcoming | ended")
    session_starts_at: dt.datetime | None = Field(description="the current session's start, or the next one's")
    session_ends_at: dt.datetime | None


class BuyIn(Strict):
    quantity: int = Field(default=1, ge=1, le=999)
    address_id: int | None = Field(default=None, ge=1, le=ID_MAX)
    remark: str | None = Field(default=None, max_length=200)
