"""Client for WeChat Pay API v3 (direct merchant, JSAPI / mini-program payments and refunds) and
the verifier of the notifications WeChat Pay POSTs to us.

Protocol notes (WeChat Pay v3):

- **Requests** carry ``Authorization: WECHATPAY2-SHA256-RSA2048 mchid="..",nonce_str="..",
  signature="..",timestamp="..",serial_no=".."``. ``signature`` is base64 RSA-PKCS#1 v1.5 SHA-256,
  by the merchant's API private key (whose certificate serial is ``serial_no``), over
  ``METHOD\\nPATH_WITH_QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n`` (empty BODY for GET). The path is
  signed exactly as sent on the wire, so the request is built first and its ``raw_path`` signed.
- **Answers** of 2xx carry ``Wechatpay-Timestamp``, ``Wechatpay-Nonce``, ``Wechatpay-Signature``
  and ``Wechatpay-Serial``: a platform signature over ``TIMESTAMP\\nNONCE\\nBODY\\n``, verified
  with the platform public key named by the serial (a platform-certificate serial, or a
  ``PUB_KEY_ID_...`` id in "WeChat Pay public key" mode). Errors are 4xx/5xx
  ``{"code": "PARAM_ERROR", "message": "...", "detail": {...}}``.
- **Notifications** are POSTs signed like answers, whose JSON body carries an AEAD_AES_256_GCM
  encrypted ``resource`` (key: the 32-byte APIv3 key; nonce and associated data in clear).
  Answer success with 2xx and no body (``NOTIFICATION_SUCCESS_STATUS`` = 204); failure with
  4xx/5xx and ``{"code": "FAIL", "message": "..."}`` — WeChat Pay then retries the delivery.
- Amounts are integer fen (分); currency is always ``CNY`` here.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from siyu.integrations.wechat.errors import NotificationError, ResponseSignatureError, WechatApiError

__all__ = [
    "AUTH_SCHEME",
    "DEFAULT_BASE_URL",
    "NOTIFICATION_SUCCESS_STATUS",
    "Notification",
    "NotificationError",
    "WechatPayClient",
    "WechatPayConfig",
    "decrypt_resource",
    "encrypt_sensitive",
    "load_private_key",
    "load_public_key",
    "verify_notification",
]

DEFAULT_BASE_URL: Final = "https://api.mch.weixin.qq.com"
DEFAULT_TIMEOUT: Final = httpx.Timeout(10.0, connect=5.0)
AUTH_SCHEME: Final = "WECHATPAY2-SHA256-RSA2048"
PUBLIC_KEY_ID_PREFIX: Final = "PUB_KEY_ID_"
CURRENCY: Final = "CNY"
AEAD_ALGORITHM: Final = "AEAD_AES_256_GCM"
MAX_CLOCK_SKEW_SECONDS: Final = 300
USER_AGENT: Final = "siyu-wechatpay/1 (+httpx)"

NOTIFICATION_SUCCESS_STATUS: Final = 204
"""Answer a notification you accepted (or already had) with this status and no body. To refuse
one, answer 4xx/5xx with ``{"code": "FAIL", "message": "..."}``; WeChat Pay retries it later."""

SIGNATURE_HEADERS: Final = (
    "wechatpay-timestamp",
    "wechatpay-nonce",
    "wechatpay-signature",
    "wechatpay-serial",
)


# -- keys and primitives -----------------------------------------------------------------------


@lru_cache(maxsize=64)
def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """The merchant's API private key (PKCS#8 ``apiclient_key.pem`` or PKCS#1)."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the merchant private key must be an RSA key")
    return key


@lru_cache(maxsize=64)
def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """A platform public key from a PEM public key or a PEM platform certificate."""
    data = pem.strip().encode()
    key: object
    if b"-----BEGIN CERTIFICATE-----" in data:
        key = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the WeChat Pay platform key must be an RSA key")
    return key


