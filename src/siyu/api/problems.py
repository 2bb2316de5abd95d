"""JSON problem responses (RFC 9457 shape) with a stable ``code`` and a localised ``message``."""

from __future__ import annotations

import functools
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from siyu.kit.errors import DomainError, FieldError, register_messages
from siyu.kit.i18n import pick_language
from siyu.kit.validation_messages import field_message

log = logging.getLogger("siyu.api")

register_messages(
    {
        "value_out_of_range": (422, "数值超出允许范围", "A number is out of the allowed range"),
        "value_too_long": (422, "内容超出允许长度", "A value is longer than allowed"),
        "invalid_value": (422, "提交的数据不正确", "A submitted value is not valid"),
        "text_nul_character": (422, "文本不能包含 NUL（\\u0000）字符", "Text cannot contain the NUL (\\u0000) character"),
    }
)

#: PostgreSQL's SQLSTATE of a value the column cannot hold -> our code
_DATA_ERRORS = {
    "22001": "value_too_long",  # string_data_right_truncation: longer than varchar(n)
    "22003": "value_out_of_range",  # numeric_value_out_of_range: beyond integer / bigint
    "22008": "value_out_of_range",  # datetime_field_overflow
}


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
        body["fields"] = [{"path": f.path, "code": f.code, "message": f.text(lang)} for f in error.fields]
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


FIELD_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "FieldProblem",
    "type": "object",
    "required": ["path", "code", "message"],
    "properties": {
        "path": {"type": "string", "description": "dotted: body.items.0.quantity, query.page_size, path.product_id"},
        "code": {"type": "string", "description": "stable: Pydantic's error type or the domain's own code"},
        "message": {"type": "string", "description": "zh-CN, or English with Accept-Language: en"},
    },
}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "Every error: a JSON problem (RFC 9457 shape) with a stable code and a localised message.",
    "required": ["type", "title", "status", "code", "message"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string", "description": "stable machine code"},
        "message": {"type": "string", "description": "zh-CN, or English with Accept-Language: en"},
        "request_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "fields": {"type": "array", "items": {"$ref": "#/components/schemas/FieldProblem"}},
        "detail": {"type": "object", "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
    },
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document as the API answers: each 422 is a ``Problem`` (FastAPI documents its
    own ``HTTPValidationError``, which nothing here returns), and every operation may answer
    other 4xx and 5xx problems (401, 403, 404, 409, 429 ...)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Problem"] = PROBLEM_SCHEMA
    components["FieldProblem"] = FIELD_PROBLEM_SCHEMA
    problem = {"application/json": {"schema": _PROBLEM_REF}}
    for item in schema.get("paths", {}).values():
        for method, operation in item.items():
            if method not in ("get", "put", "post", "patch", "delete") or not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            for code, response in responses.items():
                content = response.get("content", {}).get("application/json", {})
                if content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError") or (
                    code == "422" and not content
                ):
                    response["content"] = {**response.get("content", {}), **problem}
            responses.setdefault("4XX", {"description": "A problem (refused request)", "content": problem})
            responses.setdefault("5XX", {"description": "A problem (server or provider error)", "content": problem})
    return schema


def _install_openapi(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    _install_openapi(app)

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
        # any other status Starlette raises (413 body too large ...): still a problem, its text as given
        body = {
            "type": "https://siyu.dev/problems/http_error",
            "title": "http error",
            "status": exc.status_code,
            "code": "http_error",
            "message": str(exc.detail),
            "request_id": request.scope.get("state", {}).get("request_id"),
        }
        return JSONResponse(body, exc.status_code, headers=getattr(exc, "headers", None))

    # The safety net under the schemas' own bounds: a value the database cannot hold (a number
    # beyond 64 bits for SQLite, a string longer than PostgreSQL's varchar(n), ...) refuses the
    # request (the unit of work rolls back) instead of a 500. Logged, as a schema should say it.
    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        log.warning("value out of range: %s", exc, exc_info=exc)
        return problem_response(request, DomainError("value_out_of_range"))

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        log.warning("value the database refused: %s", exc.orig, exc_info=exc)
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if sqlstate is None and "NUL (0x00)" in str(exc.orig):  # psycopg refuses it before sending
            return problem_response(request, DomainError("text_nul_character"))
        return problem_response(request, DomainError(_DATA_ERRORS.get(str(sqlstate), "invalid_value")))

    # a constraint the service did not check first (or a concurrent request won the race for a
    # unique key): the change is refused and rolled back, and retrying is the answer
    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("constraint refused the change: %s", exc.orig, exc_info=exc)
        return problem_response(request, DomainError("conflict"))

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
        return problem_response(request, DomainError("internal_error"))
