"""Event ingestion (``/api/events/v1``) and the admin event browser."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header

from siyu.api.deps import DbSession, StaffPrincipal, _bearer, require
from siyu.events import repository as repo
from siyu.events import service
from siyu.events.catalog import REGISTERED
from siyu.events.models import Event
from siyu.events.schemas import BatchOut, EventNameOut, EventOut
from siyu.kit.errors import DomainError
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


@events.post(
    "/batch",
    response_model=BatchOut,
    summary="Send up to 500 behaviour events",
    description="Each event is validated on its own: rejected ones come back with their reason, the rest "
    "are stored. Retrying with the same event_id is harmless.",
)
def ingest_batch(
    session: DbSession,
    caller: service.Caller = Depends(event_caller),
    events_body: list[dict[str, Any]] = Body(..., embed=True, alias="events"),
) -> BatchOut:
    return service.ingest(session, caller, events_body, now=utcnow())


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
