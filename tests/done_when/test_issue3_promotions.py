"""Issue 3, "Done when", walked over HTTP in the seeded demo store: the merchant configures each
activity through the admin API, customers use each one, and every order's fen amounts are
computed here by hand from the configured rules (never from the API's answer). The stacking rules
checked: a flash-sale line takes no coupon by default; an activity's ``allows_order_promotions``
decides whether its lines count for spend-and-save.

Each test starts by stopping every running promotion (the demo's store-wide 满减 and the rest), as
a merchant does before launching its own campaign, and uses its own products and new customers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.kit.timeutil import utcnow
from tests.done_when.conftest import (
    ADMIN,
    STORE,
    Demo,
    add_address,
    drain,
    key,
    login,
    new_item,
    pay,
    preview,
    stop_running_promotions,
    submit,
)


def window(hours_before: int = 1, days_after: int = 7) -> dict[str, str]:
    now = utcnow()
    return {"starts_at": (now - dt.timedelta(hours=hours_before)).isoformat(),
            "ends_at": (now + dt.timedelta(days=days_after)).isoformat()}


def customer(client: TestClient, demo: Demo, name: str) -> tuple[int, dict[str, str]]:
    member_id, headers, body = login(client, demo, name)
    assert body["is_new"] is True
    add_address(client, headers)
    return member_id, headers


def coupon_template(client: TestClient, demo: Demo, **fields: Any) -> dict[str, Any]:
    body = {"validity_mode": "relative", "valid_days": 30, "channels": ["claim"], "per_member_limit": 1,
            "total_quantity": 100, "status": "active", **fields}
    r = client.post(f"{ADMIN}/coupon-templates", json=body, headers=demo.operator)
    assert r.status_code == 201, r.text
    return dict(r.json())


def claim(client: TestClient, headers: dict[str, str], template_id: int) -> dict[str, Any]:
    r = client.post(f"{STORE}/coupons/templates/{template_id}/claim", headers={**headers, **key()})
    assert r.status_code == 201, r.text
    return dict(r.json())


def wallet(client: TestClient, headers: dict[str, str]) -> dict[int, str]:
    r = client.get(f"{STORE}/coupons/mine", params={"page_size": 100}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    items = body["items"] if isinstance(body, dict) else body
    return {int(c["id"]): c["status"] for c in items}


def promotion(client: TestClient, demo: Demo, kind: str, rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {"name": f"走查 {kind}", "kind": kind, "rules": rules, **window(), **extra}
    r = client.post(f"{ADMIN}/promotions", json=body, headers=demo.operator)
    assert r.status_code == 201, r.text
    r = client.post(f"{ADMIN}/promotions/{r.json()['id']}/activate", headers=demo.operator)
    assert r.status_code == 200, r.text
    return dict(r.json())


def mine_only(client: TestClient, headers: dict[str, str], ids: Any) -> dict[int, str]:
    """The wallet's coupons among ``ids`` (the demo also hands out its own registration and
    next-order coupons)."""
    return {k: v for k, v in wallet(client, headers).items() if k in set(ids)}


def amounts(order: dict[str, Any]) -> tuple[int, int, int, int]:
    return order["goods_amount"], order["discount_amount"], order["freight_amount"], order["payable_amount"]


def test_coupons_fixed_percent_capped_threshold_free_shipping_claimed_used_and_returned_on_cancel(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    stop_running_promotions(client, demo)
    product, (sku,) = new_item(client, demo, "走查 券 镜框", [15000])
    cheap_product, (cheap,) = new_item(client, demo, "走查 券 镜布", [5000], free_shipping=False)
    scope = {"scope": "products", "scope_ids": [product, cheap_product]}
    fixed = coupon_template(client, demo, name="立减 10 元", kind="fixed", amount=1000, **scope)
    percent = coupon_template(client, demo, name="8 折 最高 25 元", kind="percent", percent_off=20, max_discount=2500,
                              **scope)
    threshold = coupon_template(client, demo, name="满 100 减 15", kind="threshold", threshold=10000, amount=1500,
                                **scope)
    shipping = coupon_template(client, demo, name="包邮券", kind="free_shipping", **scope)

    # customer 1: the percent coupon (capped), cancelled and used again; then the fixed one
    _, c1 = customer(client, demo, "coupon-1")
    mine = {t["id"]: claim(client, c1, t["id"])["id"] for t in (fixed, percent)}
    r = client.post(f"{STORE}/coupons/templates/{fixed['id']}/claim", headers={**c1, **key()})
    assert r.status_code == 409, r.text  # per-member limit 1
    assert mine_only(client, c1, mine.values()) == {mine[fixed["id"]]: "unused", mine[percent["id"]]: "unused"}

    capped = min(15000 * 20 // 100, 2500)  # 20 % of ¥150 is ¥30, capped at ¥25
    order = submit(client, c1, [(sku, 1)], coupon_ids=[mine[percent["id"]]])
    assert amounts(order) == (15000, capped, 0, 15000 - capped)
    assert wallet(client, c1)[mine[percent["id"]]] == "locked"
    r = client.post(f"{STORE}/orders/{order['id']}/cancel", json={}, headers=c1)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    drain(session_factory, settings, demo)  # the order.cancelled event's jobs
    assert wallet(client, c1)[mine[percent["id"]]] == "unused"  # returned to the wallet on cancel

    order = pay(client, c1, submit(client, c1, [(sku, 1)], coupon_ids=[mine[percent["id"]]])["id"])
    assert (order["status"], order["paid_amount"]) == ("paid", 15000 - capped)
    order = pay(client, c1, submit(client, c1, [(sku, 1)], coupon_ids=[mine[fixed["id"]]])["id"])
    assert amounts(order) == (15000, 1000, 0, 14000) and order["paid_amount"] == 14000
    drain(session_factory, settings, demo)  # a paid order's coupons are marked used by its payment's jobs
    assert mine_only(client, c1, mine.values()) == {mine[fixed["id"]]: "used", mine[percent["id"]]: "used"}

    # customer 2: the threshold coupon (spend ¥100 save ¥15), then free shipping on a ¥50 item
    _, c2 = customer(client, demo, "coupon-2")
    mine = {t["id"]: claim(client, c2, t["id"])["id"] for t in (threshold, shipping)}
    r = client.post(f"{STORE}/checkout/preview", json={"items": [{"sku_id": cheap, "quantity": 1}],
                                                      "coupon_ids": [mine[threshold["id"]]]}, headers=c2)
    assert r.status_code != 200 or r.json()["discount_amount"] == 0, r.text  # ¥50 is under the threshold
    order = pay(client, c2, submit(client, c2, [(sku, 1)], coupon_ids=[mine[threshold["id"]]])["id"])
    assert amounts(order) == (15000, 1500, 0, 13500)
    freight = 800  # the demo's default freight template: ¥8 for the first unit, free from ¥99
    no_coupon = preview(client, c2, [(cheap, 1)], coupon_ids=[])
    assert amounts(no_coupon) == (5000, 0, freight, 5000 + freight)
    order = pay(client, c2, submit(client, c2, [(cheap, 1)], coupon_ids=[mine[shipping["id"]]])["id"])
    assert order["goods_amount"] == 5000 and order["payable_amount"] == order["paid_amount"] == 5000
    drain(session_factory, settings, demo)
    assert mine_only(client, c2, mine.values()) == {mine[threshold["id"]]: "used", mine[shipping["id"]]: "used"}
    stats = client.get(f"{ADMIN}/coupon-templates/{percent['id']}/stats", headers=demo.operator)
    assert stats.status_code == 200, stats.text
    got = stats.json()
    assert (got["claimed"], got["used"], got["discount_given"], got["gmv"]) == (1, 1, capped, 15000 - capped)


def test_spend_and_save_tiers_and_spend_and_gift_price_an_order(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    stop_running_promotions(client, demo)
    product, (sku,) = new_item(client, demo, "走查 满减 镜片", [15000])
    _, (gift,) = new_item(client, demo, "走查 赠品 镜盒", [2000], stock=10)
    scope = {"type": "products", "ids": [product]}
    save = promotion(client, demo, "spend_save", {"scope": scope, "tiers": [
        {"threshold": 20000, "discount": 2000}, {"threshold": 40000, "discount": 5000}]})
    gift_promo = promotion(client, demo, "spend_gift", {"scope": scope, "tiers": [
        {"threshold": 30000, "gift_sku_id": gift, "quantity": 1}]})
    _, c = customer(client, demo, "spend-save-1")

    # one unit (¥150): under every tier
    one = preview(client, c, [(sku, 1)], coupon_ids=[])
    assert amounts(one) == (15000, 0, 0, 15000)
    # two units (¥300): the ¥200 tier saves ¥20, and ¥300 earns the gift
    # (the order promotions are one stage: both measure the ¥300 left by the item promotions)
    two = preview(client, c, [(sku, 2)], coupon_ids=[])
    assert amounts(two) == (30000, 2000, 0, 28000)
    assert [(ln["sku_id"], ln["quantity"], ln["payable_amount"]) for ln in two["lines"]] == [
        (sku, 2, 28000), (gift, 1, 0)]
    assert [n["code"] for n in two["notes"]["order_promotions"]] == ["spend_save_almost"]  # ¥100 more saves ¥50
    # three units (¥450): the ¥400 tier saves ¥50 (the best tier, not both), and the gift
    order = pay(client, c, submit(client, c, [(sku, 3)], coupon_ids=[])["id"])
    assert amounts(order) == (45000, 5000, 0, 40000) and order["paid_amount"] == 40000
    assert [(ln["sku_id"], ln["quantity"], ln["payable_amount"]) for ln in order["lines"]] == [
        (sku, 3, 40000), (gift, 1, 0)]
    codes = [row["code"] for row in order["pricing"] if row["stage"] == "order_promotions"]
    assert codes == [f"spend_save:{save['id']}", f"spend_gift:{gift_promo['id']}"]
    drain(session_factory, settings, demo)
    stats = client.get(f"{ADMIN}/promotions/{save['id']}/stats", headers=demo.operator)
    assert stats.status_code == 200, stats.text
    got = stats.json()
    assert (got["paid_orders"], got["discount"], got["gmv"]) == (1, 5000, 40000)


def test_limited_time_discount_first_order_special_and_add_on_deal_in_one_order(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    stop_running_promotions(client, demo)
    _, (fixed_price, pct) = new_item(client, demo, "走查 限时 太阳镜", [10000, 12000])
    _, (first,) = new_item(client, demo, "走查 首单 护理液", [5000])
    _, (addon,) = new_item(client, demo, "走查 换购 镜布", [3000], stock=20)
    limited = promotion(client, demo, "limited_discount", {"items": [
        {"sku_id": fixed_price, "price": 8000}, {"sku_id": pct, "percent_off": 15}]}, per_member_limit=2)
    first_promo = promotion(client, demo, "first_order", {"items": [{"sku_id": first, "price": 990}]})
    addon_promo = promotion(client, demo, "add_on", {"threshold": 10000, "items": [
        {"sku_id": addon, "price": 500, "per_order_limit": 1, "stock": 5}]})
    _, c = customer(client, demo, "limited-1")

    options = {"first_order": {"promotion_id": first_promo["id"]},
               "add_on": [{"promotion_id": addon_promo["id"], "sku_id": addon, "quantity": 1}]}
    items = [(fixed_price, 1), (pct, 1), (first, 1)]
    order = submit(client, c, items, coupon_ids=[], options=options)
    # ¥80 fixed price + 8.5折 of ¥120 + ¥9.90 first-order price; ¥198.90 ≥ ¥100 adds the ¥30 cloth for ¥5
    item_total = 8000 + 12000 * 85 // 100 + 990
    assert item_total >= 10000
    expected = item_total + 500
    assert amounts(order) == (10000 + 12000 + 5000 + 3000, 30000 - expected, 0, expected)
    assert [(ln["sku_id"], ln["payable_amount"]) for ln in order["lines"]] == [
        (fixed_price, 8000), (pct, 10200), (first, 990), (addon, 500)]
    order = pay(client, c, order["id"])
    assert order["paid_amount"] == expected
    drain(session_factory, settings, demo)

    # the first-order price is checked at submit: a member with a paid order is refused it
    r = client.post(f"{STORE}/checkout/submit", headers={**c, **key()}, json={
        "items": [{"sku_id": first, "quantity": 1}], "coupon_ids": [],
        "options": {"first_order": {"promotion_id": first_promo["id"]}}})
    assert r.status_code == 409 and r.json()["code"] == "first_order_not_eligible", r.text
    # the limited-time prices hold for 2 units per member over the activity: both are used up
    r = client.post(f"{STORE}/checkout/preview", headers=c, json={
        "items": [{"sku_id": fixed_price, "quantity": 1}], "coupon_ids": []})
    assert r.status_code == 409 and r.json()["code"] == "promotion_limit_reached", r.text
    assert r.json()["detail"] == {"limit": 2, "remaining": 0}
    # the product page shows the configured prices
    r = client.get(f"{STORE}/promotions", params={"product_id": order["lines"][0]["product_id"]}, headers=c)
    assert r.status_code == 200, r.text
    shown = {p["promotion_id"]: p["sku_prices"] for p in r.json()}
    assert shown[limited["id"]] == {str(fixed_price): 8000, str(pct): 10200}


def test_flash_sale_item_bought_at_its_price_takes_no_coupon_by_default_and_stays_within_the_limit(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    stop_running_promotions(client, demo)
    product, (sku,) = new_item(client, demo, "走查 秒杀 镜框", [20000], stock=30)
    all_coupon = coupon_template(client, demo, name="全场立减 10 元", kind="fixed", amount=1000,
                                 scope="products", scope_ids=[product])
    r = client.post(f"{ADMIN}/flash-sales", headers=demo.operator, json={
        "name": "走查 秒杀", **window(days_after=1), "per_member_limit": 1,
        "items": [{"sku_id": sku, "flash_price": 9900, "activity_stock": 5}]})
    assert r.status_code == 201, r.text
    sale = r.json()
    r = client.post(f"{ADMIN}/flash-sales/{sale['id']}/start", headers=demo.operator)
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert (sale["allows_coupons"], sale["allows_order_promotions"]) == (False, False)  # the defaults

    _, c = customer(client, demo, "flash-1")
    coupon = claim(client, c, all_coupon["id"])["id"]
    flash = {"flash_sale": {"item_id": item["id"]}}
    # stacking: a flash-sale line takes no coupon (asked for: refused; left to the pipeline: noted)
    r = client.post(f"{STORE}/checkout/preview", headers=c, json={
        "items": [{"sku_id": sku, "quantity": 1}], "coupon_ids": [coupon], "options": flash})
    assert r.status_code == 409 and r.json()["code"] == "coupon_excluded_by_activity", r.text
    auto = preview(client, c, [(sku, 1)], options=flash)
    assert amounts(auto) == (20000, 20000 - 9900, 0, 9900)
    assert [(n["coupon_id"], n["code"]) for n in auto["notes"]["coupons"]] == [(coupon, "activity_excludes_coupons")]

    r = client.post(f"{STORE}/flash-sales/{item['id']}/buy", json={}, headers={**c, **key()})
    assert r.status_code == 201, r.text
    assert amounts(r.json()) == (20000, 20000 - 9900, 0, 9900)
    order = pay(client, c, r.json()["id"])
    assert order["paid_amount"] == 9900
    drain(session_factory, settings, demo)
    assert wallet(client, c)[coupon] == "unused"
    # the member's limit is 1
    r = client.post(f"{STORE}/flash-sales/{item['id']}/buy", json={}, headers={**c, **key()})
    assert r.status_code == 409 and r.json()["code"] == "flash_sale_limit_reached", r.text
    got = client.get(f"{ADMIN}/flash-sales/{sale['id']}", headers=demo.operator).json()["items"][0]
    assert (got["activity_stock"], got["sold"]) == (5, 1)
    r = client.get(f"{ADMIN}/flash-sales/{sale['id']}/stats", headers=demo.operator)
    assert r.status_code == 200, r.text
    assert (r.json()["paid_units"], r.json()["paid_orders"], r.json()["gmv"]) == (1, 1, 9900)


def test_spend_and_save_counts_an_activitys_lines_only_when_its_setting_allows_it(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    stop_running_promotions(client, demo)
    _, (sku,) = new_item(client, demo, "走查 叠加 镜框", [15000])
    _, (plain,) = new_item(client, demo, "走查 叠加 镜布", [3000])
    limited = promotion(client, demo, "limited_discount", {"items": [{"sku_id": sku, "price": 12000}]},
                        allows_order_promotions=False)
    promotion(client, demo, "spend_save", {"tiers": [{"threshold": 10000, "discount": 1000}]})
    _, c = customer(client, demo, "stacking-1")

    # forbidden: the ¥120 line does not count, ¥30 alone is under ¥100: no spend-and-save
    out = preview(client, c, [(sku, 1), (plain, 1)], coupon_ids=[])
    assert amounts(out) == (18000, 15000 - 12000, 0, 12000 + 3000)
    # an active activity's rules are fixed (decided before it starts) ...
    r = client.patch(f"{ADMIN}/promotions/{limited['id']}", json={"allows_order_promotions": True},
                     headers=demo.operator)
    assert r.status_code == 409 and r.json()["code"] == "promotion_state_invalid", r.text
    # ... so the merchant stops it and runs the same price allowing spend-and-save:
    # ¥120 + ¥30 = ¥150 ≥ ¥100 saves ¥10, allocated over both lines by largest remainder (120:30)
    r = client.post(f"{ADMIN}/promotions/{limited['id']}/stop", headers=demo.operator)
    assert r.status_code == 200, r.text
    promotion(client, demo, "limited_discount", {"items": [{"sku_id": sku, "price": 12000}]},
              allows_order_promotions=True)
    out = preview(client, c, [(sku, 1), (plain, 1)], coupon_ids=[])
    assert amounts(out) == (18000, 15000 - 12000 + 1000, 0, 12000 + 3000 - 1000)
    assert [(ln["sku_id"], ln["payable_amount"]) for ln in out["lines"]] == [(sku, 12000 - 800), (plain, 3000 - 200)]
    order = pay(client, c, submit(client, c, [(sku, 1), (plain, 1)], coupon_ids=[])["id"])
    assert order["paid_amount"] == 14000


def test_group_buy_full_team_goes_to_fulfilment_and_a_timed_out_team_is_refunded_in_full(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    stop_running_promotions(client, demo)
    _, (sku,) = new_item(client, demo, "走查 拼团 镜框", [10000], stock=20)
    r = client.post(f"{ADMIN}/group-buys", headers=demo.operator, json={
        "name": "走查 双人团", "sku_id": sku, "team_size": 2, "valid_hours": 24, "group_price": 6000,
        "leader_price": 5000, "per_member_limit": 1, **window()})
    assert r.status_code == 201, r.text
    gb = r.json()
    assert (gb["allows_coupons"], gb["allows_points"]) == (False, False)  # the defaults

    # a full team: the leader opens at the leader price, a friend joins at the group price
    _, leader = customer(client, demo, "group-leader-1")
    _, friend = customer(client, demo, "group-friend-1")
    r = client.post(f"{STORE}/group-buys/{gb['id']}/teams", json={}, headers={**leader, **key()})
    assert r.status_code == 201, r.text
    assert amounts(r.json()) == (10000, 5000, 0, 5000)
    leader_order = r.json()["id"]
    # the team opens (开团) once the leader has paid: before, it is listed nowhere and cannot be joined
    page = client.get(f"{STORE}/group-buys/{gb['id']}", headers=friend).json()
    assert page["open_teams"] == []
    lead = pay(client, leader, leader_order)
    drain(session_factory, settings, demo)
    page = client.get(f"{STORE}/group-buys/{gb['id']}", headers=friend).json()
    assert [t["remaining_seats"] for t in page["open_teams"]] == [1]
    team_id = page["open_teams"][0]["team_id"]
    r = client.post(f"{STORE}/group-buys/teams/{team_id}/join", json={}, headers={**friend, **key()})
    assert r.status_code == 201, r.text
    assert amounts(r.json()) == (10000, 4000, 0, 6000)
    joined = pay(client, friend, r.json()["id"])
    drain(session_factory, settings, demo)
    assert (lead["paid_amount"], joined["paid_amount"]) == (5000, 6000)
    team = client.get(f"{ADMIN}/group-buys/teams/{team_id}", headers=demo.operator).json()
    assert (team["status"], team["filled"], team["paid_count"]) == ("success", 2, 2)
    assert sorted((st["order_id"], st["amount"], st["status"]) for st in team["seats"]) == [
        (lead["id"], 5000, "paid"), (joined["id"], 6000, "paid")]
    for order in (lead, joined):  # a full team's orders go to fulfilment
        r = client.post(f"{ADMIN}/orders/{order['id']}/ship", json={"carrier": "SF", "tracking_no": "SF2001"},
                        headers=demo.operator)
        assert r.status_code == 200 and r.json()["status"] == "shipped", r.text

    # a team that times out: its paid leader is refunded in full through the payment provider
    _, lonely = customer(client, demo, "group-leader-2")
    r = client.post(f"{STORE}/group-buys/{gb['id']}/teams", json={}, headers={**lonely, **key()})
    assert r.status_code == 201, r.text
    alone = pay(client, lonely, r.json()["id"])
    drain(session_factory, settings, demo)  # the payment opens the team; its 24 hours run from here
    r = client.post(f"{ADMIN}/orders/{alone['id']}/ship", json={"carrier": "SF", "tracking_no": "SF2002"},
                    headers=demo.operator)
    assert r.status_code == 409, r.text  # not before the team succeeds
    teams = client.get(f"{ADMIN}/group-buys/{gb['id']}/teams", headers=demo.operator).json()["items"]
    (open_team,) = [t for t in teams if t["status"] == "open"]
    deadline = dt.datetime.fromisoformat(open_team["expires_at"])
    drain(session_factory, settings, demo, now=deadline - dt.timedelta(minutes=1))
    assert client.get(f"{ADMIN}/group-buys/teams/{open_team['id']}", headers=demo.operator).json()["status"] == "open"
    drain(session_factory, settings, demo, now=deadline + dt.timedelta(seconds=1))
    team = client.get(f"{ADMIN}/group-buys/teams/{open_team['id']}", headers=demo.operator).json()
    assert team["status"] == "failed"
    assert [(st["order_id"], st["status"]) for st in team["seats"]] == [(alone["id"], "refunded")]
    order = client.get(f"{ADMIN}/orders/{alone['id']}", headers=demo.operator).json()
    assert (order["status"], order["refund_status"], order["paid_amount"], order["refunded_amount"]) == (
        "closed", "full", 5000, 5000)
    refunds = client.get(f"{ADMIN}/refunds", params={"order_id": alone["id"]}, headers=demo.finance).json()["items"]
    assert [(x["amount"], x["status"], x["provider_status"]) for x in refunds] == [(5000, "succeeded", "SUCCESS")]


def test_bargain_three_friends_cut_to_the_floor_and_the_initiator_buys_at_the_floor(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    stop_running_promotions(client, demo)
    _, (sku,) = new_item(client, demo, "走查 砍价 太阳镜", [10000], stock=20)
    r = client.post(f"{ADMIN}/bargain-activities", headers=demo.operator, json={
        "name": "走查 好友砍价", "sku_id": sku, "floor_price": 2000, "helpers_needed": 3, "valid_hours": 24,
        **window()})
    assert r.status_code == 201, r.text
    activity = r.json()
    assert (activity["allows_coupons"], activity["allows_points"]) == (False, False)  # the defaults

    _, initiator = customer(client, demo, "bargain-initiator-1")
    r = client.post(f"{STORE}/bargains/activities/{activity['id']}/start", json={}, headers={**initiator, **key()})
    assert r.status_code == 201, r.text
    bargain = r.json()
    assert (bargain["start_price"], bargain["floor_price"], bargain["current_price"]) == (10000, 2000, 10000)
    r = client.post(f"{STORE}/bargains/{bargain['id']}/help", headers=initiator)
    assert r.status_code == 409 and r.json()["code"] == "bargain_help_own", r.text

    price, cuts = 10000, []
    for n in range(3):
        _, friend = login(client, demo, f"bargain-helper-{n}")[:2]
        r = client.post(f"{STORE}/bargains/{bargain['id']}/help", headers=friend)
        assert r.status_code in (200, 201), r.text
        cut = r.json()["cut"]
        assert cut >= 1
        price -= cut
        cuts.append(cut)
        assert (r.json()["current_price"], r.json()["helped_count"]) == (price, n + 1)
    assert sum(cuts) == 10000 - 2000 and price == 2000  # the cuts sum exactly to the distance to the floor
    r = client.post(f"{STORE}/bargains/{bargain['id']}/buy", json={}, headers={**initiator, **key()})
    assert r.status_code == 201, r.text
    assert amounts(r.json()) == (10000, 8000, 0, 2000)
    order = pay(client, initiator, r.json()["id"])
    assert order["paid_amount"] == 2000
    got = client.get(f"{ADMIN}/bargains/{bargain['id']}", headers=demo.operator).json()
    assert (got["status"], got["order_id"], got["cut_total"], got["current_price"]) == (
        "ordered", order["id"], 8000, 2000)
    assert [h["amount"] for h in got["helps"]] == cuts == got["cuts"]


def test_every_activity_is_configurable_on_the_admin_docs_page(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/coupon-templates", "/promotions", "/promotions/{promotion_id}/activate", "/flash-sales",
                 "/flash-sales/{sale_id}/start", "/group-buys", "/bargain-activities"):
        assert "post" in paths[f"{ADMIN}{path}"], path


def test_a_percent_coupon_is_computed_on_the_price_left_by_the_item_promotion(
    client: TestClient, demo: Demo
) -> None:
    stop_running_promotions(client, demo)
    product, (sku,) = new_item(client, demo, "走查 折上折 镜框", [20000])
    promotion(client, demo, "limited_discount", {"items": [{"sku_id": sku, "price": 15000}]}, allows_coupons=True)
    percent = coupon_template(client, demo, name="9 折券", kind="percent", percent_off=10, scope="products",
                              scope_ids=[product])
    _, c = customer(client, demo, "percent-after-item-1")
    coupon = claim(client, c, percent["id"])["id"]
    out = preview(client, c, [(sku, 1)], coupon_ids=[coupon])
    # 10 % of the ¥150 limited-time price (¥15), never of the ¥200 list of the SKU (¥20)
    assert amounts(out) == (20000, 5000 + 1500, 0, 13500)




def test_a_threshold_coupon_measures_the_amount_left_by_spend_and_save_and_returns_on_full_refund(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    stop_running_promotions(client, demo)
    product, (sku,) = new_item(client, demo, "走查 门槛 镜框", [10500], stock=20)
    save = promotion(client, demo, "spend_save", {"tiers": [{"threshold": 10000, "discount": 1000}]})
    t = coupon_template(client, demo, name="满100减15", kind="threshold", threshold=10000, amount=1500,
                        scope="products", scope_ids=[product])
    _, c = customer(client, demo, "threshold-1")
    coupon = claim(client, c, t["id"])["id"]
    # ¥105 − ¥10 (满100减10) leaves ¥95: under the coupon's ¥100
    r = client.post(f"{STORE}/checkout/preview", headers=c,
                    json={"items": [{"sku_id": sku, "quantity": 1}], "coupon_ids": [coupon]})
    assert r.status_code == 409 and r.json()["code"] == "coupon_below_threshold", r.text
    auto = preview(client, c, [(sku, 1)])
    assert amounts(auto) == (10500, 1000, 0, 9500)
    assert [(n["coupon_id"], n["code"], n["short_by"]) for n in auto["notes"]["coupons"]] == [
        (coupon, "below_threshold", 500)]
    # two units: ¥210 − ¥10 = ¥200, then ¥15 off
    order = pay(client, c, submit(client, c, [(sku, 2)], coupon_ids=[coupon])["id"])
    assert amounts(order) == (21000, 1000 + 1500, 0, 21000 - 2500) and order["paid_amount"] == 18500
    codes = [row["code"] for row in order["pricing"] if row["amount"] < 0]
    assert codes == [f"spend_save:{save['id']}", f"coupon:{coupon}"]
    drain(session_factory, settings, demo)
    assert wallet(client, c)[coupon] == "used"
    # a full refund inside its validity gives the coupon back
    r = client.post(f"{ADMIN}/orders/{order['id']}/refunds", json={"amount": 18500}, headers={**demo.finance, **key()})
    assert r.status_code == 201, r.text
    drain(session_factory, settings, demo)
    got = client.get(f"{ADMIN}/orders/{order['id']}", headers=demo.operator).json()
    assert (got["refund_status"], got["refunded_amount"]) == ("full", 18500)
    assert wallet(client, c)[coupon] == "unused"


def test_an_unpaid_flash_sale_order_gives_its_unit_back_at_the_payment_deadline(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    stop_running_promotions(client, demo)
    _, (sku,) = new_item(client, demo, "走查 秒杀超时", [20000], stock=30)
    r = client.post(f"{ADMIN}/flash-sales", headers=demo.operator, json={
        "name": "走查 秒杀 超时", **window(days_after=1), "per_member_limit": 1,
        "items": [{"sku_id": sku, "flash_price": 9900, "activity_stock": 2}]})
    assert r.status_code == 201, r.text
    sale = r.json()
    item = client.post(f"{ADMIN}/flash-sales/{sale['id']}/start", headers=demo.operator).json()["items"][0]
    _, c = customer(client, demo, "flash-timeout-1")
    r = client.post(f"{STORE}/flash-sales/{item['id']}/buy", json={}, headers={**c, **key()})
    assert r.status_code == 201, r.text
    order = r.json()

    def sold() -> int:
        return int(client.get(f"{ADMIN}/flash-sales/{sale['id']}", headers=demo.operator).json()["items"][0]["sold"])

    assert sold() == 1
    deadline = dt.datetime.fromisoformat(order["pay_deadline"])
    drain(session_factory, settings, demo, now=deadline - dt.timedelta(minutes=1))
    assert sold() == 1
    drain(session_factory, settings, demo, now=deadline + dt.timedelta(seconds=1))
    assert sold() == 0
    assert client.get(f"{STORE}/orders/{order['id']}", headers=c).json()["status"] == "cancelled"
    # the member may buy again (the unpaid order no longer counts against the limit)
    r = client.post(f"{STORE}/flash-sales/{item['id']}/buy", json={}, headers={**c, **key()})
    assert r.status_code == 201, r.text
    assert r.json()["payable_amount"] == 9900 and sold() == 1



def test_activity_refusals_carry_their_specific_codes_and_change_nothing(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    stop_running_promotions(client, demo)
    _, (base,) = new_item(client, demo, "走查 拒绝 基", [5000])
    _, (addon,) = new_item(client, demo, "走查 拒绝 换购", [3000])
    ap = promotion(client, demo, "add_on", {"threshold": 10000, "items": [
        {"sku_id": addon, "price": 500, "per_order_limit": 1, "stock": 5}]})
    _, c = customer(client, demo, "refusals-1")

    def submit_add_on(quantity: int, add: int) -> Any:
        return client.post(f"{STORE}/checkout/submit", headers={**c, **key()}, json={
            "items": [{"sku_id": base, "quantity": quantity}], "coupon_ids": [],
            "options": {"add_on": [{"promotion_id": ap["id"], "sku_id": addon, "quantity": add}]}})

    r = submit_add_on(1, 1)  # ¥50 < ¥100
    assert r.status_code == 409 and r.json()["code"] == "add_on_threshold_not_met", r.text
    r = submit_add_on(2, 2)  # one per order
    assert r.status_code == 409 and r.json()["code"] == "add_on_limit_reached", r.text
    assert client.get(f"{STORE}/orders", headers=c).json()["items"] == []

    _, (gsku,) = new_item(client, demo, "走查 拒绝 拼团", [10000], stock=20)
    r = client.post(f"{ADMIN}/group-buys", headers=demo.operator, json={
        "name": "走查 拒绝 团", "sku_id": gsku, "team_size": 2, "valid_hours": 24, "group_price": 6000, **window()})
    assert r.status_code == 201, r.text
    gb = r.json()
    r = client.post(f"{STORE}/group-buys/{gb['id']}/teams", json={}, headers={**c, **key()})
    assert r.status_code == 201, r.text
    pay(client, c, r.json()["id"])
    drain(session_factory, settings, demo)  # the leader's payment opens the team
    team_id = client.get(f"{STORE}/group-buys/{gb['id']}", headers=c).json()["open_teams"][0]["team_id"]
    r = client.post(f"{STORE}/group-buys/teams/{team_id}/join", json={}, headers={**c, **key()})
    assert r.status_code == 409 and r.json()["code"] == "group_team_already_joined", r.text
    _, f1 = customer(client, demo, "refusals-f1")
    _, f2 = customer(client, demo, "refusals-f2")
    assert client.post(f"{STORE}/group-buys/teams/{team_id}/join", json={}, headers={**f1, **key()}).status_code == 201
    r = client.post(f"{STORE}/group-buys/teams/{team_id}/join", json={}, headers={**f2, **key()})
    assert r.status_code == 409 and r.json()["code"] == "group_team_full", r.text  # the last seat is taken once

    _, (bsku,) = new_item(client, demo, "走查 拒绝 砍价", [10000], stock=20)
    r = client.post(f"{ADMIN}/bargain-activities", headers=demo.operator, json={
        "name": "走查 拒绝 砍价", "sku_id": bsku, "floor_price": 6000, "helpers_needed": 2, **window()})
    assert r.status_code == 201, r.text
    bargain = client.post(f"{STORE}/bargains/activities/{r.json()['id']}/start", json={},
                          headers={**c, **key()}).json()
    first = client.post(f"{STORE}/bargains/{bargain['id']}/help", headers=f1)
    again = client.post(f"{STORE}/bargains/{bargain['id']}/help", headers=f1)  # a friend helps once
    assert first.status_code == again.status_code == 200, again.text
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json() == first.json()
    assert first.json()["helped_count"] == 1 and first.json()["current_price"] == 10000 - first.json()["cut"]
