"""Request and response bodies of the after-sales endpoints. Money is integer fen."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["refund_only", "return_refund", "exchange"]
ReasonCode = Literal[
    "not_received",
    "damaged",
    "quality_issue",
    "not_as_described",
    "wrong_item",
    "size_fit",
    "changed_mind",
    "other",
]


class Strict(BaseModel):
    """Request bodies forbid unknown fields: a customer cannot slip an ``amount`` into a request."""

    model_config = ConfigDict(extra="forbid")


Status = Literal[
    "requested",
    "approved",
    "rejected",
    "awaiting_return",
    "returned",
    "refunding",
    "exchange_shipped",
    "completed",
    "cancelled",
]


class AfterSaleLineIn(Strict):
    """Each refusal of a line is 422 ``aftersale_quantity_invalid`` with the line's field and its
    own code (an exchange SKU: 422 ``aftersale_exchange_sku_invalid``, ``invalid_sku``)."""

    order_line_id: int = Field(
        description="a line of this order (else not_in_order), once per request (else duplicate_line), without an "
        "open after-sale (else line_in_open_aftersale); a virtual line only for refund_only (else virtual_line)"
    )
    # the bounds are the service's (``quantity_out_of_range``, the upper one is the line's units not refunded yet)
    quantity: int = Field(
        description="units to refund / return / exchange: at least 1 and at most the line's units not yet refunded "
        "(else quantity_out_of_range)",
        json_schema_extra={"minimum": 1},
    )
    exchange_sku_id: int | None = Field(
        default=None,
        description="exchange only (else exchange_only): the replacement SKU, active, of the same product and price "
        "(else 422 aftersale_exchange_sku_invalid); default the same SKU",
    )


class AfterSaleCreate(Strict):
    kind: Kind
    reason_code: ReasonCode
    description: str = Field(default="", max_length=500)
    images: list[str] = Field(default_factory=list, max_length=9)
    lines: list[AfterSaleLineIn] = Field(min_length=1, max_length=100)


class ReturnShipmentIn(Strict):
    carrier: str = Field(min_length=1, max_length=32, description="e.g. SF, ZTO, YTO, JD")
    tracking_no: str = Field(min_length=1, max_length=64)


class ApproveIn(Strict):
    refund_amount: int | None = Field(
        default=None,
        description="optional lower refund (fen); at most the lines' paid share; not for exchanges",
    )
    note: str | None = Field(default=None, max_length=200)


class RejectIn(Strict):
    reason: str | None = Field(
        default=None, max_length=200, description="required: why the request is rejected"
    )


class ReceiveIn(Strict):
    restock: bool = Field(default=True, description="put the returned units back into stock")


class ShipExchangeIn(ReturnShipmentIn):
    pass


class AfterSaleLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    order_line_id: int
    sku_id: int
    title: str
    spec_text: str
    quantity: int
    amount: int
    refund_amount: int
    exchange_sku_id: int | None


class AfterSaleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    order_id: int
    member_id: int
    kind: str
    status: str
    reason_code: str
    description: str
    images: list[str]
    computed_amount: int
    refund_amount: int
    return_shipping_paid_by_merchant: bool
    reviewed_at: dt.datetime | None
    reject_reason: str | None
    return_carrier: str | None
    return_tracking_no: str | None
    return_shipped_at: dt.datetime | None
    returned_at: dt.datetime | None
    exchange_carrier: str | None
    exchange_tracking_no: str | None
    exchange_shipped_at: dt.datetime | None
    refund_id: int | None
    completed_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    lines: list[AfterSaleLineOut] = Field(default_factory=list)


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    action: str
    from_state: str | None
    to_state: str | None
    actor_type: str
    actor_id: int | None
    data: dict[str, Any]
    created_at: dt.datetime


class AfterSaleAdminOut(AfterSaleOut):
    reviewer_id: int | None
    review_note: str | None
    restocked: bool
    refund_requested_at: dt.datetime | None
    refund_attempts: int
    audit: list[AuditOut] = Field(default_factory=list)


class PolicyIn(Strict):
    window_days: int = Field(
        ge=0, le=365, description="days after delivery/completion in which a request may be made"
    )
    refund_only_before_shipment: bool = True
    refund_only_after_shipment: bool = False
    return_refund_enabled: bool = True
    exchange_enabled: bool = True
    return_shipping_paid_by_merchant: bool = False
    return_address: str | None = Field(default=None, max_length=300)


class PolicyOut(PolicyIn):
    model_config = ConfigDict(from_attributes=True)
    is_default: bool = False
