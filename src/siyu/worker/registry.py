"""Job handlers by kind. Domains register theirs in their ``tasks.py``::

    @job_handler("orders.auto_cancel")
    def auto_cancel(ctx: JobContext) -> None: ...

A handler runs inside the worker's unit of work: what it writes commits together with the job
being marked done, or not at all. Handlers must be idempotent: a job may run again after a
crash between the remote call and the commit.
"""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy.orm import Session

import siyu
from siyu.config import Settings
from siyu.kit.timeutil import utcnow


@dataclass
class JobContext:
    session: Session
    merchant_id: int
    payload: dict[str, Any]
    settings: Settings
    job_id: int
    attempt: int
    redis: redis.Redis | None = None
    run_at: dt.datetime | None = None

    def now(self) -> dt.datetime:
        """Now, as the worker that claimed the job sees it.

        A worker claims a job only once its ``run_at`` has passed on the worker's clock, so
        ``run_at`` is a lower bound of that clock (this also keeps ``Worker.drain(now=...)``
        deterministic in tests, where the drain's clock runs ahead of the wall clock).
        """
        now = utcnow()
        return max(now, self.run_at) if self.run_at is not None else now


Handler = Callable[[JobContext], None]
_HANDLERS: dict[str, Handler] = {}


def job_handler(kind: str) -> Callable[[Handler], Handler]:
    def _register(fn: Handler) -> Handler:
        if kind in _HANDLERS and _HANDLERS[kind] is not fn:
            raise ValueError(f"job kind {kind!r} registered twice")
        _HANDLERS[kind] = fn
        return fn

    return _register


@dataclass(frozen=True)
class Recurring:
    """A job every merchant runs on ``cron`` in the merchant's own time zone."""

    kind: str
    cron: str
    description: str


_RECURRING: dict[str, Recurring] = {}


def recurring(kind: str, cron: str, description: str) -> Callable[[Handler], Handler]:
    """Register a handler that every merchant runs on a schedule (a ``job_schedules`` row named
    ``kind`` per merchant, created with the merchant and, for merchants that predate the job, by
    ``worker.schedules.ensure_merchant_schedules`` when a worker starts)."""

    def _register(fn: Handler) -> Handler:
        job_handler(kind)(fn)
        _RECURRING[kind] = Recurring(kind, cron, description)
        return fn

    return _register


def recurring_jobs() -> list[Recurring]:
    import_all_tasks()
    return sorted(_RECURRING.values(), key=lambda r: r.kind)


def handler_for(kind: str) -> Handler | None:
    return _HANDLERS.get(kind)


def import_all_tasks() -> None:
    for info in pkgutil.iter_modules(siyu.__path__):
        if info.ispkg and importlib.util.find_spec(f"siyu.{info.name}.tasks") is not None:
            importlib.import_module(f"siyu.{info.name}.tasks")
