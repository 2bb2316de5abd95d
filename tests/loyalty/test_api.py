"""The loyalty HTTP API: admin rules (negative numbers refused, nothing saved), levels, manual
adjustment (idempotent), statement by keyset, member summary; store points, level progress,
check-in and calendar; a foreign member is a 404; the member 360 view shows the loyalty part."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.members import profile
from siyu.tenancy import service as tenancy_service
from tests.conftest import Tenant, customer_login, unique
from tests.factories.orders import make_member
from tests.loyalty import helpers as h

ADMIN = "/api/admin/v1/loyalty"
STORE = "/api/store/v1/loyalty"


def test_rules_with_negative_numbers_are_refused_and_nothing_changes(client: TestClient, tenant: Tenant) -> None:
    before = client.get(f"{ADMIN}/rules", headers=tenant.admin_headers).json()
    for bad in (
        {"earn": {"points_per_yuan": -1}},
        {"deduction": {"max_percent": 150}},
        {"check_in": {"streak_rewards": [{"day": 7, "points": -50}]}},
        {"earn": {"tasks": {"share": {"points": 5, "daily_cap": -1}}}},
        {"expiry": {"mode": "days", "days": 0}},
    ):
        r = client.put(f"{ADMIN}/rules", json=bad, headers=tenant.admin_headers)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["code"] == "validation_error"
    assert client.get(f"{ADMIN}/rules", headers=tenant.admin_headers).json() == before
    r = client.put(f"{ADMIN}/rules", json={"earn": {"points_per_yuan": 2}}, headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["earn"]["points_per_yuan"] == 2


def test_levels_with_negative_thresholds_or_duplicate_rank_are_refused(client: TestClient, tenant: Tenant) -> None:
    r = client.post(f"{ADMIN}/levels", json={"rank": 1, "name": "正式会员", "min_spend": -300},
                    headers=tenant.admin_headers)
    assert r.status_code == 422
    r = client.post(f"{ADMIN}/levels", json={"rank": 1, "name": "正式会员", "min_spend": 30000},
                    headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    r = client.post(f"{ADMIN}/levels", json={"rank": 1, "name": "重复"}, headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "level_rank_taken"
    assert [lv["name"] for lv in client.get(f"{ADMIN}/levels", headers=tenant.admin_headers).json()] == ["正式会员"]


def test_adjust_statement_and_summary(client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = make_member(session_factory, tenant.id)
    url = f"{ADMIN}/members/{member}/points/adjust"
    r = client.post(url, json={"points": 120, "reason": "客诉补偿"}, headers={**tenant.admin_headers, "Idempotency-Key": "a1"})
    assert r.status_code == 201, r.text
    again = client.post(url, json={"points": 120, "reason": "客诉补偿"}, headers={**tenant.admin_headers, "Idempotency-Key": "a1"})
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
    r = client.post(url, json={"points": -500, "reason": "fix"}, headers={**tenant.admin_headers, "Idempotency-Key": "a2"})
    assert r.status_code == 409 and r.json()["code"] == "points_insufficient"
    r = client.post(url, json={"points": 5, "reason": "x"}, headers=tenant.admin_headers)
    assert r.status_code == 400 and r.json()["code"] == "idempotency_key_required"
    for i in range(3):
        client.post(url, json={"points": -10, "reason": "扣减"}, headers={**tenant.admin_headers, "Idempotency-Key": f"d{i}"})
    page = client.get(f"{ADMIN}/members/{member}/points?limit=2", headers=tenant.admin_headers).json()
    assert [e["delta"] for e in page["items"]] == [-10, -10] and page["next_before"] is not None
    rest = client.get(f"{ADMIN}/members/{member}/points?limit=2&before={page['next_before']}",
                      headers=tenant.admin_headers).json()
    assert [e["delta"] for e in rest["items"]] == [-10, 120] and rest["next_before"] is None
    summary = client.get(f"{ADMIN}/members/{member}", headers=tenant.admin_headers).json()
    assert summary["points_balance"] == 90 and summary["level_id"] is None


def test_a_member_of_another_merchant_is_a_404(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    own = make_member(session_factory, tenant.id)
    assert client.get(f"{ADMIN}/members/{own}", headers=tenant.admin_headers).status_code == 200
    with unit_of_work(session_factory) as s:
        foreign_merchant = tenancy_service.create_merchant(s, code=unique("m"), name="other").id
    foreign = make_member(session_factory, foreign_merchant)
    for path in (f"{ADMIN}/members/{foreign}", f"{ADMIN}/members/{foreign}/points"):
        r = client.get(path, headers=tenant.admin_headers)
        assert r.status_code == 404, path
    r = client.post(f"{ADMIN}/members/{foreign}/points/adjust", json={"points": 5, "reason": "x"},
                    headers={**tenant.admin_headers, "Idempotency-Key": "f"})
    assert r.status_code == 404
    assert h.entries(session_factory, foreign_merchant, foreign) == []


def test_store_check_in_points_level_and_calendar(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    client.post(f"{ADMIN}/levels", json={"rank": 0, "name": "普通会员"}, headers=tenant.admin_headers)
    client.post(f"{ADMIN}/levels", json={"rank": 1, "name": "正式会员", "min_spend": 30000, "min_points": 100},
                headers=tenant.admin_headers)
    headers = customer_login(client, tenant)
    r = client.post(f"{STORE}/me/check-in", headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["streak"] == 1 and r.json()["points"] == 5
    r = client.post(f"{STORE}/me/check-in", headers=headers)
    assert r.status_code == 409 and r.json()["code"] == "checkin_already"
    r = client.post(f"{STORE}/me/check-in", headers={**headers, "Accept-Language": "en"})
    assert r.json()["message"] == "Already checked in today"
    points = client.get(f"{STORE}/me/points", headers=headers).json()
    assert points["balance"] == 5 and points["expiring_soon"] == 0
    statement = client.get(f"{STORE}/me/points/statement", headers=headers).json()
    assert [(e["kind"], e["delta"]) for e in statement["items"]] == [("earn", 5)]
    level = client.get(f"{STORE}/me/level", headers=headers).json()
    assert level["level"]["name"] == "普通会员" and level["next_level"]["name"] == "正式会员"
    assert level["progress"] == {"spend": {"have": 0, "need": 30000}, "points": {"have": 5, "need": 100}}
    cal = client.get(f"{STORE}/me/check-ins", headers=headers).json()
    assert cal["streak"] == 1 and len(cal["days"]) == 1
    assert client.get(f"{STORE}/me/check-ins?month=2026-13", headers=headers).status_code == 422
    share = client.post(f"{STORE}/me/tasks/share", json={"ref": "page-1"}, headers=headers).json()
    assert share["rewarded"] is True
    me = client.get(f"{STORE}/me", headers=headers).json()
    assert me["points_balance"] == 10 and me["checked_in_today"] is True


def test_member_360_carries_the_loyalty_section(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 42, "g")
    with session_factory() as s:
        view = profile.member_360(s, tenant.id, member)
    assert view["loyalty"]["points_balance"] == 42 and view["loyalty"]["check_in_streak"] == 0


def test_card_plan_for_another_merchants_product_is_refused(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    from siyu.catalog.models import Sku
    from tests.factories.orders import make_sku

    with unit_of_work(session_factory) as s:
        foreign_merchant = tenancy_service.create_merchant(s, code=unique("m"), name="other").id
    foreign_sku = make_sku(session_factory, foreign_merchant, price=9900)
    with session_factory() as s:
        product_id = s.get(Sku, foreign_sku).product_id  # type: ignore[union-attr]
    r = client.post(f"{ADMIN}/cards", json={"name": "年卡", "product_id": product_id}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["path"] == "product_id"
    assert client.get(f"{ADMIN}/cards", headers=tenant.admin_headers).json() == []


def test_store_makeup_over_http(client: TestClient, tenant: Tenant) -> None:
    import datetime as dt

    from siyu.kit.timeutil import local_date, utcnow

    r = client.put(f"{ADMIN}/rules", json={"check_in": {"makeup": {"enabled": True, "cost_points": 0, "within_days": 3}}},
                   headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    headers = customer_login(client, tenant)
    today = local_date(utcnow(), "Asia/Shanghai")
    assert client.post(f"{STORE}/me/check-in", headers=headers).status_code == 201
    r = client.post(f"{STORE}/me/check-in/makeup", json={"day": (today - dt.timedelta(days=1)).isoformat()}, headers=headers)
    assert r.status_code == 201 and r.json()["makeup"] is True
    r = client.post(f"{STORE}/me/check-in/makeup", json={"day": (today - dt.timedelta(days=9)).isoformat()}, headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "makeup_not_allowed"
    assert client.get(f"{STORE}/me", headers=headers).json()["check_in_streak"] == 2


def test_level_update_keeps_ranks_unique(client: TestClient, tenant: Tenant) -> None:
    a = client.post(f"{ADMIN}/levels", json={"rank": 0, "name": "A"}, headers=tenant.admin_headers).json()
    client.post(f"{ADMIN}/levels", json={"rank": 1, "name": "B"}, headers=tenant.admin_headers)
    r = client.put(f"{ADMIN}/levels/{a['id']}", json={"rank": 1, "name": "A"}, headers=tenant.admin_headers)
    assert r.status_code == 409
    r = client.put(f"{ADMIN}/levels/{a['id']}", json={"rank": 0, "name": "A+", "member_price_percent": 0},
                   headers=tenant.admin_headers)
    assert r.status_code == 422
    r = client.put(f"{ADMIN}/levels/{a['id']}", json={"rank": 0, "name": "A+"}, headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["name"] == "A+"
    assert client.put(f"{ADMIN}/levels/999999", json={"rank": 5, "name": "x"}, headers=tenant.admin_headers).status_code == 404


def test_the_member_data_export_carries_the_loyalty_ledger(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    from siyu.members import privacy

    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 30, "x1")
    h.spend(session_factory, tenant.id, member, 10, "x2")
    with session_factory() as s:
        doc = privacy.export(s, tenant.id, member)
    assert [e["delta"] for e in doc["loyalty"]["points_entries"]] == [30, -10]
    assert doc["loyalty"]["summary"]["points_balance"] == 20
