"""The loyalty task ``complete_profile`` fires once, when gender, birthday, city and phone are
all set — whichever path completes the profile (profile update or phone binding)."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.loyalty.models import PointsEntry
from tests.conftest import Tenant
from tests.referral import helpers as h

STORE = "/api/store/v1"


def _entries(session_factory: sessionmaker[Session], merchant_id: int, member_id: int) -> int:
    with session_factory() as s:
        return int(
            s.scalar(
                select(func.count()).where(
                    PointsEntry.merchant_id == merchant_id,
                    PointsEntry.member_id == member_id,
                    PointsEntry.idempotency_key.like("task:complete_profile:%"),
                )
            )
            or 0
        )


def _phone(client: TestClient, headers: dict[str, str]) -> None:
    code = f"sandbox-{uuid.uuid4().int % 10**8}"
    assert client.post(f"{STORE}/me/phone", json={"code": code}, headers=headers).status_code == 200


def test_complete_profile_fires_once_when_the_last_field_arrives(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    member_id, m = h.login(client, tenant)
    r = client.patch(f"{STORE}/me/profile", json={"gender": "female", "birthday": "1990-05-01"}, headers=m)
    assert r.status_code == 200, r.text
    _phone(client, m)
    h.drain(session_factory, settings, tenant)
    assert _entries(session_factory, tenant.id, member_id) == 0  # no city yet
    r = client.patch(f"{STORE}/me/profile", json={"gender": "unknown", "city": "杭州市"}, headers=m)
    assert r.status_code == 200, r.text
    h.drain(session_factory, settings, tenant)
    assert _entries(session_factory, tenant.id, member_id) == 0  # gender "unknown" is not set
    assert client.patch(f"{STORE}/me/profile", json={"gender": "female"}, headers=m).status_code == 200
    h.drain(session_factory, settings, tenant)
    assert _entries(session_factory, tenant.id, member_id) == 1
    assert client.patch(f"{STORE}/me/profile", json={"city": "宁波市"}, headers=m).status_code == 200
    h.drain(session_factory, settings, tenant)
    assert _entries(session_factory, tenant.id, member_id) == 1
    assert client.get(f"{STORE}/me/profile", headers=m).json()["city"] == "宁波市"


def test_phone_binding_can_complete_the_profile(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    member_id, m = h.login(client, tenant)
    body = {"gender": "male", "birthday": "1985-01-31", "city": "上海市"}
    assert client.patch(f"{STORE}/me/profile", json=body, headers=m).status_code == 200
    h.drain(session_factory, settings, tenant)
    assert _entries(session_factory, tenant.id, member_id) == 0
    _phone(client, m)
    h.drain(session_factory, settings, tenant)
    assert _entries(session_factory, tenant.id, member_id) == 1


def test_a_bad_profile_value_changes_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _, m = h.login(client, tenant)
    before = client.get(f"{STORE}/me/profile", headers=m).json()
    r = client.patch(f"{STORE}/me/profile", json={"gender": "x", "city": "杭州市"}, headers=m)
    assert r.status_code == 422
    assert client.get(f"{STORE}/me/profile", headers=m).json() == before
