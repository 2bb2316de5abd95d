"""Ingestion request and response bodies.

An event is validated as a ``TypedDict`` (a plain dict comes back, no model object): the
envelope ``EventIn`` on its own, or the whole batch in ONE call of ``BATCH``, a list of a union
tagged by the event's name whose registered members also type the properties
(``catalog.REGISTERED``), so a good batch is checked envelope and properties together by the
compiled validator.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, NotRequired, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, with_config
from typing_extensions import TypedDict

from siyu.events.catalog import REGISTERED
from siyu.events.models import SOURCES

MAX_BATCH = 500
DEFAULT_SOURCE = "mini_program"

_FIELDS: dict[str, Any] = {
    "event_id": Annotated[str, Field(min_length=8, max_length=64, description="client-generated id; retries are ignored")],
    "name": Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.]*$")],
    "timestamp": Annotated[dt.datetime, Field(description="when it happened on the client (ISO-8601 with offset)")],
    "member_id": NotRequired[
        Annotated[int | None, Field(gt=0, description="server-to-server only; the token decides for customers")]
    ],
    "anonymous_id": NotRequired[Annotated[str | None, Field(min_length=1, max_length=64)]],
    "source": NotRequired[Annotated[str, Field(description=f"one of {', '.join(SOURCES)} (default {DEFAULT_SOURCE})")]],
}
_FORBID = ConfigDict(extra="forbid")

#: one event's envelope; ``properties`` any object (checked by name afterwards)
EventIn = with_config(_FORBID)(TypedDict("EventIn", {**_FIELDS, "properties": NotRequired[dict[str, Any]]}))  # type: ignore[operator]

_OTHER = "_other"


_TAGS = {n: n for n in REGISTERED}


def _tag(value: Any) -> str:
    """The union member of one event (called per event: kept to one lookup)."""
    try:
        return _TAGS.get(value["name"], _OTHER)
    except (TypeError, KeyError, IndexError):  # not an object, no name, an unhashable name
        return _OTHER


def _typed(name: str, props: type[Any]) -> Any:
    """The envelope of a registered event, its properties typed."""
    # required when the schema has a required property, so that ``{}`` fails here as it would there
    properties = props if props.__required_keys__ else NotRequired[props]
    cls = TypedDict(f"Event_{name}", {**_FIELDS, "properties": properties})  # type: ignore[misc]
    return Annotated[with_config(_FORBID)(cls), Tag(name)]


_MEMBERS = (*(_typed(n, p) for n, p in REGISTERED.items()), Annotated[EventIn, Tag(_OTHER)])
_ANY_EVENT: Any = Annotated[Union[_MEMBERS], Discriminator(_tag)]  # noqa: UP007 - built at runtime
#: a whole batch, envelopes and registered properties, in one call (the fast path)
BATCH: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[_ANY_EVENT])
#: one envelope (the slow path, a batch with a bad event)
ENVELOPE: TypeAdapter[dict[str, Any]] = TypeAdapter(EventIn)


class BatchIn(BaseModel):
    events: list[EventIn] = Field(description=f"up to {MAX_BATCH} events")  # type: ignore[valid-type]


class Rejected(BaseModel):
    index: int
    event_id: str | None
    code: str
    message: str = Field(description="in the request's language (Accept-Language: zh-CN by default, or en)")
    fields: list[dict[str, str]] = []


class BatchOut(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[Rejected]
    unknown_names: list[str]


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    event_id: str
    name: str
    member_id: int | None
    anonymous_id: str | None
    source: str
    occurred_at: dt.datetime
    received_at: dt.datetime
    properties: dict[str, Any]


class EventNameOut(BaseModel):
    name: str
    registered: bool
    count: int
    last_seen: dt.datetime | None
