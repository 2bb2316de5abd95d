"""Routing through the prefix/segment-scoped routers finds every route the OpenAPI document
lists, at its own template, and still answers 405 (not 404) for a known path's other method."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from fastapi.testclient import TestClient

from siyu.api.middleware import route_template
from siyu.api.routes import PREFIXES

PARAM = re.compile(r"\{[^}]+\}")


def _matched_template(app: Any, method: str, path: str) -> str | None:
    route = _routed_scope(app, method, path).get("route")
    return getattr(route, "path", None)


def _routed_scope(app: Any, method: str, path: str) -> dict[str, Any]:
    """Send one request through the ASGI app; the route template routing chose (None: no route).

    ``scope["route"]`` is the domain's own route, whose path is relative to its API prefix."""
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json"), (b"content-length", b"2")],
        "client": ("127.0.0.1", 1), "server": ("test", 80), "state": {},
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"{}", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        return None

    with contextlib.suppress(Exception):  # only the routing decision matters here
        asyncio.run(app(scope, receive, send))
    return scope


CONVERTER = re.compile(r"\{(\w+):\w+\}")


def test_every_documented_route_is_reached_at_its_own_template(client: TestClient) -> None:
    app = client.app
    paths = app.openapi()["paths"]  # type: ignore[attr-defined]
    checked = 0
    wrong = []
    for template, operations in paths.items():
        concrete = PARAM.sub("987654321", template)
        for method in operations:
            matched = _matched_template(app, method.upper(), concrete)
            if matched is not None:  # the document names {scene} where the route says {scene:path}
                matched = CONVERTER.sub(r"{\1}", matched)
            checked += 1
            full = [prefix + matched for prefix in PREFIXES.values() if matched is not None]
            if template not in full and matched != template:
                wrong.append((method, template, matched))
    assert not wrong
    assert checked > 100


def test_other_method_of_a_known_path_is_405_and_unknown_paths_404(client: TestClient) -> None:
    assert client.get("/api/store/v1/checkout/submit").status_code == 405
    assert client.get("/api/store/v1/no-such-thing").status_code == 404
    assert client.get("/api/store/v1").status_code == 404
    assert client.get("/healthz").status_code == 200


def test_metrics_label_is_the_full_route_template_of_every_documented_route(client: TestClient) -> None:
    """The Prometheus ``route`` label carries the API prefix: the store's and the admin's
    ``/orders/{order_id}`` (and every other pair of same-named routes) are told apart."""
    app = client.app
    paths = app.openapi()["paths"]  # type: ignore[attr-defined]
    wrong = []
    for template, operations in paths.items():
        concrete = PARAM.sub("987654321", template)
        for method in operations:
            label = route_template(_routed_scope(app, method.upper(), concrete))
            if label != template:
                wrong.append((method, template, label))
    assert not wrong
    assert route_template(_routed_scope(app, "GET", "/api/store/v1/no-such-thing")) == "unmatched"


def test_metrics_endpoint_tells_store_and_admin_order_routes_apart(client: TestClient) -> None:
    client.get("/api/store/v1/orders/1")
    client.get("/api/admin/v1/orders/1")
    text = client.get("/metrics").text
    labels = set(re.findall(r'siyu_http_requests_total\{method="GET",route="([^"]+)"', text))
    assert {"/api/store/v1/orders/{order_id}", "/api/admin/v1/orders/{order_id}"} <= labels
    assert "/orders/{order_id}" not in labels
