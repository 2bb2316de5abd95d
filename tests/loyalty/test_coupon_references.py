"""A loyalty rule or level naming a coupon template the store does not have is refused on write
(422 at its path, nothing saved); one of the store's own templates is accepted."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.tenancy import service as tenancy_service
from tests.conftest import Tenant, unique
from tests.coupons.helpers import make_template

ADMIN = "/api/admin/v1/loyalty"


def test_rules_and_levels_refuse_a_coupon_template_of_no_one_or_of_another_store(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    own = make_template(session_factory, tenant.id, "fixed", amount=500)
    with unit_of_work(session_factory) as s:
        other_merchant = tenancy_service.create_merchant(s, code=unique("m"), name="other").id
    foreign = make_template(session_factory, other_merchant, "fixed", amount=500)
    before = client.get(f"{ADMIN}/rules", headers=tenant.admin_headers).json()
    for missing in (foreign, own + 10_000_000):
        r = client.put(f"{ADMIN}/rules", headers=tenant.admin_headers, json={"check_in": {"streak_rewards": [
            {"day": 3, "points": 10}, {"day": 7, "coupon_template_id": missing}]}})
        assert r.status_code == 422, r.text
        assert [(f["path"], f["code"]) for f in r.json()["fields"]] == [
            ("check_in.streak_rewards.1.coupon_template_id", "coupon_template_not_found")]
        r = client.post(f"{ADMIN}/levels", headers=tenant.admin_headers,
                        json={"rank": 1, "name": "金卡", "coupon_template_ids": [own, missing]})
        assert r.status_code == 422 and r.json()["fields"][0]["path"] == "coupon_template_ids.1", r.text
        r = client.post(f"{ADMIN}/levels", headers=tenant.admin_headers,
                        json={"rank": 1, "name": "金卡", "birthday_coupon_template_id": missing})
        assert r.status_code == 422 and r.json()["fields"][0]["path"] == "birthday_coupon_template_id", r.text
    assert client.get(f"{ADMIN}/rules", headers=tenant.admin_headers).json() == before
    assert client.get(f"{ADMIN}/levels", headers=tenant.admin_headers).json() == []

    r = client.put(f"{ADMIN}/rules", headers=tenant.admin_headers, json={"check_in": {"total_rewards": [
        {"day": 10, "coupon_template_id": own}]}})
    assert r.status_code == 200, r.text
    r = client.post(f"{ADMIN}/levels", headers=tenant.admin_headers,
                    json={"rank": 1, "name": "金卡", "coupon_template_ids": [own], "birthday_coupon_template_id": own})
    assert r.status_code == 201, r.text
