"""WechatPayClient and verify_notification against the fake WeChat Pay (real HTTP, real keys)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import secrets
import time

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

from siyu.integrations.wechat.errors import NotificationError, ResponseSignatureError, WechatApiError
from siyu.integrations.wechat.pay_v3 import (
    NOTIFICATION_SUCCESS_STATUS,
    Notification,
    WechatPayClient,
    WechatPayConfig,
    verify_notification,
)
from siyu.testing.fake_wechat import FakeMerchant, FakeWechat

OPENID = "o-payer-1"
NOTIFY_URL = "https://shop.example.com/api/pay/wechat/notify/demo"  # as in conftest.py


def trade_no() -> str:
    return f"T{secrets.token_hex(10).upper()}"


def prepay(
    client: WechatPayClient,
    out_trade_no: str,
    total: int = 1999,
    *,
    time_expire: dt.datetime | None = None,
    attach: str | None = None,
) -> str:
    return client.create_jsapi_prepay(
        out_trade_no, "思语小店-订单", total, OPENID, time_expire=time_expire, attach=attach
    )


def paid_order(fake: FakeWechat, client: WechatPayClient, total: int = 1000) -> str:
    out_trade_no = trade_no()
    prepay(client, out_trade_no, total)
    fake.pay(out_trade_no)
    return out_trade_no


def other_private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def config_of(fake: FakeWechat, merchant: FakeMerchant) -> WechatPayConfig:
    return fake.pay_config(merchant, notify_url=NOTIFY_URL)


# -- payments ----------------------------------------------------------------------------------


def test_prepay_over_http_is_signed_and_idempotent(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    out_trade_no = trade_no()
    expire = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=15)

    prepay_id = prepay(pay_client, out_trade_no, time_expire=expire, attach="order:42")

    assert prepay_id.startswith("wx")
    assert prepay(pay_client, out_trade_no, time_expire=expire, attach="order:42") == prepay_id
    sent = json.loads([r for r in fake.requests if r.path == "/v3/pay/transactions/jsapi"][-1].body)
    assert sent["amount"] == {"total": 1999, "currency": "CNY"}
    assert sent["payer"] == {"openid": OPENID}
    assert sent["notify_url"] == NOTIFY_URL
    assert sent["time_expire"] == expire.isoformat(timespec="seconds")
    assert (sent["appid"], sent["mchid"]) == (pay_client.config.appid, pay_client.config.mchid)


def test_same_out_trade_no_with_other_params_is_refused(pay_client: WechatPayClient) -> None:
    out_trade_no = trade_no()
    prepay(pay_client, out_trade_no, 100)

    with pytest.raises(WechatApiError) as excinfo:
        prepay(pay_client, out_trade_no, 200)
    assert (excinfo.value.errcode, excinfo.value.http_status) == ("INVALID_REQUEST", 400)
    assert excinfo.value.request_id


@pytest.mark.parametrize("bad", [0, -5, 10.5, True, "100"])
def test_amounts_must_be_positive_integer_fen(pay_client: WechatPayClient, bad: object) -> None:
    with pytest.raises(ValueError):
        prepay(pay_client, trade_no(), bad)  # type: ignore[arg-type]


def test_fake_validates_amounts_too(pay_client: WechatPayClient) -> None:
    body = {
        "appid": pay_client.config.appid,
        "mchid": pay_client.config.mchid,
        "description": "x",
        "out_trade_no": trade_no(),
        "notify_url": NOTIFY_URL,
        "amount": {"total": 0, "currency": "CNY"},
        "payer": {"openid": OPENID},
    }
    with pytest.raises(WechatApiError) as excinfo:
        pay_client._call("POST", "/v3/pay/transactions/jsapi", body=body)
    assert (excinfo.value.errcode, excinfo.value.http_status) == ("PARAM_ERROR", 400)


def test_naive_time_expire_is_refused(pay_client: WechatPayClient) -> None:
    with pytest.raises(ValueError):
        prepay(pay_client, trade_no(), time_expire=dt.datetime(2030, 1, 1, 12, 0))


def test_payment_params_for_wx_request_payment(fake: FakeWechat, merchant: FakeMerchant) -> None:
    client = WechatPayClient(config_of(fake, merchant), clock=lambda: 1_700_000_000.0)
    params = client.miniprogram_payment_params("wx2026prepay")

    assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["timeStamp"] == "1700000000"
    assert params["package"] == "prepay_id=wx2026prepay"
    assert params["signType"] == "RSA"
    message = f"{merchant.appid}\n1700000000\n{params['nonceStr']}\nprepay_id=wx2026prepay\n".encode()
    public_key = serialization.load_pem_public_key(merchant.merchant_public_key_pem.encode())
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(base64.b64decode(params["paySign"]), message, padding.PKCS1v15(), hashes.SHA256())


def test_request_signed_with_a_wrong_key_is_rejected(fake: FakeWechat, merchant: FakeMerchant) -> None:
    forged = dataclasses.replace(config_of(fake, merchant), merchant_private_key_pem=other_private_key_pem())
    with WechatPayClient(forged) as client, pytest.raises(WechatApiError) as excinfo:
        prepay(client, trade_no())
    assert (excinfo.value.errcode, excinfo.value.http_status) == ("SIGN_ERROR", 401)


def test_request_with_a_wrong_serial_or_stale_clock_is_rejected(
    fake: FakeWechat, merchant: FakeMerchant
) -> None:
    wrong_serial = dataclasses.replace(config_of(fake, merchant), merchant_serial_no="0" * 40)
    with WechatPayClient(wrong_serial) as client, pytest.raises(WechatApiError) as excinfo:
        client.query_by_out_trade_no(trade_no())
    assert excinfo.value.errcode == "SIGN_ERROR"
    with (
        WechatPayClient(config_of(fake, merchant), clock=lambda: time.time() - 600) as client,
        pytest.raises(WechatApiError) as excinfo,
    ):
        client.query_by_out_trade_no(trade_no())
    assert excinfo.value.errcode == "SIGN_ERROR"


def test_query_follows_the_payment(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    out_trade_no = trade_no()
    prepay(pay_client, out_trade_no, 2500, attach="a1")
    assert pay_client.query_by_out_trade_no(out_trade_no)["trade_state"] == "NOTPAY"

    fake.pay(out_trade_no)
    paid = pay_client.query_by_out_trade_no(out_trade_no)

    assert paid["trade_state"] == "SUCCESS"
    assert paid["transaction_id"].startswith("4200")
    assert paid["amount"] == {"total": 2500, "payer_total": 2500, "currency": "CNY", "payer_currency": "CNY"}
    assert (paid["mchid"], paid["appid"], paid["attach"]) == (
        pay_client.config.mchid,
        pay_client.config.appid,
        "a1",
    )
    assert paid["payer"] == {"openid": OPENID}
    assert paid["success_time"]


def test_query_of_an_unknown_order_is_404(pay_client: WechatPayClient) -> None:
    with pytest.raises(WechatApiError) as excinfo:
        pay_client.query_by_out_trade_no(trade_no())
    assert (excinfo.value.errcode, excinfo.value.http_status) == ("ORDER_NOT_EXIST", 404)


def test_orders_of_another_merchant_are_invisible(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    out_trade_no = trade_no()
    prepay(pay_client, out_trade_no)
    other = fake.make_merchant("1911111111", "wx-other-app")
    with WechatPayClient(config_of(fake, other)) as client, pytest.raises(WechatApiError) as excinfo:
        client.query_by_out_trade_no(out_trade_no)
    assert excinfo.value.errcode == "ORDER_NOT_EXIST"


def test_close_an_unpaid_order(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    out_trade_no = trade_no()
    prepay(pay_client, out_trade_no)

    pay_client.close(out_trade_no)

    assert pay_client.query_by_out_trade_no(out_trade_no)["trade_state"] == "CLOSED"
    with pytest.raises(WechatApiError) as excinfo:
        prepay(pay_client, out_trade_no)
    assert excinfo.value.errcode == "ORDER_CLOSED"


def test_a_paid_order_cannot_be_closed(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    out_trade_no = paid_order(fake, pay_client)
    with pytest.raises(WechatApiError) as excinfo:
        pay_client.close(out_trade_no)
    assert (excinfo.value.errcode, excinfo.value.http_status) == ("ORDERPAID", 400)


def test_in_process_app_with_an_injected_http_client(fake: FakeWechat, merchant: FakeMerchant) -> None:
    config = merchant.config("http://testserver", NOTIFY_URL)
    with TestClient(fake.app) as http:
        client = WechatPayClient(config, http=http)
        out_trade_no = trade_no()
        prepay(client, out_trade_no)
        assert client.query_by_out_trade_no(out_trade_no)["trade_state"] == "NOTPAY"


# -- refunds -----------------------------------------------------------------------------------


def test_refund_lifecycle(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    out_trade_no = paid_order(fake, pay_client, total=1000)

    refund = pay_client.create_refund(out_trade_no, "R1" + out_trade_no, 300, 1000, reason="不想要了")

    assert refund["status"] == "PROCESSING"
    assert refund["refund_id"]
    assert (refund["amount"]["refund"], refund["amount"]["total"]) == (300, 1000)
    again = pay_client.create_refund(out_trade_no, "R1" + out_trade_no, 300, 1000, reason="不想要了")
    assert again["refund_id"] == refund["refund_id"]

    fake.complete_refund("R1" + out_trade_no)
    queried = pay_client.query_refund("R1" + out_trade_no)
    assert queried["status"] == "SUCCESS"
    assert queried["success_time"]
    assert pay_client.query_by_out_trade_no(out_trade_no)["trade_state"] == "REFUND"


def test_refund_above_what_remains_is_refused(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    out_trade_no = paid_order(fake, pay_client, total=1000)
    pay_client.create_refund(out_trade_no, "RA" + out_trade_no, 700, 1000)

    with pytest.raises(WechatApiError) as excinfo:
        pay_client.create_refund(out_trade_no, "RB" + out_trade_no, 301, 1000)
    assert (excinfo.value.errcode, excinfo.value.http_status) == ("INVALID_REQUEST", 400)
    assert pay_client.create_refund(out_trade_no, "RC" + out_trade_no, 300, 1000)["status"] == "PROCESSING"


def test_refund_must_name_the_order_total(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    out_trade_no = paid_order(fake, pay_client, total=1000)
    with pytest.raises(WechatApiError) as excinfo:
        pay_client.create_refund(out_trade_no, "RT" + out_trade_no, 100, 999)
    assert excinfo.value.errcode == "INVALID_REQUEST"
    with pytest.raises(ValueError):
        pay_client.create_refund(out_trade_no, "RT" + out_trade_no, 1001, 1000)


def test_refund_of_unpaid_or_unknown_orders(pay_client: WechatPayClient) -> None:
    unpaid = trade_no()
    prepay(pay_client, unpaid, 1000)
    with pytest.raises(WechatApiError) as excinfo:
        pay_client.create_refund(unpaid, "RU" + unpaid, 100, 1000)
    assert excinfo.value.errcode == "INVALID_REQUEST"
    with pytest.raises(WechatApiError) as excinfo:
        pay_client.create_refund(trade_no(), "RX1", 100, 1000)
    assert (excinfo.value.errcode, excinfo.value.http_status) == ("RESOURCE_NOT_EXISTS", 404)
    with pytest.raises(WechatApiError) as excinfo:
        pay_client.query_refund("R-never")
    assert (excinfo.value.errcode, excinfo.value.http_status) == ("RESOURCE_NOT_EXISTS", 404)


def test_injected_provider_error(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    out_trade_no = paid_order(fake, pay_client)
    fake.fail_next("POST", "/v3/refund/domestic/refunds", 403, "NOT_ENOUGH", "商户可用余额不足")

    with pytest.raises(WechatApiError) as excinfo:
        pay_client.create_refund(out_trade_no, "RN" + out_trade_no, 100, 1000)
    assert (excinfo.value.errcode, excinfo.value.http_status) == ("NOT_ENOUGH", 403)
    assert pay_client.create_refund(out_trade_no, "RN" + out_trade_no, 100, 1000)["status"] == "PROCESSING"


# -- answer verification -----------------------------------------------------------------------


class TamperingTransport(httpx.BaseTransport):
    """A man in the middle: turns NOTPAY into SUCCESS in answers, keeping WeChat's headers."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        body = response.read().replace(b'"NOTPAY"', b'"SUCCESS"')
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
        return httpx.Response(response.status_code, headers=headers, content=body)

    def close(self) -> None:
        self._inner.close()


