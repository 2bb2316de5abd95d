"""Request and response bodies of the cart, address, freight, checkout and order endpoints.

Request bodies that decide what a customer pays forbid unknown fields: a client cannot send a
price, an amount or a discount — the server computes every figure (``extra="forbid"`` makes a
stray ``"price"`` a 422 instead of silently trusting or dropping it).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from siyu.kit.bounds import RefId

MAX_LINE_QUANTITY = 999


def _omittable(**constraints: Any) -> Any:
    """A PATCH field that may be left out (unchanged) but not sent as ``null``: its type has no
    ``None``, so Pydantic refuses a null (``string_type``, ``bool_type`` ...) and the OpenAPI
    document does not offer one."""
    return Field(default=None, **constraints)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- checkout options ------------------------------------------------------------------------------
#: the keys a checkout's ``options`` may carry, each with what it asks for (English, for the
#: OpenAPI document): a pricing stage reads its own key, so a key no stage registered (a typo
#: such as ``frist_order``) would be ignored and the customer would pay more than asked. The
#: domain that reads a key registers it next to its stage (``<domain>/stages.py``), and
#: ``checkout.check_options`` refuses any other key before anything is priced.
CHECKOUT_OPTIONS: dict[str, str] = {}


def register_checkout_option(key: str, description: str) -> None:
    """Let checkouts carry ``options[key]`` (read by the registering domain's pricing stage)."""
    existing = CHECKOUT_OPTIONS.get(key)
    if existing is not None and existing != description:
        raise ValueError(f"checkout option {key!r} registered twice with different descriptions")
    CHECKOUT_OPTIONS[key] = description


def _document_options(schema: dict[str, Any]) -> None:
    """The ``options`` description lists the registered keys when the document is generated."""
    from siyu.orders.pricing import load_stage_modules  # the stages register the keys

    load_stage_modules()
    keys = "; ".join(f"`{key}`: {text}" for key, text in sorted(CHECKOUT_OPTIONS.items()))
    schema["description"] = (
        "parameters for the pricing stages, one key per activity; any other key is refused "
        f"(422 checkout_unknown_option at options.<key>). Keys: {keys}"
    )


# -- cart ----------------------------------------------------------------------------------------
class CartAddIn(Strict):
    sku_id: RefId
    quantity: int = Field(default=1, description=f"units to add (merged with the cart, total ≤ {MAX_LINE_QUANTITY})")


class CartItemUpdate(Strict):
    quantity: int | None = None
    selected: bool | None = None


class CartSelectIn(Strict):
    item_ids: list[RefId] | None = Field(default=None, description="cart item ids; omitted means all items")
    selected: bool = True


class CartItemOut(BaseModel):
    id: int
    sku_id: int
    product_id: int
    title: str
    spec_text: str
    image_url: str | None
    quantity: int
    selected: bool
    list_price: int
    sale_price: int
    stock: int
    available: bool
    unavailable_reason: str | None = Field(
        default=None, description="off_sale | sold_out | insufficient_stock when not available"
    )


class CartOut(BaseModel):
    items: list[CartItemOut]
    selected_quantity: int
    selected_amount: int = Field(description="sale price x quantity of the selected available items, fen")


# -- addresses -----------------------------------------------------------------------------------
class AddressIn(Strict):
    name: str = Field(min_length=1, max_length=32)
    phone: str = Field(min_length=5, max_length=20, pattern=r"^[0-9+\- ]+$")
    province: str = Field(min_length=1, max_length=32)
    city: str = Field(min_length=1, max_length=32)
    district: str = Field(default="", max_length=32)
    detail: str = Field(min_length=1, max_length=200)
    postal_code: str | None = Field(default=None, max_length=10)
    is_default: bool = False


class AddressUpdate(Strict):
    """Absent keys are left alone. Only ``postal_code`` may be ``null`` (clears it); the other
    fields are required on an address, so ``null`` is refused (``string_type``)."""

    name: str = _omittable(min_length=1, max_length=32)
    phone: str = _omittable(min_length=5, max_length=20, pattern=r"^[0-9+\- ]+$")
    province: str = _omittable(min_length=1, max_length=32)
    city: str = _omittable(min_length=1, max_length=32)
    district: str = _omittable(max_length=32)
    detail: str = _omittable(min_length=1, max_length=200)
    postal_code: str | None = Field(default=None, max_length=10)
    is_default: bool | None = None


class AddressOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    phone: str
    province: str
    city: str
    district: str
    detail: str
    postal_code: str | None
    is_default: bool


# -- freight templates ---------------------------------------------------------------------------
# amounts and units fit the 32-bit columns they end in (free_threshold, an order's freight_amount):
# beyond them was a 500 on PostgreSQL (found fuzzing POST /freight-templates)
_FEN_MAX = 1_000_000_000
_UNITS_MAX = 1_000_000_000


# Stated in the document, checked by the service with its own codes (region_empty, carrier "required"):
# a string with at least one character that is not white space.
_NOT_BLANK: dict[str, Any] = {"pattern": r"\S"}


class FreightRule(Strict):
    regions: list[Annotated[str, Field(json_schema_extra=_NOT_BLANK)]] = Field(
        min_length=1,
        description='province names, or ["*"] for everywhere else; not blank (else 422 region_empty at '
        "rules.N.regions) and each region in one rule of the template only (else 422 region_duplicate)",
    )
    first_units: int = Field(ge=1, le=_UNITS_MAX, description="pieces (count mode) or grams (weight mode) in the first fee")
    first_fee: int = Field(ge=0, le=_FEN_MAX, description="fen")
    extra_units: int = Field(default=1, ge=1, le=_UNITS_MAX, description="each further block of this many units costs extra_fee")
    extra_fee: int = Field(default=0, ge=0, le=_FEN_MAX, description="fen")


class FreightTemplateIn(Strict):
    """A region is named by one rule at most (422 ``region_duplicate``) and never blank (422
    ``region_empty``)."""

    name: str = Field(min_length=1, max_length=64)
    mode: Literal["count", "weight"] = "count"
    rules: list[FreightRule] = Field(min_length=1)
    free_threshold: int | None = Field(default=None, ge=0, le=_FEN_MAX, description="free when goods after discounts reach it")
    unreachable_regions: list[str] = Field(default_factory=list)
    is_default: bool = False


class FreightTemplateUpdate(Strict):
    """Only the fields given change; only ``free_threshold`` may be null (no threshold), another
    null is 422 ``required``. The rules after the change follow those of a new template
    (``region_duplicate``, ``region_empty``)."""

    name: str | None = Field(default=None, min_length=1, max_length=64)
    mode: Literal["count", "weight"] | None = None
    rules: list[FreightRule] | None = Field(default=None, min_length=1)
    free_threshold: int | None = Field(default=None, ge=0, le=_FEN_MAX)
    unreachable_regions: list[str] | None = None
    is_default: bool | None = None


class FreightTemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    mode: str
    rules: list[dict[str, Any]]
    free_threshold: int | None
    unreachable_regions: list[str]
    is_default: bool
    created_at: dt.datetime


# -- checkout ------------------------------------------------------------------------------------
class CheckoutItem(Strict):
    sku_id: RefId
    quantity: int = Field(
        ge=1, le=MAX_LINE_QUANTITY,
        description=f"units; lines of the same SKU are merged and their total is at most {MAX_LINE_QUANTITY} too "
                    "(else quantity_out_of_range on the line)",
    )


class CheckoutIn(Strict):
    """What to buy and how. Never carries a price: every amount is computed on the server."""

    items: list[CheckoutItem] | None = Field(
        default=None, min_length=1,
        description="explicit items (buy now); omitted means the selected cart items (none selected: 422 checkout_empty)",
    )
    address_id: RefId | None = Field(default=None, description="omitted: the member's default address")
    coupon_ids: list[RefId] | None = Field(default=None, description="omitted: let the pipeline pick")
    points_to_use: int = Field(default=0, ge=0)
    remark: str | None = Field(default=None, max_length=200)
    options: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra=_document_options,
        description='parameters for the pricing stages, one key per activity, e.g. {"flash_sale": {"item_id": 3}}',
    )

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class PricedLineOut(BaseModel):
    sku_id: int
    product_id: int
    title: str
    spec_text: str
    image_url: str | None
    quantity: int
    list_price: int
    sale_price: int
    goods_amount: int
    discounts: dict[str, int]
    discount_amount: int
    payable_amount: int
    is_virtual: bool = False  # nothing to ship (a membership card...): no address or freight for it
    flags: dict[str, Any] = Field(default_factory=dict)


