"""The OpenAPI document states the rules the admin and store APIs enforce in their services
(issue 2): for each operation below, the body's schema in ``/openapi.json`` shows the rule (a
JSON-schema bound, or the description naming the refusal's code), and one request breaking the
rule is refused with exactly that code, at that path, changing nothing. The services keep
their checks and codes; the document only says what they do."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import Tenant
from tests.factories.catalog import create_category, create_product
from tests.factories.orders import make_sku

ADMIN = "/api/admin/v1"
Factory = sessionmaker[Session]


def _schemas(client: TestClient) -> dict[str, Any]:
    return client.app.openapi()["components"]["schemas"]  # type: ignore[attr-defined, no-any-return]


def _prop(schema: dict[str, Any], key: str) -> dict[str, Any]:
    """A property's own schema: its non-null branch when it is ``X | None``, with the description."""
    prop = dict(schema["properties"][key])
    for branch in prop.pop("anyOf", []):
        if branch.get("type") != "null":
            prop = {**branch, **prop}
    return prop


def _field_code(r: Any, path: str, status: int = 422) -> str:
    assert r.status_code == status, r.text
    found = {f["path"]: f["code"] for f in r.json().get("fields", [])}
    assert path in found, r.text
    return found[path]


def _window(start_hours: float = 24, end_hours: float = 48) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    return {"starts_at": (now + dt.timedelta(hours=start_hours)).isoformat(),
            "ends_at": (now + dt.timedelta(hours=end_hours)).isoformat()}


def _created(r: Any) -> dict[str, Any]:
    assert r.status_code == 201, r.text
    return dict(r.json())


# -- catalog ---------------------------------------------------------------------------------------


def test_category_parent_is_not_its_own_descendant(client: TestClient, tenant: Tenant) -> None:
    for name in ("CategoryIn", "CategoryUpdate"):
        assert "category_cycle" in _prop(_schemas(client)[name], "parent_id")["description"]
    parent = create_category(client, tenant, "镜架")
    child = create_category(client, tenant, "钛架", parent_id=parent["id"])
    r = client.patch(f"{ADMIN}/categories/{parent['id']}", json={"parent_id": child["id"]}, headers=tenant.admin_headers)
    assert _field_code(r, "body.parent_id") == "category_cycle"
    got = client.get(f"{ADMIN}/categories/{parent['id']}", headers=tenant.admin_headers)
    assert got.status_code == 200 and got.json()["parent_id"] is None


def test_product_spec_names_are_distinct(client: TestClient, tenant: Tenant) -> None:
    schema = _schemas(client)["ProductCreate"]
    assert "duplicate_spec_name" in schema["description"] and "duplicate_spec_name" in _prop(schema, "spec_names")["description"]
    assert "sale_above_list" in schema["description"] and "duplicate_sku_code" in schema["description"]
    body = {"title": "T", "spec_names": ["颜色", "颜色"],
            "skus": [{"sku_code": uuid.uuid4().hex, "specs": {"颜色": "黑"}, "list_price": 100, "sale_price": 90}]}
    r = client.post(f"{ADMIN}/products", json=body, headers=tenant.admin_headers)
    assert _field_code(r, "body.spec_names") == "duplicate_spec_name"
    assert client.get(f"{ADMIN}/products", headers=tenant.admin_headers).json()["total"] == 0


def test_sku_sale_price_is_at_most_list_price(client: TestClient, tenant: Tenant) -> None:
    assert "sale_above_list" in _schemas(client)["SkuIn"]["description"]
    product = create_product(client, tenant)
    body = {"sku_code": uuid.uuid4().hex, "specs": {"颜色": "白"}, "list_price": 100, "sale_price": 101}
    r = client.post(f"{ADMIN}/products/{product['id']}/skus", json=body, headers=tenant.admin_headers)
    assert _field_code(r, "body.sale_price") == "sale_above_list"


