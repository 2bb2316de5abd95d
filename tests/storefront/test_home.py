"""Home slots: admin CRUD, target validation, reorder, tenant isolation, and the store's live home
page (enabled, within schedule, grouped by kind, product snapshots, off-sale targets skipped)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from siyu.storefront import service
from siyu.storefront.models import HomeSlot
from siyu.storefront.schemas import SlotIn
from siyu.tenancy import service as tenancy_service
from tests.conftest import Tenant, unique
from tests.factories.catalog import (
    ADMIN,
    STORE,
    create_category,
    create_product,
    make_product,
    set_status,
    sku_body,
)

SLOTS = f"{ADMIN}/home-slots"


def slot(client: TestClient, tenant: Tenant, **fields: Any) -> dict[str, Any]:
    body = {"kind": "banner", "title": "新品上市", "image_url": "https://img.example.com/b1.jpg", **fields}
    r = client.post(SLOTS, json=body, headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def slot_count(factory: sessionmaker[Session], merchant_id: int) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(HomeSlot).where(HomeSlot.merchant_id == merchant_id)) or 0)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def test_slot_crud_and_reorder(client: TestClient, tenant: Tenant) -> None:
    h = tenant.admin_headers
    product = create_product(client, tenant, on_sale=True)
    a = slot(client, tenant, target_type="product", target_value=str(product["id"]), sort=5)
    b = slot(client, tenant, kind="notice", title="满 199 包邮", image_url=None)
    c = slot(client, tenant, target_type="url", target_value="https://example.com/promo", sort=1)
    assert (a["target_type"], a["target_value"], b["target_type"], b["target_value"]) == (
        "product", str(product["id"]), "none", None,
    )

    listed = client.get(SLOTS, headers=h).json()
    assert [s["id"] for s in listed["items"]] == [c["id"], a["id"], b["id"]]  # kind, then sort
    assert [s["id"] for s in client.get(SLOTS, params={"kind": "notice"}, headers=h).json()["items"]] == [b["id"]]

    r = client.patch(f"{SLOTS}/{a['id']}", json={"title": "秋季新品", "enabled": False}, headers=h)
    assert r.status_code == 200 and r.json()["title"] == "秋季新品" and r.json()["enabled"] is False
    assert r.json()["target_value"] == str(product["id"])  # untouched
    r = client.patch(f"{SLOTS}/{a['id']}", json={"target_type": "page", "target_value": "/pages/new/index"}, headers=h)
    assert r.status_code == 200 and (r.json()["target_type"], r.json()["target_value"]) == ("page", "/pages/new/index")

    r = client.post(f"{SLOTS}/reorder", json={"ids": [a["id"], c["id"]]}, headers=h)
    assert r.status_code == 200 and [(s["id"], s["sort"]) for s in r.json()] == [(a["id"], 0), (c["id"], 1)]

    assert client.delete(f"{SLOTS}/{b['id']}", headers=h).status_code == 204
    r = client.get(f"{SLOTS}/{b['id']}", headers=h)
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_slot_validation_changes_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    h = tenant.admin_headers
    keep = slot(client, tenant, target_type="url", target_value="https://example.com/a")
    before = slot_count(session_factory, tenant.id)
    now = utcnow()
    cases = [
        ({"kind": "popup"}, "body.kind", "literal_error"),
        ({"target_type": "product", "target_value": "987654321"}, "body.target_value", "target_not_found"),
        ({"target_type": "category", "target_value": "abc"}, "body.target_value", "invalid_target"),
        ({"target_type": "product"}, "body.target_value", "target_required"),
        ({"target_type": "url", "target_value": "javascript:alert(1)"}, "body.target_value", "invalid_url"),
        ({"target_type": "none", "target_value": "x"}, "body.target_value", "target_not_allowed"),
        ({"starts_at": iso(now), "ends_at": iso(now - dt.timedelta(hours=1))}, "body.ends_at", "ends_before_start"),
        ({"starts_at": "2030-01-01T00:00:00"}, "body.starts_at", "timezone_aware"),
    ]
    for fields, path, code in cases:
        body = {"kind": "banner", "title": "x", **fields}
        r = client.post(SLOTS, json=body, headers=h)
        assert r.status_code == 422, (fields, r.text)
        assert {(f["path"], f["code"]) for f in r.json()["fields"]} == {(path, code)}, fields
    r = client.patch(f"{SLOTS}/{keep['id']}", json={"target_type": "product"}, headers=h)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "target_required"
    r = client.post(f"{SLOTS}/reorder", json={"ids": [keep["id"], keep["id"]]}, headers=h)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "duplicate_ids"
    r = client.post(f"{SLOTS}/reorder", json={"ids": [keep["id"], 987654321]}, headers=h)
    assert r.status_code == 404
    assert slot_count(session_factory, tenant.id) == before
    assert client.get(f"{SLOTS}/{keep['id']}", headers=h).json() == keep


def test_other_merchants_slots_and_targets(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as s:
        other = tenancy_service.create_merchant(s, code=unique("o"), name="Other")
        their_product = make_product(s, other.id, on_sale=True).id
        theirs = service.create_slot(s, other.id, SlotIn(kind="banner", title="Theirs")).id
    h = tenant.admin_headers
    assert client.get(f"{SLOTS}/{theirs}", headers=h).status_code == 404
    assert client.patch(f"{SLOTS}/{theirs}", json={"title": "mine"}, headers=h).status_code == 404
    assert client.delete(f"{SLOTS}/{theirs}", headers=h).status_code == 404
    assert client.post(f"{SLOTS}/reorder", json={"ids": [theirs]}, headers=h).status_code == 404
    r = client.post(SLOTS, json={"kind": "banner", "target_type": "product", "target_value": str(their_product)}, headers=h)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "target_not_found"
    assert client.get(SLOTS, headers=h).json()["total"] == 0
    with session_factory() as s:
        row = s.get(HomeSlot, theirs)
        assert row is not None and row.title == "Theirs"


def test_store_home_filters_by_schedule_and_groups_by_kind(client: TestClient, tenant: Tenant) -> None:
    now = utcnow()
    hour = dt.timedelta(hours=1)
    live = slot(client, tenant, sort=2)
    first = slot(client, tenant, sort=1, starts_at=iso(now - hour), ends_at=iso(now + hour))
    slot(client, tenant, starts_at=iso(now + hour))  # not started
    slot(client, tenant, ends_at=iso(now - hour))  # ended
    slot(client, tenant, enabled=False)  # disabled
    # a schedule given in another zone is the same instant
    shanghai = dt.timezone(dt.timedelta(hours=8))
    zoned = slot(client, tenant, kind="notice", title="公告", starts_at=(now - hour).astimezone(shanghai).isoformat())
    nav = slot(client, tenant, kind="bottom_nav", title="我的", target_type="page", target_value="/pages/me/index")

    home = client.get(f"{STORE}/home", headers=tenant.store_headers)
    assert home.status_code == 200, home.text
    body = home.json()
    assert [s["id"] for s in body["banner"]] == [first["id"], live["id"]]
    assert [s["id"] for s in body["notice"]] == [zoned["id"]]
    assert [s["id"] for s in body["bottom_nav"]] == [nav["id"]]
    assert body["ad_slot"] == [] and body["category_nav"] == [] and body["account_section"] == []


def test_store_home_schedule_edges(session_factory: sessionmaker[Session]) -> None:
    start = dt.datetime(2030, 5, 1, 2, 0, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    with unit_of_work(session_factory) as s:
        merchant_id = tenancy_service.create_merchant(s, code=unique("m"), name="Edges").id
        sid = service.create_slot(s, merchant_id, SlotIn(kind="ad_slot", starts_at=start, ends_at=end)).id
    with session_factory() as s:
        def shown(at: dt.datetime) -> bool:
            return [i.id for i in service.home(s, merchant_id, now=at).ad_slot] == [sid]

        assert not shown(start - dt.timedelta(microseconds=1))
        assert shown(start)
        assert shown(end - dt.timedelta(seconds=1))
        assert not shown(end)


def test_store_home_resolves_targets_and_skips_off_sale(client: TestClient, tenant: Tenant) -> None:
    on_sale = create_product(
        client, tenant, "偏光太阳镜", skus=[sku_body(sale_price=39900, list_price=59900, stock=0)], on_sale=True
    )
    draft = create_product(client, tenant, "草稿")
    shelved = create_product(client, tenant, "已下架", on_sale=True)
    visible = create_category(client, tenant, "太阳镜")
    hidden = create_category(client, tenant, "隐藏", visible=False)
    good = slot(client, tenant, target_type="product", target_value=str(on_sale["id"]))
    slot(client, tenant, target_type="product", target_value=str(draft["id"]))
    slot(client, tenant, target_type="product", target_value=str(shelved["id"]))
    set_status(client, tenant, shelved["id"], "off_shelf")
    cat_slot = slot(client, tenant, kind="category_nav", target_type="category", target_value=str(visible["id"]))
    slot(client, tenant, kind="category_nav", target_type="category", target_value=str(hidden["id"]))

    body = client.get(f"{STORE}/home", headers=tenant.store_headers).json()
    assert [s["id"] for s in body["banner"]] == [good["id"]]
    snapshot = body["banner"][0]["product"]
    assert snapshot["title"] == "偏光太阳镜" and snapshot["min_sale_price"] == 39900
    assert snapshot["min_list_price"] == 59900 and snapshot["sold_out"] is True
    assert [(s["id"], s["category"]) for s in body["category_nav"]] == [
        (cat_slot["id"], {"id": visible["id"], "name": "太阳镜"})
    ]
    # the product comes back on sale: the slot shows again
    set_status(client, tenant, shelved["id"], "on_sale")
    assert len(client.get(f"{STORE}/home", headers=tenant.store_headers).json()["banner"]) == 2


def test_out_of_range_sort_and_ids_are_field_errors(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    """A sort beyond the 32-bit column was a 500 on PostgreSQL (POST /home-slots) and an id beyond
    BIGINT in a reorder a 500 on both databases; found fuzzing."""
    before = slot_count(session_factory, tenant.id)
    r = client.post(SLOTS, json={"kind": "banner", "title": "x", "sort": 2**31}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["path"] == "body.sort", r.text
    r = client.post(f"{SLOTS}/reorder", json={"ids": [1, 2**70]}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["path"] == "body.ids.1", r.text
    assert slot_count(session_factory, tenant.id) == before