def sign_sha256_rsa(key: rsa.RSAPrivateKey, message: bytes) -> str:
    """Base64 RSA-PKCS#1 v1.5 SHA-256 signature, the only scheme WeChat Pay v3 uses."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def verify_sha256_rsa(key: rsa.RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def new_nonce() -> str:
    """32 random upper-case hex characters (the nonce_str format of WeChat's samples)."""
    return secrets.token_hex(16).upper()


def signed_message(*lines: str | bytes) -> bytes:
    """WeChat Pay's signing message: every line, each followed by ``\\n``."""
    return b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)


def decrypt_resource(apiv3_key: str, resource: Mapping[str, Any]) -> bytes:
    """AEAD_AES_256_GCM-decrypt a notification ``resource`` (or any v3 encrypted object).

    ``ciphertext`` is base64 of ciphertext||tag; ``nonce`` (12 chars) and ``associated_data``
    are plain strings. Raises ``cryptography.exceptions.InvalidTag`` on a wrong key or tampering.
    """
    ciphertext = base64.b64decode(str(resource["ciphertext"]), validate=True)
    nonce = str(resource["nonce"]).encode()
    associated = str(resource.get("associated_data") or "").encode()
    return AESGCM(apiv3_key.encode()).decrypt(nonce, ciphertext, associated)


def encrypt_sensitive(key: rsa.RSAPublicKey, plaintext: str) -> str:
    """Encrypt a sensitive request field (a payee's real name, an ID number) for WeChat Pay v3:
    RSAES-OAEP with SHA-1 and MGF1-SHA-1 under the platform public key, base64. Random padding:
    the same text encrypts differently every time. Send the key's serial as ``Wechatpay-Serial``."""
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # SHA-1: WeChat Pay v3 requires it
    return base64.b64encode(key.encrypt(plaintext.encode(), oaep)).decode("ascii")


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WechatPayConfig:
    """One merchant's WeChat Pay credentials.

    ``platform_public_keys`` maps serial → PEM: platform-certificate serials (value: the PEM
    certificate or its public key) and/or a ``PUB_KEY_ID_...`` WeChat Pay public key id. Keep the
    old and the new key during a rotation. ``notify_url`` is where payment notifications go.
    """

    mchid: str
    appid: str
    merchant_serial_no: str
    merchant_private_key_pem: str = field(repr=False)
    apiv3_key: str = field(repr=False)
    platform_public_keys: Mapping[str, str] = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    notify_url: str | None = None

    def __post_init__(self) -> None:
        if len(self.apiv3_key.encode()) != 32:
            raise ValueError("the APIv3 key must be 32 bytes")
        if not self.platform_public_keys:
            raise ValueError("at least one WeChat Pay platform public key is needed")

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        return load_private_key(self.merchant_private_key_pem)

    def platform_key(self, serial: str) -> rsa.RSAPublicKey | None:
        """The platform public key named ``serial``, or None when it is unknown."""
        pem = self.platform_public_keys.get(serial)
        return load_public_key(pem) if pem else None

    @property
    def wechatpay_serial(self) -> str | None:
        """The ``Wechatpay-Serial`` to send: the public key id in public-key mode, else None."""
        ids = sorted(s for s in self.platform_public_keys if s.startswith(PUBLIC_KEY_ID_PREFIX))
        return ids[-1] if ids else None

    def encryption_key(self) -> tuple[str, rsa.RSAPublicKey]:
        """``(serial, key)`` to encrypt sensitive fields with; send ``serial`` as ``Wechatpay-Serial``.

        The WeChat Pay public key (``PUB_KEY_ID_...``) when configured, as WeChat recommends; else
        the platform certificate that expires last (the newest during a rotation); else the only
        key. Several bare public keys under certificate serials are ambiguous: ``ValueError``.
        """
        serial = self.wechatpay_serial
        if serial is not None:
            return serial, load_public_key(self.platform_public_keys[serial])
        certificates: list[tuple[dt.datetime, str]] = []
        for name, pem in self.platform_public_keys.items():
            if "-----BEGIN CERTIFICATE-----" in pem:
                certificate = x509.load_pem_x509_certificate(pem.strip().encode())
                certificates.append((certificate.not_valid_after_utc, name))
        if certificates:
            serial = max(certificates)[1]
        elif len(self.platform_public_keys) == 1:
            serial = next(iter(self.platform_public_keys))
        else:
            raise ValueError("several platform keys and none is a certificate: cannot tell which one to encrypt with")
        return serial, load_public_key(self.platform_public_keys[serial])


