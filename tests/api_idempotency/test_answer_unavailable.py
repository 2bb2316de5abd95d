"""A stored answer that no configured key opens (the server's secret key changed without
``SIYU_SECRET_KEY_PREVIOUS``) is 409 ``idempotency_answer_unavailable`` in both languages — never
a 500, and never the create run a second time; with the old key as a previous one it replays."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.idempotency import service
from siyu.idempotency.models import IdempotentRequest
from siyu.kit import crypto
from siyu.kit.crypto import declare_previous_keys
from siyu.loyalty.models import Level
from tests.api_idempotency.cases import ADMIN, count, keyed
from tests.conftest import Tenant

Factory = sessionmaker[Session]
LEVELS = f"{ADMIN}/loyalty/levels"
SUITE_SECRET = "test-secret"  # tests.conftest's settings


@pytest.fixture(autouse=True)
def _clean_key_ring(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(crypto, "_PREVIOUS", {})
    yield


def _reseal_stored_answer_with(factory: Factory, merchant_id: int, secret: str) -> None:
    """As if the answer had been stored under another server secret."""
    with factory() as s, s.begin():
        row = s.scalars(select(IdempotentRequest).where(IdempotentRequest.merchant_id == merchant_id)).one()
        assert row.response_enc is not None
        clear = service.SEALED.box(SUITE_SECRET, previous=()).decrypt(row.response_enc, aad=service._aad(row))
        row.response_enc = service.SEALED.box(secret, previous=()).encrypt(clear, aad=service._aad(row))


def test_an_answer_no_key_opens_is_a_clear_409_not_a_500_nor_a_second_create(
    client: TestClient, session_factory: Factory, tenant: Tenant, settings: Settings
) -> None:
    assert settings.secret_key == SUITE_SECRET
    h = keyed(tenant.admin_headers, "lvl-rotated")
    first = client.post(LEVELS, json={"rank": 1, "name": "金卡"}, headers=h)
    assert first.status_code == 201, first.text
    _reseal_stored_answer_with(session_factory, tenant.id, "a-secret-nobody-has-any-more")

    zh = client.post(LEVELS, json={"rank": 1, "name": "金卡"}, headers=h)
    assert zh.status_code == 409, zh.text
    assert zh.json()["code"] == "idempotency_answer_unavailable"
    assert "无法读取" in zh.json()["message"]
    en = client.post(LEVELS, json={"rank": 1, "name": "金卡"}, headers={**h, "Accept-Language": "en"})
    assert (en.status_code, en.json()["code"]) == (409, "idempotency_answer_unavailable")
    assert "can no longer be read" in en.json()["message"]
    assert count(session_factory, Level, tenant.id) == 1  # the create did not run again


def test_with_the_old_key_as_a_previous_one_the_answer_replays(
    client: TestClient, session_factory: Factory, tenant: Tenant
) -> None:
    h = keyed(tenant.admin_headers, "lvl-previous")
    first = client.post(LEVELS, json={"rank": 1, "name": "银卡"}, headers=h)
    assert first.status_code == 201, first.text
    _reseal_stored_answer_with(session_factory, tenant.id, "the-old-server-secret")
    declare_previous_keys(SUITE_SECRET, ["the-old-server-secret"])
    try:
        again = client.post(LEVELS, json={"rank": 1, "name": "银卡"}, headers=h)
    finally:  # the declaration is process-wide: later tests run without a previous key
        declare_previous_keys(SUITE_SECRET, [])
    assert (again.status_code, again.headers.get("Idempotent-Replayed")) == (200, "true"), again.text
    assert again.content == first.content
    assert count(session_factory, Level, tenant.id) == 1
