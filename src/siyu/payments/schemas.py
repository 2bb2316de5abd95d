"""Request and response bodies of the payment and refund endpoints."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PayOut(BaseModel):
    """What the mini-program needs to pay.

    ``params`` for ``wechatpay`` are exactly the ``wx.requestPayment`` fields (``timeStamp``,
    ``nonceStr``, ``package``, ``signType``, ``paySign``); for the **sandbox** provider (demo
    only, no money moves) they are ``{"sandbox": true, "complete_url": ...}``.
    """

    provider: str
    out_trade_no: str
    amount: int
    params: dict[str, Any]


class PaymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    order_id: int
    member_id: int
    out_trade_no: str
    provider: str
    amount: int
    status: str
    prepay_id: str | None
    transaction_id: str | None
    trade_state: str | None
    payer_openid: str | None
    paid_at: dt.datetime | None
    closed_at: dt.datetime | None
    fee_amount: int
    unapplied_reason: str | None
    created_at: dt.datetime


class RefundLineIn(Strict):
    order_line_id: int = Field(
        description="a line of this order (else 404), at most once per refund (else 422 duplicate_line)"
    )
    quantity: int = Field(ge=1, le=999)


class RefundIn(Strict):
    """Either ``lines`` (units of order lines; amounts computed from what was paid for them), or a
    whole-order ``amount`` (fen), or both (``amount`` then lowers the lines' share and must not
    exceed it). Lines refunded at their full share that take the last goods of an order not yet
    shipped also give back the remaining freight (see ``RefundOut.freight_amount``). Neither is
    422 ``refund_target_required``; more than is left to refund is 409 ``refund_exceeds_paid``."""

    lines: list[RefundLineIn] | None = Field(default=None, min_length=1)
    amount: int | None = Field(default=None, ge=1)
    reason: str = Field(default="", max_length=80)


class RefundOut(BaseModel):
    """A refund. ``amount`` is everything given back; ``freight_amount`` is the part of it that is
    the order's freight (given back with the last goods of an order not yet shipped; 0 for a refund
    by amount), so ``amount == sum(lines[].amount) + freight_amount`` for a refund by lines.
    ``payment_id`` is null for a refund of a zero-paid order (amount 0, succeeded at once)."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    order_id: int
    payment_id: int | None
    member_id: int
    out_refund_no: str
    amount: int
    freight_amount: int = 0
    lines: list[dict[str, Any]]
    status: str
    reason: str
    reserved: bool
    automatic: bool
    aftersale_id: int | None
    requested_by_type: str
    requested_by: int | None
    provider_refund_id: str | None
    provider_status: str | None
    failure_reason: str | None
    submitted_at: dt.datetime | None
    succeeded_at: dt.datetime | None
    failed_at: dt.datetime | None
    created_at: dt.datetime


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    provider: str
    kind: str
    notification_id: str | None
    event_type: str | None
    reference: str | None
    outcome: str
    reason: str | None
    received_at: dt.datetime


PaymentStatus = Literal["created", "succeeded", "closed", "failed"]
RefundStatus = Literal["pending", "processing", "succeeded", "failed"]
