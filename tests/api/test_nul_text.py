"""Text with a NUL character (U+0000) is one answer on both databases: 422 ``validation_error``
with a ``text_nul_character`` field per value, before any endpoint runs; nothing changes.
(PostgreSQL cannot store it and SQLite could, so the same request used to be stored on one
and refused on the other.)"""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from siyu.kit.nul_text import nul_paths
from tests.conftest import Tenant

CATEGORIES = "/api/admin/v1/categories"


def _names(client: TestClient, tenant: Tenant) -> list[str]:
    r = client.get(CATEGORIES, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    return [c["name"] for c in r.json()]


def test_a_nul_in_a_json_body_is_refused_with_its_field_path(client: TestClient, tenant: Tenant) -> None:
    before = _names(client, tenant)
    headers = {**tenant.admin_headers, "Content-Type": "application/json"}
    r = client.post(CATEGORIES, content=json.dumps({"name": "镜框\u0000"}), headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text
    assert r.json()["fields"] == [{"path": "body.name", "code": "text_nul_character",
                                   "message": "文本不能包含 NUL（\\u0000）字符"}]
    assert r.headers.get("x-request-id")
    en = client.post(CATEGORIES, content=json.dumps({"name": "a\u0000"}), headers={**headers, "Accept-Language": "en"})
    assert en.json()["fields"][0]["message"] == "Text cannot contain the NUL (\\u0000) character"
    assert _names(client, tenant) == before  # nothing was created


def test_an_escaped_backslash_before_u0000_is_plain_text(client: TestClient, tenant: Tenant) -> None:
    name = "a\\u0000b"  # a backslash, then the letters u0000: no NUL
    r = client.post(CATEGORIES, content=json.dumps({"name": name}),
                    headers={**tenant.admin_headers, "Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == name


def test_a_nul_in_the_query_string_is_refused(client: TestClient, tenant: Tenant) -> None:
    r = client.get("/api/store/v1/products", params={"q": "a\x00"}, headers=tenant.store_headers)
    assert r.status_code == 422, r.text
    assert [(f["path"], f["code"]) for f in r.json()["fields"]] == [("query.q", "text_nul_character")]


def test_a_body_that_is_not_json_still_gets_malformed_body(client: TestClient, tenant: Tenant) -> None:
    r = client.post(CATEGORIES, content=b'{"name": "\\u0000', headers={**tenant.admin_headers, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "malformed_body", r.text


def test_nul_paths_names_keys_nested_values_and_list_items() -> None:
    doc = {"a": [{"b": "x\x00"}, "ok", "\x00"], "k\x00": 1, "c": {"d": {"e": "fine"}}}
    assert sorted(nul_paths(doc, "body")) == ["body.a.0.b", "body.a.2", "body.k\x00"]
