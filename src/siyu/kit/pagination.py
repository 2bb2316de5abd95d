"""Offset pagination and sorting shared by every list endpoint."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from siyu.kit.errors import DomainError, FieldError

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