def test_a_tampered_answer_is_rejected(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    out_trade_no = trade_no()
    prepay(pay_client, out_trade_no)
    with httpx.Client(transport=TamperingTransport()) as http:
        client = WechatPayClient(pay_client.config, http=http)
        with pytest.raises(ResponseSignatureError) as excinfo:
            client.query_by_out_trade_no(out_trade_no)
    assert excinfo.value.errmsg == "bad_signature"


def test_an_answer_signed_by_an_unknown_platform_key_is_rejected(
    fake: FakeWechat, pay_client: WechatPayClient
) -> None:
    out_trade_no = trade_no()
    prepay(pay_client, out_trade_no)
    unrelated = FakeWechat()  # another platform key pair; never started
    config = dataclasses.replace(
        pay_client.config,
        platform_public_keys={"5157F09EFDC096DE15EBE81A47057A7232F1B8E1": unrelated.platform_public_key_pem},
    )
    with WechatPayClient(config) as client, pytest.raises(ResponseSignatureError) as excinfo:
        client.query_by_out_trade_no(out_trade_no)
    assert excinfo.value.errmsg == "unknown_serial"


def offline_config(merchant: FakeMerchant) -> WechatPayConfig:
    """A config for a mocked transport (no fake server behind it)."""
    return merchant.config("https://pay.invalid", NOTIFY_URL)


def test_unsigned_2xx_answer_is_rejected(merchant: FakeMerchant) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"prepay_id": "wx-forged"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        client = WechatPayClient(offline_config(merchant), http=http)
        with pytest.raises(ResponseSignatureError) as excinfo:
            prepay(client, trade_no())
    assert excinfo.value.errmsg == "missing_headers"


def test_non_json_error_answer(merchant: FakeMerchant) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="<html>bad gateway</html>"))
    with httpx.Client(transport=transport) as http, pytest.raises(WechatApiError) as excinfo:
        WechatPayClient(offline_config(merchant), http=http).query_refund("R1")
    assert (excinfo.value.errcode, excinfo.value.http_status) == ("HTTP_502", 502)


