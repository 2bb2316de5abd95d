"""Numbers beyond what their column holds are a 422 on the field, not a 500 from the database.

Each case was a 500 (PostgreSQL ``integer out of range`` / ``bigint out of range``, SQLite
``OverflowError``) before the bodies and the checkout options of the promotions and growth
modules were bounded: money and counts by INTEGER, ids by BIGINT, loyalty rules by what one
award may hold."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.kit.timeutil import utcnow
from tests.conftest import Tenant
from tests.coupons.helpers import template_body
from tests.factories import payments as f
from tests.factories.orders import make_sku

A = "/api/admin/v1"
S = "/api/store/v1"
BIG = 10**12  # beyond INTEGER
HUGE = 10**19  # beyond BIGINT


def _window() -> dict[str, str]:
    now = utcnow()
    return {"starts_at": (now - dt.timedelta(hours=1)).isoformat(), "ends_at": (now + dt.timedelta(days=1)).isoformat()}


def _cases(sku: int, member: int) -> list[tuple[str, str, str, dict[str, Any], str, str]]:
    """(name, method, url, body, who, field path)."""
    w = _window()
    preview = f"{S}/checkout/preview"
    line = [{"sku_id": sku, "quantity": 1}]
    return [
        ("adjust", "post", f"{A}/loyalty/members/{member}/points/adjust", {"points": BIG, "reason": "x"}, "admin",
         "body.points"),
        ("adjust_negative", "post", f"{A}/loyalty/members/{member}/points/adjust", {"points": -BIG, "reason": "x"},
         "admin", "body.points"),
        ("coupon_amount", "post", f"{A}/coupon-templates", template_body("fixed", amount=BIG), "admin", "body.amount"),
        ("coupon_total", "post", f"{A}/coupon-templates", template_body("fixed", total_quantity=BIG), "admin",
         "body.total_quantity"),
        ("coupon_limit", "post", f"{A}/coupon-templates", template_body("fixed", per_member_limit=BIG), "admin",
         "body.per_member_limit"),
        ("promotion_sku", "post", f"{A}/promotions", {"name": "x", "kind": "limited_discount", **w,
         "rules": {"items": [{"sku_id": HUGE, "price": 1}]}}, "admin", "rules.items.0.sku_id"),
        ("gift_sku", "post", f"{A}/promotions", {"name": "x", "kind": "spend_gift", **w,
         "rules": {"tiers": [{"threshold": 100, "gift_sku_id": HUGE}]}}, "admin", "rules.tiers.0.gift_sku_id"),
        ("group_buy_sku", "post", f"{A}/group-buys", {"name": "x", "sku_id": HUGE, "team_size": 2, "group_price": 1,
         **w}, "admin", "body.sku_id"),
        ("bargain_start_price", "post", f"{A}/bargain-activities", {"name": "x", "sku_id": sku, "floor_price": 1,
         "start_price": BIG, "helpers_needed": 2, "valid_hours": 1, **w}, "admin", "body.start_price"),
        ("flash_sort", "post", f"{A}/flash-sales", {"name": "x", **w, "items": [
            {"sku_id": sku, "flash_price": 1, "activity_stock": 1, "sort": BIG}]}, "admin", "body.items.0.sort"),
        ("level_spend", "post", f"{A}/loyalty/levels", {"rank": 3, "name": "y", "min_spend": BIG}, "admin",
         "body.min_spend"),
        ("earn_rate", "put", f"{A}/loyalty/rules", {"earn": {"points_per_yuan": BIG}}, "admin",
         "body.earn.points_per_yuan"),
        ("expiry_days", "put", f"{A}/loyalty/rules", {"expiry": {"mode": "days", "days": BIG}}, "admin",
         "body.expiry.days"),
        ("add_on_option", "post", preview, {"items": line, "options": {
            "add_on": [{"promotion_id": HUGE, "sku_id": HUGE, "quantity": 1}]}}, "customer",
         "options.add_on.0.promotion_id"),
        ("group_buy_option", "post", preview, {"items": line, "options": {"group_buy": {"activity_id": HUGE}}},
         "customer", "options.group_buy.activity_id"),
        ("flash_sale_option", "post", preview, {"items": line, "options": {"flash_sale": {"item_id": HUGE}}},
         "customer", "options.flash_sale.item_id"),
        ("bargain_option", "post", preview, {"items": line, "options": {"bargain": {"bargain_id": HUGE}}},
         "customer", "options.bargain.bargain_id"),
        ("first_order_option", "post", preview, {"items": line, "options": {"first_order": {"promotion_id": HUGE}}},
         "customer", "options.first_order.promotion_id"),
    ]


NAMES = [c[0] for c in _cases(1, 1)]


@pytest.mark.parametrize("name", NAMES)
def test_a_number_beyond_its_column_is_a_422_on_the_field(
    name: str, app: Any, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    client = TestClient(app, raise_server_exceptions=False)
    member, customer = f.paying_customer(session_factory, tenant.id)
    sku = make_sku(session_factory, tenant.id, price=10000, stock=10)
    (_, method, url, body, who, path), = [c for c in _cases(sku, member) if c[0] == name]
    headers = {**tenant.admin_headers, "Idempotency-Key": f"k-{name}"} if who == "admin" else customer
    r = getattr(client, method)(url, json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert path in [fld["path"] for fld in r.json().get("fields", [])], r.text
