"""Admin rules for group-buy activities, the checkout preview with the group-buy option and its
stacking flags, and a paid member refunded by after-sales while the team is still open."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.kit.timeutil import utcnow
from tests.conftest import Tenant
from tests.coupons.helpers import give, make_template
from tests.factories import payments as f
from tests.factories.orders import make_sku
from tests.factories.promotions import create_promotion
from tests.group_buys import helpers as h

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"


def _window(start: dt.timedelta, length: dt.timedelta = dt.timedelta(days=1)) -> dict[str, str]:
    now = utcnow()
    return {"starts_at": (now + start).isoformat(), "ends_at": (now + start + length).isoformat()}


def test_admin_create_update_disable_delete(client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    base = {"name": "团", "sku_id": sku, "team_size": 3, "group_price": 7000}
    # bad rules: 422 with the field, nothing created
    for extra, path in [
        ({"group_price": 10000}, "group_price"),
        ({"leader_price": 8000}, "leader_price"),
        ({"virtual_min_paid": 3}, "virtual_min_paid"),
    ]:
        r = client.post(f"{ADMIN}/group-buys", json={**base, **extra, **_window(dt.timedelta(hours=1))},
                        headers=tenant.admin_headers)
        assert r.status_code == 422 and r.json()["fields"][0]["path"] == path, r.text
    assert client.get(f"{ADMIN}/group-buys", headers=tenant.admin_headers).json()["total"] == 0

    running = client.post(f"{ADMIN}/group-buys", json={**base, **_window(dt.timedelta(hours=-1))},
                          headers=tenant.admin_headers).json()
    upcoming = client.post(f"{ADMIN}/group-buys", json={**base, **_window(dt.timedelta(hours=2))},
                           headers=tenant.admin_headers).json()
    assert upcoming["effective_status"] == "scheduled"
    # prices change only before the start
    r = client.patch(f"{ADMIN}/group-buys/{running['id']}", json={"group_price": 6000}, headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "group_buy_state_invalid"
    # so do the limit and the team's validity (issue 3: the rules are decided before the start)
    for change in ({"per_member_limit": 3}, {"valid_hours": 48}, {"name": "三人团", "per_member_limit": 3}):
        r = client.patch(f"{ADMIN}/group-buys/{running['id']}", json=change, headers=tenant.admin_headers)
        assert r.status_code == 409 and r.json()["code"] == "group_buy_state_invalid", r.text
        assert "active" in r.json()["message"]
    got = client.get(f"{ADMIN}/group-buys/{running['id']}", headers=tenant.admin_headers).json()
    assert (got["name"], got["per_member_limit"], got["valid_hours"]) == ("团", 1, 24)
    # the name and the end change any time
    new_end = (utcnow() + dt.timedelta(days=2)).replace(microsecond=0)
    r = client.patch(f"{ADMIN}/group-buys/{running['id']}", json={"name": "三人团", "ends_at": new_end.isoformat()},
                     headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["name"] == "三人团" and r.json()["group_price"] == 7000
    assert dt.datetime.fromisoformat(r.json()["ends_at"]) == new_end
    r = client.patch(f"{ADMIN}/group-buys/{upcoming['id']}", json={"per_member_limit": 3, "valid_hours": 48},
                     headers=tenant.admin_headers)
    assert r.status_code == 200 and (r.json()["per_member_limit"], r.json()["valid_hours"]) == (3, 48), r.text
    props = client.get("/openapi.json").json()["components"]["schemas"]["GroupBuyUpdate"]["properties"]
    assert {props[k]["description"] for k in ("per_member_limit", "valid_hours", "group_price")} == {
        "before the start only"}
    assert props["name"]["description"] == "any time"
    r = client.patch(f"{ADMIN}/group-buys/{upcoming['id']}", json={"group_price": 6000}, headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["group_price"] == 6000

    # an activity with a team cannot be deleted; one without can
    h.lead_marked_paid(session_factory, tenant.id, f.paying_customer(session_factory, tenant.id)[0], sku, running["id"])
    r = client.delete(f"{ADMIN}/group-buys/{running['id']}", headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "group_buy_state_invalid"
    assert client.delete(f"{ADMIN}/group-buys/{upcoming['id']}", headers=tenant.admin_headers).status_code == 204
    assert client.get(f"{ADMIN}/group-buys/{upcoming['id']}", headers=tenant.admin_headers).status_code == 404

    # disabled: hidden from the store, no new teams
    r = client.post(f"{ADMIN}/group-buys/{running['id']}/disable", headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["effective_status"] == "disabled" and r.json()["teams_open"] == 1
    assert client.get(f"{STORE}/group-buys/{running['id']}", headers=tenant.store_headers).status_code == 404
    _, headers = f.paying_customer(session_factory, tenant.id)
    r = client.post(f"{STORE}/group-buys/{running['id']}/teams", json={}, headers={**headers, "Idempotency-Key": "k"})
    assert r.status_code == 404


def test_preview_prices_the_group_buy_and_sets_the_stacking_flags(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=2, group_price=6500, leader_price=6000,
                          per_member_limit=3, free_shipping=True, allows_points=True)
    _, headers = f.paying_customer(session_factory, tenant.id)
    body = {"items": [{"sku_id": sku, "quantity": 2}], "options": {"group_buy": {"activity_id": gb}}}
    r = client.post(f"{STORE}/checkout/preview", json=body, headers=headers)
    assert r.status_code == 200, r.text
    out = r.json()
    (line,) = out["lines"]
    assert line["payable_amount"] == 2 * 6000  # leader price when opening
    assert line["flags"]["activity"] == f"group_buy:{gb}"
    assert line["flags"]["no_coupon"] is True and line["flags"]["no_points"] is False
    assert line["flags"]["no_order_promotions"] is True and line["flags"]["free_shipping"] is True
    assert any(row["code"] == f"group_buy:{gb}" and row["amount"] == -8000 for row in out["breakdown"])
    # a malformed option is a 422 on its path
    bad = {**body, "options": {"group_buy": {"activity_id": "x"}}}
    r = client.post(f"{STORE}/checkout/preview", json=bad, headers=headers)
    assert r.status_code == 422 and r.json()["fields"][0]["path"] == "options.group_buy.activity_id"


def test_member_refunded_in_full_while_the_team_is_open_gives_the_seat_up(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    gb = h.make_group_buy(session_factory, tenant.id, sku, team_size=3)
    (leader, lh), (friend, fh) = (f.paying_customer(session_factory, tenant.id) for _ in range(2))
    _, team_id = h.lead(client, session_factory, settings, tenant.id, (leader, lh), sku, gb)
    second = h.submit(session_factory, tenant.id, friend, sku, gb, team_id)
    h.pay(client, second, fh)
    h.drain(session_factory, settings, tenant.id)
    assert h.team(session_factory, team_id).paid_count == 2

    paid = f.order(session_factory, tenant.id, second).paid_amount
    r = client.post(f"{ADMIN}/orders/{second}/refunds", json={"amount": paid},
                    headers={**tenant.admin_headers, "Idempotency-Key": "as-1"})
    assert r.status_code == 201, r.text
    h.drain(session_factory, settings, tenant.id)
    team = h.team(session_factory, team_id)
    assert team.status == "open" and team.paid_count == 1 and team.filled == 1
    assert [s.status for s in h.seats(session_factory, tenant.id, team_id)] == ["paid", "refunded"]
    # the seat is free again: someone else can take it
    third = f.paying_customer(session_factory, tenant.id)[0]
    h.submit(session_factory, tenant.id, third, sku, gb, team_id)
    assert h.team(session_factory, team_id).filled == 2


def _order_promotion_preview(
    client: TestClient, headers: dict[str, str], items: list[tuple[int, int]], gb: int
) -> dict[str, Any]:
    body = {"items": [{"sku_id": s, "quantity": q} for s, q in items], "coupon_ids": [],
            "options": {"group_buy": {"activity_id": gb}}}
    r = client.post(f"{STORE}/checkout/preview", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _order_promotion_rows(out: dict[str, Any]) -> list[tuple[str, int]]:
    return [(row["code"], row["amount"]) for row in out["breakdown"] if row["stage"] == "order_promotions"]


def test_group_buy_lines_take_spend_and_save_only_when_the_activity_allows_order_promotions(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    plain = make_sku(session_factory, tenant.id, price=3000)
    save = create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 8000, "discount": 1000}]})
    code = f"spend_save:{save['id']}"
    off = h.make_group_buy(session_factory, tenant.id, sku, group_price=6000)
    member, headers = f.paying_customer(session_factory, tenant.id)

    # the default: off. The ¥60 group-buy line does not count: ¥30 alone is under ¥80 ...
    out = _order_promotion_preview(client, headers, [(sku, 1), (plain, 1)], off)
    assert out["lines"][0]["flags"]["no_order_promotions"] is True
    assert _order_promotion_rows(out) == []
    assert [ln["payable_amount"] for ln in out["lines"]] == [6000, 3000]
    # ... and with ¥90 of plain goods the threshold is met by them alone: the whole ¥10 is theirs
    out = _order_promotion_preview(client, headers, [(sku, 1), (plain, 3)], off)
    assert _order_promotion_rows(out) == [(code, -1000)]
    assert [ln["discounts"].get("order_promotions", 0) for ln in out["lines"]] == [0, 1000]
    assert [ln["payable_amount"] for ln in out["lines"]] == [6000, 9000 - 1000]

    # allowed: ¥60 + ¥30 = ¥90 ≥ ¥80 saves ¥10, allocated 60:30 by largest remainder (666.67 / 333.33)
    on = h.make_group_buy(session_factory, tenant.id, sku, group_price=6000, allows_order_promotions=True)
    out = _order_promotion_preview(client, headers, [(sku, 1), (plain, 1)], on)
    assert out["lines"][0]["flags"]["no_order_promotions"] is False
    assert _order_promotion_rows(out) == [(code, -1000)]
    assert [ln["discounts"].get("order_promotions", 0) for ln in out["lines"]] == [667, 333]
    assert [ln["payable_amount"] for ln in out["lines"]] == [6000 - 667, 3000 - 333]
    # still no coupon (its own setting: a coupon asked for is refused as the activity's rule),
    # and the submit keeps the same allocation
    assert out["lines"][0]["flags"]["no_coupon"] is True
    coupon = give(session_factory, tenant.id, make_template(session_factory, tenant.id, "fixed", amount=500), member)
    body = {"items": [{"sku_id": sku, "quantity": 1}], "coupon_ids": [coupon],
            "options": {"group_buy": {"activity_id": on}}}
    r = client.post(f"{STORE}/checkout/preview", json=body, headers=headers)
    assert r.status_code == 409 and r.json()["code"] == "coupon_excluded_by_activity", r.text
    body = {"items": [{"sku_id": sku, "quantity": 1}, {"sku_id": plain, "quantity": 1}], "coupon_ids": [],
            "options": {"group_buy": {"activity_id": on}}}
    r = client.post(f"{STORE}/checkout/submit", json=body, headers={**headers, "Idempotency-Key": "gb-save-1"})
    assert r.status_code == 201, r.text
    assert [ln["payable_amount"] for ln in r.json()["lines"]] == [6000 - 667, 3000 - 333]


def test_group_buy_order_promotion_setting_through_the_admin_api(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    base = {"name": "团", "sku_id": sku, "team_size": 2, "group_price": 7000}
    upcoming = client.post(f"{ADMIN}/group-buys", json={**base, **_window(dt.timedelta(hours=2))},
                           headers=tenant.admin_headers).json()
    assert upcoming["allows_order_promotions"] is False  # the default
    r = client.patch(f"{ADMIN}/group-buys/{upcoming['id']}", json={"allows_order_promotions": True},
                     headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["allows_order_promotions"] is True, r.text
    running = client.post(f"{ADMIN}/group-buys", json={**base, "allows_order_promotions": True,
                                                       **_window(dt.timedelta(hours=-1))},
                          headers=tenant.admin_headers).json()
    assert running["allows_order_promotions"] is True
    # a stacking setting is fixed once the activity has started
    r = client.patch(f"{ADMIN}/group-buys/{running['id']}", json={"allows_order_promotions": False},
                     headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "group_buy_state_invalid"
    r = client.get(f"{STORE}/group-buys/{running['id']}", headers=tenant.store_headers)
    assert r.status_code == 200 and r.json()["allows_order_promotions"] is True
