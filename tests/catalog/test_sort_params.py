"""The product lists' (and home slots') ``sort`` is an enum in the OpenAPI document; every listed
value is served, any other is a 422 ``invalid_sort`` at ``query.sort`` naming the values, in
zh-CN and English."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog import repository, service
from siyu.storefront import service as storefront_service
from tests.conftest import Tenant

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"


def _enum(doc: dict[str, Any], path: str) -> list[str]:
    (param,) = [p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == "sort"]
    (choice,) = [s for s in param["schema"]["anyOf"] if s.get("type") == "string"]
    return list(choice["enum"])


def test_the_sort_values_are_stated(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert _enum(doc, f"{ADMIN}/products") == [
        "id", "created_at", "updated_at", "title", "sort", "sales_count", "status",
        "-id", "-created_at", "-updated_at", "-title", "-sort", "-sales_count", "-status",
    ]
    assert _enum(doc, f"{STORE}/products") == [
        "price", "sales", "created_at", "sort", "-price", "-sales", "-created_at", "-sort", "newest",
    ]
    assert _enum(doc, f"{ADMIN}/home-slots") == [
        "id", "sort", "kind", "created_at", "-id", "-sort", "-kind", "-created_at",
    ]
    # the store enum is what the search sorts by (its names live in the repository's query)
    _, sortable = repository.store_product_search(1)
    assert set(service.STORE_SORTS) == set(sortable)
    assert set(storefront_service.SORTS) == {"id", "sort", "kind", "created_at"}


def test_every_stated_value_is_served_and_another_is_refused(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    doc = client.get("/openapi.json").json()
    for path, headers in ((f"{ADMIN}/products", tenant.admin_headers), (f"{STORE}/products", tenant.store_headers),
                          (f"{ADMIN}/home-slots", tenant.admin_headers)):
        values = _enum(doc, path)
        for value in values:
            r = client.get(path, params={"sort": value}, headers=headers)
            assert r.status_code == 200, (path, value, r.text)
        # as before: an empty sort is the default order, "+name" is "name"
        for same in ("", "+" + values[0]):
            r = client.get(path, params={"sort": same}, headers=headers)
            assert r.status_code == 200, (path, same, r.text)
        for bad in ("cost", "--" + values[0].lstrip("-"), "+-" + values[0], "-newest", "Price"):
            zh = client.get(path, params={"sort": bad}, headers=headers)
            en = client.get(path, params={"sort": bad}, headers={**headers, "Accept-Language": "en"})
            assert zh.status_code == en.status_code == 422, (path, bad, zh.text)
            (zh_field,), (en_field,) = zh.json()["fields"], en.json()["fields"]
            assert (zh_field["path"], zh_field["code"]) == (en_field["path"], en_field["code"]) == ("query.sort", "invalid_sort")
            assert en_field["message"] == "sort by one of: " + ", ".join(values)
            assert zh_field["message"] == "排序字段应为以下之一：" + ", ".join(values)
