"""Defects found walking the demo store on 2026-12-05 (merchant and customers over HTTP), each
pinned by a test that failed before its fix."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from siyu.kit.timeutil import utcnow
from tests.done_when.conftest import ADMIN, STORE, Demo, key, login, new_item


def _template(**fields: Any) -> dict[str, Any]:
    return {"name": "走查 范围券", "kind": "fixed", "amount": 1000, "validity_mode": "relative", "valid_days": 30,
            "channels": ["claim"], "per_member_limit": 1, "total_quantity": 100, **fields}


def test_a_coupon_template_scoped_to_unknown_products_or_categories_is_refused_and_nothing_is_stored(
    client: TestClient, demo: Demo
) -> None:
    """Validated on write: a spend-and-save scoped to a product id the merchant does not have is
    404 not_found; a coupon template with the same scope was stored (a coupon no cart could use)."""
    product, _ = new_item(client, demo, "走查 范围券 镜框", [10000])
    before = client.get(f"{ADMIN}/coupon-templates", params={"page_size": 100}, headers=demo.operator).json()["total"]
    for fields, resource in (
        ({"scope": "products", "scope_ids": [product, 987654321]}, ("商品", "Product")),
        ({"scope": "categories", "scope_ids": [987654321]}, ("分类", "Category")),
        ({"scope": "all", "excluded_product_ids": [987654321]}, ("商品", "Product")),
    ):
        r = client.post(f"{ADMIN}/coupon-templates", json=_template(**fields), headers=demo.operator)
        assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
        assert r.json()["message"] == f"{resource[0]}不存在"
        en = client.post(f"{ADMIN}/coupon-templates", json=_template(**fields),
                         headers={**demo.operator, "Accept-Language": "en"})
        assert en.status_code == 404 and resource[1] in en.json()["message"], en.text
    after = client.get(f"{ADMIN}/coupon-templates", params={"page_size": 100}, headers=demo.operator).json()["total"]
    assert after == before

    # an update naming an unknown product is refused too, and leaves the template as it was
    r = client.post(f"{ADMIN}/coupon-templates", json=_template(scope="products", scope_ids=[product]),
                    headers=demo.operator)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    r = client.patch(f"{ADMIN}/coupon-templates/{tid}", json={"scope_ids": [product, 987654321]},
                     headers=demo.operator)
    assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
    assert client.get(f"{ADMIN}/coupon-templates/{tid}", headers=demo.operator).json()["scope_ids"] == [product]


def test_making_up_today_or_a_future_day_says_why_not_the_window(client: TestClient, demo: Demo) -> None:
    """补签 of today or of a day to come was refused with "只能补签 3 天内" (only within 3 days),
    though the day is inside those three days; the reason now names the real rule."""
    rules = client.get(f"{ADMIN}/loyalty/rules", headers=demo.owner)
    assert rules.status_code == 200, rules.text
    merchant = rules.json()
    merchant["check_in"] = {**merchant["check_in"], "enabled": True,
                            "makeup": {"enabled": True, "cost_points": 20, "within_days": 3}}
    r = client.put(f"{ADMIN}/loyalty/rules", json=merchant, headers=demo.owner)
    assert r.status_code == 200, r.text
    try:
        _makeup_refusals(client, demo)
    finally:
        client.put(f"{ADMIN}/loyalty/rules", json=rules.json(), headers=demo.owner)


def _makeup_refusals(client: TestClient, demo: Demo) -> None:
    _, c, _ = login(client, demo, "walk-makeup-1")
    r = client.post(f"{STORE}/loyalty/me/check-in", headers={**c, **key()})
    assert r.status_code == 201, r.text
    today, earned = dt.date.fromisoformat(r.json()["day"]), r.json()["points"]
    for day in (today, today + dt.timedelta(days=1)):
        r = client.post(f"{STORE}/loyalty/me/check-in/makeup", json={"day": day.isoformat()}, headers={**c, **key()})
        assert r.status_code == 422 and r.json()["code"] == "makeup_not_allowed", r.text
        assert r.json()["message"] == "该日期不能补签：只能补签今天之前的日期", r.text
        en = client.post(f"{STORE}/loyalty/me/check-in/makeup", json={"day": day.isoformat()},
                         headers={**c, **key(), "Accept-Language": "en"})
        assert en.json()["message"] == "Cannot make up that day: only days before today", en.text
    # a day too far back still names the window
    old = today - dt.timedelta(days=30)
    r = client.post(f"{STORE}/loyalty/me/check-in/makeup", json={"day": old.isoformat()}, headers={**c, **key()})
    assert r.status_code == 422 and "天内" in r.json()["message"], r.text
    me = client.get(f"{STORE}/loyalty/me", headers=c).json()
    assert (me["check_in_streak"], me["points_balance"]) == (1, earned)  # nothing made up, nothing charged


def test_between_two_flash_sale_sessions_the_next_start_is_said_in_the_stores_time(
    client: TestClient, demo: Demo
) -> None:
    """The refusal read "下一场 2026-12-05T19:00:00+00:00 开始" for a session at 03:00 in the
    store's zone (Asia/Shanghai): a customer in China read 19:00. The message now says the
    store's local time; the detail keeps the instant."""
    _, (sku,) = new_item(client, demo, "走查 场次 镜框", [10000], stock=10)
    local = utcnow().astimezone(ZoneInfo("Asia/Shanghai"))
    start = local + dt.timedelta(hours=2)
    slot = {"start": start.strftime("%H:%M"), "end": (start + dt.timedelta(minutes=1)).strftime("%H:%M")}
    if slot["end"] <= slot["start"]:
        pytest.skip("the slot two hours from now would cross local midnight")
    now = utcnow()
    r = client.post(f"{ADMIN}/flash-sales", headers=demo.operator, json={
        "name": "走查 场次", "starts_at": (now - dt.timedelta(hours=1)).isoformat(),
        "ends_at": (now + dt.timedelta(days=3)).isoformat(), "per_member_limit": 1, "slots": [slot],
        "items": [{"sku_id": sku, "flash_price": 5000, "activity_stock": 2}]})
    assert r.status_code == 201, r.text
    r = client.post(f"{ADMIN}/flash-sales/{r.json()['id']}/start", headers=demo.operator)
    assert r.status_code == 200, r.text
    item = r.json()["items"][0]["id"]
    _, c, _ = login(client, demo, "walk-session-1")
    shown = start.strftime("%Y-%m-%d %H:%M")
    r = client.post(f"{STORE}/flash-sales/{item}/buy", json={}, headers={**c, **key()})
    assert r.status_code == 409 and r.json()["code"] == "flash_sale_outside_session", r.text
    assert r.json()["message"] == f"当前不在秒杀场次内，下一场 {shown} 开始", r.text
    instant = dt.datetime.fromisoformat(r.json()["detail"]["next_session_starts_at"])
    assert instant.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M") == shown
    en = client.post(f"{STORE}/flash-sales/{item}/buy", json={}, headers={**c, **key(), "Accept-Language": "en"})
    assert en.status_code == 409 and shown in en.json()["message"], en.text
    assert client.get(f"{STORE}/orders", headers=c).json()["items"] == []


