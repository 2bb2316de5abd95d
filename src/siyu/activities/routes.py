"""HTTP pieces shared by single-SKU activities: the admin routes (list, create, get, patch,
disable, delete) built from an ``AdminRoutes`` spec, a page of rows, and the store order response.

``add_admin_routes`` declares each route with the module's own path, path-parameter name,
operation name and summary, so the OpenAPI document and the URLs stay exactly what the module
would declare by hand. The endpoints are plain functions whose signature (what FastAPI reads) is
built here: the parameters are the usual ones (``session``, the path id, ``body``, the staff
principal with its permission), in the usual order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import Session

from siyu.api.deps import DbSession, StaffPrincipal, require
from siyu.api.idempotency import idempotent
from siyu.kit.pagination import Page, PageParams, apply_sort, page_params, paginate
from siyu.orders import service as orders_service
from siyu.orders.models import Order
from siyu.orders.schemas import OrderDetailOut, OrderLineOut, OrderOut

ActivityStatus = Literal["active", "disabled"]


def page(
    session: Session, stmt: Select[Any], params: PageParams, sortable: dict[str, Any], default: Any,
    items: Callable[[list[Any]], Iterable[Any]],
) -> Page[Any]:
    """One page of ``stmt`` sorted by ``params.sort`` (one of ``sortable``, else ``default``)."""
    rows, total = paginate(session, apply_sort(stmt, params.sort, sortable, default), params)
    return Page(items=list(items(list(rows))), total=total, page=params.page, page_size=params.page_size)


def order_detail(session: Session, order: Order) -> OrderDetailOut:
    """The order an activity's store endpoint placed, as the orders API shows it (not shipped yet)."""
    return OrderDetailOut(
        **OrderOut.model_validate(order).model_dump(),
        lines=[OrderLineOut.model_validate(ln) for ln in orders_service.order_lines(session, order.merchant_id, order.id)],
        shipments=[],
    )


def mark_replayed(response: Response, created: bool) -> None:
    """A retry with the same Idempotency-Key answers 200 with ``Idempotent-Replayed: true``."""
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"


@dataclass(frozen=True)
class ChildList:
    """``GET {path}/{id}/{segment}``: a page of the children (teams, bargains) started in an activity."""

    segment: str  # e.g. "teams"
    name: str  # operation name, e.g. "list_teams"
    summary: str
    model: Any  # the child model, for sorting
    search: Callable[[int, int, str | None], Select[Any]]  # (merchant_id, activity_id, status) (repository)
    statuses: Any  # the ``?status=`` type, e.g. Literal["open", "success", "failed"]
    status_param: str  # its Python name
    sortable: tuple[str, ...]
    item: type[BaseModel]
    items: Callable[[Session, int, list[Any]], list[Any]]  # (session, merchant_id, rows) -> the page's items


@dataclass(frozen=True)
class AdminRoutes:
    """A module's admin API over its activities (service functions take ``(session, merchant_id, ...)``)."""

    path: str  # e.g. "/group-buys"; an activity is at f"{path}/{{{id_param}}}"
    id_param: str  # e.g. "group_buy_id"
    model: Any  # the activity model, for sorting
    search: Callable[[int, str | None], Select[Any]]  # (merchant_id, status) -> the activities (repository)
    sortable: tuple[str, ...]  # columns ``?sort=`` may name
    create_in: type[BaseModel]
    update_in: type[BaseModel]
    admin_out: type[BaseModel]
    create: Callable[..., Any]  # (session, merchant_id, body, *, actor) -> activity
    get: Callable[..., Any]  # (session, merchant_id, id) -> activity
    update: Callable[..., Any]  # (session, merchant_id, id, body, *, actor) -> activity
    disable: Callable[..., Any]  # (session, merchant_id, id, *, actor) -> activity
    delete: Callable[..., Any]  # (session, merchant_id, id, *, actor) -> None
    out: Callable[..., BaseModel]  # (session, merchant_id, activity) -> admin_out
    names: dict[str, str]  # operation names: list, create, get, update, disable, delete
    summaries: dict[str, str] = field(default_factory=dict)  # same keys; a missing one: FastAPI's default
    status_param: str = "status"  # the Python name of the list's ``?status=`` filter
    children: ChildList | None = None


def _param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation, default=default)


def _staff(permission: str) -> inspect.Parameter:
    return _param("p", StaffPrincipal, Depends(require(permission)))


