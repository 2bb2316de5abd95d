"""SecretBox's associated data: a value is bound to its table, column, merchant and row; old
unbound ``v1`` values still decrypt."""

import base64
import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from siyu.kit.crypto import SecretBox, bind, is_legacy

BOX = SecretBox("k1", b"siyu/test")
HERE = bind("distributors", "real_name_enc", 7, 42)


def test_a_bound_value_decrypts_only_in_its_own_place() -> None:
    sealed = BOX.encrypt("张三", aad=HERE)
    assert sealed.startswith("v2:") and not is_legacy(sealed)
    assert BOX.decrypt(sealed, aad=HERE) == "张三"
    for elsewhere in (
        bind("distributors", "real_name_enc", 7, 43),  # another row
        bind("distributors", "real_name_enc", 8, 42),  # another merchant
        bind("distributors", "phone_enc", 7, 42),  # another column
        bind("withdrawals", "real_name_enc", 7, 42),  # another table
    ):
        with pytest.raises(InvalidTag):
            BOX.decrypt(sealed, aad=elsewhere)
    with pytest.raises(ValueError, match="aad"):
        BOX.decrypt(sealed)
    with pytest.raises(InvalidTag):
        SecretBox("k2", b"siyu/test").decrypt(sealed, aad=HERE)
    with pytest.raises(InvalidTag):
        SecretBox("k1", b"siyu/other").decrypt(sealed, aad=HERE)


def test_legacy_v1_values_still_decrypt_with_or_without_aad_and_reseal_binds_them() -> None:
    # a value as the previous SecretBox wrote it: associated data b"v1:" only
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"siyu/test").derive(b"k1")
    nonce = os.urandom(12)
    old = "v1:" + base64.b64encode(nonce + AESGCM(key).encrypt(nonce, "李四".encode(), b"v1:")).decode()
    assert is_legacy(old)
    assert BOX.decrypt(old) == "李四"
    assert BOX.decrypt(old, aad=HERE) == "李四"
    new = BOX.reseal(old, aad=HERE)
    assert new.startswith("v2:") and BOX.decrypt(new, aad=HERE) == "李四"
    assert BOX.reseal(new, aad=HERE) == new
    with pytest.raises(InvalidTag):
        BOX.reseal(new, aad=bind("distributors", "real_name_enc", 7, 1))
    assert BOX.encrypt("x").startswith("v1:")  # unbound callers keep working


def test_a_v2_value_cannot_be_downgraded_to_v1() -> None:
    sealed = BOX.encrypt("王五", aad=HERE)
    downgraded = "v1:" + sealed[3:]
    with pytest.raises(InvalidTag):
        BOX.decrypt(downgraded)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="unknown"):
        BOX.decrypt("v9:abc")
    with pytest.raises(ValueError):
        bind("", "c", 1, 1)
    with pytest.raises(ValueError):
        bind("t|x", "c", 1, 1)
