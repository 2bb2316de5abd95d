"""Admin API (area ``promotions``): flash-sale activities, items, start/end, stats.
Store API: current and upcoming sessions, item detail, buy.

The routers carry a lifespan that binds the app's engine to the app's Redis
(``gate.bind_engine``), so the flash-sale submit hook finds Redis even when the order comes
through the generic ``POST /checkout/submit``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal, cast

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from siyu.api.deps import DbSession, StaffPrincipal, StoreMerchant, require
from siyu.api.idempotency import idempotent
from siyu.flash_sales import gate, service
from siyu.flash_sales import repository as repo
from siyu.flash_sales.models import FlashSale
from siyu.flash_sales.schemas import (
    BuyIn,
    FlashSaleDetailOut,
    FlashSaleIn,
    FlashSaleItemIn,
    FlashSaleItemOut,
    FlashSaleItemUpdate,
    FlashSaleOut,
    FlashSaleStatsOut,
    FlashSaleUpdate,
    SessionOut,
    StoreItemDetailOut,
)
from siyu.kit.bounds import body_validator
from siyu.kit.errors import DomainError
from siyu.kit.pagination import Page, PageParams, apply_sort, page_params, paginate
from siyu.orders import service as orders_service
from siyu.orders.schemas import OrderDetailOut, OrderLineOut, OrderOut
from siyu.tenancy import service as tenancy_service


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = getattr(app.state, "engine", None)
    if engine is not None:
        gate.bind_engine(engine, getattr(app.state, "redis", None), prefix=_prefix(app))
    try:
        yield
    finally:
        if engine is not None:
            gate.unbind_engine(engine)


def _prefix(app: FastAPI) -> str:
    settings = getattr(app.state, "settings", None)
    return str(getattr(settings, "flash_sale_redis_prefix", None) or gate.DEFAULT_PREFIX)


async def _bind(request: Request) -> None:  # async: no thread hop for a dictionary look-up
    """Bind on first use too, should the app run without its lifespan."""
    engine = getattr(request.app.state, "engine", None)
    if engine is not None and not gate.is_bound(engine):
        gate.bind_engine(engine, getattr(request.app.state, "redis", None), prefix=_prefix(request.app))


admin = APIRouter(tags=["admin: flash sales"], lifespan=lifespan, dependencies=[Depends(_bind)])
store = APIRouter(tags=["store: flash sales"])  # buy binds itself; the reads below declare it

StatusFilter = Literal["draft", "scheduled", "active", "ended"]


# -- admin ----------------------------------------------------------------------------------------------


def _detail(session: DbSession, sale: FlashSale) -> FlashSaleDetailOut:
    return service.detail(session, sale.merchant_id, sale)


@admin.get("/flash-sales", response_model=Page[FlashSaleOut])
def list_flash_sales(
    session: DbSession,
    sale_status: StatusFilter | None = Query(None, alias="status"),
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("promotions:read")),
) -> Page[FlashSaleOut]:
    stmt = repo.search_flash_sales(p.merchant_id, sale_status)
    sortable: dict[str, Any] = {"id": FlashSale.id, "starts_at": FlashSale.starts_at, "created_at": FlashSale.created_at}
    rows, total = paginate(session, apply_sort(stmt, params.sort, sortable, FlashSale.id.desc()), params)
    return Page(
        items=[FlashSaleOut.model_validate(r) for r in rows], total=total, page=params.page, page_size=params.page_size
    )


@admin.post("/flash-sales", response_model=FlashSaleDetailOut, status_code=status.HTTP_201_CREATED,
            summary="Create a draft activity (items' stock is taken from their SKUs)")
@idempotent
def create_flash_sale(
    body: FlashSaleIn, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> FlashSaleDetailOut:
    return _detail(session, service.create_flash_sale(session, p.merchant_id, body, actor=p.actor))


@admin.get("/flash-sales/{sale_id}", response_model=FlashSaleDetailOut)
def get_flash_sale(
    sale_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))
) -> FlashSaleDetailOut:
    return _detail(session, service.get_flash_sale(session, p.merchant_id, sale_id))


@admin.patch("/flash-sales/{sale_id}", response_model=FlashSaleDetailOut, summary="Change the rules before the start")
def update_flash_sale(
    sale_id: int, body: FlashSaleUpdate, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> FlashSaleDetailOut:
    return _detail(session, service.update_flash_sale(session, p.merchant_id, sale_id, body, actor=p.actor))


@admin.post("/flash-sales/{sale_id}/items", response_model=FlashSaleItemOut, status_code=status.HTTP_201_CREATED)
@idempotent
def add_item(
    sale_id: int, body: FlashSaleItemIn, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> FlashSaleItemOut:
    return FlashSaleItemOut.model_validate(service.add_item(session, p.merchant_id, sale_id, body, actor=p.actor))


@admin.patch("/flash-sales/{sale_id}/items/{item_id}", response_model=FlashSaleItemOut)
def update_item(
    sale_id: int,
    item_id: int,
    body: FlashSaleItemUpdate,
    session: DbSession,
    p: StaffPrincipal = Depends(require("promotions:write")),
) -> FlashSaleItemOut:
    return FlashSaleItemOut.model_validate(
        service.update_item(session, p.merchant_id, sale_id, item_id, body, actor=p.actor)
    )


@admin.delete("/flash-sales/{sale_id}/items/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_item(
    sale_id: int, item_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> None:
    service.delete_item(session, p.merchant_id, sale_id, item_id, actor=p.actor)


@admin.post("/flash-sales/{sale_id}/start", response_model=FlashSaleDetailOut,
            summary="Publish: scheduled until starts_at, then active; loads the Redis gate")
def start_flash_sale(
    sale_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> FlashSaleDetailOut:
    return _detail(session, service.start(session, p.merchant_id, sale_id, actor=p.actor))


@admin.post("/flash-sales/{sale_id}/end", response_model=FlashSaleDetailOut,
            summary="End now: unsold activity stock goes back to the SKUs")
def end_flash_sale(
    sale_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> FlashSaleDetailOut:
    sale = service.end(session, p.merchant_id, sale_id, actor=p.actor)
    assert sale is not None
    return _detail(session, sale)


@admin.get("/flash-sales/{sale_id}/stats", response_model=FlashSaleStatsOut,
           summary="Sold, paid, released units and GMV per item")
def flash_sale_stats(
    sale_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))
) -> FlashSaleStatsOut:
    return service.stats(session, p.merchant_id, sale_id)


# -- store ----------------------------------------------------------------------------------------------


@store.get("/flash-sales/sessions", response_model=list[SessionOut], dependencies=[Depends(_bind)],
           summary="Current and upcoming sessions (today and tomorrow) with their items and remaining units")
def list_sessions(session: DbSession, merchant: StoreMerchant) -> list[SessionOut]:
    return service.store_sessions(session, merchant.id)


@store.get("/flash-sales/items/{item_id}", response_model=StoreItemDetailOut, dependencies=[Depends(_bind)])
def get_item(item_id: int, session: DbSession, merchant: StoreMerchant) -> StoreItemDetailOut:
    return service.store_item(session, merchant.id, item_id)


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if not authorization:
        raise DomainError("unauthenticated")
    if scheme.lower() != "bearer" or not token.strip():
        raise DomainError("unauthenticated")
    return token.strip()


_BUY_DOC: dict[str, Any] = {
    "parameters": [
        {"name": "Authorization", "in": "header", "required": True, "schema": {"type": "string"}},
        {"name": "Idempotency-Key", "in": "header", "required": True, "schema": {"type": "string"}},
    ],
    "requestBody": {"required": True, "content": {"application/json": {"schema": BuyIn.model_json_schema()}}},
}


_BUY_BODY = body_validator(BuyIn)


def _buy_body(raw: bytes) -> BuyIn:
    try:
        return cast(BuyIn, _BUY_BODY.validate_json(raw or b"null"))  # true is no quantity (kit.bounds)
    except ValidationError as exc:  # the 422 FastAPI would give for a declared body
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)], body=raw
        ) from None


@store.post(
    "/flash-sales/{item_id}/buy",
    response_model=OrderDetailOut,
    status_code=status.HTTP_201_CREATED,
    summary="Buy now at the flash price (Idempotency-Key required; a retry returns the same order with 200)",
    openapi_extra=_BUY_DOC,
)
async def buy(item_id: int, request: Request) -> Response:
    """The hot path of a flash sale, where most attempts lose. This endpoint owns its session
    rather than taking the request's unit of work, and decides on the event loop what memory and
    Redis can decide: with the token and the item cached, a losing attempt is the 409 of one Lua
    script, with no thread hop and no database connection. Everything else (a cache miss, a
    granted attempt, a retry that may replay) goes to a worker thread, which commits there as it
    returns (so a failed commit is the client's 500) and rolls back on any error.

    Headers, body and settings are read here rather than declared as parameters: resolving them
    as FastAPI dependencies was about a fifth of a refusal's CPU (documented via ``openapi_extra``)."""
    await _bind(request)
    body = _buy_body(await request.body())
    authorization = request.headers.get("authorization")
    idempotency_key = request.headers.get("idempotency-key")
    settings = request.app.state.settings
    session: Session = request.app.state.session_factory()
    payment_timeout = dt.timedelta(minutes=settings.order_payment_timeout_minutes)
    try:
        plaintext = _bearer(authorization)
        token = tenancy_service.authenticate_cached(session, plaintext, kinds=("customer",))
        plan: service.BuyPlan | service.NeedsDatabase = service.NEEDS_DATABASE
        if token is not None:
            assert token.subject_id is not None
            plan = service.prepare_buy(
                session, token.merchant_id, token.subject_id, item_id, body, idempotency_key=idempotency_key,
                cached_only=True,
            )
    except BaseException:
        session.close()  # a refusal decided in memory: nothing began, or Redis's units go back now
        raise

    def in_thread() -> tuple[OrderDetailOut, bool]:
        try:
            nonlocal plan
            if isinstance(plan, service.NeedsDatabase):
                customer = tenancy_service.authenticate(session, plaintext, kinds=("customer",))
                assert customer.subject_id is not None
                plan = service.prepare_buy(
                    session, customer.merchant_id, customer.subject_id, item_id, body,
                    idempotency_key=idempotency_key, redis_limit=plan.limit_in_redis,
                )
                assert isinstance(plan, service.BuyPlan)
            order, created = service.finish_buy(session, plan, payment_timeout=payment_timeout)
            out = OrderDetailOut(
                **OrderOut.model_validate(order).model_dump(),
                lines=[OrderLineOut.model_validate(ln)
                       for ln in orders_service.order_lines(session, order.merchant_id, order.id)],
                shipments=[],
            )
            session.commit()
            return out, created
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    out, created = await anyio.to_thread.run_sync(in_thread)
    if created:
        return Response(out.model_dump_json(), status_code=status.HTTP_201_CREATED, media_type="application/json")
    return Response(out.model_dump_json(), status_code=status.HTTP_200_OK, media_type="application/json",
                    headers={"Idempotent-Replayed": "true"})
