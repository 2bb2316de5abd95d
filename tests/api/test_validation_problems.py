"""Request validation: a 422 problem whose field details carry Pydantic's error type as the stable
code, the field path and a message in the request's language (zh-CN unless ``Accept-Language``
asks for English); ids beyond BIGINT are such a 422 too, not a database error; nothing changes."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from siyu.api.params import INT64_MAX
from siyu.kit.validation_messages import FALLBACK, FIELD_MESSAGES, field_message
from tests.conftest import Tenant, customer_login

_CJK = re.compile(r"[\u4e00-\u9fff]")


def _fields(body: dict) -> dict[str, tuple[str, str]]:  # type: ignore[type-arg]
    return {f["path"]: (f["code"], f["message"]) for f in body["fields"]}


def test_admin_422_has_stable_codes_paths_and_chinese_messages(client: TestClient, tenant: Tenant) -> None:
    body = {"username": "a", "display_name": "", "password": "short", "role": "king", "colour": 1}
    r = client.post("/api/admin/v1/staff", json=body, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text
    assert r.headers["content-language"] == "zh-CN"
    fields = _fields(r.json())
    assert fields["body.display_name"] == ("string_too_short", "至少 1 个字符")
    assert fields["body.password"][0] == "string_too_short" and _CJK.search(fields["body.password"][1])
    assert fields["body.role"][0] in ("literal_error", "enum", "string_pattern_mismatch")
    for path, (_code, message) in fields.items():
        assert _CJK.search(message), (path, message)
        assert message != FALLBACK[0], path

    en = client.post("/api/admin/v1/staff", json=body, headers={**tenant.admin_headers, "Accept-Language": "en"})
    assert en.status_code == 422 and en.headers["content-language"] == "en"
    en_fields = _fields(en.json())
    assert en_fields.keys() == fields.keys()
    assert en_fields["body.display_name"] == ("string_too_short", "At least 1 characters")
    assert not any(_CJK.search(m) for _c, m in en_fields.values())
    staff = client.get("/api/admin/v1/staff", headers=tenant.admin_headers).json()
    assert [s["username"] for s in staff] == ["owner"]  # nothing was created


def test_store_422_has_stable_codes_paths_and_chinese_messages(client: TestClient, tenant: Tenant) -> None:
    r = client.get("/api/store/v1/products", params={"page_size": 0}, headers=tenant.store_headers)
    assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text
    assert _fields(r.json())["query.page_size"] == ("greater_than_equal", "不能小于 1")

    headers = customer_login(client, tenant)
    r = client.post("/api/store/v1/addresses", json={"name": 5}, headers=headers)
    assert r.status_code == 422, r.text
    fields = _fields(r.json())
    assert fields["body.name"] == ("string_type", "应为字符串")
    assert all(_CJK.search(m) for _c, m in fields.values()), fields
    assert any(code == "missing" and m == "缺少必填字段" for code, m in fields.values())
    r = client.post("/api/store/v1/addresses", json={"name": 5}, headers={**headers, "Accept-Language": "en-US,en;q=0.9"})
    assert _fields(r.json())["body.name"] == ("string_type", "Must be a string")
    assert client.get("/api/store/v1/addresses", headers=headers).json() in ([], {"items": [], "total": 0})


def test_ids_beyond_bigint_are_a_422_on_the_parameter(client: TestClient, tenant: Tenant) -> None:
    """Was a 500 on SQLite (``OverflowError`` binding the id), found by scripts/fuzz_api.py."""
    huge = 2**70
    r = client.get(f"/api/admin/v1/products/{huge}", headers=tenant.admin_headers)
    assert r.status_code == 422, r.text
    assert _fields(r.json())["path.product_id"] == ("less_than_equal", f"不能大于 {INT64_MAX}")
    r = client.get(f"/api/admin/v1/products/{-huge}", headers=tenant.admin_headers)
    assert r.status_code == 422 and _fields(r.json())["path.product_id"][0] == "greater_than_equal"
    r = client.get("/api/admin/v1/orders", params={"member_id": huge}, headers=tenant.admin_headers)
    assert r.status_code == 422 and "query.member_id" in _fields(r.json()), r.text
    r = client.get(f"/api/store/v1/products/{huge}", headers=tenant.store_headers)
    assert r.status_code == 422 and "path.product_id" in _fields(r.json()), r.text
    r = client.get("/api/store/v1/products", params={"category_id": -huge}, headers=tenant.store_headers)
    assert r.status_code == 422 and "query.category_id" in _fields(r.json()), r.text
    # the largest id is fine: it just does not exist
    r = client.get(f"/api/admin/v1/products/{INT64_MAX}", headers=tenant.admin_headers)
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_the_openapi_document_states_the_id_range(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    param = next(p for p in spec["paths"]["/api/admin/v1/products/{product_id}"]["get"]["parameters"] if p["name"] == "product_id")
    assert param["schema"]["maximum"] == INT64_MAX and param["schema"]["minimum"] == -(2**63)


def test_every_message_fills_its_placeholders_from_pydantic_context() -> None:
    ctx = {
        "min_length": 2, "max_length": 3, "pattern": "^a$", "gt": 0, "ge": 0, "lt": 9, "le": 9,
        "multiple_of": 5, "max_digits": 4, "decimal_places": 2, "expected": "'a' or 'b'",
        "expected_schemes": "'http', 'https'", "discriminator": "'kind'", "expected_tags": "'a', 'b'",
        "error": ValueError("bad"),
    }
    for code in FIELD_MESSAGES:
        for lang in ("zh-CN", "en"):
            message = field_message(code, lang, ctx)
            assert "{" not in message and message, (code, lang)
            assert bool(_CJK.search(message)) == (lang != "en"), (code, lang, message)
    assert field_message("literal_error", "zh-CN", {"expected": "'a' or 'b'"}) == "取值应为 'a' 或 'b' 之一"
    assert field_message("greater_than", "en", {}) == FALLBACK[1]  # no constraint value: no raw template
    assert field_message("some_new_type", "zh-CN") == FALLBACK[0]


def test_a_page_past_the_last_servable_one_is_a_422(client: TestClient, tenant: Tenant) -> None:
    """``page=2**62`` passed the BIGINT bound but its offset did not fit: a 500 on SQLite."""
    from siyu.kit.pagination import MAX_PAGE

    r = client.get("/api/admin/v1/orders", params={"page": 2**62, "page_size": 200}, headers=tenant.admin_headers)
    assert r.status_code == 422 and _fields(r.json())["query.page"] == ("less_than_equal", f"不能大于 {MAX_PAGE}")
    r = client.get("/api/admin/v1/orders", params={"page": MAX_PAGE, "page_size": 200}, headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["items"] == []


def test_the_openapi_document_describes_problems_as_they_are(client: TestClient, tenant: Tenant) -> None:
    """FastAPI documented each 422 as its own ``HTTPValidationError`` ({"detail": [...]}), which the
    API never returns; a problem with a ``detail`` object failed that schema (found fuzzing)."""
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    problem = schemas["Problem"]
    responses = spec["paths"]["/api/admin/v1/staff"]["post"]["responses"]
    for code in ("422", "4XX", "5XX"):
        assert responses[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    r = client.post("/api/admin/v1/staff", json={"username": 1}, headers=tenant.admin_headers)
    body = r.json()
    assert set(problem["required"]) <= body.keys() <= problem["properties"].keys()
    for field in body["fields"]:
        assert field.keys() == set(schemas["FieldProblem"]["required"])


def test_a_value_the_database_cannot_hold_is_a_422_problem(engine, settings) -> None:  # type: ignore[no-untyped-def]
    """The safety net under the schemas' bounds: SQLite's OverflowError binding a number beyond
    64 bits, PostgreSQL's numeric_value_out_of_range (and varchar overflow) are 422 problems with a
    stable code, not 500s."""
    from fastapi import FastAPI
    from sqlalchemy import text

    from siyu.api import problems

    app = FastAPI()
    problems.install(app)

    @app.get("/number")
    def number(value: str) -> dict[str, object]:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                return {"v": conn.execute(text("SELECT :v"), {"v": int(value)}).scalar()}
            return {"v": conn.execute(text("SELECT CAST(:v AS smallint)"), {"v": int(value)}).scalar()}

    @app.get("/text")
    def text_(value: str) -> dict[str, object]:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                raise OverflowError("date value out of range")
            conn.execute(text("CREATE TEMP TABLE short_text (v varchar(3))"))
            conn.execute(text("INSERT INTO short_text VALUES (:v)"), {"v": value})
            return {}

    @app.get("/nul")
    def nul() -> dict[str, object]:
        with engine.connect() as conn:
            return {"v": conn.execute(text("SELECT :v"), {"v": "a\x00b"}).scalar()}

    with TestClient(app) as c:
        r = c.get("/nul")
        if engine.dialect.name == "postgresql":  # SQLite stores it
            assert r.status_code == 422 and r.json()["code"] == "text_nul_character", r.text
        r = c.get("/number", params={"value": str(2**70)})
        assert r.status_code == 422 and r.json()["code"] == "value_out_of_range" and r.json()["message"] == "数值超出允许范围"
        r = c.get("/number", params={"value": "7"})
        assert r.status_code == 200 and r.json() == {"v": 7}
        r = c.get("/text", params={"value": "too long"}, headers={"Accept-Language": "en"})
        expected = "value_out_of_range" if engine.dialect.name == "sqlite" else "value_too_long"
        assert r.status_code == 422 and r.json()["code"] == expected, r.text


def test_a_constraint_the_service_did_not_check_is_a_409_conflict(engine) -> None:  # type: ignore[no-untyped-def]
    """A unique key a service does not check first was a 500 (renaming a distributor level to
    another level's name, PATCH /referral/levels/{id}, found fuzzing); it is the registered ``conflict`` problem, rolled back."""
    from fastapi import FastAPI
    from sqlalchemy import text

    from siyu.api import problems

    app = FastAPI()
    problems.install(app)

    @app.post("/twice")
    def twice() -> dict[str, object]:
        with engine.connect() as conn:
            conn.execute(text("CREATE TEMP TABLE uniq (v int UNIQUE)"))
            conn.execute(text("INSERT INTO uniq VALUES (1)"))
            conn.execute(text("INSERT INTO uniq VALUES (1)"))
        return {}

    with TestClient(app) as c:
        r = c.post("/twice", headers={"Accept-Language": "en"})
        assert r.status_code == 409 and r.json()["code"] == "conflict", r.text
        assert r.json()["message"] == "Conflicting change, please retry"


def test_every_int_parameter_of_every_route_copy_refuses_a_number_beyond_bigint(app, client: TestClient) -> None:  # type: ignore[no-untyped-def]
    """Each router inclusion has its own copies of a route's fields (sharing one FieldInfo): the
    store ``/products?category_id=`` copy kept its unbounded validator at first (found fuzzing on
    PostgreSQL: ``bigint out of range``)."""
    import pydantic

    from siyu.api.params import _dependants, _is_int, _route_dependants

    checked = 0
    for top in _route_dependants(app.routes):
        for dependant in _dependants(top):
            for field in (*dependant.path_params, *dependant.query_params):
                if _is_int(field.field_info.annotation):
                    for value in (2**64, -(2**64)):
                        try:
                            field._type_adapter.validate_python(value)
                        except pydantic.ValidationError:
                            continue
                        raise AssertionError(f"{dependant.path} {field.name} accepts {value}")
                    checked += 1
    assert checked > 300


def test_a_services_field_refusal_follows_accept_language_too(client: TestClient, tenant: Tenant) -> None:
    """Field errors raised by services (rules a schema cannot express) give zh-CN when they have it."""
    r = client.get("/api/admin/v1/orders", params={"sort": "colour"}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "invalid_sort"
    assert r.json()["fields"][0]["message"].startswith("排序字段应为以下之一：")
    r = client.get("/api/admin/v1/orders", params={"sort": "colour"}, headers={**tenant.admin_headers, "Accept-Language": "en"})
    assert r.json()["fields"][0]["message"].startswith("sort by one of: ")