def test_sku_patch_null_is_refused_as_described(client: TestClient, tenant: Tenant) -> None:
    description = _schemas(client)["SkuUpdate"]["description"]
    assert "null_not_allowed" in description and "sale_above_list" in description
    product = create_product(client, tenant)
    sku = product["skus"][0]
    url = f"{ADMIN}/products/{product['id']}/skus/{sku['id']}"
    r = client.patch(url, json={"active": None}, headers=tenant.admin_headers)
    assert _field_code(r, "body.active") == "null_not_allowed"
    r = client.patch(url, json={"sale_price": sku["list_price"] + 1}, headers=tenant.admin_headers)
    assert _field_code(r, "body.sale_price") == "sale_above_list"


def test_stock_set_is_never_negative(client: TestClient, tenant: Tenant) -> None:
    schema = _schemas(client)["StockAdjustIn"]
    assert "negative_stock" in _prop(schema, "quantity")["description"]
    assert "stock_would_go_negative" in _prop(schema, "quantity")["description"]
    sku = create_product(client, tenant)["skus"][0]
    r = client.post(f"{ADMIN}/skus/{sku['id']}/stock", json={"mode": "set", "quantity": -1}, headers=tenant.admin_headers)
    assert _field_code(r, "body.quantity") == "negative_stock"
    r = client.post(f"{ADMIN}/skus/{sku['id']}/stock", json={"mode": "delta", "quantity": -(sku["stock"] + 1)},
                    headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "stock_would_go_negative", r.text


# -- storefront ------------------------------------------------------------------------------------


def test_home_slot_target_rules_are_described(client: TestClient, tenant: Tenant) -> None:
    schemas = _schemas(client)
    for code in ("target_not_allowed", "target_required", "invalid_target", "target_not_found", "invalid_url",
                 "invalid_page"):
        assert code in _prop(schemas["SlotIn"], "target_value")["description"]
        assert code in _prop(schemas["SlotUpdate"], "target_value")["description"]
    body = {"kind": "banner", "target_type": "url", "target_value": "ftp://example.com/x"}
    r = client.post(f"{ADMIN}/home-slots", json=body, headers=tenant.admin_headers)
    assert _field_code(r, "body.target_value") == "invalid_url"


def test_home_slot_patch_ends_after_it_starts(client: TestClient, tenant: Tenant) -> None:
    assert "ends_before_start" in _prop(_schemas(client)["SlotUpdate"], "ends_at")["description"]
    assert "ends_before_start" in _prop(_schemas(client)["SlotIn"], "ends_at")["description"]
    slot = _created(client.post(f"{ADMIN}/home-slots", json={"kind": "banner", **_window()}, headers=tenant.admin_headers))
    r = client.patch(f"{ADMIN}/home-slots/{slot['id']}", json={"ends_at": slot["starts_at"]}, headers=tenant.admin_headers)
    assert _field_code(r, "body.ends_at") == "ends_before_start"


def test_home_slot_reorder_names_each_slot_once(client: TestClient, tenant: Tenant) -> None:
    assert "duplicate_ids" in _prop(_schemas(client)["ReorderIn"], "ids")["description"]
    slot = _created(client.post(f"{ADMIN}/home-slots", json={"kind": "banner"}, headers=tenant.admin_headers))
    r = client.post(f"{ADMIN}/home-slots/reorder", json={"ids": [slot["id"], slot["id"]]}, headers=tenant.admin_headers)
    assert _field_code(r, "body.ids") == "duplicate_ids"


# -- orders ----------------------------------------------------------------------------------------


RULE = {"first_units": 1, "first_fee": 800}


@pytest.mark.parametrize(
    ("rules", "path", "code"),
    [([{"regions": ["浙江省"], **RULE}, {"regions": ["浙江省"], **RULE}], "rules.1.regions", "region_duplicate"),
     ([{"regions": [" "], **RULE}], "rules.0.regions", "region_empty")],
)
def test_freight_regions_are_named_once_and_not_blank(
    client: TestClient, tenant: Tenant, rules: list[dict[str, Any]], path: str, code: str
) -> None:
    regions = _prop(_schemas(client)["FreightRule"], "regions")
    assert regions["items"]["pattern"] == r"\S" and code in regions["description"]
    assert code in _schemas(client)["FreightTemplateIn"]["description"]
    r = client.post(f"{ADMIN}/freight-templates", json={"name": "运费", "rules": rules}, headers=tenant.admin_headers)
    assert _field_code(r, path) == code
    assert client.get(f"{ADMIN}/freight-templates", headers=tenant.admin_headers).json() == []


def test_ship_carrier_is_not_blank(client: TestClient, tenant: Tenant) -> None:
    props = _schemas(client)["ShipIn"]["properties"]
    assert props["carrier"]["pattern"] == props["tracking_no"]["pattern"] == r"\S"
    r = client.post(f"{ADMIN}/orders/1/ship", json={"carrier": "  ", "tracking_no": "SF1"}, headers=tenant.admin_headers)
    assert _field_code(r, "carrier") == "required"


# -- promotions and activities ---------------------------------------------------------------------


def test_first_order_promotion_limit_is_one(client: TestClient, tenant: Tenant) -> None:
    schema = _schemas(client)["PromotionIn"]
    assert "first_order_one_unit" in schema["description"] and "window_invalid" in schema["description"]
    body = {"name": "首单", "kind": "first_order", "rules": {}, "per_member_limit": 2, **_window()}
    r = client.post(f"{ADMIN}/promotions", json=body, headers=tenant.admin_headers)
    assert _field_code(r, "per_member_limit") == "first_order_one_unit"
    r = client.post(f"{ADMIN}/promotions", json={**body, "ends_at": body["starts_at"], "per_member_limit": 1},
                    headers=tenant.admin_headers)
    assert _field_code(r, "ends_at") == "window_invalid"
    assert client.get(f"{ADMIN}/promotions", headers=tenant.admin_headers).json()["total"] == 0


def test_promotion_patch_ends_after_it_starts(client: TestClient, tenant: Tenant) -> None:
    schema = _schemas(client)["PromotionUpdate"]
    assert "window_invalid" in _prop(schema, "ends_at")["description"] and "required" in schema["description"]
    rules = {"tiers": [{"threshold": 30000, "discount": 3000}]}
    promo = _created(client.post(f"{ADMIN}/promotions", json={"name": "满减", "kind": "spend_save", "rules": rules,
                                                              **_window()}, headers=tenant.admin_headers))
    url = f"{ADMIN}/promotions/{promo['id']}"
    r = client.patch(url, json={"ends_at": promo["starts_at"]}, headers=tenant.admin_headers)
    assert _field_code(r, "ends_at") == "window_invalid"
    r = client.patch(url, json={"name": None}, headers=tenant.admin_headers)
    assert _field_code(r, "name") == "required"


def _group_buy(sku: int, **extra: Any) -> dict[str, Any]:
    return {"name": "拼团", "sku_id": sku, "team_size": 3, "group_price": 5000, **_window(), **extra}


def test_group_buy_leader_price_is_at_most_the_group_price(
    client: TestClient, tenant: Tenant, session_factory: Factory
) -> None:
    schema = _schemas(client)["GroupBuyIn"]
    assert "leader_price_above_group_price" in _prop(schema, "leader_price")["description"]
    assert "virtual_min_too_large" in _prop(schema, "virtual_min_paid")["description"]
    sku = make_sku(session_factory, tenant.id, price=10000)
    r = client.post(f"{ADMIN}/group-buys", json=_group_buy(sku, leader_price=5001), headers=tenant.admin_headers)
    assert _field_code(r, "leader_price") == "leader_price_above_group_price"
    r = client.post(f"{ADMIN}/group-buys", json=_group_buy(sku, virtual_min_paid=3), headers=tenant.admin_headers)
    assert _field_code(r, "virtual_min_paid") == "virtual_min_too_large"


def test_group_buy_patch_null_is_required(client: TestClient, tenant: Tenant, session_factory: Factory) -> None:
    description = _schemas(client)["GroupBuyUpdate"]["description"]
    assert "required" in description and "leader_price_above_group_price" in description
    sku = make_sku(session_factory, tenant.id, price=10000)
    gb = _created(client.post(f"{ADMIN}/group-buys", json=_group_buy(sku), headers=tenant.admin_headers))
    r = client.patch(f"{ADMIN}/group-buys/{gb['id']}", json={"name": None}, headers=tenant.admin_headers)
    assert _field_code(r, "name") == "required"
    r = client.patch(f"{ADMIN}/group-buys/{gb['id']}", json={"leader_price": 6000}, headers=tenant.admin_headers)
    assert _field_code(r, "leader_price") == "leader_price_above_group_price"


def _flash_sale(client: TestClient, tenant: Tenant) -> dict[str, Any]:
    return _created(client.post(f"{ADMIN}/flash-sales", json={"name": "秒杀", **_window()}, headers=tenant.admin_headers))


def test_flash_sale_patch_states_its_refusals(client: TestClient, tenant: Tenant) -> None:
    schema = _schemas(client)["FlashSaleUpdate"]
    assert "required" in schema["description"] and "window_invalid" in _prop(schema, "ends_at")["description"]
    sale = _flash_sale(client, tenant)
    r = client.patch(f"{ADMIN}/flash-sales/{sale['id']}", json={"name": None}, headers=tenant.admin_headers)
    assert _field_code(r, "name") == "required"
    r = client.patch(f"{ADMIN}/flash-sales/{sale['id']}", json={"ends_at": sale["starts_at"]}, headers=tenant.admin_headers)
    assert _field_code(r, "ends_at") == "window_invalid"


def test_flash_sale_item_price_is_below_the_sale_price(
    client: TestClient, tenant: Tenant, session_factory: Factory
) -> None:
    schemas = _schemas(client)
    assert "price_not_below_sale_price" in _prop(schemas["FlashSaleItemIn"], "flash_price")["description"]
    assert "duplicate_sku" in _prop(schemas["FlashSaleItemIn"], "sku_id")["description"]
    assert "price_not_below_sale_price" in _prop(schemas["FlashSaleItemUpdate"], "flash_price")["description"]
    assert "below_sold" in _prop(schemas["FlashSaleItemUpdate"], "activity_stock")["description"]
    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    sale = _flash_sale(client, tenant)
    items = f"{ADMIN}/flash-sales/{sale['id']}/items"
    r = client.post(items, json={"sku_id": sku, "flash_price": 10000, "activity_stock": 5}, headers=tenant.admin_headers)
    assert _field_code(r, "flash_price") == "price_not_below_sale_price"
    item = _created(client.post(items, json={"sku_id": sku, "flash_price": 5000, "activity_stock": 5},
                                headers=tenant.admin_headers))
    r = client.post(items, json={"sku_id": sku, "flash_price": 5000, "activity_stock": 5}, headers=tenant.admin_headers)
    assert _field_code(r, "sku_id") == "duplicate_sku"
    r = client.patch(f"{items}/{item['id']}", json={"flash_price": 10001}, headers=tenant.admin_headers)
    assert _field_code(r, "flash_price") == "price_not_below_sale_price"


def test_bargain_patch_null_is_required(client: TestClient, tenant: Tenant, session_factory: Factory) -> None:
    assert "required" in _schemas(client)["BargainActivityUpdate"]["description"]
    sku = make_sku(session_factory, tenant.id, price=10000)
    body = {"name": "砍价", "sku_id": sku, "floor_price": 1000, "helpers_needed": 3, **_window()}
    act = _created(client.post(f"{ADMIN}/bargain-activities", json=body, headers=tenant.admin_headers))
    r = client.patch(f"{ADMIN}/bargain-activities/{act['id']}", json={"valid_hours": None}, headers=tenant.admin_headers)
    assert _field_code(r, "valid_hours") == "required"


# -- members, referral, tenancy --------------------------------------------------------------------


def test_handover_needs_another_staff_member(client: TestClient, tenant: Tenant) -> None:
    schema = _schemas(client)["HandoverIn"]
    assert "handover_same_staff" in _prop(schema, "to_staff_id")["description"]
    assert "not_owned" in _prop(schema, "member_ids")["description"]
    r = client.post(f"{ADMIN}/staff/{tenant.owner_id}/handover", json={"to_staff_id": tenant.owner_id},
                    headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["code"] == "handover_same_staff", r.text


def test_custom_field_key_never_changes(client: TestClient, tenant: Tenant) -> None:
    description = _schemas(client)["CustomFieldDefIn"]["description"]
    assert "immutable" in description and "custom_field_key_taken" in description
    body = {"key": "shoe_size", "label": "鞋码", "type": "text"}
    field = _created(client.post(f"{ADMIN}/member-fields", json=body, headers=tenant.admin_headers))
    r = client.put(f"{ADMIN}/member-fields/{field['id']}", json={**body, "key": "shoe"}, headers=tenant.admin_headers)
    assert _field_code(r, "body.key") == "immutable"


@pytest.mark.parametrize(
    ("url", "body"),
    [("/referral/levels", {"name": "金牌", "tier1_rate_bp": 10001}),
     ("/referral/commission-rules", {"name": "规则", "tier1_rate_bp": -1})],
)
def test_commission_rates_are_basis_points_up_to_100_percent(
    client: TestClient, tenant: Tenant, url: str, body: dict[str, Any]
) -> None:
    schemas = _schemas(client)
    for name in ("LevelUpdate", "RuleIn", "RuleUpdate", "siyu__referral__schemas__LevelIn"):
        for key in ("tier1_rate_bp", "tier2_rate_bp"):
            prop = _prop(schemas[name], key)
            assert (prop["minimum"], prop["maximum"]) == (0, 10000), (name, key)
            assert "commission_rate_invalid" in prop["description"]
    r = client.post(f"{ADMIN}{url}", json=body, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["code"] == "commission_rate_invalid", r.text


def test_merchant_timezone_is_an_iana_name(client: TestClient, tenant: Tenant) -> None:
    assert "invalid_timezone" in _prop(_schemas(client)["MerchantUpdate"], "timezone")["description"]
    r = client.patch(f"{ADMIN}/merchant", json={"timezone": "Mars/Olympus"}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["code"] == "invalid_timezone", r.text


def test_staff_username_is_unique(client: TestClient, tenant: Tenant) -> None:
    assert "username_taken" in _prop(_schemas(client)["StaffCreate"], "username")["description"]
    body = {"username": f"u{uuid.uuid4().hex[:8]}", "display_name": "店员", "password": "secret-123", "role": "staff"}
    _created(client.post(f"{ADMIN}/staff", json=body, headers=tenant.admin_headers))
    r = client.post(f"{ADMIN}/staff", json=body, headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "username_taken", r.text


def test_every_touched_operation_states_a_rule(client: TestClient) -> None:
    """The operations above and the rest of this pass: each body schema names at least one
    refusal code its service answers with (a missing description would fail here first)."""
    schemas = _schemas(client)
    checks: dict[str, Callable[[dict[str, Any]], str]] = {
        "RefundIn": lambda s: s["description"],
        "RefundLineIn": lambda s: _prop(s, "order_line_id")["description"],
        "AfterSaleLineIn": lambda s: _prop(s, "quantity")["description"],
        "FreightTemplateUpdate": lambda s: s["description"],
        "StaffOwnerIn": lambda s: _prop(s, "staff_id")["description"],
        "SettingsIn": lambda s: _prop(s, "payout_provider")["description"],
        "WithdrawalIn": lambda s: _prop(s, "amount")["description"],
        "StaffUpdate": lambda s: s["description"],
    }
    codes = {"RefundIn": "refund_target_required", "RefundLineIn": "duplicate_line",
             "AfterSaleLineIn": "quantity_out_of_range", "FreightTemplateUpdate": "region_duplicate",
             "StaffOwnerIn": "staff_owner_inactive", "SettingsIn": "payout_provider_unknown",
             "WithdrawalIn": "withdrawal_below_minimum", "StaffUpdate": "cannot_demote_last_owner"}
    for name, text in checks.items():
        assert codes[name] in text(schemas[name]), name
    assert _prop(schemas["AfterSaleLineIn"], "quantity")["minimum"] == 1
