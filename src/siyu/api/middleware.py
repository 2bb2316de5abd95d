"""Pure ASGI middleware: request id, one structured log line per request, Prometheus metrics.

Written as raw ASGI (not ``BaseHTTPMiddleware``) because it sits on every request's hot path.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from siyu.api.routes import PREFIXES

log = logging.getLogger("siyu.request")

REQUESTS = Counter("siyu_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "siyu_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0),
)


# The labelled children of the two metrics per (method, route, status): ``labels()`` validates and
# looks its arguments up on every call (about a tenth of a flash-sale refusal's Python calls);
# the children are the same objects either way. Bounded: past ``_MAX_CHILDREN`` combinations
# (only a client inventing methods would get there) ``labels()`` is called as before.
_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_MAX_CHILDREN = 4096


def _children(method: str, route: str, status: int) -> tuple[Any, Any]:
    key = (method, route, status)
    found = _CHILDREN.get(key)
    if found is None:
        found = (REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route))
        if len(_CHILDREN) < _MAX_CHILDREN:
            _CHILDREN[key] = found
    return found


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value)
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, log_requests: bool = True) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        # 32 random hex digits, as ``uuid4().hex`` gave, without building a UUID object.
        request_id = incoming[:64].decode("latin-1") if incoming else os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder = [500]

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            count, latency = _children(scope["method"], route, status_holder[0])
            count.inc()
            latency.observe(elapsed)
            if self.log_requests and _would_log():  # no JSON built for a line nobody would write
                log.info(
                    json.dumps(
                        {
                            "event": "request",
                            "request_id": request_id,
                            "method": scope["method"],
                            "path": scope["path"],
                            "route": route,
                            "status": status_holder[0],
                            "ms": round(elapsed * 1000, 2),
                        }
                    )
                )


def _would_log() -> bool:
    """Whether ``log.info`` would reach a handler (without one, ``logging.lastResort`` drops INFO)."""
    if not log.isEnabledFor(logging.INFO):
        return False
    if log.hasHandlers():
        return True
    last = logging.lastResort
    return last is not None and last.level <= logging.INFO


def route_template(scope: Scope) -> str:
    """The matched route's full path template, API prefix included (``/api/store/v1/orders/{order_id}``).

    Routers are included into prefixed routers, so ``scope["route"].path`` is the path within the
    innermost router only (the store's and the admin's ``/orders/{order_id}`` would share a label).
    FastAPI records the route's effective (prefixed) path in its per-request context; without it,
    the API prefix the request path starts with is put back in front.
    """
    fastapi_scope = scope.get("fastapi")
    effective = fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    full = getattr(effective, "path_format", None) or getattr(effective, "path", None)
    if isinstance(full, str) and full:
        return full
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not path:
        return "unmatched"
    request_path = str(scope.get("path", ""))
    for prefix in PREFIXES.values():
        if request_path.startswith(prefix + "/") and not str(path).startswith(prefix + "/"):
            return prefix + str(path)
    return str(path)
