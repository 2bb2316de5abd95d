"""A field error a service raises reads in zh-CN by default and in English with
``Accept-Language: en``, with the same status, code and path, through the HTTP API of several
domains (each on SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.members import profile
from siyu.members.schemas import CustomFieldDefIn
from tests.conftest import Tenant, customer_login
from tests.coupons.helpers import template_body
from tests.factories.aftersales import line_id, make_product, paid_order
from tests.factories.orders import make_sku
from tests.factories.promotions import promotion_body, window
from tests.flash_sales.helpers import sale_body

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"
CHINESE = re.compile(r"[\u4e00-\u9fff]")


def _field(client: TestClient, method: str, url: str, headers: dict[str, str], path: str,
           body: dict[str, Any] | None = None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The same refused request without ``Accept-Language`` and with ``en``: the problem's code,
    and the field at ``path`` in zh-CN and in English (same status, code and fields' paths)."""
    zh = client.request(method, url, json=body, headers=headers)
    en = client.request(method, url, json=body, headers={**headers, "Accept-Language": "en"})
    assert zh.status_code == en.status_code == 422, (zh.text, en.text)
    assert (zh.headers["content-language"], en.headers["content-language"]) == ("zh-CN", "en")
    zh_body, en_body = zh.json(), en.json()
    assert zh_body["code"] == en_body["code"]
    zh_fields = [(f["path"], f["code"]) for f in zh_body["fields"]]
    assert zh_fields == [(f["path"], f["code"]) for f in en_body["fields"]]
    zh_field = next(f for f in zh_body["fields"] if f["path"] == path)
    en_field = next(f for f in en_body["fields"] if f["path"] == path)
    assert CHINESE.search(zh_field["message"]), zh_field
    assert not CHINESE.search(en_field["message"]), en_field
    return zh_body["code"], zh_field, en_field


def test_flash_sale_price_not_below_the_sale_price(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=100)
    body = sale_body([{"sku_id": sku, "flash_price": 10000, "activity_stock": 10}])
    code, zh, en = _field(client, "POST", f"{ADMIN}/flash-sales", tenant.admin_headers, "items.0.flash_price", body)
    assert code == "validation_error" and zh["code"] == "price_not_below_sale_price"
    assert zh["message"] == "秒杀价须低于售价 10000"
    assert en["message"] == "the flash price must be below the sale price 10000"