def test_deleting_a_coupon_template_already_issued_says_so_and_how_to_end_it(client: TestClient, demo: Demo) -> None:
    """DELETE of a template with coupons out answered "优惠券已发放，不能修改其优惠规则" (its rules
    cannot change): the merchant asked to delete, not to change a rule, and was not told to stop it."""
    r = client.post(f"{ADMIN}/coupon-templates", json=_template(status="active"), headers=demo.operator)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    _, c, _ = login(client, demo, "walk-delete-template-1")
    assert client.post(f"{STORE}/coupons/templates/{tid}/claim", headers={**c, **key()}).status_code == 201
    r = client.delete(f"{ADMIN}/coupon-templates/{tid}", headers=demo.operator)
    assert r.status_code == 409 and r.json()["code"] == "coupon_template_in_use", r.text
    assert "删除" in r.json()["message"] and "停用" in r.json()["message"], r.text
    en = client.delete(f"{ADMIN}/coupon-templates/{tid}", headers={**demo.operator, "Accept-Language": "en"})
    assert "deleted" in en.json()["message"] and "stop" in en.json()["message"], en.text
    assert client.get(f"{ADMIN}/coupon-templates/{tid}", headers=demo.operator).json()["issued"] == 1


def test_a_level_without_thresholds_above_the_entry_level_is_not_given_to_everyone(
    client: TestClient, demo: Demo
) -> None:
    """A level with no threshold (no spend, points, growth or orders) counted as met by everyone:
    a merchant adding a top level and leaving its thresholds for later (or one meant to be reached
    only with the paid card) put every member there at their next check-in or order, with its
    member price. Only the entry level (the lowest rank) is reached without a threshold."""
    ranks = [lv["rank"] for lv in client.get(f"{ADMIN}/loyalty/levels", headers=demo.operator).json()]
    r = client.post(f"{ADMIN}/loyalty/levels", headers={**demo.owner, **key()},
                    json={"rank": max(ranks) + 1, "name": "走查 无门槛顶级", "member_price_percent": 50})
    assert r.status_code == 201, r.text
    top = r.json()["id"]
    try:
        member_id, c, _ = login(client, demo, "walk-level-1")
        r = client.post(f"{STORE}/loyalty/me/check-in", headers={**c, **key()})
        assert r.status_code == 201, r.text
        got = client.get(f"{ADMIN}/loyalty/members/{member_id}", headers=demo.operator).json()
        assert got["level_id"] != top and got["paid_spend"] == 0, got
        entry = min(client.get(f"{ADMIN}/loyalty/levels", headers=demo.operator).json(), key=lambda lv: lv["rank"])
        assert got["level_id"] == entry["id"], got
    finally:  # out of the other walks' way: reachable by nobody
        client.put(f"{ADMIN}/loyalty/levels/{top}", headers=demo.owner,
                   json={"rank": max(ranks) + 1, "name": "走查 无门槛顶级", "min_spend": 2**31 - 1})
