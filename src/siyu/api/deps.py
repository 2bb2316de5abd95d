"""FastAPI dependencies: the request's unit of work and the authenticated principal.

The request boundary owns the transaction: ``db_session`` commits when the endpoint returns
and rolls back when it raises, so a failed request leaves nothing half-written.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, Header, Request
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from siyu.config import Settings
from siyu.db import final_write
from siyu.kit.errors import DomainError
from siyu.tenancy import service as tenancy_service
from siyu.tenancy.models import Merchant
from siyu.tenancy.permissions import role_allows

_END_LIMITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()
END_THREADS = 40


def _end_limiter() -> anyio.CapacityLimiter:
    """Threads that only commit, roll back and close: never the endpoints' own pool (one per loop)."""
    loop = asyncio.get_running_loop()
    limiter = _END_LIMITERS.get(loop)
    if limiter is None:
        limiter = _END_LIMITERS[loop] = anyio.CapacityLimiter(END_THREADS)
    return limiter


def _end(session: Session, ok: bool) -> None:
    try:
        if ok:
            final_write.commit(session)
        else:
            session.rollback()
    finally:
        session.close()


def _committing(call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    def endpoint(**kwargs: Any) -> Any:
        result = call(**kwargs)
        for value in kwargs.values():
            if isinstance(value, Session) and value.in_transaction():
                final_write.commit(value)
        return result

    return endpoint


def commit_in_endpoint_threads(routes: Sequence[Any]) -> None:
    """Make every sync endpoint commit its request session in its own thread, as it returns.

    FastAPI validates a sync endpoint's response on the shared thread pool *before* the
    dependency's exit runs. With the commit there, a request holding a hot row (a SKU, a
    flash-sale item) needs a pool thread to get to its commit, while every pool thread may be
    waiting for that very row: the process stalls. Committing at the end of the endpoint's own
    thread releases the row first. The dependency's exit then commits nothing, or rolls back if
    the endpoint raised (nothing was committed then).
    """
    for route in routes:
        if isinstance(route, APIRoute):
            _commit_in_endpoint_thread(route.dependant, route.endpoint)
        elif callable(getattr(route, "effective_route_contexts", None)):
            # FastAPI >= 0.16x includes a router as a wrapper whose routes run through
            # per-inclusion "effective route contexts", each with its own copy of the dependant
            # (the one its request handler calls): that copy is the one to wrap.
            for context in route.effective_route_contexts():
                dependant = getattr(context, "dependant", None)
                if isinstance(context.original_route, APIRoute) and dependant is not None:
                    _commit_in_endpoint_thread(dependant, context.original_route.endpoint)
        elif isinstance(getattr(route, "routes", None), list):
            commit_in_endpoint_threads(route.routes)


def _commit_in_endpoint_thread(dependant: Any, endpoint: Callable[..., Any]) -> None:
    call = dependant.call
    if call is not None and not getattr(call, "siyu_commits", False) and not (
        inspect.iscoroutinefunction(endpoint) or inspect.isgeneratorfunction(endpoint)
        or inspect.isasyncgenfunction(endpoint)
    ):
        wrapped = _committing(call)
        wrapped.siyu_commits = True  # type: ignore[attr-defined]
        dependant.call = wrapped


async def db_session(request: Request) -> AsyncIterator[Session]:
    """The request's unit of work: commit when the endpoint returns, roll back when it raises.

    Two things matter here. The dependency is declared with ``scope="function"`` (below), so
    the commit happens *before* the response is sent: a commit that fails is the client's 500,
    never a 201 for an order that was rolled back. And the commit runs on its own small thread
    pool: committing on the endpoints' pool deadlocks when every endpoint thread waits for a
    row lock (a hot SKU, a flash-sale item) that only a pending commit would release.
    """
    session: Session = request.app.state.session_factory()
    try:
        yield session
    except BaseException:
        await anyio.to_thread.run_sync(_end, session, False, limiter=_end_limiter())
        raise
    if not session.in_transaction():
        # The endpoint's thread committed already (``commit_in_endpoint_threads``) and the
        # connection went back to the pool with it: closing only forgets the session's objects,
        # no I/O, so it is done here rather than paying a thread hop on every request.
        session.close()
        return
    await anyio.to_thread.run_sync(_end, session, True, limiter=_end_limiter())


async def settings_dep(request: Request) -> Settings:  # async: no threadpool hop for a plain read
    settings: Settings = request.app.state.settings
    return settings


DbSession = Annotated[Session, Depends(db_session, scope="function")]
AppSettings = Annotated[Settings, Depends(settings_dep)]


@dataclass(frozen=True)
class StaffPrincipal:
    merchant_id: int
    staff_id: int | None  # None for an API key
    role: str
    token_id: int

    @property
    def actor(self) -> tuple[str, int | None]:
        return ("staff", self.staff_id) if self.staff_id is not None else ("api_key", self.token_id)


@dataclass(frozen=True)
class CustomerPrincipal:
    merchant_id: int
    member_id: int
    token_id: int

    @property
    def actor(self) -> tuple[str, int | None]:
        return ("customer", self.member_id)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise DomainError("unauthenticated")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise DomainError("unauthenticated")
    return token.strip()


def current_staff(
    session: DbSession, authorization: Annotated[str | None, Header()] = None
) -> StaffPrincipal:
    token = tenancy_service.authenticate(session, _bearer(authorization), kinds=("staff", "api_key"))
    return StaffPrincipal(
        merchant_id=token.merchant_id, staff_id=token.subject_id if token.kind == "staff" else None,
        role=token.role or "staff", token_id=token.id,
    )


def require(permission: str, *alternatives: str) -> Callable[..., StaffPrincipal]:
    """Dependency factory: the caller must be staff (or an API key) whose role grants ``permission``
    (or one of ``alternatives``: e.g. a distributor's detail is for promotions or finance)."""
    allowed = (permission, *alternatives)

    def _dep(principal: Annotated[StaffPrincipal, Depends(current_staff)]) -> StaffPrincipal:
        if not any(role_allows(principal.role, p) for p in allowed):
            raise DomainError("forbidden")
        return principal

    _dep.__name__ = "require_" + "_or_".join(p.replace(":", "_") for p in allowed)
    return _dep


async def current_customer(
    session: DbSession, authorization: Annotated[str | None, Header()] = None
) -> CustomerPrincipal:
    """Async, so that a token in the per-process cache (nearly every request of a shopping
    session) costs no thread hop; a token not cached is checked against the database on a
    worker thread, never on the event loop."""
    plaintext = _bearer(authorization)
    token: Any = tenancy_service.authenticate_cached(session, plaintext, kinds=("customer",))
    if token is None:
        token = await anyio.to_thread.run_sync(
            functools.partial(tenancy_service.authenticate, session, plaintext, kinds=("customer",))
        )
    assert token.subject_id is not None
    return CustomerPrincipal(merchant_id=token.merchant_id, member_id=token.subject_id, token_id=token.id)


def store_merchant(
    session: DbSession,
    x_siyu_merchant: Annotated[
        str | None, Header(description="Merchant code of the store (or send a customer token)")
    ] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Merchant:
    """The merchant whose store a public (possibly anonymous) store API call is about."""
    if authorization:
        token = tenancy_service.authenticate(session, _bearer(authorization), kinds=("customer",))
        return tenancy_service.get_merchant(session, token.merchant_id)
    if not x_siyu_merchant:
        raise DomainError("merchant_required")
    return tenancy_service.get_merchant_by_code(session, x_siyu_merchant)


Staff = Annotated[StaffPrincipal, Depends(current_staff)]
Customer = Annotated[CustomerPrincipal, Depends(current_customer)]
StoreMerchant = Annotated[Merchant, Depends(store_merchant)]
