"""The route index sends a request straight to the route FastAPI's own routing would choose
(literal paths by name, parameterised ones through their first four segments' bucket), and
leaves everything else (405, 404, redirects) to that routing."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from siyu.api.routes import StaticRouteIndex, install_static_route_index
from tests.api.test_routes import _routed_scope


def _route_of(asgi: Any, method: str, path: str) -> tuple[Any, Any]:
    """Send one request through ``asgi``; the route chosen and its effective route context."""
    scope = _routed_scope(asgi, method, path)
    return scope.get("route"), scope.get("fastapi", {}).get("effective_route_context")


def test_the_app_indexes_its_literal_routes_once_started(client: TestClient) -> None:
    index = client.app.router.middleware_stack  # type: ignore[attr-defined]
    assert isinstance(index, StaticRouteIndex)
    assert StaticRouteIndex.supported()
    assert "/api/store/v1/checkout/submit" in index.paths
    assert all("{" not in path for path in index.paths)
    assert len(index.paths) > 50


def test_every_indexed_path_reaches_the_route_fastapi_routing_chooses(client: TestClient) -> None:
    index = client.app.router.middleware_stack  # type: ignore[attr-defined]
    assert isinstance(index, StaticRouteIndex)
    wrong = []
    checked = 0
    for path, contexts in index.paths.items():
        for method in sorted({m for c in contexts for m in c.methods} | {"DELETE"}):
            fast_route, fast_context = _route_of(index, method, path)
            slow_route, slow_context = _route_of(index.app, method, path)  # the router without the index
            checked += 1
            if fast_route is not slow_route or fast_context is not slow_context:
                wrong.append((method, path))
    assert not wrong
    assert checked > 100


def _concrete(path_format: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path_format)


def test_parameterised_paths_reach_the_route_fastapi_routing_chooses(client: TestClient) -> None:
    index = client.app.router.middleware_stack  # type: ignore[attr-defined]
    assert isinstance(index, StaticRouteIndex)
    assert "/api/store/v1/flash-sales" in index.buckets
    wrong = []
    checked = 0
    for contexts in index.buckets.values():
        for context in contexts:
            for value in ("12", "abc"):
                path = _concrete(context.path_format, value)
                for method in sorted(context.methods | {"DELETE", "PATCH"}):
                    fast_route, fast_context = _route_of(index, method, path)
                    slow_route, slow_context = _route_of(index.app, method, path)
                    checked += 1
                    if fast_route is not slow_route or fast_context is not slow_context:
                        wrong.append((method, path))
    assert not wrong
    assert checked > 500


def _deep_app(prefix: str = "/api/v1/shop") -> FastAPI:
    app = FastAPI()
    router = APIRouter()

    @router.get("/things/{thing_id}/parts")
    def parts(thing_id: int) -> dict[str, Any]:
        return {"route": "parts", "thing_id": thing_id}

    @router.get("/things/{thing_id}/{part}")  # declared before ".../spare": wins for it, as in routing
    def part(thing_id: int, part: str) -> dict[str, Any]:
        return {"route": "part", "thing_id": thing_id, "part": part}

    @router.get("/things/{thing_id}/spare")
    def spare(thing_id: int) -> dict[str, Any]:
        return {"route": "spare"}

    @router.post("/things/{thing_id}/parts")
    def add_part(thing_id: int) -> dict[str, Any]:
        return {"route": "add_part", "thing_id": thing_id}

    app.include_router(router, prefix=prefix)
    return app


def test_parameterised_routes_keep_routing_order_methods_and_conversions() -> None:
    for prefix, bucketed in (("/api/v1/shop", True), ("/api/v1", False)):  # /api/v1/things/{thing_id}: not
        app = _deep_app(prefix)
        index = install_static_route_index(app)
        assert bool(index.buckets) is bucketed
        if bucketed:
            assert [c.path_format for c in index.buckets["/api/v1/shop/things"]] == [
                f"{prefix}/things/{{thing_id}}/parts", f"{prefix}/things/{{thing_id}}/{{part}}",
                f"{prefix}/things/{{thing_id}}/spare", f"{prefix}/things/{{thing_id}}/parts",
            ]
        with TestClient(app) as c:
            assert c.get(f"{prefix}/things/7/parts").json() == {"route": "parts", "thing_id": 7}
            assert c.post(f"{prefix}/things/7/parts").json() == {"route": "add_part", "thing_id": 7}
            assert c.get(f"{prefix}/things/7/spare").json() == {"route": "part", "thing_id": 7, "part": "spare"}
            assert c.get(f"{prefix}/things/x/parts").status_code == 422  # the path param still validated
            assert c.delete(f"{prefix}/things/7/parts").status_code == 405  # routing's own answer
            assert c.get(f"{prefix}/nothing/7/parts").status_code == 404


def _toy_app() -> FastAPI:
    app = FastAPI()
    items = APIRouter()

    @items.get("/items/{item_id}")
    def item(item_id: str) -> dict[str, str]:
        return {"route": "item", "item_id": item_id}

    @items.get("/items/latest")  # shadowed by the parameterised route declared before it
    def latest() -> dict[str, str]:
        return {"route": "latest"}

    @items.post("/items")
    def create() -> dict[str, str]:
        return {"route": "create"}

    outer = APIRouter()
    outer.include_router(items)
    app.include_router(outer, prefix="/api")
    return app


def test_shadowed_literal_paths_are_not_indexed_and_routing_is_unchanged() -> None:
    app = _toy_app()
    index = install_static_route_index(app)
    assert set(index.paths) == {"/api/items"}
    with TestClient(app) as c:
        assert c.get("/api/items/latest").json() == {"route": "item", "item_id": "latest"}
        assert c.post("/api/items").json() == {"route": "create"}
        assert c.get("/api/items").status_code == 405  # the other method is FastAPI's answer, as before
        assert c.get("/api/nothing").status_code == 404


def test_installing_twice_keeps_one_index() -> None:
    app = _toy_app()
    first = install_static_route_index(app)
    assert install_static_route_index(app) is first
    assert first.app is not first and not isinstance(first.app, StaticRouteIndex)


def test_every_sync_endpoint_commits_in_its_own_thread_once_started(client: TestClient) -> None:
    """``commit_in_endpoint_threads`` reaches the dependant each request handler really calls
    (FastAPI's per-inclusion copy), not only the route's own: else the commit waits for a thread
    hop after the endpoint returned, holding its row locks meanwhile."""
    import inspect

    from fastapi.routing import APIRoute

    not_wrapped = []
    checked = 0
    for route in client.app.router.routes:  # type: ignore[attr-defined]
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else []
        for context in contexts:
            original = context.original_route
            if not isinstance(original, APIRoute) or inspect.iscoroutinefunction(original.endpoint):
                continue
            checked += 1
            if not getattr(context.dependant.call, "siyu_commits", False):
                not_wrapped.append(context.path_format)
    assert not not_wrapped
    assert checked > 100