class CheckoutOut(BaseModel):
    lines: list[PricedLineOut]
    breakdown: list[dict[str, Any]]
    notes: dict[str, list[dict[str, Any]]]
    goods_amount: int
    discount_amount: int
    freight_amount: int
    payable_amount: int
    address: AddressOut | None


# -- orders --------------------------------------------------------------------------------------
class OrderLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    product_id: int
    sku_id: int
    title: str
    spec_text: str
    image_url: str | None
    quantity: int
    list_price: int
    sale_price: int
    goods_amount: int
    discounts: dict[str, int]
    discount_amount: int
    payable_amount: int
    bonus_points: int
    refunded_quantity: int
    refunded_amount: int
    is_virtual: bool = False


class ShipmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    carrier: str
    tracking_no: str
    shipped_at: dt.datetime
    lines: list[dict[str, Any]]


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    order_no: str
    member_id: int
    status: str
    refund_status: str
    goods_amount: int
    discount_amount: int
    points_used: int
    freight_amount: int
    payable_amount: int
    paid_amount: int
    refunded_amount: int
    pricing: list[dict[str, Any]]
    address: dict[str, Any]
    remark: str | None
    channel: str
    pay_deadline: dt.datetime | None
    paid_at: dt.datetime | None
    shipped_at: dt.datetime | None
    completed_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    closed_at: dt.datetime | None
    cancel_reason: str | None
    created_at: dt.datetime


class OrderDetailOut(OrderOut):
    lines: list[OrderLineOut]
    shipments: list[ShipmentOut]


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    action: str
    from_state: str | None
    to_state: str | None
    actor_type: str
    actor_id: int | None
    data: dict[str, Any]
    created_at: dt.datetime


class OrderAdminDetailOut(OrderDetailOut):
    audit: list[AuditOut]


class ShipIn(Strict):
    """Both fields are trimmed; a blank one is 422 ``required``."""

    carrier: str = Field(min_length=1, max_length=32, json_schema_extra=_NOT_BLANK, description="not blank (else 422 required)")
    tracking_no: str = Field(
        min_length=1, max_length=64, json_schema_extra=_NOT_BLANK, description="not blank (else 422 required)"
    )


class CancelIn(Strict):
    reason: str | None = Field(default=None, max_length=64)
