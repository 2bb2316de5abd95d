"""Integer path and query parameters the database can hold: a signed 64-bit range.

Every id in the API is an ``int`` path or query parameter (``/products/{product_id}``,
``?member_id=``), and Pydantic accepts integers of any size. SQLite cannot bind one beyond 64
bits (``OverflowError`` while executing: a 500) and PostgreSQL compares it as ``numeric``; the
fuzzer (``scripts/fuzz_api.py``) found the 500 on well over a hundred endpoints. Rather than
ask each of them to bound its ids, ``bound_int_params`` gives every ``int`` (or ``int | None``)
path and query parameter without an upper or lower bound of its own the ``BIGINT`` one, once
every route is known: such a value is then the usual 422 with the parameter's path
(``path.product_id``, code ``less_than_equal``), and the OpenAPI document states the range.

The parameters' fields are FastAPI's ``ModelField``s: the bound goes into their metadata and
their validator is rebuilt from it (``__post_init__``), as FastAPI builds it. Applying it
twice changes nothing.

The same pass makes every request body refuse a JSON boolean (and a float) where its schema says
integer, whichever domain wrote the model (``kit.bounds.refuse_json_bools``): the body field's
validator is rebuilt from a rewritten copy of its core schema. Only the API's validation of
request bodies changes; the models themselves, their JSON schema and the OpenAPI document do
not, and a body costs one Python call per integer in it more than before.
"""

from __future__ import annotations

import logging
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any

import annotated_types
from fastapi.routing import APIRoute

from siyu.kit.bounds import INT64_MAX, INT64_MIN, refuse_json_bools

__all__ = ["INT64_MAX", "INT64_MIN", "bound_int_params"]

log = logging.getLogger(__name__)
_lax_bodies_logged: list[bool] = []  # the warning below, once per process


def _is_int(annotation: Any) -> bool:
    if annotation is int:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args == [int]
    return False


_LE = annotated_types.Le(INT64_MAX)
_GE = annotated_types.Ge(INT64_MIN)


def _bound(field: Any) -> bool:
    """Add the 64-bit bounds a parameter lacks; True when it changed.

    The copies of a route's dependant (one per router inclusion) hold ``ModelField``s of their
    own that share one ``FieldInfo``: the bounds go into it once, each field rebuilds its validator.
    """
    info = field.field_info
    if getattr(field, "siyu_int64", False) or not _is_int(info.annotation):
        return False
    metadata = info.metadata
    if not any(isinstance(m, annotated_types.Le | annotated_types.Lt) for m in metadata):
        metadata.append(_LE)
    if not any(isinstance(m, annotated_types.Ge | annotated_types.Gt) for m in metadata):
        metadata.append(_GE)
    if not any(m is _LE or m is _GE for m in metadata):
        return False  # bounded by its own declaration
    field.__post_init__()  # rebuild the validator (and the JSON schema) with the bounds
    field.siyu_int64 = True
    return True


def _dependants(dependant: Any) -> Iterator[Any]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def _route_dependants(routes: Sequence[Any]) -> Iterator[Any]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route.dependant
        elif callable(getattr(route, "effective_route_contexts", None)):
            # FastAPI >= 0.16x: an included router's routes run through per-inclusion contexts,
            # each with its own dependant (see ``api.deps.commit_in_endpoint_threads``)
            for context in route.effective_route_contexts():
                if isinstance(context.original_route, APIRoute):
                    yield context.original_route.dependant
                dependant = getattr(context, "dependant", None)
                if dependant is not None:
                    yield dependant
        elif isinstance(getattr(route, "routes", None), list):
            yield from _route_dependants(route.routes)


def _refuse_body_bools(field: Any) -> bool:
    """Swap a body field's validator for one whose integers refuse booleans; True when it changed.

    FastAPI validates a body with ``field._type_adapter.validate_python``, which runs
    ``validator``: only that attribute of the field's own adapter is replaced (the adapter of a
    body type used as is may share the model's validator, which stays as it is).
    """
    if getattr(field, "siyu_no_bool_ints", False):
        return False
    field.siyu_no_bool_ints = True
    try:  # FastAPI's and Pydantic's internals: feature-checked by use, like the route index
        from pydantic._internal._config import ConfigWrapper

        adapter = field._type_adapter
        config = ConfigWrapper(field.config).core_config(None) if field.config else None
        validator = refuse_json_bools(adapter.core_schema, config)
    except Exception:  # a FastAPI or Pydantic release that moved them: bodies stay as lax as before
        if not _lax_bodies_logged:
            _lax_bodies_logged.append(True)
            log.warning("request bodies keep reading JSON booleans as integers: unsupported FastAPI/Pydantic "
                        "internals", exc_info=True)
        return False
    if validator is not None:
        adapter.validator = validator
    return validator is not None


def bound_int_params(routes: Sequence[Any]) -> int:
    """Bound every unbounded ``int`` path and query parameter of ``routes`` and make every
    request body's integers refuse booleans; the number of fields changed."""
    seen: set[int] = set()
    changed = 0
    for top in _route_dependants(routes):
        for dependant in _dependants(top):
            for field in (*dependant.path_params, *dependant.query_params):
                if id(field) in seen:
                    continue
                seen.add(id(field))
                changed += _bound(field)
            for field in dependant.body_params:
                if id(field) in seen:
                    continue
                seen.add(id(field))
                changed += _refuse_body_bools(field)
    return changed
