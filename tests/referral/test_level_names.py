"""Distributor levels: a name another level holds is a clear 409 on create and on rename (it
was a 500 on rename, found fuzzing), changing nothing; a rank beyond its range is a 422 on the field."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import Tenant, staff_headers

LEVELS = "/api/admin/v1/referral/levels"


def test_a_taken_name_is_refused_on_create_and_on_rename(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    h = {**staff_headers(session_factory, tenant, "owner"), "Accept-Language": "en"}
    gold = client.post(LEVELS, json={"name": "金牌", "tier1_rate_bp": 1000}, headers=h)
    silver = client.post(LEVELS, json={"name": "银牌", "tier1_rate_bp": 500}, headers=h)
    assert gold.status_code == silver.status_code == 201, (gold.text, silver.text)

    again = client.post(LEVELS, json={"name": "金牌", "tier1_rate_bp": 800}, headers=h)
    assert again.status_code == 409 and again.json()["code"] == "distributor_level_name_taken", again.text
    assert again.json()["message"] == "A distributor level is already named 金牌"

    rename = client.patch(f"{LEVELS}/{silver.json()['id']}", json={"name": "金牌", "tier1_rate_bp": 900},
                          headers={**h, "Accept-Language": "zh-CN"})
    assert rename.status_code == 409 and rename.json()["code"] == "distributor_level_name_taken", rename.text
    assert "金牌" in rename.json()["message"]

    levels = {lv["name"]: lv for lv in client.get(LEVELS, headers=h).json()}
    assert set(levels) == {"金牌", "银牌"}
    assert levels["银牌"]["tier1_rate_bp"] == 500 and levels["金牌"]["tier1_rate_bp"] == 1000  # nothing changed

    ok = client.patch(f"{LEVELS}/{silver.json()['id']}", json={"name": "银牌 Plus"}, headers=h)
    assert ok.status_code == 200 and ok.json()["name"] == "银牌 Plus", ok.text


def test_a_rank_beyond_its_range_is_a_field_error(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    h = staff_headers(session_factory, tenant, "owner")
    r = client.post(LEVELS, json={"name": "铜牌", "tier1_rate_bp": 100, "rank": 2**40}, headers=h)
    assert r.status_code == 422, r.text
    assert [f["path"] for f in r.json()["fields"]] == ["body.rank"]
    assert client.get(LEVELS, headers=h).json() == []
