"""JSON problem responses (RFC 9457 shape) with a stable ``code`` and a localised ``message``."""

from __future__ import annotations

import functools
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from siyu.kit.errors import DomainError, FieldError
from siyu.kit.i18n import pick_language
from siyu.kit.validation_messages import field_message

log = logging.getLogger("siyu.api")


@functools.lru_cache(maxsize=512)
def _language(accept_language: str | None) -> str:
    """``pick_language`` once per distinct header value (clients send a handful of them)."""
    return pick_language(accept_language)


@functools.lru_cache(maxsize=2048)
def _fixed(code: str, lang: str) -> tuple[str, str, str]:
    """Type, title and the message of a code without parameters (most refusals), in ``lang``."""
    return f"https://siyu.dev/problems/{code}", code.replace("_", " "), DomainError(code).message(lang)


def problem_response(request: Request, error: DomainError) -> JSONResponse:
    lang = _language(request.headers.get("accept-language"))
    type_, title, message = _fixed(error.code, lang)
    body: dict[str, Any] = {
        "type": type_,
        "title": title,
        "status": error.status,
        "code": error.code,
        "message": error.message(lang) if error.params else message,
        "request_id": request.scope.get("state", {}).get("request_id"),
    }
    if error.fields:
        body["fields"] = [{"path": f.path, "code": f.code, "message": f.message} for f in error.fields]
    extra = {k: v for k, v in error.params.items() if not k.endswith("_en") and isinstance(v, int | str)}
    if extra:
        body["detail"] = extra
    headers = {"Content-Language": lang}
    return JSONResponse(body, status_code=error.status, headers=headers)


def _loc_to_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        head, rest = parts[0], parts[1:]
        return f"{head}." + ".".join(rest) if rest else head
    return ".".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem_response(request, DomainError("malformed_body"))
        # each field: Pydantic's error type as the stable code, the message in the request's language
        lang = _language(request.headers.get("accept-language"))
        fields = [
            FieldError(
                path=_loc_to_path(e.get("loc", ())),
                code=str(e.get("type", "invalid")),
                message=field_message(str(e.get("type", "invalid")), lang, e.get("ctx")),
            )
            for e in errors
        ]
        return problem_response(request, DomainError("validation_error", fields=fields))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return problem_response(request, DomainError("route_not_found"))
        if exc.status_code == 405:
            return problem_response(request, DomainError("method_not_allowed"))
        if exc.status_code == 401:
            return problem_response(request, DomainError("unauthenticated"))
        return JSONResponse({"code": "http_error", "message": str(exc.detail), "status": exc.status_code}, exc.status_code)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
        return problem_response(request, DomainError("internal_error"))
