"""Integer field types that fit their columns, for request schemas.

A number a column cannot hold was a 500: SQLite cannot bind one beyond 64 bits, PostgreSQL
refuses one beyond ``BIGINT`` / ``INTEGER`` (found fuzzing, ``scripts/fuzz_api.py``). With these
types it is a field error with its path instead. Path and query parameters get the ``BIGINT``
range without asking (``api/params.py``); request bodies use these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, cast

from pydantic import BaseModel, Field
from pydantic_core import CoreConfig, CoreSchema, PydanticKnownError, SchemaValidator, core_schema

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

#: a reference to another row by id: ids are BIGINT identities, so 1 .. 2**63-1
RefId = Annotated[int, Field(ge=1, le=INT64_MAX)]
#: list order in a 32-bit INTEGER column; ascending, smaller first
SortKey = Annotated[int, Field(ge=-1_000_000_000, le=1_000_000_000, description="ascending: smaller first")]


# -- JSON booleans are not numbers ----------------------------------------------------------------
# Pydantic's lax mode reads ``true`` as 1 wherever a body says ``int`` (``{"sku_id": true,
# "quantity": true}`` added one unit of SKU 1 to a cart) and as 1.0 where it says ``float``; it
# reads ``1.0`` as 1. ``Annotated[int, Strict()]`` would refuse both, but also the digit string
# ``"5"`` that a client sends for an id beyond JavaScript's 2**53 and that path and query
# parameters arrive as. ``refuse_json_bools`` is the narrower rule, applied to a whole core
# schema once (``api.params`` does it to every request body of the app at start-up, so that no
# domain has to remember it): an integer refuses a boolean (``int_type``) and any float
# (``int_from_float``, also for ``1.0``), an integer ``Literal`` refuses a boolean
# (``literal_error``) and a float number refuses a boolean (``float_type``). Digit strings stay
# as they were. The cost per request is one Python call per integer in the body.


def _refuse_bool_or_float(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticKnownError("int_type")
    if isinstance(value, float):
        raise PydanticKnownError("int_from_float")
    return value


def _refuse_bool_float(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticKnownError("float_type")
    return value


def _expected(values: list[Any]) -> str:
    # Pydantic's own wording for a literal_error: "1, 2 or 3"
    shown = [repr(v) for v in values]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _refuse_bool_literal(expected: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise PydanticKnownError("literal_error", {"expected": expected})
        return value

    return check


#: keys of a core schema node that hold values (defaults, literals, classes, functions), not schemas
_NOT_SCHEMA = frozenset({"metadata", "serialization", "default", "expected", "members", "cls", "config", "function", "ref"})
_MARK = "siyu_refuses_bool"


def _before(check: Callable[[Any], Any], schema: Any) -> CoreSchema:
    return core_schema.no_info_before_validator_function(check, cast(CoreSchema, schema), metadata={_MARK: True})


def _rewrite(node: Any, classes: list[type]) -> tuple[Any, bool]:
    """``node`` rewritten, and whether anything in it changed; ``classes`` gets the model (and
    dataclass, TypedDict) classes whose schemas changed."""
    if isinstance(node, list):
        items = [_rewrite(item, classes) for item in node]
        return ([new for new, _ in items], True) if any(changed for _, changed in items) else (node, False)
    if not isinstance(node, dict):
        return node, False
    if (node.get("metadata") or {}).get(_MARK):
        return node, False  # rewritten before: applying it twice changes nothing
    kind = node.get("type")
    if kind == "int" and not node.get("strict"):
        return _before(_refuse_bool_or_float, node), True
    if kind == "float" and not node.get("strict"):
        return _before(_refuse_bool_float, node), True
    if kind == "literal":
        expected = node.get("expected") or []
        if any(type(v) is int for v in expected) and not any(isinstance(v, bool) for v in expected):
            return _before(_refuse_bool_literal(_expected(expected)), node), True
        return node, False
    changed = False
    out = {}
    for key, value in node.items():
        if key in _NOT_SCHEMA:
            out[key] = value
            continue
        out[key], child_changed = _rewrite(value, classes)
        changed = changed or child_changed
    if changed and isinstance(node.get("cls"), type):
        classes.append(node["cls"])
    return (out, True) if changed else (node, False)


def refuse_json_bools(schema: CoreSchema, config: CoreConfig | None = None) -> SchemaValidator | None:
    """A validator for ``schema`` whose integers, integer literals and floats refuse booleans (see
    above); None when it has none. ``schema`` itself (maybe a model's own) is not touched.

    pydantic-core builds a model's part of a schema from the model's own finished validator when
    the class says it is complete (``__pydantic_complete__`` in its ``__dict__``), which would
    skip the rewritten fields: while this validator is built, the changed models say they are
    not, and say so again right after. Call it at start-up, before requests are served.
    """
    classes: list[type] = []
    new, changed = _rewrite(schema, classes)
    if not changed:
        return None
    flags = {cls: cls.__dict__.get("__pydantic_complete__") for cls in dict.fromkeys(classes)}
    try:
        for cls in flags:
            if "__pydantic_complete__" in cls.__dict__:
                cls.__pydantic_complete__ = False  # type: ignore[attr-defined]
        return SchemaValidator(cast(CoreSchema, new), config)
    finally:
        for cls, flag in flags.items():
            if flag is not None:
                cls.__pydantic_complete__ = flag  # type: ignore[attr-defined]


def body_validator(model: type[BaseModel]) -> SchemaValidator | Any:
    """``model``'s validator as a request body's: ``refuse_json_bools`` applied. For a route that
    reads its body itself rather than declaring it (``api.params`` hardens the declared ones);
    build it once, at import."""
    try:
        return refuse_json_bools(model.__pydantic_core_schema__) or model.__pydantic_validator__
    except Exception:  # a Pydantic release whose schema internals moved: the model's own (lax) validator
        return model.__pydantic_validator__