def test_promotion_window_and_rules(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    body = promotion_body("first_order", {"items": [{"sku_id": sku, "price": 100}]}, **window(3, 1))
    code, zh, en = _field(client, "POST", f"{ADMIN}/promotions", tenant.admin_headers, "ends_at", body)
    assert (code, zh["code"]) == ("validation_error", "window_invalid")
    assert (zh["message"], en["message"]) == ("结束时间须晚于开始时间", "ends_at must be after starts_at")
    # the rules' own schema (checked by the service): Pydantic's type as the code, the shared table's text
    body = promotion_body("spend_save", {"tiers": [{"threshold": 0, "discount": 100}]})
    code, zh, en = _field(client, "POST", f"{ADMIN}/promotions", tenant.admin_headers, "rules.tiers.0.threshold", body)
    assert (code, zh["code"]) == ("validation_error", "greater_than_equal")
    assert (zh["message"], en["message"]) == ("不能小于 1", "Must be at least 1")


def test_coupon_template_percent_out_of_range(client: TestClient, tenant: Tenant) -> None:
    body = template_body("percent", percent_off=101)
    code, zh, en = _field(client, "POST", f"{ADMIN}/coupon-templates", tenant.admin_headers, "percent_off", body)
    assert (code, zh["code"]) == ("validation_error", "percent_out_of_range")
    assert en["message"] == "percent off must be above 0 and at most 100"


def test_home_slot_target_required(client: TestClient, tenant: Tenant) -> None:
    body = {"kind": "banner", "title": "新品", "target_type": "product"}
    code, zh, en = _field(client, "POST", f"{ADMIN}/home-slots", tenant.admin_headers, "body.target_value", body)
    assert (code, zh["code"]) == ("validation_error", "target_required")
    assert zh["message"] == "target_type 为 product 时须填写 target_value"
    assert en["message"] == "target_value is required for target_type product"


def test_member_custom_field_value(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as s:
        profile.create_field_def(s, tenant.id, CustomFieldDefIn(key="age", label="年龄", type="number", min=1, max=120))
    headers = customer_login(client, tenant)
    body = {"custom_fields": {"age": 130}}
    code, zh, en = _field(client, "PATCH", f"{STORE}/me/profile", headers, "custom_fields.age", body)
    assert (code, zh["code"]) == ("custom_field_invalid", "out_of_range")
    assert (zh["message"], en["message"]) == ("不能大于 120", "must be ≤ 120")


def test_import_row_errors(client: TestClient, tenant: Tenant) -> None:
    orders = (
        "external_order_id,member_external_id,paid_at,amount_fen,sku_code,quantity\n"
        "o1,c1,2025-02-01 12:00:00,29900,NO-SUCH-SKU,\n"
        "o2,c1,2025-02-01 12:00:00,-5,,\n"
    )
    body = {"members_csv": "external_id,nickname\nc1,王芳\n", "orders_csv": orders, "dry_run": False}
    code, zh, en = _field(client, "POST", f"{ADMIN}/imports", tenant.admin_headers, "orders.csv:2.sku_code", body)
    assert (code, zh["code"]) == ("import_has_errors", "sku_unknown")
    assert (zh["message"], en["message"]) == ("SKU NO-SUCH-SKU 不存在", "no SKU NO-SUCH-SKU")
    # a row's own schema: Pydantic's type as the code, the shared table's text
    code, zh, en = _field(client, "POST", f"{ADMIN}/imports", tenant.admin_headers, "orders.csv:3.amount_fen", body)
    assert zh["code"] == "greater_than_equal"
    assert (zh["message"], en["message"]) == ("不能小于 0", "Must be at least 0")


def test_segment_definition(client: TestClient, tenant: Tenant) -> None:
    body = {"definition": {"type": "attribute", "field": "city", "value": "杭州市"}}
    path = "definition.attribute.op"
    code, zh, en = _field(client, "POST", f"{ADMIN}/segments/preview", tenant.admin_headers, path, body)
    assert (code, zh["code"]) == ("segment_invalid", "missing")
    assert (zh["message"], en["message"]) == ("缺少必填字段", "This field is required")


def test_segment_definition_rules_have_their_own_codes_and_text(client: TestClient, tenant: Tenant) -> None:
    """The definition's own rules were Pydantic's value_error with English detail after a zh-CN prefix."""
    cases = [
        ({"type": "stage", "in": ["zombie"]}, "definition.stage", "segment_unknown_stage", "未知的生命周期阶段 zombie"),
        ({"type": "behavior", "event": "product_view"}, "definition.behavior", "segment_window_needed",
         "需要 within_days 或 since"),
        ({"type": "attribute", "field": "registered_at", "op": "gt", "value": "yesterday"}, "definition.attribute",
         "segment_date_invalid", "应为 ISO 8601 日期时间"),
    ]
    for definition, path, field_code, zh_start in cases:
        code, zh, en = _field(client, "POST", f"{ADMIN}/segments/preview", tenant.admin_headers, path,
                              {"definition": definition})
        assert (code, zh["code"], en["code"]) == ("segment_invalid", field_code, field_code)
        assert zh["message"].startswith(zh_start), zh


def test_aftersale_quantity_above_what_was_bought(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    (sku,) = make_product(session_factory, tenant.id, [3333])
    headers = customer_login(client, tenant)
    order = paid_order(client, tenant, session_factory, headers, [(sku, 2)], completed=True)
    body = {"kind": "return_refund", "reason_code": "quality_issue", "description": "镜腿松动",
            "lines": [{"order_line_id": line_id(order, sku), "quantity": 3}]}
    url = f"{STORE}/orders/{order['id']}/aftersales"
    code, zh, en = _field(client, "POST", url, headers, "body.lines.0.quantity", body)
    assert (code, zh["code"]) == ("aftersale_quantity_invalid", "quantity_out_of_range")
    assert (zh["message"], en["message"]) == ("应在 1 到 2 之间", "between 1 and 2")
