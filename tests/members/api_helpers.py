"""Builders for the members API tests: customers through the sandbox login, staff logins that
know their own id, a second merchant, and counts for "nothing changed" assertions."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from tests.conftest import Tenant, unique

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"


def login(client: TestClient, tenant: Tenant, *, channel: str | None = None) -> tuple[int, dict[str, str]]:
    """A new member through the sandbox WeChat login: ``(member_id, customer headers)``."""
    body: dict[str, Any] = {"code": f"sandbox-{uuid.uuid4().hex[:12]}"}
    if channel:
        body["channel"] = channel
    r = client.post(f"{STORE}/auth/wechat-login", json=body, headers=tenant.store_headers)
    assert r.status_code == 200, r.text
    return int(r.json()["member_id"]), {"Authorization": f"Bearer {r.json()['token']}"}


def staff(factory: sessionmaker[Session], tenant: Tenant, role: str = "staff") -> tuple[int, dict[str, str]]:
    """A new staff member of ``tenant`` with ``role``, logged in: ``(staff_id, headers)``."""
    from siyu.tenancy import service

    username = f"{role}-{uuid.uuid4().hex[:6]}"
    with unit_of_work(factory) as s:
        row = service.create_staff(s, tenant.id, username=username, password="pass-word-1", role=role)
        token, _ = service.login_staff(
            s, merchant_code=tenant.code, username=username, password="pass-word-1", ttl=dt.timedelta(hours=1)
        )
        return row.id, {"Authorization": f"Bearer {token}"}


def other_tenant(factory: sessionmaker[Session]) -> Tenant:
    from siyu.tenancy import service

    code = unique("m")
    with unit_of_work(factory) as s:
        merchant = service.create_merchant(s, code=code, name=f"Other {code}")
        owner = service.create_staff(s, merchant.id, username="owner", password="owner-pass-1", role="owner")
        token, _ = service.login_staff(
            s, merchant_code=code, username="owner", password="owner-pass-1", ttl=dt.timedelta(hours=1)
        )
        return Tenant(id=merchant.id, code=code, owner_id=owner.id, owner_token=token)


def count(factory: sessionmaker[Session], model: Any, merchant_id: int, **where: Any) -> int:
    with factory() as s:
        stmt = select(func.count()).select_from(model).where(model.merchant_id == merchant_id)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return int(s.scalar(stmt) or 0)


def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json() if resp.content and resp.headers.get("content-type", "").startswith("application/json") else None


def refused(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["code"] == code, resp.text
    return body
