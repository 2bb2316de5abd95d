"""Offset pagination and sorting shared by every list endpoint."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Query
from pydantic import BaseModel, ValidationError, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import PydanticCustomError
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from siyu.kit.errors import DomainError, FieldError
from siyu.kit.validation_messages import register_field_messages

T = TypeVar("T")

#: the last page a list serves: its offset, (page - 1) * page_size, must stay a 64-bit integer
#: (a page past it was a 500 on SQLite, found fuzzing); 10 million pages of 200 is past any list
MAX_PAGE = 10_000_000


class PageParams(BaseModel):
    page: int = 1
    page_size: int = 20
    sort: str | None = None


def page_params(
    page: int = Query(1, ge=1, le=MAX_PAGE, description="1-based page number"),
    page_size: int = Query(20, ge=1, le=200),
    sort: str | None = Query(None, description="field name, prefix '-' for descending, e.g. -created_at"),
) -> PageParams:
    return PageParams(page=page, page_size=page_size, sort=sort)


def sort_values(names: Iterable[str], *aliases: str) -> tuple[str, ...]:
    """What ``apply_sort`` takes for ``names``: each name ascending and ``-name`` descending,
    then ``aliases`` (a service's own words for a sort, e.g. ``newest``)."""
    ordered = list(names)
    return (*ordered, *(f"-{n}" for n in ordered), *aliases)


register_field_messages({"invalid_sort": ("排序字段应为以下之一：{expected}", "sort by one of: {expected}")})


def _one_of(values: tuple[str, ...]) -> Callable[[Any, ValidatorFunctionWrapHandler], Any]:
    expected = ", ".join(values)

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if value == "":
            return None  # ``?sort=``: the default order, as ``apply_sort`` has always read it
        if isinstance(value, str) and value.startswith("+") and value[1:] in values and value[1] != "-":
            value = value[1:]  # "+price" is ascending "price", as ``apply_sort`` has always read it
        try:
            return handler(value)
        except ValidationError:
            # the code a service's own sort refusal has (``apply_sort``), with the values
            raise PydanticCustomError("invalid_sort", "sort by one of: {expected}", {"expected": expected}) from None

    return check


def sorted_page_params(values: Iterable[str], description: str | None = None) -> Callable[..., PageParams]:
    """``page_params`` for a list with a fixed set of sorts: ``sort`` is one of ``values`` (an
    enum in the OpenAPI document), any other value a 422 ``invalid_sort`` at ``query.sort``
    naming them, before the service runs. Give it what the service's ``apply_sort`` accepts
    (``sort_values``). An empty ``sort`` is still no sort and ``+name`` still ``name``."""
    choices = tuple(values)
    sort_type = Annotated[Literal[choices], WrapValidator(_one_of(choices))]  # type: ignore[valid-type]
    text = description or "one of the listed values; '-' first for descending"

    def dependency(page: int, page_size: int, sort: str | None) -> PageParams:
        return PageParams(page=page, page_size=page_size, sort=sort)

    defaults = inspect.signature(page_params).parameters
    dependency.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        defaults["page"].replace(annotation=int),
        defaults["page_size"].replace(annotation=int),
        inspect.Parameter("sort", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=sort_type | None,
                          default=Query(None, description=text)),
    ])
    return dependency


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int


def apply_sort(stmt: Select[Any], sort: str | None, allowed: dict[str, Any], default: Any) -> Select[Any]:
    if not sort:
        return stmt.order_by(default)
    desc = sort.startswith("-")
    name = sort.lstrip("-+")
    column = allowed.get(name)
    if column is None:
        raise DomainError(
            "validation_error",
            fields=[
                FieldError(
                    "sort",
                    "invalid_sort",
                    f"sort by one of: {', '.join(sorted(allowed))}",
                    f"排序字段应为以下之一：{', '.join(sorted(allowed))}",
                )
            ],
        )
    return stmt.order_by(column.desc() if desc else column.asc(), default)


def paginate(session: Session, stmt: Select[Any], params: PageParams) -> tuple[list[Any], int]:
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = session.scalars(stmt.limit(params.page_size).offset((params.page - 1) * params.page_size)).all()
    return list(rows), int(total)
