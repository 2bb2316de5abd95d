"""``@idempotent``: an admin create that a client may retry with an ``Idempotency-Key`` header.

Put it under the route decorator; nothing else in the endpoint changes::

    @admin.post("/categories", response_model=CategoryOut, status_code=status.HTTP_201_CREATED)
    @idempotent
    def create_category(body: CategoryIn, session: DbSession, p: StaffPrincipal = ...) -> CategoryOut:

The decorator adds the optional ``Idempotency-Key`` header to the endpoint's parameters (so the
OpenAPI document describes it on every covered route) and, when a request sends one, runs the
endpoint between a claim of the key and the storing of its answer, in the request's own
transaction (``siyu.idempotency.service`` has the semantics):

- first request: the endpoint runs; its answer is serialised here, as FastAPI would (the
  route's ``response_model``), stored with the key, and sent (the usual 201);
- a retry after that commit: the stored body again, byte for byte, with 200 and
  ``Idempotent-Replayed: true`` (the store API's convention, ``activities.routes.mark_replayed``);
- the same key with another body or other path/query values: 409 ``idempotency_key_reused``;
- a blank key or one over 120 characters (after trimming): 422 ``idempotency_key_invalid``;
- a retry whose stored answer no configured secret key opens (the server's ``SIYU_SECRET_KEY``
  changed without ``SIYU_SECRET_KEY_PREVIOUS``): 409 ``idempotency_answer_unavailable`` — the
  create was done, so it is not run again; the client looks the result up.

Without the header the endpoint runs exactly as before. The scope of a key is the route (method
and full path template) and the principal (``staff:<id>``, or ``api_key:<id>``), within the
merchant: another staff member, API key, route or merchant may use the same key independently.
The request's values are hashed after validation (path, query and body parameters of the
endpoint itself), so a retry that formats its JSON differently is still the same request.

The endpoint must be a sync function taking a ``DbSession`` and a ``StaffPrincipal``; the
session's commit at the end of the endpoint's thread (``api.deps.commit_in_endpoint_threads``)
commits the claim together with the create.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Header, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from siyu.api.deps import StaffPrincipal
from siyu.api.middleware import route_template
from siyu.idempotency import service

KEY_PARAM = "idempotency_key"
REQUEST_PARAM = "idempotency_request"
REPLAYED_HEADER = "Idempotent-Replayed"

HEADER_DESCRIPTION = (
    "Optional. Makes a retry of this create safe: a retry with the same key (1-120 characters, "
    "kept 24 h) answers 200 with `Idempotent-Replayed: true` and the first answer's body, creating "
    "nothing; the same key with a different request is 409 `idempotency_key_reused`. Keys are per "
    "staff member or API key and per route. A refused request (4xx) keeps no key: correct it and "
    "retry with the same key. If the first answer can no longer be read (the server's secret key "
    "changed), a retry is 409 `idempotency_answer_unavailable`: the create was done; look it up."
)

F = TypeVar("F", bound=Callable[..., Any])


def idempotent(endpoint: F) -> F:
    """Let ``endpoint`` (an admin create) take an ``Idempotency-Key``; see the module's docs."""
    try:
        signature = inspect.signature(endpoint, eval_str=True)
    except NameError:  # a name only imported for type checking: FastAPI resolves the strings itself
        signature = inspect.signature(endpoint)
    params = list(signature.parameters.values())
    if any(p.name in (KEY_PARAM, REQUEST_PARAM) or p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise TypeError(f"{endpoint.__name__}: cannot add the Idempotency-Key parameters")
    key_param = inspect.Parameter(
        KEY_PARAM, inspect.Parameter.KEYWORD_ONLY, default=None,
        # the document states the bounds; the service enforces them after trimming (422 idempotency_key_invalid)
        annotation=Annotated[str | None, Header(alias=service.HEADER, description=HEADER_DESCRIPTION,
                                                json_schema_extra={"minLength": 1, "maxLength": 120})],
    )
    request_param = inspect.Parameter(REQUEST_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Request)

    @functools.wraps(endpoint)
    def keyed(**kwargs: Any) -> Any:
        raw_key = kwargs.pop(KEY_PARAM, None)
        request = kwargs.pop(REQUEST_PARAM, None)
        if raw_key is None or request is None:  # no header (or a direct call): exactly as before
            return endpoint(**kwargs)
        return _run_keyed(endpoint, kwargs, raw_key, request)

    keyed.__signature__ = signature.replace(parameters=[*params, key_param, request_param])  # type: ignore[attr-defined]
    return keyed  # type: ignore[return-value]


def _run_keyed(endpoint: Callable[..., Any], kwargs: dict[str, Any], raw_key: str, request: Request) -> Response:
    session = _one(kwargs, Session)
    principal = _one(kwargs, StaffPrincipal)
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        raise RuntimeError("an idempotent endpoint runs behind an APIRoute")
    key = service.check_key(raw_key)
    kind, ident = principal.actor
    scope = f"{request.method} {route_template(request.scope)} {kind}:{ident}"
    digest = service.request_hash({name: jsonable_encoder(kwargs[name]) for name in _input_names(route)})
    secret_key: str = request.app.state.settings.secret_key

    outcome = service.claim(session, principal.merchant_id, scope, key, digest, secret_key=secret_key)
    if isinstance(outcome, service.Stored):
        return Response(outcome.body, status_code=200, media_type="application/json",
                        headers={REPLAYED_HEADER: "true"})

    result = endpoint(**kwargs)
    if isinstance(result, Response):  # an endpoint that builds its own answer: keep it as it is
        status_code, body, response = result.status_code, bytes(result.body), result
    else:
        status_code, body = route.status_code or 200, _serialise(route, result)
        response = Response(body, status_code=status_code, media_type="application/json")
    if 200 <= status_code < 300:
        service.complete(session, outcome, status_code, body, secret_key=secret_key)
    else:
        service.release(session, outcome)
    return response


def _one(kwargs: dict[str, Any], kind: type[Any]) -> Any:
    found = [v for v in kwargs.values() if isinstance(v, kind)]
    if len(found) != 1:
        raise TypeError(f"an idempotent endpoint takes exactly one {kind.__name__}")
    return found[0]


def _input_names(route: APIRoute) -> list[str]:
    """The endpoint's own request values: path, query and body parameters (never headers)."""
    dependant = route.dependant
    fields = [*dependant.path_params, *dependant.query_params, *dependant.body_params]
    return sorted({f.name for f in fields})


def _serialise(route: APIRoute, result: Any) -> bytes:
    """The JSON body FastAPI would send for ``result`` under the route's ``response_model``."""
    if route.response_model is None:
        return _adapter(Any).dump_json(jsonable_encoder(result))
    adapter = _adapter(route.response_model)
    value = adapter.validate_python(result, from_attributes=True)
    return adapter.dump_json(
        value,
        include=route.response_model_include,
        exclude=route.response_model_exclude,
        by_alias=route.response_model_by_alias,
        exclude_unset=route.response_model_exclude_unset,
        exclude_defaults=route.response_model_exclude_defaults,
        exclude_none=route.response_model_exclude_none,
    )


@functools.lru_cache(maxsize=512)
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)
