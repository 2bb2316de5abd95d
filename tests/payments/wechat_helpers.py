"""Test keys and WeChat Pay v3 notifications built the way WeChat Pay builds them (platform
RSA signature over ``timestamp\\nnonce\\nbody\\n``, AEAD_AES_256_GCM resource under the APIv3
key), for tests that do not need the fake server."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


@dataclass(frozen=True)
class Keys:
    mchid: str
    appid: str
    serial_no: str
    merchant_private_pem: str
    apiv3_key: str
    platform_serial: str
    platform_private: rsa.RSAPrivateKey
    platform_public_pem: str

    def merchant_patch(self) -> dict[str, Any]:
        return {
            "pay_provider": "wechatpay", "pay_mchid": self.mchid, "pay_serial_no": self.serial_no,
            "pay_private_key_pem": self.merchant_private_pem, "pay_apiv3_key": self.apiv3_key,
            "pay_platform_keys": {self.platform_serial: self.platform_public_pem}, "wechat_appid": self.appid,
        }


@lru_cache(maxsize=2)
def _rsa(n: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_keys() -> Keys:
    merchant, platform = _rsa(0), _rsa(1)
    return Keys(
        mchid="1900000109",
        appid=f"wx{uuid.uuid4().hex[:16]}",
        serial_no="5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        merchant_private_pem=merchant.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        apiv3_key=uuid.uuid4().hex,
        platform_serial="PUB_KEY_ID_0119000010920250101000000000001",
        platform_private=platform,
        platform_public_pem=platform.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
    )


def transaction(keys: Keys, out_trade_no: str, amount: int, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "appid": keys.appid, "mchid": keys.mchid, "out_trade_no": out_trade_no,
        "transaction_id": f"4200{uuid.uuid4().int % 10**24:024d}", "trade_type": "JSAPI", "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功", "bank_type": "OTHERS", "success_time": "2026-03-01T10:00:00+08:00",
        "payer": {"openid": "o-test"}, "amount": {"total": amount, "payer_total": amount, "currency": "CNY"},
    }
    data.update(over)
    return data


def notification(
    keys: Keys,
    resource: dict[str, Any],
    *,
    event_type: str = "TRANSACTION.SUCCESS",
    notification_id: str | None = None,
    timestamp: int | None = None,
    serial: str | None = None,
    signer: rsa.RSAPrivateKey | None = None,
    tamper_ciphertext: bool = False,
    apiv3_key: str | None = None,
) -> tuple[dict[str, str], bytes]:
    nonce = base64.b64encode(os.urandom(9)).decode()[:12]
    aad = "transaction" if event_type.startswith("TRANSACTION") else "refund"
    sealed = AESGCM((apiv3_key or keys.apiv3_key).encode()).encrypt(
        nonce.encode(), json.dumps(resource).encode(), aad.encode()
    )
    if tamper_ciphertext:
        sealed = bytes([sealed[0] ^ 1]) + sealed[1:]
    envelope = {
        "id": notification_id or str(uuid.uuid4()), "create_time": "2026-03-01T10:00:01+08:00",
        "resource_type": "encrypt-resource", "event_type": event_type, "summary": "支付成功",
        "resource": {
            "original_type": aad, "algorithm": "AEAD_AES_256_GCM", "ciphertext": base64.b64encode(sealed).decode(),
            "associated_data": aad, "nonce": nonce,
        },
    }
    body = json.dumps(envelope).encode()
    ts = str(timestamp if timestamp is not None else int(time.time()))
    head_nonce = uuid.uuid4().hex
    message = f"{ts}\n{head_nonce}\n".encode() + body + b"\n"
    signature = (signer or keys.platform_private).sign(message, padding.PKCS1v15(), hashes.SHA256())
    headers = {
        "Wechatpay-Timestamp": ts, "Wechatpay-Nonce": head_nonce,
        "Wechatpay-Signature": base64.b64encode(signature).decode(),
        "Wechatpay-Serial": serial or keys.platform_serial, "Content-Type": "application/json",
    }
    return headers, body
