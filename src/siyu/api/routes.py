"""Mounts every domain's routers.

Each domain package may define in its ``endpoints.py`` any of: ``admin`` (mounted at
``/api/admin/v1``, staff auth), ``store`` (``/api/store/v1``, the mini-program), ``events``
(``/api/events/v1``) and ``provider`` (``/api/pay``, provider callbacks). Packages are found
by walking ``siyu``, so adding a domain needs no edit here.
"""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import APIRouter, FastAPI
from starlette.routing import Match
from starlette.types import Scope

import siyu

PREFIXES = {
    "admin": "/api/admin/v1",
    "store": "/api/store/v1",
    "events": "/api/events/v1",
    "provider": "/api/pay",
}


def domain_packages() -> list[str]:
    names = []
    for info in pkgutil.iter_modules(siyu.__path__):
        if info.ispkg and importlib.util.find_spec(f"siyu.{info.name}.endpoints") is not None:
            names.append(info.name)
    return sorted(names)


def _route_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path):]
    return path


class _ScopedRouter(APIRouter):
    """Routers under an API prefix that refuse, before looking at any route, a request they cannot match.

    FastAPI matches a request against each included route's pattern in turn; with a hundred
    and more routes that was about a tenth of a checkout submit's CPU. ``include_all`` groups
    the domains' routers by API prefix (a request outside the prefix skips the whole group) and
    wraps each domain's router with the first path segments its routes start with (a request
    for ``/checkout/...`` skips the domains without such a route). A router with a route whose
    first segment is a parameter, or with routers of its own, is never skipped. Nothing that
    could match, even partially (405), is skipped; route order and the OpenAPI document are
    unchanged.
    """

    def __init__(self, prefix: str, segments: frozenset[str] | None = None) -> None:
        super().__init__()
        self.siyu_prefix = prefix
        self.siyu_segments = segments

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = _route_path(scope)
        if path != self.siyu_prefix and not path.startswith(self.siyu_prefix + "/"):
            return Match.NONE, {}
        if self.siyu_segments is not None:
            first = path[len(self.siyu_prefix) + 1:].partition("/")[0]
            if first not in self.siyu_segments:
                return Match.NONE, {}
        return super().matches(scope)


def _first_segments(router: APIRouter) -> frozenset[str] | None:
    """The literal first path segments of the router's routes; None when one may be anything."""
    segments = set()
    for route in router.routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str) or not path.startswith("/"):
            return None
        first = path[1:].partition("/")[0]
        if "{" in first or ":" in first:
            return None
        segments.add(first)
    return frozenset(segments)


def include_all(app: FastAPI) -> None:
    groups = {prefix: _ScopedRouter(prefix) for prefix in PREFIXES.values()}
    for name in domain_packages():
        module = importlib.import_module(f"siyu.{name}.endpoints")
        for attr, prefix in PREFIXES.items():
            router = getattr(module, attr, None)
            if isinstance(router, APIRouter):
                scoped = _ScopedRouter(prefix, _first_segments(router))
                scoped.include_router(router)
                groups[prefix].include_router(scoped)
    for prefix, group in groups.items():
        app.include_router(group, prefix=prefix)


def import_all_models() -> None:
    """Import every ``models.py`` so ``Base.metadata`` knows every table (Alembic, tests)."""
    importlib.import_module("siyu.kit.outbox")
    importlib.import_module("siyu.kit.audit")
    for info in pkgutil.iter_modules(siyu.__path__):
        if info.ispkg and importlib.util.find_spec(f"siyu.{info.name}.models") is not None:
            importlib.import_module(f"siyu.{info.name}.models")
