"""Issue 4, "Done when", walked over HTTP in the seeded demo store (``siyu demo``'s data):

a customer registers (through a staff member's channel code), becomes a distributor and invites a
friend, checks in for a week, earns and spends points, rises a level, buys the annual card, and
the friend's first order pays a commission that is frozen, settled and withdrawn — each step read
back through the admin API. Every expected number is computed here from the rules the merchant
configured in the walk, never taken from the API's answer.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
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
    new_product,
    pay,
    ship_and_complete,
    staff_login,
    stop_running_promotions,
    submit,
)

RULES: dict[str, Any] = {
    "earn": {"points_per_yuan": 1, "growth_per_yuan": 1, "award_on": "paid", "product_bonus": True},
    "expiry": {"mode": "end_of_next_year", "notice_days": 30},
    "deduction": {"enabled": True, "points_per_yuan": 100, "max_percent": 30, "min_points": 100},
    "check_in": {"enabled": True, "points": 5, "growth": 1,
                 "streak_rewards": [{"day": 7, "points": 50, "growth": 10}], "total_rewards": [],
                 "makeup": {"enabled": False}},
}
FRAME = 20000  # ¥200.00 a frame
RATE_BP = 1000  # the distributor level's tier-1 rate: 10 %


def _loyalty(client: TestClient, demo: Demo, member_id: int) -> dict[str, Any]:
    r = client.get(f"{ADMIN}/loyalty/members/{member_id}", headers=demo.operator)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _commission(client: TestClient, demo: Demo, order_id: int) -> list[dict[str, Any]]:
    r = client.get(f"{ADMIN}/referral/commissions", params={"order_id": order_id}, headers=demo.finance)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def _account(client: TestClient, demo: Demo, dist_id: int) -> tuple[int, int, int, int, int]:
    r = client.get(f"{ADMIN}/referral/distributors/{dist_id}", headers=demo.finance)
    assert r.status_code == 200, r.text
    d = r.json()
    return d["pending"], d["frozen"], d["available"], d["withdrawing"], d["withdrawn"]


def test_walk_invite_check_in_points_level_card_and_commission_frozen_settled_withdrawn(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # -- the merchant configures the program through the admin API ------------------------------
    stop_running_promotions(client, demo)
    r = client.put(f"{ADMIN}/loyalty/rules", json=RULES, headers=demo.operator)
    assert r.status_code == 200, r.text
    levels = {lv["name"]: lv for lv in client.get(f"{ADMIN}/loyalty/levels", headers=demo.operator).json()}
    regular, formal, middle = levels["普通会员"], levels["正式会员"], levels["中级会员"]
    # the demo ladder: ¥300 of paid spend makes a 正式会员 (98 % member price)
    assert (formal["min_spend"], formal["member_price_percent"], formal["points_multiplier_percent"]) == (30000, 98, 100)
    (card_plan,) = client.get(f"{ADMIN}/loyalty/cards", headers=demo.operator).json()
    assert (card_plan["level_id"], card_plan["term_days"], card_plan["active"]) == (middle["id"], 365, True)
    r = client.get(f"{ADMIN}/products/{card_plan['product_id']}", headers=demo.operator)
    assert r.status_code == 200, r.text
    (card_sku,) = r.json()["skus"]
    card_price = card_sku["sale_price"]
    r = client.put(f"{ADMIN}/referral/settings", headers=demo.owner, json={
        "binding_rule": "first", "tiers": 1, "min_withdrawal": 100,
        "inviter_rewards": [{"kind": "points", "points": 100}], "invitee_rewards": [{"kind": "points", "points": 50}],
    })
    assert r.status_code == 200, r.text
    r = client.post(f"{ADMIN}/referral/levels", headers=demo.owner,
                    json={"name": "走查分销", "tier1_rate_bp": RATE_BP, "tier2_rate_bp": 0, "is_default": False})
    assert r.status_code == 201, r.text
    dist_level = r.json()["id"]
    (frame,) = new_product(client, demo, "走查 镜框", [FRAME])

    # the shopping guide 导购 陈静 (guide1) gets her channel code (渠道码) with its QR image
    guide = demo.staff_ids["guide1"]
    r = client.post(f"{ADMIN}/channel-codes", headers={**demo.operator, **key()},
                    json={"kind": "staff", "name": "导购 陈静", "scene": "walk-guide1", "staff_id": guide})
    assert r.status_code == 201, r.text
    code = r.json()
    qr = client.get(f"{ADMIN}/channel-codes/{code['id']}/qr.png", headers=demo.operator)
    assert qr.status_code == 200 and qr.content.startswith(b"\x89PNG"), qr.text[:200]

    # -- A scans it, registers, applies as a distributor and is approved --------------------------
    r = client.post(f"{STORE}/channel-codes/walk-guide1/scan", json={"anonymous_id": "anon-alice"},
                    headers=demo.store)
    assert r.status_code == 201, r.text
    a_id, a, body = login(client, demo, "walk-alice", channel="walk-guide1")
    assert body["is_new"] is True
    member = client.get(f"{ADMIN}/members/{a_id}", headers=demo.operator).json()
    assert (member["registration_channel"], member["staff_id"]) == ("walk-guide1", guide)
    guide_headers = staff_login(client, "guide1", "demo-staff-123")  # the guide sees her new customer
    r = client.get(f"{ADMIN}/my-customers", params={"page_size": 100}, headers=guide_headers)
    assert r.status_code == 200, r.text
    assert a_id in [x["id"] for x in r.json()["items"]]
    r = client.post(f"{STORE}/referral/distributor/apply", json={"real_name": "王小明"}, headers=a)
    assert r.status_code == 201, r.text
    dist_a = r.json()["id"]
    r = client.post(f"{ADMIN}/referral/distributors/{dist_a}/approve", json={"level_id": dist_level},
                    headers=demo.owner)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["level_id"], r.json()["real_name_masked"]) == ("approved", dist_level, "王**明")

    # -- A invites a friend B, who registers through A's share link -----------------------------
    me = client.get(f"{STORE}/referral/me", headers=a).json()
    assert me["share_path"].endswith(f"inviter={me['code']}")
    b_id, b, body = login(client, demo, "walk-bob", inviter=me["code"])
    assert body["is_new"] is True
    r = client.get(f"{ADMIN}/referral/members/{b_id}", headers=demo.operator)
    assert r.status_code == 200 and r.json()["inviter_member_id"] == a_id, r.text
    invitees = client.get(f"{ADMIN}/referral/members/{a_id}/invitees", headers=demo.operator).json()["items"]
    assert [(i["member_id"], i["has_bought"]) for i in invitees] == [(b_id, False)]

    # -- A checks in for a week: the loyalty service's clock steps one local day at a time -------
    today = utcnow()
    streaks = []
    for back in range(6, -1, -1):
        monkeypatch.setattr("siyu.loyalty.service.utcnow", lambda back=back: today - dt.timedelta(days=back))
        r = client.post(f"{STORE}/loyalty/me/check-in", headers=a)
        assert r.status_code == 201, r.text
        streaks.append((r.json()["streak"], r.json()["points"], r.json()["growth"]))
    monkeypatch.undo()
    day7 = RULES["check_in"]["streak_rewards"][0]
    assert streaks == [(n, 5, 1) for n in range(1, 7)] + [(7, 5 + day7["points"], 1 + day7["growth"])]
    points = 7 * 5 + day7["points"]  # 85
    growth = 7 * 1 + day7["growth"]  # 17
    got = _loyalty(client, demo, a_id)
    assert (got["points_balance"], got["growth"], got["check_in_streak"], got["level_id"]) == (
        points, growth, 7, regular["id"])

    # -- A's first order (2 frames, no member price yet) earns 1 point and 1 growth per ¥1 ---------
    add_address(client, a)
    o1 = submit(client, a, [(frame, 2)], coupon_ids=[])
    assert (o1["goods_amount"], o1["discount_amount"], o1["freight_amount"], o1["payable_amount"]) == (
        2 * FRAME, 0, 0, 2 * FRAME)
    o1 = pay(client, a, o1["id"])
    drain(session_factory, settings, demo)
    points += 2 * FRAME // 100
    growth += 2 * FRAME // 100
    spend = 2 * FRAME
    got = _loyalty(client, demo, a_id)
    assert (got["points_balance"], got["growth"], got["paid_spend"], got["paid_orders"]) == (points, growth, spend, 1)
    # ... and ¥400 ≥ ¥300 lifts A to 正式会员
    assert (got["level_id"], got["level_source"]) == (formal["id"], "rules")

    # -- A spends 300 points on a frame at the new level's member price ---------------------------
    member_price = FRAME * 98 // 100  # 19600
    used = 300  # 100 points = ¥1: ¥3.00, under the 30 % cap (¥58.80) and above the minimum (100)
    o2 = submit(client, a, [(frame, 1)], coupon_ids=[], points_to_use=used)
    assert (o2["goods_amount"], o2["points_used"], o2["payable_amount"]) == (FRAME, used, member_price - used)
    assert o2["lines"][0]["discounts"] == {"member_price": FRAME - member_price, "points": used}
    o2 = pay(client, a, o2["id"])
    drain(session_factory, settings, demo)
    earned = (member_price - used) // 100  # points on what was paid after discounts
    points += earned - used
    growth += (member_price - used) // 100
    spend += member_price - used
    got = _loyalty(client, demo, a_id)
    assert (got["points_balance"], got["points_earned_total"], got["growth"], got["paid_spend"]) == (
        points, points + used, growth, spend)
    statement = client.get(f"{ADMIN}/loyalty/members/{a_id}/points", params={"limit": 2},
                           headers=demo.operator).json()["items"]
    assert [e["delta"] for e in statement] == [earned, -used]

    # -- A buys the annual card (virtual: no address, no freight, no member price) -----------------
    r = client.post(f"{STORE}/loyalty/cards/{card_plan['id']}/buy", json={}, headers={**a, **key()})
    assert r.status_code == 201, r.text
    assert (r.json()["payable_amount"], r.json()["freight_amount"]) == (card_price, 0)
    card_order = pay(client, a, r.json()["id"])
    drain(session_factory, settings, demo)
    assert (card_order["status"], card_order["paid_amount"]) == ("completed", card_price)
    points += card_price // 100  # at the level held before the card (multiplier 100 %)
    spend += card_price
    got = _loyalty(client, demo, a_id)
    assert (got["level_id"], got["level_source"], got["points_balance"], got["paid_spend"]) == (
        middle["id"], "card", points, spend)
    cards = client.get(f"{ADMIN}/loyalty/members/{a_id}/cards", headers=demo.operator).json()
    assert [(c["order_id"], c["level_id"], c["status"]) for c in cards] == [(card_order["id"], middle["id"], "active")]
    history = client.get(f"{ADMIN}/loyalty/members/{a_id}/level-history", headers=demo.operator).json()
    assert [(x["from_level_id"], x["to_level_id"], x["reason"]) for x in history] == [
        (formal["id"], middle["id"], "card"), (regular["id"], formal["id"], "upgrade"), (None, regular["id"], "upgrade")]

    # -- B's first paid order: both sides rewarded, A's commission pending --------------------------
    add_address(client, b)
    ob = submit(client, b, [(frame, 1)], coupon_ids=[])
    ob = pay(client, b, ob["id"])
    drain(session_factory, settings, demo)
    assert ob["paid_amount"] == FRAME
    commission = FRAME * RATE_BP // 10000  # 2000 fen
    (c,) = _commission(client, demo, ob["id"])
    assert (c["distributor_id"], c["tier"], c["base_amount"], c["amount"], c["status"]) == (
        dist_a, 1, FRAME, commission, "pending")
    assert _commission(client, demo, o1["id"]) == []  # A's own orders pay A nothing
    rewards = client.get(f"{ADMIN}/referral/rewards", params={"page_size": 100}, headers=demo.owner).json()["items"]
    mine = sorted((x["role"], x["beneficiary_member_id"], x["points"], x["status"])
                  for x in rewards if x["invitee_member_id"] == b_id)
    assert mine == [("invitee", b_id, 50, "granted"), ("inviter", a_id, 100, "granted")]
    points += 100
    assert _loyalty(client, demo, a_id)["points_balance"] == points
    assert _loyalty(client, demo, b_id)["points_balance"] == 50 + FRAME // 100
    assert _account(client, demo, dist_a) == (commission, 0, 0, 0, 0)

    # -- completion freezes it for the after-sales window; the window's end settles it -------------
    ship_and_complete(client, demo, ob["id"])
    drain(session_factory, settings, demo)
    (c,) = _commission(client, demo, ob["id"])
    assert c["status"] == "frozen"
    assert _account(client, demo, dist_a) == (0, commission, 0, 0, 0)
    settle_at = dt.datetime.fromisoformat(c["settle_at"])
    drain(session_factory, settings, demo, now=settle_at - dt.timedelta(minutes=1))
    assert _commission(client, demo, ob["id"])[0]["status"] == "frozen"
    drain(session_factory, settings, demo, now=settle_at + dt.timedelta(seconds=1))
    assert _commission(client, demo, ob["id"])[0]["status"] == "settled"
    assert _account(client, demo, dist_a) == (0, 0, commission, 0, 0)

    # -- the guide's channel code: one scan, one registration, one member with paid orders -----------
    stats = {x["channel_code_id"]: x for x in client.get(f"{ADMIN}/channel-codes/stats", headers=demo.operator).json()}
    got = stats[code["id"]]
    assert (got["scans"], got["registrations"], got["first_orders"], got["gmv"]) == (1, 1, 1, spend)

    # -- A withdraws it; finance approves and pays by hand ----------------------------------------
    r = client.post(f"{STORE}/referral/withdrawals", json={"amount": commission}, headers={**a, **key()})
    assert r.status_code == 201, r.text
    wd = r.json()["id"]
    assert _account(client, demo, dist_a) == (0, 0, 0, commission, 0)
    r = client.post(f"{ADMIN}/referral/withdrawals/{wd}/approve", json={}, headers=demo.finance)
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text
    r = client.post(f"{ADMIN}/referral/withdrawals/{wd}/mark-paid", json={"reference": "BANK-WALK-1"},
                    headers=demo.finance)
    assert r.status_code == 200 and r.json()["status"] == "paid", r.text
    assert _account(client, demo, dist_a) == (0, 0, 0, 0, commission)
    listed = client.get(f"{ADMIN}/referral/withdrawals", params={"distributor_id": dist_a},
                        headers=demo.finance).json()["items"]
    assert [(w["id"], w["amount"], w["status"]) for w in listed] == [(wd, commission, "paid")]
    statement = client.get(f"{ADMIN}/referral/distributors/{dist_a}/statement", headers=demo.finance)
    assert statement.status_code == 200, statement.text
    entries = [(e["entry"], e["amount"]) for e in statement.json()["items"]]
    assert entries == [("withdrawal_paid", commission), ("withdrawal_requested", commission),
                       ("settled", commission), ("frozen", commission), ("accrued", commission)]



def _distributor_and_friend(
    client: TestClient, demo: Demo, tag: str
) -> tuple[int, dict[str, str], int, int, dict[str, str], int]:
    """The program as the walk configures it; A approved as a distributor (10 %), B invited by A.
    Returns ``(a_id, a, dist_a, b_id, b, frame_sku)``."""
    stop_running_promotions(client, demo)
    assert client.put(f"{ADMIN}/loyalty/rules", json=RULES, headers=demo.operator).status_code == 200
    r = client.put(f"{ADMIN}/referral/settings", headers=demo.owner, json={
        "binding_rule": "first", "tiers": 1, "min_withdrawal": 100,
        "inviter_rewards": [{"kind": "points", "points": 100}], "invitee_rewards": [{"kind": "points", "points": 50}],
    })
    assert r.status_code == 200, r.text
    r = client.post(f"{ADMIN}/referral/levels", headers=demo.owner,
                    json={"name": f"走查分销 {tag}", "tier1_rate_bp": RATE_BP, "tier2_rate_bp": 0, "is_default": False})
    assert r.status_code == 201, r.text
    level = r.json()["id"]
    (frame,) = new_product(client, demo, f"走查 {tag} 镜框", [FRAME])
    a_id, a, _ = login(client, demo, f"{tag}-a")
    r = client.post(f"{STORE}/referral/distributor/apply", json={"real_name": "李四"}, headers=a)
    assert r.status_code == 201, r.text
    dist = r.json()["id"]
    approved = client.post(f"{ADMIN}/referral/distributors/{dist}/approve", json={"level_id": level},
                           headers=demo.owner)
    assert approved.status_code == 200, approved.text
    code = client.get(f"{STORE}/referral/me", headers=a).json()["code"]
    b_id, b, _ = login(client, demo, f"{tag}-b", inviter=code)
    add_address(client, b)
    return a_id, a, dist, b_id, b, frame


def test_a_partial_refund_reverses_commission_points_and_growth_in_proportion(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    a_id, _, dist, b_id, b, frame = _distributor_and_friend(client, demo, "refund")
    order = pay(client, b, submit(client, b, [(frame, 2)], coupon_ids=[])["id"])
    drain(session_factory, settings, demo)
    paid = 2 * FRAME
    (c,) = _commission(client, demo, order["id"])
    assert (c["base_amount"], c["amount"], c["reversed_amount"]) == (paid, paid * RATE_BP // 10000, 0)
    got = _loyalty(client, demo, b_id)
    assert (got["points_balance"], got["growth"], got["paid_spend"]) == (paid // 100 + 50, paid // 100, paid)

    # finance refunds one of the two frames: exactly half of everything comes back
    r = client.post(f"{ADMIN}/orders/{order['id']}/refunds", headers={**demo.finance, **key()},
                    json={"lines": [{"order_line_id": order["lines"][0]["id"], "quantity": 1}]})
    assert r.status_code == 201 and r.json()["amount"] == FRAME, r.text
    drain(session_factory, settings, demo)
    (c,) = _commission(client, demo, order["id"])
    assert (c["amount"], c["reversed_amount"], c["status"]) == (4000, 2000, "pending")
    assert _account(client, demo, dist) == (2000, 0, 0, 0, 0)
    got = _loyalty(client, demo, b_id)
    assert (got["points_balance"], got["growth"], got["paid_spend"]) == (
        (paid - FRAME) // 100 + 50, (paid - FRAME) // 100, paid - FRAME)
    # the first-order rewards stand: the order is still paid for one frame
    rewards = client.get(f"{ADMIN}/referral/rewards", params={"page_size": 100}, headers=demo.owner).json()["items"]
    assert sorted((x["role"], x["status"]) for x in rewards if x["invitee_member_id"] == b_id) == [
        ("invitee", "granted"), ("inviter", "granted")]
    assert _loyalty(client, demo, a_id)["points_balance"] == 100


def test_a_full_refund_of_the_annual_card_revokes_it_and_its_level(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    stop_running_promotions(client, demo)
    assert client.put(f"{ADMIN}/loyalty/rules", json=RULES, headers=demo.operator).status_code == 200
    levels = {lv["name"]: lv["id"] for lv in client.get(f"{ADMIN}/loyalty/levels", headers=demo.operator).json()}
    (plan,) = client.get(f"{ADMIN}/loyalty/cards", headers=demo.operator).json()
    member_id, headers, _ = login(client, demo, "card-refund-1")
    r = client.post(f"{STORE}/loyalty/cards/{plan['id']}/buy", json={}, headers={**headers, **key()})
    assert r.status_code == 201, r.text
    card_order = pay(client, headers, r.json()["id"])
    drain(session_factory, settings, demo)
    price = card_order["paid_amount"]
    got = _loyalty(client, demo, member_id)
    assert (got["level_id"], got["level_source"], got["points_balance"]) == (levels["中级会员"], "card", price // 100)
    r = client.post(f"{ADMIN}/orders/{card_order['id']}/refunds", json={"amount": price},
                    headers={**demo.finance, **key()})
    assert r.status_code == 201, r.text
    drain(session_factory, settings, demo)
    got = _loyalty(client, demo, member_id)
    assert (got["level_id"], got["level_source"], got["card_until"]) == (levels["普通会员"], "rules", None)
    assert (got["points_balance"], got["growth"], got["paid_spend"]) == (0, 0, 0)
    cards = client.get(f"{ADMIN}/loyalty/members/{member_id}/cards", headers=demo.operator).json()
    assert [(x["order_id"], x["status"]) for x in cards] == [(card_order["id"], "revoked")]


def test_a_fully_refunded_order_no_longer_counts_as_a_paid_order(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    stop_running_promotions(client, demo)
    (sku,) = new_product(client, demo, "走查 全额退款 镜框", [FRAME])
    member_id, headers, _ = login(client, demo, "full-refund-1")
    add_address(client, headers)
    order = pay(client, headers, submit(client, headers, [(sku, 1)], coupon_ids=[])["id"])
    drain(session_factory, settings, demo)
    assert _loyalty(client, demo, member_id)["paid_orders"] == 1
    r = client.post(f"{ADMIN}/orders/{order['id']}/refunds", json={"amount": order["paid_amount"]},
                    headers={**demo.finance, **key()})
    assert r.status_code == 201, r.text
    drain(session_factory, settings, demo)
    got = _loyalty(client, demo, member_id)
    assert got["paid_spend"] == 0
    assert got["paid_orders"] == 0
    # a repeated refund notification changes nothing (the refund is handled once)
    from siyu.db.session import unit_of_work
    from siyu.loyalty import service as loyalty

    with unit_of_work(session_factory) as s:
        refund_id = r.json()["id"]
        loyalty.on_order_refunded(s, demo.merchant_id, order["id"], refund_id, order["paid_amount"], full=True)
    assert _loyalty(client, demo, member_id)["paid_orders"] == 0


def test_a_full_refund_of_the_first_order_revokes_both_rewards_and_reverses_the_commission(
    client: TestClient, demo: Demo, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    a_id, _, dist, b_id, b, frame = _distributor_and_friend(client, demo, "first-refund")
    order = pay(client, b, submit(client, b, [(frame, 1)], coupon_ids=[])["id"])
    drain(session_factory, settings, demo)
    assert _loyalty(client, demo, a_id)["points_balance"] == 100
    assert _account(client, demo, dist) == (FRAME * RATE_BP // 10000, 0, 0, 0, 0)
    r = client.post(f"{ADMIN}/orders/{order['id']}/refunds", json={"amount": order["paid_amount"]},
                    headers={**demo.finance, **key()})
    assert r.status_code == 201, r.text
    drain(session_factory, settings, demo)
    rewards = client.get(f"{ADMIN}/referral/rewards", params={"page_size": 100}, headers=demo.owner).json()["items"]
    assert sorted((x["role"], x["status"]) for x in rewards if x["invitee_member_id"] == b_id) == [
        ("invitee", "revoked"), ("inviter", "revoked")]
    (c,) = _commission(client, demo, order["id"])
    assert (c["status"], c["reversed_amount"]) == ("reversed", c["amount"])
    assert _account(client, demo, dist) == (0, 0, 0, 0, 0)
    assert _loyalty(client, demo, a_id)["points_balance"] == 0
    got = _loyalty(client, demo, b_id)
    assert (got["points_balance"], got["growth"], got["paid_spend"]) == (0, 0, 0)
    invitees = client.get(f"{ADMIN}/referral/members/{a_id}/invitees", headers=demo.operator).json()["items"]
    assert [(i["member_id"], i["paid_orders"], i["paid_amount"]) for i in invitees] == [(b_id, 0, 0)]
