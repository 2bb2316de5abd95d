"""Mounts every domain's routers.

Each domain package may define in its ``endpoints.py`` any of: ``admin`` (mounted at
``/api/admin/v1``, staff auth), ``store`` (``/api/store/v1``, the mini-program), ``events``
(``/api/events/v1``) and ``provider`` (``/api/pay``, provider callbacks). Packages are found
by walking ``siyu``, so adding a domain needs no edit here.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
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


BUCKET_DEPTH = 4  # "/api/store/v1/flash-sales": the API prefix and the resource


def _bucket_key(path: str) -> str | None:
    """The first ``BUCKET_DEPTH`` segments of a path; None when the path has fewer."""
    parts = path.split("/", BUCKET_DEPTH + 1)
    if len(parts) <= BUCKET_DEPTH:
        return None
    return "/".join(parts[: BUCKET_DEPTH + 1])


class StaticRouteIndex:
    """Pure ASGI front of the app's router: a request goes straight to the route that FastAPI's
    routing would choose for it.

    FastAPI (0.16x) matches a request through each level of included routers twice (once to
    find the branch, once more inside it), walking every router's version counters as it goes:
    about 1,300 Python calls of a checkout submit's 7,700 and half of a flash-sale refusal's.
    The index is built once every route is known (the app's lifespan) from the routes in the
    order routing tries them (flattened; the first route whose pattern and method both match
    wins, as in routing):

    - ``paths``: a literal path (``POST /api/store/v1/checkout/submit``) to its routes, when
      every route whose pattern matches it, in routing order, is one of its own literal routes
      (so a parameterised route declared earlier still wins as before);
    - ``buckets``: the routes under each first four path segments (``/api/store/v1/flash-sales``)
      in routing order, for parameterised paths (``/api/store/v1/flash-sales/12/buy``). Routes
      with a parameter in those segments would go into every bucket; with one the index keeps
      no buckets at all.

    A request takes the shortcut only when a route accepts both its path and its method;
    everything else (405, 404, redirects) goes through FastAPI's routing untouched. The
    shortcut does what FastAPI does once it has picked a route: the route's effective context
    in the scope (dependencies, the route template used by the metrics), the endpoint and path
    params, ``scope["route"]``, then the route's own handler.

    It relies on FastAPI's per-request ``effective_route_context``; with a FastAPI that has none
    (``supported`` false) the index stays empty and every request is routed as before.
    """

    def __init__(self, app: Any, router: Any) -> None:
        self.app = app
        self.router = router
        self.paths: dict[str, list[Any]] = {}
        self.buckets: dict[str, list[Any]] = {}

    @staticmethod
    def supported() -> bool:
        import fastapi.routing as fr

        return all(hasattr(fr, name) for name in ("_IncludedRouter", "_EffectiveRouteContext", "_route_selected")) and (
            getattr(fr, "_FASTAPI_SCOPE_KEY", None) == "fastapi"
            and getattr(fr, "_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY", None) == "effective_route_context"
        )

    def build(self) -> None:
        """(Re)build the index from the router's routes; call it once every route is added."""
        self.paths, self.buckets = {}, {}
        if not self.supported() or self.app != self.router.app or getattr(self.router, "form_limits", None):
            return  # router-level middleware (a body limit) or form limits: the shortcut would skip them
        import fastapi.routing as fr

        leaves: list[Any] = []  # every route in the order routing tries them
        for route in self.router.routes:
            if isinstance(route, fr._IncludedRouter):
                leaves.extend(route.effective_route_contexts())
            else:
                leaves.append(route)
        if any(getattr(leaf, "path_regex", None) is None for leaf in leaves):
            return  # a route we cannot reason about: leave routing alone
        literal: dict[str, list[Any]] = {}
        for leaf in leaves:
            path = getattr(leaf, "path_format", "")
            if self._indexable(leaf) and "{" not in path:
                literal.setdefault(path, []).append(leaf)
        for path, contexts in literal.items():
            matching = [leaf for leaf in leaves if leaf.path_regex.match(path)]
            if all(any(leaf is c for c in contexts) for leaf in matching):
                self.paths[path] = contexts
        buckets: dict[str, list[Any]] = {}
        for leaf in leaves:
            path = getattr(leaf, "path_format", "")
            key = _bucket_key(path)
            if key is None:
                if ":path}" in path:
                    return  # a short pattern that matches longer paths too: no buckets
                continue  # shorter than a bucket: it can only match shorter paths, never a bucket's
            if "{" in key or not self._indexable(leaf):
                return  # may match paths of any bucket, or cannot be dispatched: no buckets
            buckets.setdefault(key, []).append(leaf)
        self.buckets = buckets

    @staticmethod
    def _indexable(leaf: Any) -> bool:
        import fastapi.routing as fr

        return (
            isinstance(leaf, fr._EffectiveRouteContext) and isinstance(leaf.original_route, APIRoute)
            and leaf.app is not None
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (self.paths or self.buckets):
            path = _route_path(scope)
            method = scope["method"]
            contexts = self.paths.get(path)
            if contexts is not None:
                for context in contexts:
                    if method in context.methods:
                        await self._dispatch(context, scope, receive, send)
                        return
            else:
                key = _bucket_key(path)
                for context in self.buckets.get(key, ()) if key is not None else ():
                    if method in context.methods and context.path_regex.match(path):
                        await self._dispatch(context, scope, receive, send)
                        return
        await self.app(scope, receive, send)

    async def _dispatch(self, context: Any, scope: Scope, receive: Any, send: Any) -> None:
        from fastapi.routing import _route_selected

        scope.setdefault("router", self.router)
        scope.setdefault("fastapi", {})["effective_route_context"] = context
        _match, child_scope = context.matches(scope)
        scope.update(child_scope)
        _route_selected(scope=scope, path=context.path_format)
        route = context.original_route
        scope["route"] = route
        await route.handle(scope, receive, send)


def install_static_route_index(app: FastAPI) -> StaticRouteIndex:
    """Put a ``StaticRouteIndex`` in front of the app's router (idempotent) and (re)build it."""
    router = app.router
    index = router.middleware_stack
    if not isinstance(index, StaticRouteIndex):
        index = router.middleware_stack = StaticRouteIndex(router.middleware_stack, router)
    index.build()
    return index
