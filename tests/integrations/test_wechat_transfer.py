"""The transfer-bills client (商家转账) against the local fake WeChat Pay: signed requests,
verified answers, idempotency by out_bill_no, query, cancel and the finished notification; from
2,000 yuan the payee's real name, RSA-OAEP encrypted with the platform key named by
``Wechatpay-Serial`` (the fake decrypts it with its private key and refuses a wrong serial or key)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from siyu.integrations.wechat.errors import WechatApiError
from siyu.integrations.wechat.pay_v3 import WechatPayConfig, verify_notification
from siyu.integrations.wechat.transfer import (
    CONFIRM_WINDOW,
    NOTIFICATION_EVENT,
    WechatTransferClient,
    bill_from_resource,
)
from siyu.testing.fake_wechat import FakeMerchant, FakeWechat

INFOS = [("岗位类型", "分销员"), ("报酬说明", "分销佣金提现")]


@pytest.fixture
def transfer_client(fake: FakeWechat, merchant: FakeMerchant) -> Iterator[WechatTransferClient]:
    with WechatTransferClient(fake.pay_config(merchant)) as client:
        yield client


def _send(client: WechatTransferClient, no: str, amount: int = 1200, **kw: object) -> object:
    return client.create_transfer_bill(
        no,
        "o-user-1",
        amount,
        "佣金提现",
        scene_id="1005",
        report_infos=INFOS,
        notify_url="https://shop.example.com/api/pay/wechat/transfer-notify/demo",
        **kw,  # type: ignore[arg-type]
    )


def test_create_is_idempotent_by_out_bill_no(fake: FakeWechat, transfer_client: WechatTransferClient) -> None:
    no = f"WD{secrets.randbelow(10**9)}"
    first = _send(transfer_client, no)
    again = _send(transfer_client, no)
    assert first == again  # the same bill: a retried send never pays twice
    assert first.state == "WAIT_USER_CONFIRM" and first.package_info  # type: ignore[attr-defined]
    assert fake.count_requests("/v3/fund-app/mch-transfer/transfer-bills") >= 2
    assert fake.transfer(no)["transfer_amount"] == 1200
    with pytest.raises(WechatApiError) as err:
        _send(transfer_client, no, amount=1300)
    assert err.value.errcode == "INVALID_REQUEST"


def test_bad_input_is_refused_before_sending(transfer_client: WechatTransferClient) -> None:
    with pytest.raises(ValueError):
        _send(transfer_client, "WD-1")  # not letters and digits only
    with pytest.raises(ValueError):
        _send(transfer_client, "WD2", amount=0)
    with pytest.raises(ValueError):
        _send(transfer_client, "WD3", amount=200_000)  # needs the encrypted real name
    with pytest.raises(ValueError):
        _send(transfer_client, "WD4", amount=200_000, user_name="  ")
    with pytest.raises(ValueError):
        _send(transfer_client, "WD5", amount=29, user_name="张三丰")  # WeChat checks names from 0.3 yuan


def test_query_and_finished_notification(
    fake: FakeWechat, merchant: FakeMerchant, transfer_client: WechatTransferClient
) -> None:
    no = f"WD{secrets.randbelow(10**9)}"
    created = _send(transfer_client, no)
    assert transfer_client.query_transfer_bill(no).state == "WAIT_USER_CONFIRM"
    headers, body = fake.finish_transfer(no, state="SUCCESS")
    note = verify_notification(fake.pay_config(merchant), headers, body)
    assert note.event_type == NOTIFICATION_EVENT
    bill = bill_from_resource(note.resource)
    assert (bill.out_bill_no, bill.state, bill.transfer_amount, bill.mch_id) == (
        no,
        "SUCCESS",
        1200,
        merchant.mchid,
    )
    assert bill.transfer_bill_no == created.transfer_bill_no  # type: ignore[attr-defined]
    queried = transfer_client.query_transfer_bill(no)
    assert (queried.state, queried.final, queried.openid) == ("SUCCESS", True, "o-user-1")
    with pytest.raises(WechatApiError) as err:
        transfer_client.query_transfer_bill("WDNOSUCHBILL")
    assert (err.value.errcode, err.value.http_status) == ("NOT_FOUND", 404)


def test_cancel_before_confirmation(fake: FakeWechat, transfer_client: WechatTransferClient) -> None:
    no = f"WD{secrets.randbelow(10**9)}"
    _send(transfer_client, no)
    cancelled = transfer_client.cancel_transfer_bill(no)
    assert (cancelled.state, cancelled.final, cancelled.out_bill_no) == ("CANCELING", False, no)
    assert cancelled.transfer_bill_no == fake.transfer(no)["transfer_bill_no"]
    assert transfer_client.cancel_transfer_bill(no).state == "CANCELING"  # a retried cancel: accepted again
    assert fake.transfer(no)["state"] == "CANCELING"  # until WeChat Pay is asked
    queried = transfer_client.query_transfer_bill(no)
    assert (queried.state, queried.final) == ("CANCELLED", True)
    assert transfer_client.cancel_transfer_bill(no).state == "CANCELLED"  # idempotent once done
    # the user can no longer confirm it
    fake.finish_transfer(no, state="SUCCESS")
    assert transfer_client.query_transfer_bill(no).state == "CANCELLED"


@pytest.mark.parametrize("final", ["SUCCESS", "FAIL"])
def test_a_final_bill_cannot_be_cancelled(
    fake: FakeWechat, transfer_client: WechatTransferClient, final: str
) -> None:
    no = f"WD{secrets.randbelow(10**9)}"
    _send(transfer_client, no)
    fake.finish_transfer(no, state=final)
    with pytest.raises(WechatApiError) as err:
        transfer_client.cancel_transfer_bill(no)
    assert (err.value.errcode, err.value.http_status) == ("INVALID_REQUEST", 400)
    assert transfer_client.query_transfer_bill(no).state == final
    with pytest.raises(WechatApiError) as err:
        transfer_client.cancel_transfer_bill("WDNOSUCHBILL")
    assert (err.value.errcode, err.value.http_status) == ("NOT_FOUND", 404)
    with pytest.raises(ValueError):
        transfer_client.cancel_transfer_bill("WD-1")
    assert fake.count_requests(f"{BILLS}/out-bill-no/WD-1/cancel") == 0


def test_a_bill_left_unconfirmed_past_the_window_is_cancelled_by_wechat() -> None:
    with FakeWechat() as own:  # its own clock: the session's fake is shared
        merchant = own.make_merchant(f"19{secrets.randbelow(10**8):08d}", f"wx{secrets.token_hex(8)}")
        with WechatTransferClient(own.pay_config(merchant)) as client:
            no = f"WD{secrets.randbelow(10**9)}"
            _send(client, no)
            own.advance(CONFIRM_WINDOW - dt.timedelta(minutes=1))
            assert client.query_transfer_bill(no).state == "WAIT_USER_CONFIRM"
            own.advance(dt.timedelta(minutes=2))
            expired = client.query_transfer_bill(no)
            assert (expired.state, expired.final) == ("CANCELLED", True)
            assert _send(client, no).state == "CANCELLED"  # type: ignore[attr-defined]  # a retried create
            assert client.cancel_transfer_bill(no).state == "CANCELLED"


NAME = "张三丰"
BILLS = "/v3/fund-app/mch-transfer/transfer-bills"


def _other_public_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_from_2000_yuan_the_encrypted_name_reaches_wechat(
    fake: FakeWechat, transfer_client: WechatTransferClient
) -> None:
    no = f"WD{secrets.randbelow(10**9)}"
    first = _send(transfer_client, no, amount=200_000, user_name=NAME)
    assert fake.transfer_user_name(no) == NAME  # decrypted by the fake with the platform private key
    assert fake.transfer(no)["transfer_amount"] == 200_000
    sent = [r.body for r in fake.requests if r.path == BILLS and no.encode() in r.body]
    assert sent and all(NAME.encode() not in body for body in sent)  # only ciphertext on the wire
    # a retry encrypts again (random padding, other bytes) and still gets the same bill
    again = _send(transfer_client, no, amount=200_000, user_name=NAME)
    assert again == first
    with pytest.raises(WechatApiError) as err:
        _send(transfer_client, no, amount=200_000, user_name="李四")
    assert err.value.errcode == "INVALID_REQUEST"


def test_the_fake_requires_the_name_from_2000_yuan(fake: FakeWechat, merchant: FakeMerchant) -> None:
    """The client refuses before sending; the peer refuses too (as WeChat Pay does)."""
    with WechatTransferClient(fake.pay_config(merchant)) as client:
        body = {
            "appid": merchant.appid, "out_bill_no": "WDNONAME1", "transfer_scene_id": "1005", "openid": "o-1",
            "transfer_amount": 200_000, "transfer_remark": "佣金",
            "transfer_scene_report_infos": [{"info_type": "岗位类型", "info_content": "分销员"}],
        }
        with pytest.raises(WechatApiError) as err:
            client._call("POST", BILLS, body=body)
        assert (err.value.errcode, err.value.http_status) == ("PARAM_ERROR", 400)
        with pytest.raises(WechatApiError) as err:  # not ciphertext under our platform key
            client._call("POST", BILLS, body={**body, "user_name": "5byg5LiJ5Liw"})
        assert err.value.errcode == "PARAM_ERROR"
    with pytest.raises(KeyError):
        fake.transfer("WDNONAME1")


def test_a_wrong_serial_or_key_is_refused_and_creates_no_bill(fake: FakeWechat, merchant: FakeMerchant) -> None:
    # a second WeChat Pay public key id the platform does not know (sorts last: it is chosen)
    config = dataclasses.replace(
        fake.pay_config(merchant),
        platform_public_keys={**merchant.platform_public_keys, f"PUB_KEY_ID_{'9' * 32}": _other_public_pem()},
    )
    assert config.encryption_key()[0] == f"PUB_KEY_ID_{'9' * 32}"
    no = f"WD{secrets.randbelow(10**9)}"
    with WechatTransferClient(config) as client, pytest.raises(WechatApiError) as err:
        _send(client, no, amount=250_000, user_name=NAME)
    assert (err.value.errcode, err.value.http_status) == ("PARAM_ERROR", 400)
    # the right serial with another key: WeChat cannot decrypt it
    config = dataclasses.replace(
        fake.pay_config(merchant), platform_public_keys={fake.platform_serial: _other_public_pem()}
    )
    with WechatTransferClient(config) as client, pytest.raises(WechatApiError) as err:
        _send(client, no, amount=250_000, user_name=NAME)
    assert err.value.errcode == "PARAM_ERROR"
    with pytest.raises(KeyError):
        fake.transfer(no)
    with WechatTransferClient(fake.pay_config(merchant)) as client:  # fixed: the same out_bill_no pays
        _send(client, no, amount=250_000, user_name=NAME)
    assert fake.transfer_user_name(no) == NAME


def _certificate(key: rsa.RSAPrivateKey, serial: int, days: int) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "platform")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(serial).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days)).sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_encryption_key_choice(merchant: FakeMerchant) -> None:
    base = FakeWechat().pay_config(merchant)  # not started: only its configuration is used
    old, new = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    certs = {"AAA1": _certificate(old, 0xAAA1, 30), "BBB2": _certificate(new, 0xBBB2, 365)}
    # platform certificates: the one that expires last (the newest during a rotation)
    config = dataclasses.replace(base, platform_public_keys=certs)
    assert config.encryption_key()[0] == "BBB2"
    # a WeChat Pay public key id wins over certificates
    with_id = dataclasses.replace(base, platform_public_keys={**certs, "PUB_KEY_ID_0001": _other_public_pem()})
    assert with_id.encryption_key()[0] == "PUB_KEY_ID_0001"
    # several bare keys under certificate serials: ambiguous
    bare = dataclasses.replace(base, platform_public_keys={"AAA1": _other_public_pem(), "BBB2": _other_public_pem()})
    with pytest.raises(ValueError):
        bare.encryption_key()


def test_certificate_mode_serial(merchant: FakeMerchant) -> None:
    """A platform using certificate serials (no PUB_KEY_ID): the certificate's serial is sent."""
    serial = secrets.token_hex(20).upper()
    peer = FakeWechat(platform_serial=serial)
    local = peer.make_merchant(merchant.mchid, merchant.appid)
    config: WechatPayConfig = dataclasses.replace(
        local.config("http://testserver"), platform_public_keys={serial: peer.platform_certificate_pem}
    )
    with TestClient(peer.app) as http, WechatTransferClient(config, http=http) as client:
        _send(client, "WDCERT1", amount=300_000, user_name=NAME)
    assert peer.transfer_user_name("WDCERT1") == NAME
