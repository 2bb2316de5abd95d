"""An operator's points adjustment is a correction, not earning: it moves the balance and the
ledger but not the points earned that the ``min_points`` level rule reads, unless the operator
marks a positive one ``counts_as_earned``. Bad input is a field error with its own code in
English and zh-CN, and changes nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.loyalty import service
from tests.conftest import Tenant
from tests.factories.orders import make_member
from tests.loyalty import helpers as h

ADMIN = "/api/admin/v1/loyalty"


def _earned(factory: sessionmaker[Session], tenant: Tenant, member: int) -> tuple[int, int]:
    with factory() as s:
        out = service.points_summary(s, tenant.id, member)
    return out.balance, out.earned_total


def _ladder(factory: sessionmaker[Session], tenant: Tenant) -> None:
    h.add_level(factory, tenant.id, 0, "普通会员")
    h.add_level(factory, tenant.id, 1, "中级会员", min_points=100)


def test_an_adjustment_moves_the_balance_but_not_the_points_earned_unless_marked(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    _ladder(session_factory, tenant)
    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 99, "earned")
    assert h.level_of(session_factory, tenant.id, member) == "普通会员"
    for _ in range(2):  # the same key twice: one entry, and the replay takes back only what it added
        with unit_of_work(session_factory) as s:
            service.adjust(s, tenant.id, member, 500, reason="客诉补偿", idempotency_key="fix-1", actor=h.SYSTEM)
    assert _earned(session_factory, tenant, member) == (599, 99)
    assert h.level_of(session_factory, tenant.id, member) == "普通会员"  # 599 in the balance, 99 earned

    with unit_of_work(session_factory) as s:
        service.adjust(s, tenant.id, member, 1, reason="漏发的订单积分", idempotency_key="fix-2", actor=h.SYSTEM,
                       counts_as_earned=True)
    assert _earned(session_factory, tenant, member) == (600, 100)
    assert h.level_of(session_factory, tenant.id, member) == "中级会员"
    assert [(e.kind, e.delta, e.ref) for e in h.entries(session_factory, tenant.id, member)] == [
        ("earn", 99, None), ("adjust", 500, "manual"), ("adjust", 1, "manual:earned"),
    ]
    with unit_of_work(session_factory) as s:  # a negative correction takes points, never the earned total
        service.adjust(s, tenant.id, member, -600, reason="清零", idempotency_key="fix-3", actor=h.SYSTEM)
    assert _earned(session_factory, tenant, member) == (0, 100)
    assert h.balance(session_factory, tenant.id, member) == h.entries_sum(session_factory, tenant.id, member) == 0


def test_over_the_api_counts_as_earned_is_optional_documented_and_part_of_the_key(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    _ladder(session_factory, tenant)
    member = make_member(session_factory, tenant.id)
    url = f"{ADMIN}/members/{member}/points/adjust"
    r = client.post(url, json={"points": 100, "reason": "补偿"}, headers={**tenant.admin_headers, "Idempotency-Key": "a"})
    assert r.status_code == 201 and r.json()["ref"] == "manual"
    got = client.get(f"{ADMIN}/members/{member}", headers=tenant.admin_headers).json()
    assert (got["points_balance"], got["points_earned_total"], got["level_id"]) == (100, 0, None)

    body = {"points": 100, "reason": "漏发积分", "counts_as_earned": True}
    r = client.post(url, json=body, headers={**tenant.admin_headers, "Idempotency-Key": "b"})
    assert r.status_code == 201 and r.json()["ref"] == "manual:earned"
    again = client.post(url, json=body, headers={**tenant.admin_headers, "Idempotency-Key": "b"})
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
    other = client.post(url, json={**body, "counts_as_earned": False},
                        headers={**tenant.admin_headers, "Idempotency-Key": "b"})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"
    got = client.get(f"{ADMIN}/members/{member}", headers=tenant.admin_headers).json()
    assert (got["points_balance"], got["points_earned_total"], got["level_name"]) == (200, 100, "中级会员")

    schema = client.app.openapi()["components"]["schemas"]["AdjustIn"]  # type: ignore[attr-defined]
    assert "counts_as_earned" not in schema.get("required", [])
    assert "level rule" in schema["properties"]["counts_as_earned"]["description"]


def test_bad_adjustments_are_field_errors_in_both_languages_and_change_nothing(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 50, "earned")
    url = f"{ADMIN}/members/{member}/points/adjust"
    for i, (bad, path, code, en, zh) in enumerate((
        ({"points": -10, "reason": "扣减", "counts_as_earned": True}, "body.counts_as_earned",
         "adjust_earned_needs_positive", "Only an adjustment that adds points can count as earned",
         "只有增加积分的调整才能计入累计获得积分"),
        ({"points": 10, "reason": "补偿", "counts_as_earned": "maybe"}, "body.counts_as_earned", "bool_parsing",
         "Must be true or false", "应为 true 或 false"),
    )):
        for lang, message in (("en", en), ("zh-CN", zh)):
            r = client.post(url, json=bad, headers={**tenant.admin_headers, "Idempotency-Key": f"bad-{i}-{lang}",
                                                    "Accept-Language": lang})
            assert r.status_code == 422, r.text
            assert r.json()["code"] == "validation_error"
            assert [(x["path"], x["code"], x["message"]) for x in r.json()["fields"]] == [(path, code, message)]
    assert _earned(session_factory, tenant, member) == (50, 50)
    assert len(h.entries(session_factory, tenant.id, member)) == 1
