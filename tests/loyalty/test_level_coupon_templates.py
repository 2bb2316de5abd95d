"""Deleting a level that level-exclusive coupon templates name: refused with 409 level_in_use
naming the draft / active templates (nothing changed); a stopped template does not hold it."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.coupons import repository as coupons_repo
from tests.conftest import Tenant
from tests.coupons.helpers import make_template
from tests.loyalty import helpers as h

ADMIN = "/api/admin/v1"


def _level_ids(client: TestClient, tenant: Tenant) -> list[int]:
    return [lv["id"] for lv in client.get(f"{ADMIN}/loyalty/levels", headers=tenant.admin_headers).json()]


def test_a_level_named_by_draft_or_active_coupon_templates_cannot_be_deleted(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    h.add_level(session_factory, tenant.id, 1, "普通会员")
    gold = h.add_level(session_factory, tenant.id, 2, "金卡", min_spend=100_000)
    diamond = h.add_level(session_factory, tenant.id, 3, "钻石卡", min_spend=500_000)
    active = make_template(session_factory, tenant.id, name="金卡专享", level_ids=[gold])
    draft = make_template(session_factory, tenant.id, name="高等级专享", status="draft", level_ids=[gold, diamond])
    make_template(session_factory, tenant.id, name="通用券")
    with session_factory() as s:
        assert coupons_repo.templates_naming_level(s, tenant.id, gold) == [active, draft]
        assert coupons_repo.templates_naming_level(s, tenant.id, diamond) == [draft]
    before = _level_ids(client, tenant)

    for lang, text in (("en", f"coupon template(s) are exclusive to it ({active},{draft})"),
                       ("zh-CN", f"2 个未停用的优惠券模板限定该等级（{active},{draft}）")):
        r = client.delete(f"{ADMIN}/loyalty/levels/{gold}", headers={**tenant.admin_headers, "Accept-Language": lang})
        assert r.status_code == 409 and r.json()["code"] == "level_in_use", r.text
        assert r.json()["detail"]["coupon_template_ids"] == f"{active},{draft}" and text in r.json()["message"]
    assert _level_ids(client, tenant) == before

    # Stopping the active template and pointing the draft elsewhere frees the level.
    r = client.patch(f"{ADMIN}/coupon-templates/{active}", json={"status": "stopped"}, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    r = client.delete(f"{ADMIN}/loyalty/levels/{gold}", headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["detail"]["coupon_template_ids"] == str(draft), r.text
    r = client.patch(f"{ADMIN}/coupon-templates/{draft}", json={"level_ids": [diamond]}, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    assert client.delete(f"{ADMIN}/loyalty/levels/{gold}", headers=tenant.admin_headers).status_code == 204
    assert _level_ids(client, tenant) == [lid for lid in before if lid != gold]
