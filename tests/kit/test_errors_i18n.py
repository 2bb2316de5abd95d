import pytest
from cryptography.exceptions import InvalidTag

from siyu.kit.crypto import SecretBox, new_token, token_digest
from siyu.kit.errors import DomainError, not_found
from siyu.kit.i18n import pick_language


def test_language_by_accept_language() -> None:
    assert pick_language(None) == "zh-CN"
    assert pick_language("en-US,en;q=0.9") == "en"
    assert pick_language("zh-CN,zh;q=0.9,en;q=0.8") == "zh-CN"
    assert pick_language("fr-FR, en;q=0.5") == "en"
    assert pick_language("fr-FR") == "zh-CN"


def test_not_found_names_the_resource_in_each_language() -> None:
    err = not_found("订单", "Order")
    assert err.status == 404
    assert err.message("zh-CN") == "订单不存在"
    assert err.message("en") == "Order not found"


def test_unregistered_codes_are_refused() -> None:
    with pytest.raises(KeyError):
        DomainError("no_such_code_anywhere")


def test_secret_box_round_trip_and_tamper_detection() -> None:
    box = SecretBox("k1")
    sealed = box.encrypt("apiv3-key-0123456789abcdef012345")
    assert sealed.startswith("v1:") and "apiv3" not in sealed
    assert box.decrypt(sealed) == "apiv3-key-0123456789abcdef012345"
    with pytest.raises(InvalidTag):
        SecretBox("another-secret").decrypt(sealed)


def test_tokens_are_random_and_stored_as_digest() -> None:
    a, b = new_token("st"), new_token("st")
    assert a != b and a.startswith("st_")
    assert len(token_digest(a)) == 64 and token_digest(a) != a
