"""SecretBox with previous secrets (``SIYU_SECRET_KEY_PREVIOUS``): seals with the current secret,
opens with the current one then each previous one, says which values are stale; the setting's
forms; token digests need no secret."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from cryptography.exceptions import InvalidTag

from siyu.config import Settings
from siyu.kit import crypto
from siyu.kit.crypto import SecretBox, bind, declare_previous_keys, previous_keys, token_digest

HERE = bind("merchants", "pay_apiv3_key_enc", 3, 3)
PURPOSE = b"siyu/test-rotation"


@pytest.fixture(autouse=True)
def _clean_key_ring(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(crypto, "_PREVIOUS", {})
    yield


def test_the_current_key_seals_and_every_configured_key_opens() -> None:
    old_v2 = SecretBox("k-old", PURPOSE).encrypt("旧值", aad=HERE)
    old_v1 = SecretBox("k-old", PURPOSE).encrypt("legacy")
    box = SecretBox("k-new", PURPOSE, previous=["k-older", "k-old"])
    assert box.decrypt(old_v2, aad=HERE) == "旧值"
    assert box.decrypt(old_v1) == "legacy" and box.decrypt(old_v1, aad=HERE) == "legacy"
    assert box.unseal(old_v2, aad=HERE) == ("旧值", True)

    fresh = box.encrypt("新值", aad=HERE)
    assert SecretBox("k-new", PURPOSE, previous=()).decrypt(fresh, aad=HERE) == "新值"  # sealed with the current key
    with pytest.raises(InvalidTag):
        SecretBox("k-old", PURPOSE, previous=()).decrypt(fresh, aad=HERE)
    assert box.unseal(fresh, aad=HERE) == ("新值", False)

    resealed = box.reseal(old_v2, aad=HERE)
    assert resealed != old_v2 and SecretBox("k-new", PURPOSE, previous=()).decrypt(resealed, aad=HERE) == "旧值"
    assert box.reseal(resealed, aad=HERE) == resealed  # current: kept as it is
    from_v1 = box.reseal(old_v1, aad=HERE)
    assert from_v1.startswith("v2:") and SecretBox("k-new", PURPOSE, previous=()).decrypt(from_v1, aad=HERE) == "legacy"

    # the previous keys do not weaken the binding, and an unknown key still fails
    with pytest.raises(InvalidTag):
        box.decrypt(old_v2, aad=bind("merchants", "pay_apiv3_key_enc", 4, 4))
    with pytest.raises(InvalidTag):
        SecretBox("k-new", PURPOSE, previous=["k-other"]).decrypt(old_v2, aad=HERE)
    with pytest.raises(InvalidTag):
        SecretBox("k-new", PURPOSE).decrypt(old_v2, aad=HERE)  # nothing declared: the current key only


def test_a_box_built_from_the_secret_alone_uses_the_declared_previous_keys() -> None:
    old = SecretBox("s-old", PURPOSE).encrypt("x", aad=HERE)
    declare_previous_keys("s-new", ["s-old", "", "s-new", "s-old"])
    assert previous_keys("s-new") == ("s-old",)
    assert SecretBox("s-new", PURPOSE).decrypt(old, aad=HERE) == "x"
    with pytest.raises(InvalidTag):
        SecretBox("s-new", PURPOSE, previous=()).decrypt(old, aad=HERE)  # an explicit list wins
    declare_previous_keys("s-new", [])
    with pytest.raises(InvalidTag):
        SecretBox("s-new", PURPOSE).decrypt(old, aad=HERE)


def test_the_setting_takes_commas_or_json_and_declares_the_previous_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIYU_SECRET_KEY", "env-current")
    monkeypatch.setenv("SIYU_SECRET_KEY_PREVIOUS", " old-1, old-2,,env-current, old-1 ")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.secret_key_previous == ["old-1", "old-2"]
    assert previous_keys("env-current") == ("old-1", "old-2")
    monkeypatch.setenv("SIYU_SECRET_KEY_PREVIOUS", '["has,comma", "old-2"]')
    assert Settings(_env_file=None).secret_key_previous == ["has,comma", "old-2"]  # type: ignore[call-arg]
    assert previous_keys("env-current") == ("has,comma", "old-2")  # the last settings built win
    monkeypatch.delenv("SIYU_SECRET_KEY_PREVIOUS")
    assert Settings(_env_file=None).secret_key_previous == []  # type: ignore[call-arg]
    assert previous_keys("env-current") == ()
    assert Settings(secret_key="a", secret_key_previous=["b"]).secret_key_previous == ["b"]


def test_token_digests_use_no_secret_so_rotation_keeps_sessions_and_api_keys() -> None:
    assert token_digest("sk_staff_abc") == hashlib.sha256(b"sk_staff_abc").hexdigest()
