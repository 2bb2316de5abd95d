"""Admin category CRUD (a tree), store category tree, deletion rules and tenant isolation."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import Category
from siyu.db.session import unit_of_work
from siyu.tenancy import service as tenancy_service
from tests.conftest import Tenant, unique
from tests.factories.catalog import ADMIN, STORE, create_category, create_product


def test_category_tree_admin_and_store(client: TestClient, tenant: Tenant) -> None:
    frames = create_category(client, tenant, "镜架", sort=2)
    lenses = create_category(client, tenant, "镜片", sort=1)
    titanium = create_category(client, tenant, "钛架", parent_id=frames["id"])
    hidden = create_category(client, tenant, "隐藏", parent_id=frames["id"], visible=False, sort=-1)
    create_category(client, tenant, "隐藏下的子类", parent_id=hidden["id"])

    tree = client.get(f"{ADMIN}/categories", headers=tenant.admin_headers).json()
    assert [n["name"] for n in tree] == ["镜片", "镜架"]  # by sort
    assert [n["name"] for n in tree[1]["children"]] == ["隐藏", "钛架"]
    assert tree[1]["children"][0]["children"][0]["name"] == "隐藏下的子类"

    store_tree = client.get(f"{STORE}/categories", headers=tenant.store_headers).json()
    assert [n["id"] for n in store_tree] == [lenses["id"], frames["id"]]
    assert [c["id"] for c in store_tree[1]["children"]] == [titanium["id"]]  # hidden subtree gone


def test_update_category_and_cycle_refused(client: TestClient, tenant: Tenant) -> None:
    a = create_category(client, tenant, "A")
    b = create_category(client, tenant, "B", parent_id=a["id"])
    r = client.patch(f"{ADMIN}/categories/{b['id']}", json={"name": "B2", "visible": False}, headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["name"] == "B2" and r.json()["visible"] is False

    r = client.patch(f"{ADMIN}/categories/{a['id']}", json={"parent_id": b["id"]}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["path"] == "body.parent_id"
    assert r.json()["fields"][0]["code"] == "category_cycle"
    assert r.json()["fields"][0]["message"] == "分类不能放在自己或自己的子分类下"
    assert client.get(f"{ADMIN}/categories/{a['id']}", headers=tenant.admin_headers).json()["parent_id"] is None

    r = client.patch(f"{ADMIN}/categories/{b['id']}", json={"parent_id": None}, headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["parent_id"] is None

    r = client.patch(f"{ADMIN}/categories/{b['id']}", json={"name": None}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "null_not_allowed"


def test_delete_category_rules(client: TestClient, tenant: Tenant) -> None:
    parent = create_category(client, tenant, "P")
    child = create_category(client, tenant, "C", parent_id=parent["id"])
    create_product(client, tenant, category_id=child["id"])

    r = client.delete(f"{ADMIN}/categories/{child['id']}", headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "category_has_products"
    r = client.delete(f"{ADMIN}/categories/{parent['id']}", headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "category_has_children"
    assert len(client.get(f"{ADMIN}/categories", headers=tenant.admin_headers).json()) == 1

    empty = create_category(client, tenant, "Empty")
    assert client.delete(f"{ADMIN}/categories/{empty['id']}", headers=tenant.admin_headers).status_code == 204
    r = client.get(f"{ADMIN}/categories/{empty['id']}", headers=tenant.admin_headers)
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_category_validation_and_unknown_parent(client: TestClient, tenant: Tenant) -> None:
    r = client.post(f"{ADMIN}/categories", json={"name": ""}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["path"] == "body.name"
    r = client.post(f"{ADMIN}/categories", json={"name": "X", "parent_id": 987654321}, headers=tenant.admin_headers)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert client.get(f"{ADMIN}/categories", headers=tenant.admin_headers).json() == []


def test_other_merchants_category_is_404(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as s:
        other = tenancy_service.create_merchant(s, code=unique("o"), name="Other")
        foreign = Category(merchant_id=other.id, name="Theirs")
        s.add(foreign)
        s.flush()
        foreign_id = foreign.id
    h = tenant.admin_headers
    assert client.get(f"{ADMIN}/categories/{foreign_id}", headers=h).status_code == 404
    assert client.patch(f"{ADMIN}/categories/{foreign_id}", json={"name": "Mine"}, headers=h).status_code == 404
    assert client.delete(f"{ADMIN}/categories/{foreign_id}", headers=h).status_code == 404
    r = client.post(f"{ADMIN}/categories", json={"name": "Sub", "parent_id": foreign_id}, headers=h)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    with session_factory() as s:
        row = s.get(Category, foreign_id)
        assert row is not None and row.name == "Theirs"


def test_staff_role_can_read_not_write(client: TestClient, tenant: Tenant) -> None:
    body = {"username": "clerk", "display_name": "Clerk", "password": "clerk-pass-1", "role": "staff"}
    assert client.post(f"{ADMIN}/staff", json=body, headers=tenant.admin_headers).status_code == 201
    r = client.post(
        f"{ADMIN}/auth/login", json={"merchant": tenant.code, "username": "clerk", "password": "clerk-pass-1"}
    )
    clerk = {"Authorization": f"Bearer {r.json()['token']}"}
    assert client.get(f"{ADMIN}/categories", headers=clerk).status_code == 200
    r = client.post(f"{ADMIN}/categories", json={"name": "Nope"}, headers=clerk)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


def test_out_of_range_ids_and_sort_keys_are_field_errors_and_change_nothing(client: TestClient, tenant: Tenant) -> None:
    """A parent id beyond BIGINT was a 500 on SQLite and a sort beyond the 32-bit column a 500 on
    PostgreSQL (found fuzzing POST/PATCH /categories and PATCH /products)."""
    a = create_category(client, tenant, "A", sort=3)
    product = create_product(client, tenant)
    for body, path, code in [
        ({"name": "X", "parent_id": 2**70}, "body.parent_id", "less_than_equal"),
        ({"name": "X", "parent_id": 0}, "body.parent_id", "greater_than_equal"),
        ({"name": "X", "sort": 2**40}, "body.sort", "less_than_equal"),
        ({"name": "X", "sort": -(2**40)}, "body.sort", "greater_than_equal"),
    ]:
        r = client.post(f"{ADMIN}/categories", json=body, headers=tenant.admin_headers)
        assert r.status_code == 422, r.text
        assert [(f["path"], f["code"]) for f in r.json()["fields"]] == [(path, code)]
        r = client.patch(f"{ADMIN}/categories/{a['id']}", json={k: v for k, v in body.items() if k != "name"},
                         headers=tenant.admin_headers)
        assert r.status_code == 422 and r.json()["fields"][0]["path"] == path, r.text
    for body in ({"category_id": -(2**100)}, {"freight_template_id": 2**64}, {"sort": 2**31}):
        r = client.patch(f"{ADMIN}/products/{product['id']}", json=body, headers=tenant.admin_headers)
        assert r.status_code == 422 and r.json()["fields"][0]["path"] == f"body.{next(iter(body))}", r.text
    assert [c["name"] for c in client.get(f"{ADMIN}/categories", headers=tenant.admin_headers).json()] == ["A"]
    assert client.get(f"{ADMIN}/categories/{a['id']}", headers=tenant.admin_headers).json()["sort"] == 3
    r = client.patch(f"{ADMIN}/categories/{a['id']}", json={"sort": 1_000_000_000}, headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["sort"] == 1_000_000_000
