"""The OpenAPI document states the rules the API enforces: a value the document allows is not
refused by the service for a single-field rule (found fuzzing, ``scripts/fuzz_api.py``). Each
rule moved into a request schema is a Pydantic 422 with the field's path and code, changes
nothing, and shows in ``/openapi.json``; rules that need the merchant's settings or data are
described on the model."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import Tenant, customer_login
from tests.factories.orders import make_sku, sku_stock

STORE = "/api/store/v1"
ADMIN = "/api/admin/v1"


def _schemas(client: TestClient) -> dict[str, Any]:
    return client.app.openapi()["components"]["schemas"]  # type: ignore[attr-defined, no-any-return]


def _field(r: Any, path: str) -> dict[str, Any]:
    assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text
    found = {f["path"]: f for f in r.json()["fields"]}
    assert path in found, r.text
    return found[path]  # type: ignore[no-any-return]


# -- store ---------------------------------------------------------------------------------------


ADDRESS = {"name": "张三", "phone": "13800000000", "province": "浙江省", "city": "杭州市", "detail": "西湖路 1 号"}


@pytest.mark.parametrize("key", ["name", "phone", "province", "city", "district", "detail"])
def test_address_patch_refuses_null_of_a_required_field(client: TestClient, tenant: Tenant, key: str) -> None:
    headers = customer_login(client, tenant)
    created = client.post(f"{STORE}/addresses", json=ADDRESS, headers=headers).json()
    r = client.patch(f"{STORE}/addresses/{created['id']}", json={"detail": "改了", key: None}, headers=headers)
    assert _field(r, f"body.{key}")["code"] == "string_type"
    assert client.get(f"{STORE}/addresses/{created['id']}", headers=headers).json() == created
    ok = client.patch(f"{STORE}/addresses/{created['id']}", json={"postal_code": None}, headers=headers)
    assert ok.status_code == 200 and ok.json()["postal_code"] is None

    props = _schemas(client)["AddressUpdate"]["properties"]
    assert props[key]["type"] == "string" and "anyOf" not in props[key]
    assert {"type": "null"} in props["postal_code"]["anyOf"]


@pytest.mark.parametrize(("quantity", "code"), [(0, "greater_than_equal"), (1000, "less_than_equal")])
def test_checkout_item_quantity_is_bounded_in_the_schema(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], quantity: int, code: str
) -> None:
    sku = make_sku(session_factory, tenant.id, stock=5000)
    headers = customer_login(client, tenant)
    body = {"items": [{"sku_id": sku, "quantity": 1}, {"sku_id": sku, "quantity": quantity}]}
    for op in ("preview", "submit"):
        r = client.post(f"{STORE}/checkout/{op}", json=body, headers={**headers, "Idempotency-Key": f"k-{quantity}"})
        assert _field(r, "body.items.1.quantity")["code"] == code
    assert sku_stock(session_factory, sku) == 5000
    assert client.get(f"{STORE}/orders", headers=headers).json()["total"] == 0

    quantity_schema = _schemas(client)["CheckoutItem"]["properties"]["quantity"]
    assert (quantity_schema["minimum"], quantity_schema["maximum"]) == (1, 999)


def test_profile_birthday_and_custom_fields_rules_are_described(client: TestClient, tenant: Tenant) -> None:
    headers = customer_login(client, tenant)
    before = client.get(f"{STORE}/me/profile", headers=headers).json()
    r = client.patch(f"{STORE}/me/profile", json={"birthday": "1899-12-31", "nickname": "x"}, headers=headers)
    assert _field(r, "body.birthday")["code"] == "birthday_out_of_range"
    assert client.get(f"{STORE}/me/profile", headers=headers).json() == before

    patch = _schemas(client)["ProfilePatch"]
    assert "1900-01-01" in patch["properties"]["birthday"]["description"]
    assert "custom field definitions" in patch["properties"]["custom_fields"]["description"]
    assert "custom_field_invalid" in patch["description"]


def test_rules_that_need_the_merchant_are_described(client: TestClient) -> None:
    schemas = _schemas(client)
    assert "sandbox-<name>" in schemas["WechatLoginIn"]["properties"]["code"]["description"]
    assert "wechat_code_invalid" in schemas["WechatLoginIn"]["description"]
    assert "sandbox-" in schemas["PhoneBindIn"]["properties"]["code"]["description"]
    assert "within_days" in schemas["MakeupIn"]["properties"]["day"]["description"]
    assert "task_unknown" in schemas["TaskIn"]["description"]
    assert "distributor_already_applied" in schemas["ApplyIn"]["description"]


# -- admin ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "code"),
    [("title", "string_type"), ("kind", "literal_error"), ("images", "list_type"), ("free_shipping", "bool_type"),
     ("bonus_points", "int_type"), ("coupons_allowed", "bool_type"), ("sort", "int_type")],
)
def test_product_patch_refuses_null_where_the_document_offers_none(
    client: TestClient, tenant: Tenant, key: str, code: str
) -> None:
    from tests.factories.catalog import create_product

    product = create_product(client, tenant)
    url = f"{ADMIN}/products/{product['id']}"
    before = client.get(url, headers=tenant.admin_headers).json()
    r = client.patch(url, json={"subtitle": "改了", key: None}, headers=tenant.admin_headers)
    assert _field(r, f"body.{key}")["code"] == code
    assert client.get(url, headers=tenant.admin_headers).json() == before

    props = _schemas(client)["ProductUpdate"]["properties"]
    assert "anyOf" not in props[key] and props[key]["type"] != "null"  # one type, never null
    assert {"type": "null"} in props["subtitle"]["anyOf"]


@pytest.mark.parametrize(("slot", "path"), [({"start": "24:00", "end": "24:00"}, "start"),
                                            ({"start": "9:00", "end": "10:00"}, "start"),
                                            ({"start": "10:00", "end": "25:00"}, "end")])
def test_flash_sale_slots_have_their_pattern_in_the_document(
    client: TestClient, tenant: Tenant, slot: dict[str, str], path: str
) -> None:
    body = {"name": "秒杀", "starts_at": "2030-01-01T00:00:00+08:00", "ends_at": "2030-01-02T00:00:00+08:00",
            "slots": [slot]}
    r = client.post(f"{ADMIN}/flash-sales", json=body, headers=tenant.admin_headers)
    assert _field(r, f"body.slots.0.{path}")["code"] == "string_pattern_mismatch"
    assert client.get(f"{ADMIN}/flash-sales", headers=tenant.admin_headers).json()["total"] == 0

    props = _schemas(client)["Slot"]["properties"]
    assert props["start"]["pattern"] == r"^([01]\d|2[0-3]):[0-5]\d$"
    assert "24:00" in props["end"]["pattern"]
    assert "window_invalid" in _schemas(client)["FlashSaleIn"]["description"]


def test_channel_code_ids_are_positive(client: TestClient, tenant: Tenant) -> None:
    body = {"kind": "other", "name": "门店", "scene": "s1", "staff_id": 0, "tag_ids": [-1]}
    r = client.post(f"{ADMIN}/channel-codes", json=body, headers=tenant.admin_headers)
    assert _field(r, "body.staff_id")["code"] == "greater_than_equal"
    assert _field(r, "body.tag_ids.0")["code"] == "greater_than_equal"
    assert client.get(f"{ADMIN}/channel-codes", headers=tenant.admin_headers).json() == []

    props = _schemas(client)["ChannelCodeIn"]["properties"]
    assert props["staff_id"]["anyOf"][0]["minimum"] == 1 and props["tag_ids"]["items"]["minimum"] == 1
    assert "channel_scene_taken" in _schemas(client)["ChannelCodeIn"]["description"]


def test_coupon_template_bounds_are_stated_and_keep_their_own_codes(client: TestClient, tenant: Tenant) -> None:
    schema = _schemas(client)["TemplateIn"]
    props = schema["properties"]
    assert (props["percent_off"]["minimum"], props["percent_off"]["maximum"]) == (0, 100)
    assert (props["percent_off_bp"]["minimum"], props["percent_off_bp"]["maximum"]) == (0, 10000)
    assert (props["expiry_reminder_days"]["minimum"], props["expiry_reminder_days"]["maximum"]) == (0, 60)
    assert (props["valid_days"]["minimum"], props["valid_days"]["maximum"]) == (1, 3650)
    assert props["total_quantity"]["minimum"] == props["per_member_limit"]["minimum"] == 1
    assert props["max_discount"]["minimum"] == props["threshold"]["minimum"] == 0
    assert props["channels"]["minItems"] == 1
    assert props["scope_ids"]["anyOf"][0]["items"]["minimum"] == 1
    assert "validity_mode" in schema["description"]
    # the service answers them, once, with the template's own field codes
    body = {"name": "券", "kind": "percent", "percent_off": 20, "validity_mode": "relative", "valid_days": 30,
            "channels": ["claim"], "expiry_reminder_days": 61, "per_member_limit": 0}
    r = client.post(f"{ADMIN}/coupon-templates", json=body, headers=tenant.admin_headers)
    assert r.status_code == 422
    codes = {f["path"]: f["code"] for f in r.json()["fields"]}
    assert codes == {"expiry_reminder_days": "reminder_invalid", "per_member_limit": "limit_invalid"}
    assert client.get(f"{ADMIN}/coupon-templates", headers=tenant.admin_headers).json()["total"] == 0


def test_admin_rules_that_need_data_are_described(client: TestClient) -> None:
    schemas = _schemas(client)
    assert "cut_below_one_fen" in schemas["BargainActivityIn"]["description"]
    assert "coupon_channel_closed" in schemas["CodesIn"]["description"]
    assert "duplicate_key" in schemas["RecordTypePatch"]["properties"]["fields"]["description"]
    assert "min" in schemas["FieldDef"]["description"]


def test_checkout_items_when_given_are_at_least_one(client: TestClient, tenant: Tenant) -> None:
    headers = customer_login(client, tenant)
    r = client.post(f"{STORE}/checkout/preview", json={"items": []}, headers=headers)
    assert _field(r, "body.items")["code"] == "too_short"
    assert _schemas(client)["CheckoutIn"]["properties"]["items"]["anyOf"][0]["minItems"] == 1
    # omitted: the cart, whose emptiness only the database knows
    assert client.post(f"{STORE}/checkout/preview", json={}, headers=headers).json()["code"] == "checkout_empty"
