"""No request body of the API reads a JSON boolean as a number.

Pydantic's lax mode reads ``true`` as 1 where a model says ``int`` (``{"sku_id": true,
"quantity": true}`` put one unit of SKU 1 in the cart). ``api.params`` makes every body refuse
it, whichever domain wrote the model. The guard: for every route of the app, every integer
(and number) position that the body's JSON schema declares — nested objects, list items, map
values, each branch of a union — is sent ``true`` through the validator FastAPI runs for that
body, and each one must come back as a field error at its own path. A new model, or a new
integer field in an old one, is checked without anyone listing it here.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from siyu.api.params import _dependants, _route_dependants
from siyu.config import Settings
from siyu.kit.validation_messages import field_message
from tests.conftest import Tenant, customer_login

STORE = "/api/store/v1"

Sample = tuple[Any, list[tuple[Any, ...]]]  # a value, and the paths inside it that hold ``true``
NUMBER_CODES = {"int_type", "float_type", "literal_error"}


@pytest.fixture(scope="module")
def served_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The app as it serves (lifespan entered: routes added late are hardened too); no database
    is touched, validation happens before any."""
    from siyu.app import create_app

    data = Path(tmp_path_factory.mktemp("nobool"))
    settings = Settings(database_url=f"sqlite:///{data / 'unused.sqlite'}", data_dir=data,
                        secret_key="test-secret", env="test", redis_url="")
    application = create_app(settings)
    with TestClient(application):
        yield application


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _samples(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> list[Sample]:
    """Values for ``schema`` with ``true`` at every numeric position; one per union branch."""
    schema = _resolve(schema, defs)
    if depth > 12:
        return []
    branches = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if branches:
        found: list[Sample] = []
        for branch in branches:
            found += _samples(branch, defs, depth + 1)
        return found
    kind = schema.get("type")
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        if any(type(v) in (int, float) for v in values):
            return [(True, [()])]
        return [(values[0], [])] if len(values) == 1 else []  # a union's tag: the branch's own
    if kind in ("integer", "number"):
        return [(True, [()])]
    if kind == "array":
        items = [s for s in _samples(schema.get("items") or {}, defs, depth + 1) if s[1]]
        if not items:
            return []
        # every alternative as one item of the same list
        return [([v for v, _ in items], [(i, *p) for i, (_, paths) in enumerate(items) for p in paths])]
    if kind == "object" or "properties" in schema:
        options: dict[str, list[Sample]] = {}
        for name, sub in (schema.get("properties") or {}).items():
            found = _samples(sub, defs, depth + 1)
            if found:
                options[name] = found
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            found = [s for s in _samples(extra, defs, depth + 1) if s[1]]
            if found:
                options["some_key"] = found
        if not any(paths for found in options.values() for _, paths in found):
            return []
        # body i takes each property's i-th alternative (its last when it has fewer)
        out: list[Sample] = []
        for i in range(max(len(found) for found in options.values())):
            body: dict[str, Any] = {}
            paths: list[tuple[Any, ...]] = []
            for name, found in options.items():
                value, inner = found[min(i, len(found) - 1)]
                body[name] = value
                paths += [(name, *p) for p in inner]
            out.append((body, paths))
        return out
    return []


def _is_at(path: tuple[Any, ...], loc: tuple[Any, ...]) -> bool:
    """``loc`` is ``path`` with a union's branch names (a tag, ``int``) between its parts."""
    if not path or not loc or loc[0] != path[0]:
        return False
    rest = iter(loc)
    return all(any(part == step for step in rest) for part in path)


def _body_fields(app: Any) -> Iterator[tuple[str, Any]]:
    seen: set[int] = set()
    for top in _route_dependants(app.routes):
        for dependant in _dependants(top):
            for field in dependant.body_params:
                if id(field) not in seen:
                    seen.add(id(field))
                    yield f"{top.call.__module__}.{top.call.__name__}", field


def test_no_body_integer_accepts_true(served_app: Any) -> None:
    checked: set[str] = set()
    accepted = []
    for endpoint, field in _body_fields(served_app):
        schema = field._type_adapter.json_schema(mode="validation")
        defs = schema.get("$defs", {})
        for body, paths in _samples(schema, defs):
            _, errors = field.validate(body, loc=())
            refused = [tuple(e["loc"]) for e in errors if e["input"] is True and e["type"] in NUMBER_CODES]
            for path in paths:
                where = f"{endpoint} {field.name}: {'.'.join(map(str, path))}"
                checked.add(where)
                if not any(_is_at(path, loc) for loc in refused):
                    accepted.append(where)
    assert not accepted, f"read true as a number: {accepted}"
    # the walk reaches the bodies: the cart and checkout integers, nested ones, and many more
    names = " ".join(checked)
    for expected in ("add_cart_item body: sku_id", "body: quantity", "items.0.sku_id", "coupon_ids.0", "points_to_use"):
        assert expected in names, expected
    assert len(checked) > 200, len(checked)


def test_cart_add_and_checkout_refuse_true_in_both_languages(client: TestClient, tenant: Tenant) -> None:
    """Through HTTP: a field error per boolean with its path, in zh-CN and English; the cart
    stays empty."""
    headers = {**tenant.store_headers, **customer_login(client, tenant)}
    for lang, message in (("zh-CN", "应为整数"), ("en", "Must be an integer")):
        for url, body, paths in (
            (f"{STORE}/cart/items", {"sku_id": True, "quantity": True}, {"body.sku_id", "body.quantity"}),
            (f"{STORE}/checkout/preview", {"items": [{"sku_id": True, "quantity": 1}], "points_to_use": True},
             {"body.items.0.sku_id", "body.points_to_use"}),
        ):
            response = client.post(url, json=body, headers={**headers, "Accept-Language": lang})
            assert response.status_code == 422, response.text
            fields = {f["path"]: (f["code"], f["message"]) for f in response.json()["fields"]}
            assert fields == {path: ("int_type", message) for path in paths}
    cart = client.get(f"{STORE}/cart", headers=headers)
    assert cart.status_code == 200 and cart.json()["items"] == []


def test_a_whole_float_is_refused_and_a_digit_string_still_read(served_app: Any) -> None:
    field = next(f for name, f in _body_fields(served_app) if name.endswith(".add_cart_item"))
    _, errors = field.validate({"sku_id": 5.0, "quantity": 1.5}, loc=("body",))
    assert [(e["loc"], e["type"]) for e in errors] == [(("body", "sku_id"), "int_from_float"),
                                                       (("body", "quantity"), "int_from_float")]
    assert field_message("int_from_float", "en") == "Must be a whole number, without a decimal point"
    value, errors = field.validate({"sku_id": "5", "quantity": 2}, loc=("body",))
    assert not errors and (value.sku_id, value.quantity) == (5, 2)


#: routes that read their body themselves instead of declaring it, and why that is fine
SELF_READ = {
    "siyu.flash_sales.endpoints.buy": "kit.bounds.body_validator (checked below)",
    "siyu.events.endpoints.raw_events": "each event is validated by the events service, one by one",
    "siyu.referral.endpoints.wechat_transfer_notify": "WeChat Pay's signed notification, not a client body",
}


def test_a_body_read_by_hand_is_known(served_app: Any) -> None:
    """The walk above sees declared bodies only: a route reading its own must be listed here."""
    found = set()
    for top in _route_dependants(served_app.routes):
        for dependant in _dependants(top):
            if dependant.call is None:
                continue
            source = inspect.getsource(dependant.call)
            if any(read in source for read in ("request.body()", "request.json()", "request.stream()")):
                found.add(f"{dependant.call.__module__}.{dependant.call.__qualname__}")
    assert found == set(SELF_READ), f"list it with how its integers refuse booleans: {found ^ set(SELF_READ)}"


def test_the_flash_sale_buy_refuses_true() -> None:
    from siyu.flash_sales.endpoints import _buy_body

    with pytest.raises(RequestValidationError) as refused:
        _buy_body(b'{"quantity": true, "address_id": true}')
    assert [(e["loc"], e["type"]) for e in refused.value.errors()] == [
        (("body", "quantity"), "int_type"), (("body", "address_id"), "int_type"),
    ]
    assert _buy_body(b'{"quantity": 2}').quantity == 2