# -- the API client ----------------------------------------------------------------------------


class WechatPayClient:
    """WeChat Pay API v3 for one direct merchant. Methods return the decoded JSON answer.

    A network error or timeout surfaces as ``httpx.HTTPError``: the outcome is then unknown, so
    query (``query_by_out_trade_no`` / ``query_refund``) before trying again.
    """

    def __init__(
        self,
        config: WechatPayConfig,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self._clock = clock
        self._timeout = timeout
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        config.private_key  # noqa: B018  -- fail fast on a bad private key

    # -- lifecycle ------------------------------------------------------------------------------

    def close_http(self) -> None:
        """Close the HTTP connection pool if this client created it (``close`` closes orders)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close_http()

    # -- payments -------------------------------------------------------------------------------

    def create_jsapi_prepay(
        self,
        out_trade_no: str,
        description: str,
        total_fen: int,
        payer_openid: str,
        time_expire: dt.datetime | None = None,
        attach: str | None = None,
    ) -> str:
        """``POST /v3/pay/transactions/jsapi``: place an order; returns its ``prepay_id``.

        Sending the same ``out_trade_no`` with the same parameters again returns the same
        prepay id; with different parameters WeChat Pay refuses it (``INVALID_REQUEST``).
        """
        _require_fen(total_fen, "total_fen")
        if not self.config.notify_url:
            raise ValueError("WechatPayConfig.notify_url is required to create a payment")
        body: dict[str, Any] = {
            "appid": self.config.appid,
            "mchid": self.config.mchid,
            "description": description,
            "out_trade_no": out_trade_no,
            "notify_url": self.config.notify_url,
            "amount": {"total": total_fen, "currency": CURRENCY},
            "payer": {"openid": payer_openid},
        }
        if time_expire is not None:
            body["time_expire"] = rfc3339(time_expire)
        if attach is not None:
            body["attach"] = attach
        answer = self._call("POST", "/v3/pay/transactions/jsapi", body=body)
        prepay_id = answer.get("prepay_id")
        if not isinstance(prepay_id, str) or not prepay_id:
            raise WechatApiError("INVALID_ANSWER", "the jsapi answer has no prepay_id")
        return prepay_id

    def miniprogram_payment_params(self, prepay_id: str) -> dict[str, str]:
        """The arguments of ``wx.requestPayment`` for ``prepay_id``.

        ``paySign`` is the merchant's RSA-SHA256 signature over
        ``appid\\ntimeStamp\\nnonceStr\\npackage\\n`` (the appid is signed but not passed).
        """
        timestamp = str(int(self._clock()))
        nonce = new_nonce()
        package = f"prepay_id={prepay_id}"
        message = signed_message(self.config.appid, timestamp, nonce, package)
        return {
            "timeStamp": timestamp,
            "nonceStr": nonce,
            "package": package,
            "signType": "RSA",
            "paySign": sign_sha256_rsa(self.config.private_key, message),
        }

    def query_by_out_trade_no(self, out_trade_no: str) -> dict[str, Any]:
        """``GET /v3/pay/transactions/out-trade-no/{no}?mchid=``; ``trade_state`` is SUCCESS,
        REFUND, NOTPAY, CLOSED, REVOKED, USERPAYING or PAYERROR. 404 ``ORDER_NOT_EXIST``."""
        path = f"/v3/pay/transactions/out-trade-no/{_segment(out_trade_no)}"
        return self._call("GET", path, params={"mchid": self.config.mchid})

    def close(self, out_trade_no: str) -> None:
        """``POST .../out-trade-no/{no}/close``: close an unpaid order (204, no body)."""
        path = f"/v3/pay/transactions/out-trade-no/{_segment(out_trade_no)}/close"
        self._call("POST", path, body={"mchid": self.config.mchid})

    # -- refunds --------------------------------------------------------------------------------

    def create_refund(
        self,
        out_trade_no: str,
        out_refund_no: str,
        refund_fen: int,
        total_fen: int,
        reason: str | None = None,
        notify_url: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v3/refund/domestic/refunds``; ``total_fen`` must be the order's total. The answer
        has ``refund_id``, ``status`` (PROCESSING, SUCCESS, CLOSED, ABNORMAL) and ``amount``.
        Retrying with the same ``out_refund_no`` and amounts is idempotent."""
        _require_fen(refund_fen, "refund_fen")
        _require_fen(total_fen, "total_fen")
        if refund_fen > total_fen:
            raise ValueError("refund_fen cannot exceed total_fen")
        body: dict[str, Any] = {
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "amount": {"refund": refund_fen, "total": total_fen, "currency": CURRENCY},
        }
        if reason:
            body["reason"] = reason
        if notify_url:
            body["notify_url"] = notify_url
        return self._call("POST", "/v3/refund/domestic/refunds", body=body)

    def query_refund(self, out_refund_no: str) -> dict[str, Any]:
        """``GET /v3/refund/domestic/refunds/{no}``; 404 ``RESOURCE_NOT_EXISTS`` when unknown."""
        return self._call("GET", f"/v3/refund/domestic/refunds/{_segment(out_refund_no)}")

    # -- transport ------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Sign, send, check the answer; the decoded JSON object (``{}`` for 204). ``headers``
        add to or replace the static ones (e.g. the ``Wechatpay-Serial`` of an encrypted field)."""
        content = (
            b"" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        )
        request = self._http.build_request(
            method,
            f"{self.base_url}{path}",
            params=params,
            content=content or None,
            headers={**self._static_headers(), **(headers or {})},
            timeout=self._timeout,
        )
        request.headers["Authorization"] = self._authorization(
            method, request.url.raw_path.decode("ascii"), content
        )
        response = self._http.send(request)
        if not response.is_success:
            raise _api_error(response)
        self._verify_response(response)
        return _decode_object(response)

    def _static_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": "application/json", "User-Agent": USER_AGENT}
        serial = self.config.wechatpay_serial
        if serial:
            headers["Wechatpay-Serial"] = serial
        return headers

    def _authorization(self, method: str, url_path: str, body: bytes) -> str:
        timestamp = str(int(self._clock()))
        nonce = new_nonce()
        message = signed_message(method, url_path, timestamp, nonce, body)
        signature = sign_sha256_rsa(self.config.private_key, message)
        return (
            f'{AUTH_SCHEME} mchid="{self.config.mchid}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{self.config.merchant_serial_no}"'
        )

    def _verify_response(self, response: httpx.Response) -> None:
        """Check the platform signature of a 2xx answer; raise ResponseSignatureError if bad."""
        request_id = response.headers.get("request-id")
        try:
            _verify_signed_message(
                self.config, response.headers, response.content, self._clock(), MAX_CLOCK_SKEW_SECONDS
            )
        except NotificationError as exc:
            raise ResponseSignatureError(exc.reason, response.status_code, request_id=request_id) from exc


# -- notifications -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """A verified, decrypted notification. ``resource`` is the decrypted object: a transaction
    for TRANSACTION.SUCCESS, a refund for REFUND.SUCCESS / REFUND.ABNORMAL / REFUND.CLOSED."""

    id: str
    event_type: str
    resource_type: str
    resource: dict[str, Any]
    summary: str | None = None
    create_time: str | None = None


def verify_notification(
    config: WechatPayConfig,
    headers: Mapping[str, str],
    body: bytes,
    now: float | dt.datetime | None = None,
    max_age_seconds: float = MAX_CLOCK_SKEW_SECONDS,
) -> Notification:
    """Verify and decrypt a WeChat Pay notification; raise ``NotificationError(reason)``.

    Checks, in order: the four ``Wechatpay-*`` headers (``missing_headers``), a known platform
    serial (``unknown_serial``), a timestamp within ``max_age_seconds`` of ``now``
    (``stale_timestamp``), the platform signature over the raw body (``bad_signature``), the
    envelope shape (``malformed_body``) and AES-GCM decryption (``decrypt_failed``). It does not
    check that mchid/appid/amount match your order: the caller must.
    """
    moment = time.time() if now is None else now.timestamp() if isinstance(now, dt.datetime) else now
    _verify_signed_message(config, headers, body, moment, max_age_seconds)
    envelope = _parse_envelope(body)
    resource = envelope["resource"]
    try:
        plaintext = decrypt_resource(config.apiv3_key, resource)
    except (InvalidTag, binascii.Error, ValueError) as exc:
        raise NotificationError("decrypt_failed", type(exc).__name__) from exc
    try:
        decrypted = json.loads(plaintext)
    except ValueError as exc:
        raise NotificationError("malformed_body", "the decrypted resource is not JSON") from exc
    if not isinstance(decrypted, dict):
        raise NotificationError("malformed_body", "the decrypted resource is not a JSON object")
    return Notification(
        id=str(envelope.get("id", "")),
        event_type=str(envelope.get("event_type", "")),
        resource_type=str(envelope.get("resource_type", "")),
        resource=decrypted,
        summary=_optional_str(envelope.get("summary")),
        create_time=_optional_str(envelope.get("create_time")),
    )


def _verify_signed_message(
    config: WechatPayConfig, headers: Mapping[str, str], body: bytes, now: float, max_age_seconds: float
) -> None:
    """The platform-signature check shared by answers and notifications (``NotificationError``)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    values = [lowered.get(name, "").strip() for name in SIGNATURE_HEADERS]
    if not all(values):
        raise NotificationError("missing_headers")
    timestamp, nonce, signature, serial = values
    key = config.platform_key(serial)
    if key is None:
        raise NotificationError("unknown_serial", serial)
    try:
        age = abs(now - int(timestamp))
    except ValueError as exc:
        raise NotificationError("stale_timestamp", "the timestamp is not an integer") from exc
    if age > max_age_seconds:
        raise NotificationError("stale_timestamp", f"{age:.0f}s away from now")
    if not verify_sha256_rsa(key, signed_message(timestamp, nonce, body), signature):
        raise NotificationError("bad_signature")


def _parse_envelope(body: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(body)
    except ValueError as exc:
        raise NotificationError("malformed_body", "the body is not JSON") from exc
    resource = envelope.get("resource") if isinstance(envelope, dict) else None
    if not isinstance(resource, dict):
        raise NotificationError("malformed_body", "no resource object")
    if resource.get("algorithm") != AEAD_ALGORITHM:
        raise NotificationError("malformed_body", f"unsupported algorithm {resource.get('algorithm')!r}")
    for name in ("ciphertext", "nonce"):
        if not isinstance(resource.get(name), str) or not resource[name]:
            raise NotificationError("malformed_body", f"resource.{name} is missing")
    if not isinstance(resource.get("associated_data", ""), str):
        raise NotificationError("malformed_body", "resource.associated_data is not a string")
    return envelope


# -- helpers -----------------------------------------------------------------------------------


def rfc3339(moment: dt.datetime) -> str:
    """``2026-03-01T10:00:00+08:00``; naive datetimes are refused (their zone is a guess)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("time_expire must be timezone-aware")
    return moment.isoformat(timespec="seconds")


def _require_fen(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer amount in fen")


def _segment(value: str) -> str:
    return quote(value, safe="")


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _decode_object(response: httpx.Response) -> dict[str, Any]:
    if not response.content:
        return {}
    try:
        data = json.loads(response.content)
    except ValueError as exc:
        raise WechatApiError("INVALID_ANSWER", "the answer is not JSON", response.status_code) from exc
    if not isinstance(data, dict):
        raise WechatApiError("INVALID_ANSWER", "the answer is not a JSON object", response.status_code)
    return data


def _api_error(response: httpx.Response) -> WechatApiError:
    """4xx/5xx → ``WechatApiError(code, message, status)``; a non-JSON body gets ``HTTP_<status>``."""
    request_id = response.headers.get("request-id")
    try:
        data = json.loads(response.content)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        return WechatApiError(
            data["code"],
            str(data.get("message", "")),
            response.status_code,
            request_id=request_id,
            detail=data.get("detail"),
        )
    return WechatApiError(
        f"HTTP_{response.status_code}", response.text[:200], response.status_code, request_id=request_id
    )
