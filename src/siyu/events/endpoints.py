"""Event ingestion (``/api/events/v1``) and the admin event browser."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import pydantic_core
from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, Field

from siyu.api.deps import DbSession, StaffPrincipal, _bearer, require
from siyu.events import repository as repo
from siyu.events import service
from siyu.events.catalog import REGISTERED
from siyu.events.models import Event
from siyu.events.schemas import BatchIn, BatchOut, EventNameOut, EventOut
from siyu.kit.errors import DomainError, FieldError
from siyu.kit.i18n import pick_language
from siyu.kit.nul_text import ESCAPE
from siyu.kit.pagination import Page, PageParams, page_params, paginate
from siyu.kit.timeutil import utcnow
from siyu.tenancy import service as tenancy_service

events = APIRouter(tags=["events"])
admin = APIRouter(tags=["admin: events"])


def event_caller(
    session: DbSession,
    authorization: Annotated[str | None, Header()] = None,
    x_siyu_merchant: Annotated[str | None, Header()] = None,
) -> service.Caller:
    """A customer token, a staff token / API key (trusted), or anonymous with X-Siyu-Merchant."""
    if authorization:
        token = tenancy_service.authenticate(session, _bearer(authorization), kinds=("customer", "staff", "api_key"))
        if token.kind == "customer":
            return service.Caller(merchant_id=token.merchant_id, member_id=token.subject_id)
        return service.Caller(merchant_id=token.merchant_id, member_id=None, trusted=True)
    if not x_siyu_merchant:
        raise DomainError("merchant_required")
    merchant = tenancy_service.get_merchant_by_code(session, x_siyu_merchant)
    return service.Caller(merchant_id=merchant.id, member_id=None)


async def raw_events(request: Request) -> list[Any]:
    """The body's ``events`` list, parsed once by pydantic-core's JSON parser.

    Not a FastAPI ``Body``: that parses the JSON and then validates 500 dicts of ``Any`` before
    the service validates each event properly again; the service does the one validation
    (``service.ingest``), so here only the body's shape is checked.
    """
    body = await request.body()
    request.state.may_hold_nul = ESCAPE in body  # the service then rejects each event holding one
    try:
        doc = pydantic_core.from_json(body)
    except ValueError:
        raise DomainError("malformed_body") from None
    events_list = doc.get("events") if isinstance(doc, dict) else None
    if not isinstance(events_list, list):
        raise DomainError("validation_error", fields=[FieldError("events", "list_type", "a list of events is required", "需要事件列表")])
    return events_list


@events.post(
    "/batch",
    response_model=BatchOut,
    summary="Send up to 500 behaviour events",
    description="Each event is validated on its own: rejected ones come back with their reason (a stable "
    "code and a message in the Accept-Language's language, zh-CN by default), the rest are stored. Retrying "
    "with the same event_id is harmless.",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": BatchIn.model_json_schema()}}}
    },
)
def ingest_batch(
    request: Request,
    session: DbSession,
    caller: service.Caller = Depends(event_caller),
    events_body: list[Any] = Depends(raw_events),
) -> Response:
    lang = pick_language(request.headers.get("accept-language"))
    out = service.ingest(session, caller, events_body, now=utcnow(), lang=lang,
                         may_hold_nul=getattr(request.state, "may_hold_nul", False))
    # serialised straight from the model: no second validation of the response
    return Response(
        content=out.__pydantic_serializer__.to_json(out), media_type="application/json", headers={"Content-Language": lang}
    )


class IdentifyIn(BaseModel):
    anonymous_id: str = Field(min_length=1, max_length=64, description="the device id sent with the anonymous events")


class IdentifyOut(BaseModel):
    linked: int = Field(description="anonymous events attached to the member now (0 on a repeat)")


@events.post(
    "/identify",
    response_model=IdentifyOut,
    summary="Join an anonymous device's history to the logged-in member",
    description="Call right after the customer logs in, with their customer token and the anonymous_id the "
    "mini-program used before: the device's earlier events become the member's (their statistics and segments "
    "count them) and later events sent with that anonymous_id are attributed to the member. Harmless to repeat.",
)
def identify(body: IdentifyIn, session: DbSession, caller: service.Caller = Depends(event_caller)) -> IdentifyOut:
    if caller.member_id is None:
        raise DomainError("event_identify_needs_member")
    return IdentifyOut(linked=service.link_anonymous(session, caller.merchant_id, body.anonymous_id, caller.member_id,
                                                     now=utcnow()))


@admin.get("/events", response_model=Page[EventOut])
def list_events(
    session: DbSession,
    member_id: int | None = None,
    name: str | None = None,
    since: dt.datetime | None = None,
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("audience:read")),
) -> Page[EventOut]:
    stmt = repo.list_events(session, p.merchant_id, member_id=member_id, name=name, since=since)
    rows, total = paginate(session, stmt.order_by(Event.occurred_at.desc(), Event.id.desc()), params)
    return Page(items=[EventOut.model_validate(r) for r in rows], total=total, page=params.page, page_size=params.page_size)


@admin.get("/events/names", response_model=list[EventNameOut], summary="Event names seen in the last 30 days")
def event_names(session: DbSession, p: StaffPrincipal = Depends(require("audience:read"))) -> list[EventNameOut]:
    seen = {n: (c, t) for n, c, t in repo.name_counts(session, p.merchant_id, utcnow() - dt.timedelta(days=30))}
    names = sorted(set(seen) | set(REGISTERED))
    return [
        EventNameOut(name=n, registered=n in REGISTERED, count=seen.get(n, (0, None))[0], last_seen=seen.get(n, (0, None))[1])
        for n in names
    ]