def _endpoint(name: str, params: list[inspect.Parameter], returns: Any, run: Callable[..., Any]) -> Callable[..., Any]:
    def endpoint(**kw: Any) -> Any:
        return run(**kw)

    endpoint.__name__ = endpoint.__qualname__ = name
    endpoint.__doc__ = None
    endpoint.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
    return endpoint


def add_admin_routes(router: APIRouter, spec: AdminRoutes) -> None:
    """Declare the six admin routes of ``spec`` on ``router`` (and the children's list after them)."""
    one = f"{spec.path}/{{{spec.id_param}}}"
    ident = _param(spec.id_param, int)
    session = _param("session", DbSession)
    body_create, body_update = _param("body", spec.create_in), _param("body", spec.update_in)
    read, write = "promotions:read", "promotions:write"
    sortable = {name: getattr(spec.model, name) for name in spec.sortable}

    def route(method: str, key: str, route_path: str, **kw: Any) -> Callable[[Callable[..., Any]], Any]:
        summary = spec.summaries.get(key)
        options = {**kw, **({"summary": summary} if summary else {})}
        return getattr(router, method)(route_path, **options)

    def list_(session: Session, p: Any, params: PageParams, **kw: Any) -> Page[Any]:
        stmt = spec.search(p.merchant_id, kw[spec.status_param])
        return page(session, stmt, params, sortable, spec.model.id.desc(),
                    lambda rows: [spec.out(session, p.merchant_id, r) for r in rows])

    listed = cast(Any, Page)[spec.admin_out]
    route("get", "list", spec.path, response_model=listed)(
        _endpoint(spec.names["list"], [
            session, _param(spec.status_param, ActivityStatus | None, Query(None, alias="status")),
            _param("params", PageParams, Depends(page_params)), _staff(read),
        ], listed, list_)
    )
    route("post", "create", spec.path, response_model=spec.admin_out, status_code=status.HTTP_201_CREATED)(
        idempotent(_endpoint(spec.names["create"], [body_create, session, _staff(write)], spec.admin_out,
                             lambda body, session, p: spec.out(session, p.merchant_id,
                                                               spec.create(session, p.merchant_id, body, actor=p.actor))))
    )
    route("get", "get", one, response_model=spec.admin_out)(
        _endpoint(spec.names["get"], [ident, session, _staff(read)], spec.admin_out,
                  lambda session, p, **kw: spec.out(session, p.merchant_id,
                                                    spec.get(session, p.merchant_id, kw[spec.id_param])))
    )
    route("patch", "update", one, response_model=spec.admin_out)(
        _endpoint(spec.names["update"], [ident, body_update, session, _staff(write)], spec.admin_out,
                  lambda body, session, p, **kw: spec.out(session, p.merchant_id, spec.update(
                      session, p.merchant_id, kw[spec.id_param], body, actor=p.actor)))
    )
    route("post", "disable", f"{one}/disable", response_model=spec.admin_out)(
        _endpoint(spec.names["disable"], [ident, session, _staff(write)], spec.admin_out,
                  lambda session, p, **kw: spec.out(session, p.merchant_id, spec.disable(
                      session, p.merchant_id, kw[spec.id_param], actor=p.actor)))
    )
    route("delete", "delete", one, status_code=status.HTTP_204_NO_CONTENT)(
        _endpoint(spec.names["delete"], [ident, session, _staff(write)], None,
                  lambda session, p, **kw: spec.delete(session, p.merchant_id, kw[spec.id_param], actor=p.actor))
    )
    if spec.children is not None:
        _add_child_list(router, spec, one, read)


def _add_child_list(router: APIRouter, spec: AdminRoutes, one: str, permission: str) -> None:
    child = spec.children
    assert child is not None
    sortable = {name: getattr(child.model, name) for name in child.sortable}

    def list_children(session: Session, p: Any, params: PageParams, **kw: Any) -> Page[Any]:
        activity_id = kw[spec.id_param]
        spec.get(session, p.merchant_id, activity_id)  # 404 for an unknown or foreign activity
        stmt = child.search(p.merchant_id, activity_id, kw[child.status_param])
        return page(session, stmt, params, sortable, child.model.id.desc(),
                    lambda rows: child.items(session, p.merchant_id, rows))

    listed = cast(Any, Page)[child.item]
    router.get(f"{one}/{child.segment}", response_model=listed, summary=child.summary)(
        _endpoint(child.name, [
            _param(spec.id_param, int), _param("session", DbSession),
            _param(child.status_param, child.statuses | None, Query(None, alias="status")),
            _param("params", PageParams, Depends(page_params)), _staff(permission),
        ], listed, list_children)
    )
