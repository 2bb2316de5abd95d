"""The registered event names and the schema of their properties.

Registered events are validated; unknown names are accepted as they are and can be listed, so
an integrator can send new events before they are registered here.

The schemas are ``TypedDict``s, not models: the batch is validated by one compiled validator
that hands back plain dicts (``schemas.BATCH``), so no model object is built and dumped again
per event. Extra keys are kept (``extra="allow"``); a ``None`` value is left out when stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict

_EXTRA = ConfigDict(extra="allow")
PositiveId = Annotated[int, Field(gt=0)]
Fen = Annotated[int, Field(ge=0, description="fen")]


@with_config(_EXTRA)
class PageView(TypedDict):
    page: Annotated[str, Field(min_length=1, max_length=200)]


@with_config(_EXTRA)
class ProductView(TypedDict):
    product_id: PositiveId
    sku_id: NotRequired[PositiveId | None]
    category_id: NotRequired[int | None]
    price: NotRequired[Fen | None]


@with_config(_EXTRA)
class Search(TypedDict):
    keyword: Annotated[str, Field(min_length=1, max_length=100)]


@with_config(_EXTRA)
class AddToCart(TypedDict):
    product_id: PositiveId
    sku_id: PositiveId
    quantity: Annotated[int, Field(gt=0, le=999)]
    price: NotRequired[Fen | None]


@with_config(_EXTRA)
class Favorite(TypedDict):
    product_id: PositiveId


@with_config(_EXTRA)
class Share(TypedDict):
    target: NotRequired[Annotated[str, Field(max_length=64, description="product, activity, page ...")] | None]
    target_id: NotRequired[Annotated[str, Field(max_length=64)] | None]


@with_config(_EXTRA)
class CheckoutStart(TypedDict):
    amount: NotRequired[Fen | None]


@with_config(_EXTRA)
class OrderPaid(TypedDict):
    order_id: PositiveId
    amount: Fen


@with_config(_EXTRA)
class Refund(TypedDict):
    order_id: PositiveId
    amount: Fen


@with_config(_EXTRA)
class CouponClaimed(TypedDict):
    template_id: PositiveId


@with_config(_EXTRA)
class CheckIn(TypedDict):
    streak: NotRequired[Annotated[int, Field(ge=0)] | None]


@with_config(_EXTRA)
class MessageClicked(TypedDict):
    channel: Annotated[str, Field(min_length=1, max_length=32)]
    message_id: NotRequired[Annotated[str, Field(max_length=64)] | None]


@with_config(_EXTRA)
class LevelChanged(TypedDict):
    """Written by the server (``events.tasks``) when a member moves on the level ladder."""

    from_level_id: NotRequired[PositiveId | None]
    to_level_id: NotRequired[PositiveId | None]
    reason: NotRequired[Annotated[str, Field(max_length=32)] | None]


@with_config(_EXTRA)
class SegmentMove(TypedDict):
    """Written by the server (``audience.segments.recompute``), one per member whose saved-segment
    membership changed: ``segment_entered`` / ``segment_left``."""

    segment_id: PositiveId


_Stage = Annotated[str, Field(min_length=1, max_length=20)]
#: Written by the server (``audience.repository.recompute_stages``), one per member whose lifecycle
#: stage moved; ``from`` / ``to`` are stage codes (never_purchased, active, silent, sleeping,
#: pre_churn, churned). Functional form: ``from`` is a Python keyword.
StageChanged = TypedDict("StageChanged", {"from": _Stage, "to": _Stage})
with_config(_EXTRA)(StageChanged)


REGISTERED: dict[str, type[Any]] = {
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
    "level_changed": LevelChanged,
    "segment_entered": SegmentMove,
    "segment_left": SegmentMove,
    "stage_changed": StageChanged,
}


#: written only by the server, set-based from the audience module's change rows: journeys and
#: segments trust them, so the ingestion API refuses them (``event_name_reserved``)
SERVER_ONLY = frozenset({"segment_entered", "segment_left", "stage_changed"})


def without_none(properties: dict[str, Any]) -> dict[str, Any]:
    """The properties as stored: a ``None`` value is left out (an unset optional property)."""
    if None in properties.values():
        return {k: v for k, v in properties.items() if v is not None}
    return properties


def _checker(schema: type[Any]) -> Callable[[Any], dict[str, Any]]:
    validate = TypeAdapter(schema).validate_python

    def check(properties: Any) -> dict[str, Any]:
        return without_none(validate(properties))

    return check


#: name -> properties as stored (validated and coerced, ``None`` left out); raises ValidationError
PROPERTIES: dict[str, Callable[[Any], dict[str, Any]]] = {n: _checker(s) for n, s in REGISTERED.items()}
