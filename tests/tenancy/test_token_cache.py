"""Authentication reads the database once per token and period, not once per request; a
revocation in this process takes effect at once, one elsewhere within ``TTL_SECONDS``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.tenancy import service, token_cache
from siyu.tenancy.models import AuthToken
from tests.conftest import Tenant, customer_login

ME = "/api/admin/v1/me"


class Statements:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.seen.append(statement)

    def touching(self, table: str) -> int:
        return sum(1 for s in self.seen if table in s)


@pytest.fixture
def statements(app: Any) -> Iterator[Statements]:
    engine: Engine = app.state.engine
    spy = Statements()
    event.listen(engine, "before_cursor_execute", spy)
    yield spy
    event.remove(engine, "before_cursor_execute", spy)


def test_a_second_request_with_the_same_token_reads_no_token(
    client: TestClient, tenant: Tenant, statements: Statements
) -> None:
    assert client.get(ME, headers=tenant.admin_headers).status_code == 200
    first = statements.touching("auth_tokens")
    assert first == 1
    for _ in range(3):
        assert client.get(ME, headers=tenant.admin_headers).status_code == 200
    assert statements.touching("auth_tokens") == first  # no further token read
    customer = customer_login(client, tenant)
    before = statements.touching("auth_tokens")
    assert client.get("/api/store/v1/addresses", headers=customer).status_code == 200
    assert client.get("/api/store/v1/addresses", headers=customer).status_code == 200
    assert statements.touching("auth_tokens") == before + 1


def test_logout_refuses_the_token_at_once(client: TestClient, tenant: Tenant) -> None:
    r = client.post("/api/admin/v1/auth/login", json={"merchant": tenant.code, "username": "owner",
                                                      "password": "owner-pass-1"})
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    assert client.get(ME, headers=headers).status_code == 200  # cached now
    assert client.post("/api/admin/v1/auth/logout", headers=headers).status_code == 204
    r = client.get(ME, headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"


def test_a_bulk_revocation_in_another_session_of_this_process_takes_effect_at_once(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """As the privacy deletion does it: an ORM ``UPDATE auth_tokens`` in its own transaction."""
    customer = customer_login(client, tenant)
    assert client.get("/api/store/v1/addresses", headers=customer).status_code == 200
    with unit_of_work(session_factory) as s:
        s.execute(update(AuthToken).where(AuthToken.merchant_id == tenant.id, AuthToken.kind == "customer")
                  .values(revoked_at=dt.datetime.now(dt.UTC)))
    assert client.get("/api/store/v1/addresses", headers=customer).status_code == 401


def test_a_rolled_back_revocation_keeps_the_token_valid(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    assert client.get(ME, headers=tenant.admin_headers).status_code == 200
    with session_factory() as s:
        s.execute(update(AuthToken).where(AuthToken.merchant_id == tenant.id).values(revoked_at=dt.datetime.now(dt.UTC)))
        s.rollback()
    assert client.get(ME, headers=tenant.admin_headers).status_code == 200


def test_expiry_is_checked_on_every_cached_hit(
    tenant: Tenant, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with unit_of_work(session_factory) as s:
        plaintext, _ = service.issue_customer_token(s, tenant.id, 424242, dt.timedelta(minutes=5))
    with session_factory() as s:
        assert service.authenticate(s, plaintext, kinds=("customer",)).subject_id == 424242
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6)
    monkeypatch.setattr(service, "utcnow", lambda: later)
    with session_factory() as s:
        assert token_cache.get(s, service.token_digest(plaintext)) is not None  # still cached ...
        with pytest.raises(service.DomainError) as exc:
            service.authenticate(s, plaintext, kinds=("customer",))  # ... and refused
    assert exc.value.code == "invalid_token"


def test_a_kind_mismatch_is_refused_from_the_cache_too(
    tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as s:
        assert service.authenticate(s, tenant.owner_token, kinds=("staff", "api_key")).kind == "staff"
        with pytest.raises(service.DomainError):
            service.authenticate(s, tenant.owner_token, kinds=("customer",))


def test_a_revocation_outside_this_process_is_honoured_within_the_ttl(
    tenant: Tenant, session_factory: sessionmaker[Session], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raw SQL (as another replica's transaction looks to this process): the cached token stays
    valid until its entry is ``TTL_SECONDS`` old, then the database answers."""
    with session_factory() as s:
        service.authenticate(s, tenant.owner_token, kinds=("staff",))
    with engine.begin() as conn:
        conn.execute(text("UPDATE auth_tokens SET revoked_at = created_at WHERE merchant_id = :m"), {"m": tenant.id})
    with session_factory() as s:
        assert service.authenticate(s, tenant.owner_token, kinds=("staff",)).merchant_id == tenant.id
    clock = token_cache.CACHE.clock() + token_cache.TTL_SECONDS + 0.1
    monkeypatch.setattr(token_cache.CACHE, "clock", lambda: clock)
    with session_factory() as s, pytest.raises(service.DomainError):
        service.authenticate(s, tenant.owner_token, kinds=("staff",))