def test_request_line_and_headers_are_signed_as_sent(merchant: FakeMerchant) -> None:
    """The signed message is METHOD, path+query as on the wire, timestamp, nonce, body."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, json={"code": "ORDER_NOT_EXIST", "message": "订单不存在"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        client = WechatPayClient(offline_config(merchant), http=http, clock=lambda: 1_700_000_123.0)
        with pytest.raises(WechatApiError):
            client.query_by_out_trade_no("A-1|b*2")
    request = seen[0]
    scheme, _, rest = request.headers["Authorization"].partition(" ")
    fields = dict(part.split("=", 1) for part in rest.split(","))
    fields = {k: v.strip('"') for k, v in fields.items()}
    assert scheme == "WECHATPAY2-SHA256-RSA2048"
    assert (fields["mchid"], fields["serial_no"], fields["timestamp"]) == (
        merchant.mchid,
        merchant.merchant_serial_no,
        "1700000123",
    )
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Wechatpay-Serial"] == next(iter(merchant.platform_public_keys))
    path = request.url.raw_path.decode()
    assert path == f"/v3/pay/transactions/out-trade-no/A-1%7Cb%2A2?mchid={merchant.mchid}"
    message = f"GET\n{path}\n1700000123\n{fields['nonce_str']}\n\n".encode()
    public_key = serialization.load_pem_public_key(merchant.merchant_public_key_pem.encode())
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(base64.b64decode(fields["signature"]), message, padding.PKCS1v15(), hashes.SHA256())


# -- notifications -----------------------------------------------------------------------------


def payment_notification(fake: FakeWechat, client: WechatPayClient) -> tuple[dict[str, str], bytes, str]:
    out_trade_no = trade_no()
    prepay(client, out_trade_no, 888, attach="cart:9")
    headers, body = fake.pay(out_trade_no)
    return headers, body, out_trade_no


def test_valid_payment_notification(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    headers, body, out_trade_no = payment_notification(fake, pay_client)

    notification = verify_notification(pay_client.config, headers, body)

    assert isinstance(notification, Notification)
    assert notification.event_type == "TRANSACTION.SUCCESS"
    assert notification.resource_type == "encrypt-resource"
    assert notification.id
    resource = notification.resource
    assert resource["out_trade_no"] == out_trade_no
    assert (resource["mchid"], resource["appid"]) == (pay_client.config.mchid, pay_client.config.appid)
    assert (resource["trade_state"], resource["trade_type"], resource["attach"]) == (
        "SUCCESS",
        "JSAPI",
        "cart:9",
    )
    assert resource["amount"] == {
        "total": 888,
        "payer_total": 888,
        "currency": "CNY",
        "payer_currency": "CNY",
    }
    assert resource["payer"] == {"openid": OPENID}
    assert resource["transaction_id"] == pay_client.query_by_out_trade_no(out_trade_no)["transaction_id"]


def test_header_names_are_case_insensitive(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    headers, body, _ = payment_notification(fake, pay_client)
    lowered = {k.lower(): v for k, v in headers.items()}
    assert verify_notification(pay_client.config, lowered, body, now=dt.datetime.now(dt.UTC)).event_type


@pytest.mark.parametrize(
    "header", ["Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial"]
)
def test_missing_header(fake: FakeWechat, pay_client: WechatPayClient, header: str) -> None:
    headers, body, _ = payment_notification(fake, pay_client)
    del headers[header]
    with pytest.raises(NotificationError) as excinfo:
        verify_notification(pay_client.config, headers, body)
    assert excinfo.value.reason == "missing_headers"


def test_unknown_serial(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    headers, body = fake.make_notification(
        "TRANSACTION.SUCCESS", {"mchid": pay_client.config.mchid}, serial="PUB_KEY_ID_0000"
    )
    with pytest.raises(NotificationError) as excinfo:
        verify_notification(pay_client.config, headers, body)
    assert excinfo.value.reason == "unknown_serial"


@pytest.mark.parametrize("offset", [-301, 301, -3600])
def test_stale_timestamp(fake: FakeWechat, pay_client: WechatPayClient, offset: int) -> None:
    now = int(time.time())
    headers, body = fake.make_notification(
        "TRANSACTION.SUCCESS", {"mchid": pay_client.config.mchid}, timestamp=now + offset
    )
    with pytest.raises(NotificationError) as excinfo:
        verify_notification(pay_client.config, headers, body, now=now)
    assert excinfo.value.reason == "stale_timestamp"


def test_four_minutes_old_is_still_fresh(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    now = int(time.time())
    headers, body = fake.make_notification(
        "TRANSACTION.SUCCESS", {"mchid": pay_client.config.mchid, "x": 1}, timestamp=now - 240
    )
    assert verify_notification(pay_client.config, headers, body, now=now).resource == {
        "mchid": pay_client.config.mchid,
        "x": 1,
    }


def test_bad_signature(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    headers, body = fake.make_notification(
        "TRANSACTION.SUCCESS", {"mchid": pay_client.config.mchid}, sign_with=other_private_key_pem()
    )
    with pytest.raises(NotificationError) as excinfo:
        verify_notification(pay_client.config, headers, body)
    assert excinfo.value.reason == "bad_signature"


def test_tampered_body(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    headers, body, _ = payment_notification(fake, pay_client)
    tampered = body.replace(b'"TRANSACTION.SUCCESS"', b'"TRANSACTION.SUCCESS" ')
    with pytest.raises(NotificationError) as excinfo:
        verify_notification(pay_client.config, headers, tampered)
    assert excinfo.value.reason == "bad_signature"


def test_garbage_signature(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    headers, body, _ = payment_notification(fake, pay_client)
    headers["Wechatpay-Signature"] = "WECHATPAY/SIGNTEST/not-base64!!"
    with pytest.raises(NotificationError) as excinfo:
        verify_notification(pay_client.config, headers, body)
    assert excinfo.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"id":"1","event_type":"TRANSACTION.SUCCESS"}',
        b'{"resource":{"algorithm":"AES_128_CBC","ciphertext":"AA==","nonce":"n"}}',
        b'{"resource":{"algorithm":"AEAD_AES_256_GCM","nonce":"n"}}',
    ],
)
def test_malformed_body(fake: FakeWechat, pay_client: WechatPayClient, payload: bytes) -> None:
    headers = fake.sign_body(payload)
    with pytest.raises(NotificationError) as excinfo:
        verify_notification(pay_client.config, headers, payload)
    assert excinfo.value.reason == "malformed_body"


def test_wrong_apiv3_key_cannot_decrypt(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    headers, body, _ = payment_notification(fake, pay_client)
    wrong = dataclasses.replace(pay_client.config, apiv3_key="0" * 32)
    with pytest.raises(NotificationError) as excinfo:
        verify_notification(wrong, headers, body)
    assert excinfo.value.reason == "decrypt_failed"


def test_platform_certificate_pem_is_accepted(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    headers, body, _ = payment_notification(fake, pay_client)
    with_certificate = dataclasses.replace(
        pay_client.config, platform_public_keys={fake.platform_serial: fake.platform_certificate_pem}
    )
    assert verify_notification(with_certificate, headers, body).event_type == "TRANSACTION.SUCCESS"


def test_refund_notification(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    out_trade_no = paid_order(fake, pay_client, total=1000)
    pay_client.create_refund(out_trade_no, "RS" + out_trade_no, 400, 1000)

    headers, body = fake.complete_refund("RS" + out_trade_no)
    notification = verify_notification(pay_client.config, headers, body)

    assert notification.event_type == "REFUND.SUCCESS"
    resource = notification.resource
    assert (resource["out_refund_no"], resource["refund_status"]) == ("RS" + out_trade_no, "SUCCESS")
    assert resource["amount"] == {"total": 1000, "refund": 400, "payer_total": 1000, "payer_refund": 400}
    assert resource["success_time"] and resource["refund_id"] and resource["transaction_id"]


def test_closed_refund_frees_the_amount(fake: FakeWechat, pay_client: WechatPayClient) -> None:
    out_trade_no = paid_order(fake, pay_client, total=1000)
    pay_client.create_refund(out_trade_no, "RK" + out_trade_no, 1000, 1000)
    headers, body = fake.complete_refund("RK" + out_trade_no, status="CLOSED")
    assert verify_notification(pay_client.config, headers, body).event_type == "REFUND.CLOSED"
    assert pay_client.create_refund(out_trade_no, "RL" + out_trade_no, 1000, 1000)["status"] == "PROCESSING"


def test_pay_and_notify_delivers_to_the_notify_url(fake: FakeWechat, merchant: FakeMerchant) -> None:
    """End to end: the fake POSTs notifications to a receiver that verifies them."""
    config = config_of(fake, merchant)
    received: list[Notification] = []
    receiver = FastAPI()

    @receiver.post("/api/pay/wechat/notify/demo")
    @receiver.post("/refund-notify")
    async def notify(request: Request) -> Response:
        try:
            received.append(verify_notification(config, request.headers, await request.body()))
        except NotificationError as exc:
            return Response(json.dumps({"code": "FAIL", "message": exc.reason}), status_code=400)
        return Response(status_code=NOTIFICATION_SUCCESS_STATUS)

    with TestClient(receiver, base_url="https://shop.example.com") as receiver_http:
        delivering = FakeWechat(notify_http=receiver_http)
        delivering.start()
        try:
            shop = delivering.make_merchant(merchant.mchid, merchant.appid, merchant.apiv3_key)
            config = delivering.pay_config(shop, notify_url=NOTIFY_URL)
            with WechatPayClient(config) as client:
                out_trade_no = trade_no()
                prepay(client, out_trade_no, 500)
                assert delivering.pay_and_notify(out_trade_no) == 204
                client.create_refund(
                    out_trade_no,
                    "RD" + out_trade_no,
                    500,
                    500,
                    notify_url="https://shop.example.com/refund-notify",
                )
                assert delivering.complete_refund_and_notify("RD" + out_trade_no) == 204
        finally:
            delivering.stop()

    assert [n.event_type for n in received] == ["TRANSACTION.SUCCESS", "REFUND.SUCCESS"]
    assert received[0].resource["out_trade_no"] == out_trade_no


def test_config_checks_the_apiv3_key_length(merchant: FakeMerchant) -> None:
    with pytest.raises(ValueError):
        WechatPayConfig(
            mchid=merchant.mchid,
            appid=merchant.appid,
            merchant_serial_no=merchant.merchant_serial_no,
            merchant_private_key_pem=merchant.merchant_private_key_pem,
            apiv3_key="short",
            platform_public_keys=merchant.platform_public_keys,
        )
