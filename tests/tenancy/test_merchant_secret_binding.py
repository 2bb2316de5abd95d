"""Merchant credentials bound to their merchant and column (``tenancy.service`` helpers, used by
the writer and by the readers in payments / members): values written unbound before still open."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.crypto import SecretBox
from siyu.kit.errors import DomainError
from siyu.tenancy import service
from siyu.tenancy.models import Merchant
from siyu.tenancy.schemas import MerchantUpdate
from tests.conftest import Tenant, unique

BOX = SecretBox("test-secret")


def test_a_sealed_credential_opens_only_for_its_merchant_and_column(
    tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as s:
        other = service.create_merchant(s, code=unique("m"), name="Other")
        mine = s.get(Merchant, tenant.id)
        assert mine is not None
        service.seal_merchant_secret(BOX, mine, "pay_apiv3_key_enc", "apiv3-of-mine")
        service.seal_merchant_secret(BOX, other, "pay_apiv3_key_enc", "apiv3-of-other")
        service.update_merchant(s, BOX, tenant.id, MerchantUpdate.model_validate({"wechat_app_secret": "app-secret"}))
        mine.pay_private_key_enc = BOX.encrypt("legacy-pem")  # a v1 value, as written before the binding
        other_id = other.id
    with session_factory() as s:
        mine, other = s.get(Merchant, tenant.id), s.get(Merchant, other_id)
        assert mine is not None and other is not None
        assert mine.pay_apiv3_key_enc and mine.pay_apiv3_key_enc.startswith("v2:")
        assert service.open_merchant_secret(BOX, mine, "pay_apiv3_key_enc") == "apiv3-of-mine"
        assert mine.wechat_app_secret_enc and mine.wechat_app_secret_enc.startswith("v2:")  # the writer binds
        assert service.open_merchant_secret(BOX, mine, "wechat_app_secret_enc") == "app-secret"
        assert service.open_merchant_secret(BOX, mine, "pay_private_key_enc") == "legacy-pem"
        assert service.open_merchant_secret(BOX, other, "pay_private_key_enc") is None
        # a database-level swap of another merchant's key into this row does not open
        mine.pay_apiv3_key_enc = other.pay_apiv3_key_enc
        with pytest.raises(DomainError) as refused:
            service.open_merchant_secret(BOX, mine, "pay_apiv3_key_enc")
        assert refused.value.code == "merchant_credentials_unreadable" and isinstance(refused.value.__cause__, InvalidTag)
        mine.pay_private_key_enc = other.pay_apiv3_key_enc  # nor into another column
        with pytest.raises(DomainError, match="merchant_credentials_unreadable"):
            service.open_merchant_secret(BOX, mine, "pay_private_key_enc")
        s.rollback()
    with pytest.raises(ValueError):
        service.merchant_secret_aad(1, "name")


def test_credentials_sealed_with_another_secret_are_a_clear_503_not_a_500(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """The secret key changed without SIYU_SECRET_KEY_PREVIOUS: the mini-program login says so."""
    with unit_of_work(session_factory) as s:
        mine = s.get(Merchant, tenant.id)
        assert mine is not None
        mine.wechat_appid = "wx-real-app"
        service.seal_merchant_secret(SecretBox("a-secret-this-server-does-not-know"), mine, "wechat_app_secret_enc", "s")
    r = client.post("/api/store/v1/auth/wechat-login", json={"code": "0a1b2c"}, headers=tenant.store_headers)
    assert (r.status_code, r.json()["code"]) == (503, "merchant_credentials_unreadable"), r.text
    assert "SIYU_SECRET_KEY_PREVIOUS" in r.json()["message"]
