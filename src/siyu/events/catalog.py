"""The registered event names and the schema of their properties.

Registered events are validated; unknown names are accepted as they are and can be listed, so
an integrator can send new events before they are registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Props(BaseModel):
    model_config = ConfigDict(extra="allow")


class PageView(_Props):
    page: str = Field(min_length=1, max_length=200)


class ProductView(_Props):
    product_id: int = Field(gt=0)
    sku_id: int | None = Field(default=None, gt=0)
    category_id: int | None = None
    price: int | None = Field(default=None, ge=0, description="fen")


class Search(_Props):
    keyword: str = Field(min_length=1, max_length=100)


class AddToCart(_Props):
    product_id: int = Field(gt=0)
    sku_id: int = Field(gt=0)
    quantity: int = Field(gt=0, le=999)
    price: int | None = Field(default=None, ge=0)


class Favorite(_Props):
    product_id: int = Field(gt=0)


class Share(_Props):
    target: str | None = Field(default=None, max_length=64, description="product, activity, page ...")
    target_id: str | None = Field(default=None, max_length=64)


class CheckoutStart(_Props):
    amount: int | None = Field(default=None, ge=0)


class OrderPaid(_Props):
    order_id: int = Field(gt=0)
    amount: int = Field(ge=0)


class Refund(_Props):
    order_id: int = Field(gt=0)
    amount: int = Field(ge=0)


class CouponClaimed(_Props):
    template_id: int = Field(gt=0)


class CheckIn(_Props):
    streak: int | None = Field(default=None, ge=0)


class MessageClicked(_Props):
    channel: str = Field(min_length=1, max_length=32)
    message_id: str | None = Field(default=None, max_length=64)


REGISTERED: dict[str, type[_Props]] = {
    "page_view": PageView,
    "product_view": ProductView,
    "search": Search,
    "add_to_cart": AddToCart,
    "favorite": Favorite,
    "share": Share,
    "checkout_start": CheckoutStart,
    "order_paid": OrderPaid,
    "refund": Refund,
    "coupon_claimed": CouponClaimed,
    "check_in": CheckIn,
    "message_clicked": MessageClicked,
}


def _checker(schema: type[_Props]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    validate, dump = schema.model_validate, schema.model_dump

    def check(properties: dict[str, Any]) -> dict[str, Any]:
        return dump(validate(properties), exclude_none=True)

    return check


#: name -> properties as stored (validated and coerced, ``None`` left out); raises ValidationError
PROPERTIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {n: _checker(s) for n, s in REGISTERED.items()}
