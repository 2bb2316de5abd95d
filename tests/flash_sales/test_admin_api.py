"""Configuring flash sales through the admin API: validation (each bad input refused with its own
code and nothing written), publishing, stock carved out of the SKU and given back, and the
store's listing of current and upcoming sessions."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.flash_sales.models import FlashSale, FlashSaleItem
from siyu.kit.timeutil import utcnow
from tests.conftest import Tenant
from tests.factories.orders import make_sku, sku_stock
from tests.flash_sales.helpers import ADMIN, STORE, create_sale, sale_body, window


def _counts(factory: sessionmaker[Session], tenant: Tenant) -> tuple[int, int]:
    with factory() as s:
        sales = s.scalar(select(func.count()).select_from(FlashSale).where(FlashSale.merchant_id == tenant.id))
        items = s.scalar(select(func.count()).select_from(FlashSaleItem).where(FlashSaleItem.merchant_id == tenant.id))
        return int(sales or 0), int(items or 0)


def _fields(resp: Any) -> list[tuple[str, str]]:
    return [(f["path"], f["code"]) for f in resp.json().get("fields", [])]


def test_create_carves_activity_stock_out_of_the_sku_and_end_gives_the_rest_back(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=100)
    sale = create_sale(client, tenant, [{"sku_id": sku, "flash_price": 4900, "activity_stock": 30}], start=False,
                       slots=[{"start": "20:00", "end": "20:30"}, {"start": "10:00", "end": "10:30"}],
                       allows_points=True, free_shipping=True, per_member_limit=2)
    assert sale["status"] == "draft" and sale["effective_status"] == "draft"
    assert sale["slots"] == [{"start": "10:00", "end": "10:30"}, {"start": "20:00", "end": "20:30"}]  # sorted
    assert (sale["allows_coupons"], sale["allows_points"], sale["allows_order_promotions"]) == (False, True, False)
    assert sale["free_shipping"] and sale["per_member_limit"] == 2
    assert sale["items"][0]["activity_stock"] == 30 and sale["items"][0]["sold"] == 0
    assert sku_stock(session_factory, sku) == 70  # normal and activity stock never count a unit twice

    r = client.post(f"{ADMIN}/flash-sales/{sale['id']}/start", headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["status"] == "active", r.text
    r = client.post(f"{ADMIN}/flash-sales/{sale['id']}/start", headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "flash_sale_state_invalid"

    r = client.post(f"{ADMIN}/flash-sales/{sale['id']}/end", headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "ended" and out["items"][0]["closed"] and out["items"][0]["returned_stock"] == 30
    assert sku_stock(session_factory, sku) == 100
    r = client.post(f"{ADMIN}/flash-sales/{sale['id']}/end", headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "flash_sale_state_invalid"
    assert sku_stock(session_factory, sku) == 100  # ending twice returns nothing twice


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"slots": [{"start": "10:00", "end": "11:00"}, {"start": "10:30", "end": "12:00"}]}, ("slots.1", "slots_overlap")),
        ({"slots": [{"start": "12:00", "end": "11:00"}]}, ("slots.0.end", "slot_end_before_start")),
        ({"slots": [{"start": "10:00", "end": "10:00"}]}, ("slots.0.end", "slot_end_before_start")),
        ({"slots": [{"start": "24:00", "end": "24:00"}]}, ("body.slots.0.start", "string_pattern_mismatch")),
        ({"slots": [{"start": "9:00", "end": "10:00"}]}, ("body.slots.0.start", "string_pattern_mismatch")),
        ({"slots": [{"start": "10:00", "end": "25:00"}]}, ("body.slots.0.end", "string_pattern_mismatch")),
        ({"slots": [{"start": "10:00"}]}, ("body.slots.0.end", "missing")),
        ({"ends_at": "2020-01-01T00:00:00+00:00"}, ("ends_at", "window_invalid")),
        ({"starts_at": "2030-01-01T00:00:00"}, ("starts_at", "timezone_required")),
        ({"per_member_limit": 0}, ("body.per_member_limit", "greater_than_equal")),
        ({"item": {"activity_stock": -1}}, ("body.items.0.activity_stock", "greater_than_equal")),
        ({"item": {"activity_stock": 0}}, ("body.items.0.activity_stock", "greater_than_equal")),
        ({"item": {"flash_price": -1}}, ("body.items.0.flash_price", "greater_than_equal")),
        ({"item": {"flash_price": 10000}}, ("items.0.flash_price", "price_not_below_sale_price")),
        ({"item": {"flash_price": 12000}}, ("items.0.flash_price", "price_not_below_sale_price")),
        ({"item": {"per_member_limit": 0}}, ("body.items.0.per_member_limit", "greater_than_equal")),
    ],
    ids=lambda v: v[1] if isinstance(v, tuple) else None,
)
def test_bad_configuration_is_refused_with_its_code_and_writes_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], change: dict[str, Any],
    expected: tuple[str, str],
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=100)
    change = dict(change)  # the parameters are shared by the SQLite and PostgreSQL runs
    item = {"sku_id": sku, "flash_price": 5000, "activity_stock": 10, **change.pop("item", {})}
    body = sale_body([item], **change)
    r = client.post(f"{ADMIN}/flash-sales", json=body, headers=tenant.admin_headers)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error"
    assert expected in _fields(r), r.json()
    assert _counts(session_factory, tenant) == (0, 0)
    assert sku_stock(session_factory, sku) == 100


def test_stock_beyond_the_sku_a_duplicate_sku_and_a_foreign_sku_are_refused(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=5)
    r = client.post(f"{ADMIN}/flash-sales", json=sale_body([{"sku_id": sku, "flash_price": 1, "activity_stock": 6}]),
                    headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "insufficient_stock", r.text
    items = [{"sku_id": sku, "flash_price": 1, "activity_stock": 1}] * 2
    r = client.post(f"{ADMIN}/flash-sales", json=sale_body(items), headers=tenant.admin_headers)
    assert r.status_code == 422 and ("items.1.sku_id", "duplicate_sku") in _fields(r), r.text
    r = client.post(f"{ADMIN}/flash-sales", json=sale_body([{"sku_id": 987654321, "flash_price": 1, "activity_stock": 1}]),
                    headers=tenant.admin_headers)
    assert r.status_code == 404 and r.json()["code"] == "sku_not_found", r.text
    assert _counts(session_factory, tenant) == (0, 0)
    assert sku_stock(session_factory, sku) == 5


def test_a_foreign_merchants_activity_is_a_404(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    from siyu.db.session import unit_of_work
    from siyu.tenancy import service as tenancy

    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    sale = create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 5}])
    with unit_of_work(session_factory) as s:
        other = tenancy.create_merchant(s, code=f"other-{sale['id']}-{tenant.id}", name="Other")
        tenancy.create_staff(s, other.id, username="owner", password="owner-pass-1", role="owner")
        token, _ = tenancy.login_staff(s, merchant_code=other.code, username="owner", password="owner-pass-1",
                                       ttl=dt.timedelta(hours=1))
    headers = {"Authorization": f"Bearer {token}"}
    for method, path in [("GET", ""), ("PATCH", ""), ("POST", "/end"), ("GET", "/stats")]:
        r = client.request(method, f"{ADMIN}/flash-sales/{sale['id']}{path}", headers=headers,
                           json={"name": "x"} if method == "PATCH" else None)
        assert r.status_code == 404, (method, path, r.text)
    r = client.get(f"{STORE}/flash-sales/items/{sale['items'][0]['id']}", headers={"X-Siyu-Merchant": other.code})
    assert r.status_code == 404
    assert sku_stock(session_factory, sku) == 5


def test_item_stock_raise_lower_and_delete(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    sale = create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 10}], start=False)
    item_id = sale["items"][0]["id"]
    url = f"{ADMIN}/flash-sales/{sale['id']}/items/{item_id}"
    r = client.patch(url, json={"activity_stock": 25}, headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["activity_stock"] == 25, r.text
    assert sku_stock(session_factory, sku) == 25
    r = client.patch(url, json={"activity_stock": 60}, headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "insufficient_stock"
    assert sku_stock(session_factory, sku) == 25
    r = client.patch(url, json={"activity_stock": 5, "flash_price": 4000}, headers=tenant.admin_headers)
    assert r.status_code == 200 and (r.json()["activity_stock"], r.json()["flash_price"]) == (5, 4000), r.text
    assert sku_stock(session_factory, sku) == 45
    r = client.patch(url, json={"flash_price": 10000}, headers=tenant.admin_headers)
    assert r.status_code == 422 and ("flash_price", "price_not_below_sale_price") in _fields(r)
    r = client.delete(url, headers=tenant.admin_headers)
    assert r.status_code == 204, r.text
    assert sku_stock(session_factory, sku) == 50
    assert _counts(session_factory, tenant) == (1, 0)
    r = client.post(f"{ADMIN}/flash-sales/{sale['id']}/start", headers=tenant.admin_headers)
    assert r.status_code == 422 and ("items", "items_required") in _fields(r)


def test_rules_change_before_the_start_and_not_after(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    later = window(dt.timedelta(days=1), dt.timedelta(days=2))
    sale = create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 10}], **later)
    assert sale["status"] == "scheduled"
    r = client.patch(f"{ADMIN}/flash-sales/{sale['id']}", json={"allows_coupons": True, "per_member_limit": 3},
                     headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["allows_coupons"] and r.json()["per_member_limit"] == 3, r.text
    past = {"starts_at": (utcnow() - dt.timedelta(hours=1)).isoformat()}
    r = client.patch(f"{ADMIN}/flash-sales/{sale['id']}", json=past, headers=tenant.admin_headers)
    assert r.status_code == 422 and ("starts_at", "in_the_past") in _fields(r)
    running = create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 10}])
    r = client.patch(f"{ADMIN}/flash-sales/{running['id']}", json={"allows_coupons": True},
                     headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "flash_sale_state_invalid"
    assert r.json()["detail"]["status"] == "active"


def test_store_lists_current_and_upcoming_sessions_in_the_merchants_zone(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """Slots are local times (Asia/Shanghai by default): one current slot around now, one later
    today or tomorrow; a draft and an ended activity are not listed."""
    tz = ZoneInfo("Asia/Shanghai")
    now_local = utcnow().astimezone(tz)
    start = (now_local - dt.timedelta(minutes=30)).replace(second=0, microsecond=0)
    end = (now_local + dt.timedelta(minutes=30)).replace(second=0, microsecond=0)
    if end.date() != start.date():
        pytest.skip("a slot around now would cross local midnight; this test needs one inside a day")
    later_s, later_e = (end + dt.timedelta(hours=2)), (end + dt.timedelta(hours=3))
    slots = [{"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}]
    if later_s.date() == later_e.date() == end.date():
        slots.append({"start": later_s.strftime("%H:%M"), "end": later_e.strftime("%H:%M")})
    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    live = create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 10}],
                       slots=slots, **window(dt.timedelta(days=-1), dt.timedelta(days=10)))
    create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 1}], start=False)
    ended = create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 1}])
    assert client.post(f"{ADMIN}/flash-sales/{ended['id']}/end", headers=tenant.admin_headers).status_code == 200

    r = client.get(f"{STORE}/flash-sales/sessions", headers=tenant.store_headers)
    assert r.status_code == 200, r.text
    sessions = r.json()
    assert {s["flash_sale_id"] for s in sessions} == {live["id"]}
    current = [s for s in sessions if s["status"] == "current"]
    upcoming = [s for s in sessions if s["status"] == "upcoming"]
    assert len(current) == 1
    assert dt.datetime.fromisoformat(current[0]["starts_at"]) == start.astimezone(dt.UTC)
    assert dt.datetime.fromisoformat(current[0]["ends_at"]) == end.astimezone(dt.UTC)
    # today's later slot (if there is one) and every slot of tomorrow: two local days are listed
    assert len(upcoming) == (len(slots) - 1) + len(slots)
    assert all(dt.datetime.fromisoformat(s["starts_at"]) > utcnow() for s in upcoming)
    starts = [s["starts_at"] for s in sessions]
    assert starts == sorted(starts)
    card = current[0]["items"][0]
    assert (card["sku_id"], card["flash_price"], card["sale_price"], card["remaining"], card["per_member_limit"]) == (
        sku, 5000, 10000, 10, 1)

    item_id = live["items"][0]["id"]
    r = client.get(f"{STORE}/flash-sales/items/{item_id}", headers=tenant.store_headers)
    assert r.status_code == 200 and r.json()["status"] == "current", r.text
    assert dt.datetime.fromisoformat(r.json()["session_ends_at"]) == end.astimezone(dt.UTC)


def test_an_item_with_ledger_history_cannot_be_deleted(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """Even after its only purchase was released (sold back to 0) the item stays: the ledger names it."""
    from tests.flash_sales.helpers import login, submit

    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    sale = create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 10}])
    item_id = sale["items"][0]["id"]
    headers, _ = login(client, tenant)
    order = submit(client, headers, sku, item_id).json()
    url = f"{ADMIN}/flash-sales/{sale['id']}/items/{item_id}"
    r = client.delete(url, headers=tenant.admin_headers)
    assert r.status_code == 422 and ("item_id", "item_has_sales") in _fields(r), r.text
    assert client.post(f"{STORE}/orders/{order['id']}/cancel", headers=headers).status_code == 200
    from siyu.db.session import unit_of_work
    from siyu.flash_sales import service

    with unit_of_work(session_factory) as s:
        assert service.release_order(s, tenant.id, order["id"]) == 1
    r = client.delete(url, headers=tenant.admin_headers)
    assert r.status_code == 422 and ("item_id", "item_has_sales") in _fields(r), r.text
    assert _counts(session_factory, tenant) == (1, 1)
    assert sku_stock(session_factory, sku) == 40
