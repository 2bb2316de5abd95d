"""``create_app()``: the FastAPI application with every domain mounted."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from siyu import __version__
from siyu.api import problems
from siyu.api.deps import commit_in_endpoint_threads
from siyu.api.middleware import RequestContextMiddleware
from siyu.api.params import bound_int_params
from siyu.api.routes import import_all_models, include_all, install_static_route_index
from siyu.api.text_guard import NulTextGuard
from siyu.config import Settings, get_settings
from siyu.db.engine import make_engine
from siyu.db.session import make_session_factory
from siyu.kit import redisconn
from siyu.kit.cache_bus import CacheBus
from siyu.kit.crypto import SecretBox
from siyu.kit.gc_tuning import freeze_startup_objects

DESCRIPTION = """
Siyu (私域) — an open platform for a WeChat mini-program store and its private-domain audience.

* **Admin API** `/api/admin/v1` — staff bearer token (`POST /api/admin/v1/auth/login`) or an API key.
* **Store API** `/api/store/v1` — the mini-program; customer bearer token from
  `POST /api/store/v1/auth/wechat-login`, or `X-Siyu-Merchant: <code>` for anonymous browsing.
* **Payment callbacks** `/api/pay/...` — WeChat Pay notifications.

Errors are JSON problems with a stable `code` and a `message` in zh-CN or English (`Accept-Language`).
Money is integer fen (分).
"""


def create_app(settings: Settings | None = None, *, worker_in_process: bool = False) -> FastAPI:
    settings = settings or get_settings()
    import_all_models()
    engine = make_engine(
        settings.resolved_database_url(), pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        commit_in_endpoint_threads(app.routes)  # here: every route is known, added late or not
        bound_int_params(app.routes)  # ids beyond BIGINT are a 422, not a database error
        install_static_route_index(app)
        if settings.env != "test":  # a test suite starts hundreds of apps: nothing of theirs may be frozen
            freeze_startup_objects()
        bus = CacheBus(app.state.redis).start() if app.state.redis is not None else None
        runner = None
        if worker_in_process:
            from siyu.worker.runner import BackgroundWorker

            runner = BackgroundWorker(app.state.session_factory, settings, redis=app.state.redis)
            runner.start()
        try:
            yield
        finally:
            if runner is not None:
                runner.stop()
            if bus is not None:
                bus.stop()
            engine.dispose()

    app = FastAPI(
        title="Siyu 私域 API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.secret_box = SecretBox(settings.secret_key)
    app.state.redis = redisconn.connect(settings.redis_url)
    problems.install(app)
    # inside the request context (its refusals carry the request id); the event batch rejects
    # an event with a NUL on its own and stores the rest
    app.add_middleware(NulTextGuard, exempt=frozenset({"/api/events/v1/batch"}))
    app.add_middleware(RequestContextMiddleware, log_requests=settings.env != "test")
    include_all(app)
    bound_int_params(app.routes)  # already here, so that the OpenAPI document states the range

    @app.get("/healthz", tags=["ops"], summary="Database and Redis reachable")
    def healthz(request: Request) -> JSONResponse:
        checks: dict[str, Any] = {}
        ok = True
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # report, do not raise: this is the health endpoint
            ok = False
            checks["database"] = f"error: {type(exc).__name__}"
        redis_client = request.app.state.redis
        if redis_client is None:
            checks["redis"] = "not configured"
        else:
            try:
                redis_client.ping()
                checks["redis"] = "ok"
            except Exception as exc:
                ok = False
                checks["redis"] = f"error: {type(exc).__name__}"
        return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    logging.getLogger("siyu").setLevel(logging.INFO)
    return app
