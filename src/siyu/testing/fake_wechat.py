"""A local stand-in for WeChat: the mini-program server API and WeChat Pay API v3.

**A test peer — no money moves.** It speaks the wire protocols faithfully so the real clients
(``siyu.integrations.wechat``) run unchanged against it:

- It verifies the ``Authorization`` signature of every pay request with the merchant's
  registered public key (401 ``SIGN_ERROR`` otherwise) and signs all its pay answers with its own
  platform key (``Wechatpay-Timestamp/Nonce/Signature/Serial``).
- Notifications it produces are signed and AES-256-GCM encrypted like the real ones.

Its signing and encryption code is written here independently of the client, on purpose: a
mistake in one is then caught by the other.

Use::

    with FakeWechat() as fake:                 # uvicorn on 127.0.0.1:<free port>
        fake.register_app("wx123", "secret")
        fake.register_code("code-1", openid="o-1")
        merchant = fake.make_merchant("1900000001", "wx123")
        config = fake.pay_config(merchant, notify_url="https://shop.example/notify")
        ...
        headers, body = fake.pay("ORDER-1")    # or fake.pay_and_notify("ORDER-1")

``fake.app`` is the ASGI app for in-process use (e.g. ``TestClient(fake.app)``, base URL
``http://testserver``). State is in memory behind one lock.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import secrets
import socket
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import httpx
import uvicorn
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from siyu.integrations.wechat.pay_v3 import WechatPayConfig

CHINA_TZ: Final = dt.timezone(dt.timedelta(hours=8))
AUTH_SCHEME: Final = "WECHATPAY2-SHA256-RSA2048"
MAX_SKEW_SECONDS: Final = 300
TOKEN_LIFETIME_SECONDS: Final = 7200
OUT_TRADE_NO_RE: Final = re.compile(r"^[0-9A-Za-z_\-|*]{6,32}$")
OUT_REFUND_NO_RE: Final = re.compile(r"^[0-9A-Za-z_\-|*@]{1,64}$")
TRADE_STATE_DESC: Final = {
    "NOTPAY": "订单未支付",
    "SUCCESS": "支付成功",
    "CLOSED": "订单已关闭",
    "REFUND": "转入退款",
}
OUT_BILL_NO_RE: Final = re.compile(r"^[0-9A-Za-z]{1,32}$")
TRANSFER_FINAL_STATES: Final = frozenset({"SUCCESS", "FAIL", "CANCELLED"})
# not final and not yet cancelled: what the cancel API accepts (WeChat: "主要不是终态，都可以撤销")
TRANSFER_CANCELLABLE_STATES: Final = frozenset({"ACCEPTED", "PROCESSING", "WAIT_USER_CONFIRM", "TRANSFERING"})
# WeChat closes a bill the user has not confirmed after 24 hours: it becomes CANCELLED
TRANSFER_CONFIRM_WINDOW: Final = dt.timedelta(hours=24)
REFUND_EVENTS: Final = {"SUCCESS": "REFUND.SUCCESS", "ABNORMAL": "REFUND.ABNORMAL", "CLOSED": "REFUND.CLOSED"}
REFUND_SUMMARIES: Final = {"SUCCESS": "退款成功", "ABNORMAL": "退款异常", "CLOSED": "退款关闭"}


# -- crypto of the peer (independent of the client's) -------------------------------------------


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _public_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def _rsa_verify(key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def _lines(*parts: str | bytes) -> bytes:
    return b"".join((p if isinstance(p, bytes) else p.encode()) + b"\n" for p in parts)


def _as_private_key(key: rsa.RSAPrivateKey | str) -> rsa.RSAPrivateKey:
    if isinstance(key, str):
        loaded = serialization.load_pem_private_key(key.encode(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError("not an RSA private key")
        return loaded
    return key


def _self_signed_certificate(key: rsa.RSAPrivateKey, serial: int) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake WeChat Pay platform")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365 * 5))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _png(size: int) -> bytes:
    """A valid white grayscale PNG of ``size`` x ``size`` pixels."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    rows = b"".join(b"\x00" + b"\xff" * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _china_now() -> str:
    return dt.datetime.now(CHINA_TZ).isoformat(timespec="seconds")


def _is_fen(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _digits(count: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(count))


# -- state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeMerchant:
    """A merchant known to the fake: everything a ``WechatPayConfig`` needs."""

    mchid: str
    appid: str
    merchant_serial_no: str
    merchant_private_key_pem: str
    merchant_public_key_pem: str
    apiv3_key: str
    platform_public_keys: dict[str, str]

    def config(self, base_url: str, notify_url: str | None = None) -> WechatPayConfig:
        return WechatPayConfig(
            mchid=self.mchid,
            appid=self.appid,
            merchant_serial_no=self.merchant_serial_no,
            merchant_private_key_pem=self.merchant_private_key_pem,
            apiv3_key=self.apiv3_key,
            platform_public_keys=dict(self.platform_public_keys),
            base_url=base_url,
            notify_url=notify_url,
        )


@dataclass
class _Transaction:
    mchid: str
    appid: str
    out_trade_no: str
    request: dict[str, Any]
    prepay_id: str
    state: str = "NOTPAY"
    transaction_id: str | None = None
    success_time: str | None = None
    bank_type: str = "OTHERS"

    @property
    def total(self) -> int:
        return int(self.request["amount"]["total"])

    @property
    def notify_url(self) -> str:
        return str(self.request["notify_url"])


@dataclass
class _Refund:
    mchid: str
    out_trade_no: str
    transaction_id: str
    out_refund_no: str
    refund_id: str
    refund: int
    total: int
    request: dict[str, Any]
    create_time: str
    status: str = "PROCESSING"
    success_time: str | None = None


@dataclass
class _TransferBill:
    mchid: str
    appid: str
    out_bill_no: str
    transfer_bill_no: str
    openid: str
    amount: int
    remark: str
    request: dict[str, Any]
    create_time: str
    state: str = "WAIT_USER_CONFIRM"
    fail_reason: str | None = None
    update_time: str | None = None
    user_name: str | None = None  # decrypted by the fake (WeChat checks it against the real-name record)
    created_at: float = 0.0  # the fake's clock (``FakeWechat.now``) when the bill was created

    @property
    def notify_url(self) -> str | None:
        url = self.request.get("notify_url")
        return str(url) if url else None


@dataclass
class _Code:
    openid: str
    unionid: str | None
    appid: str | None
    used: bool = False


@dataclass
class _PhoneCode:
    phone: str
    country_code: str
    used: bool = False


@dataclass
class _Token:
    appid: str
    expires_at: float
    revoked: bool = False


@dataclass
class _InjectedError:
    method: str
    path_prefix: str
    status: int
    code: str
    message: str
    times: int


@dataclass
class _InjectedLoss:
    method: str
    path_prefix: str
    times: int


class _AnswerLost(Exception):
    """Raised on purpose half-way through an answer: the server drops the connection."""


class _LostAnswers:
    """How many dropped answers uvicorn has yet to log as a server error ("Exception in ASGI
    application"); as a logging filter on ``uvicorn.error`` it swallows those records."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0

    def dropped(self) -> None:
        with self._lock:
            self._pending += 1

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is None:
            return True
        with self._lock:
            if self._pending <= 0:
                return True
            self._pending -= 1
            return False


_LOST_ANSWERS = _LostAnswers()


class _LostAnswer(Response):
    """The answer that never arrives: its head and a first byte are sent, then the server gives
    up on the response and drops the connection, so the client sees a network error
    (``httpx.RemoteProtocolError``) for a request that *was* carried out."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"512")]})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        _LOST_ANSWERS.dropped()
        raise _AnswerLost("the fake dropped this answer on purpose")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    body: bytes = field(repr=False)


class _PayError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class _MiniError(Exception):
    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


# -- the fake ---------------------------------------------------------------------------------


class FakeWechat:
    """In-memory WeChat (mini-program API + WeChat Pay v3) served by FastAPI."""

    def __init__(
        self, *, platform_serial: str | None = None, notify_http: httpx.Client | None = None,
        transfer_confirm_window: dt.timedelta = TRANSFER_CONFIRM_WINDOW,
    ) -> None:
        self._lock = threading.RLock()
        self._platform_key = _new_rsa_key()
        self.platform_serial = platform_serial or f"PUB_KEY_ID_{_digits(32)}"
        self.platform_public_key_pem = _public_pem(self._platform_key.public_key())
        self.platform_certificate_pem = _self_signed_certificate(self._platform_key, int(_digits(18)))
        self._notify_http = notify_http
        self.transfer_confirm_window = transfer_confirm_window
        self._clock_offset = 0.0  # seconds added to time.time(): ``advance`` moves WeChat's clock
        self._apps: dict[str, str] = {}
        self._codes: dict[str, _Code] = {}
        self._phone_codes: dict[str, _PhoneCode] = {}
        self._tokens: dict[str, _Token] = {}
        self._merchants: dict[str, FakeMerchant] = {}
        self._merchant_keys: dict[str, rsa.RSAPublicKey] = {}
        self._transactions: dict[tuple[str, str], _Transaction] = {}
        self._refunds: dict[tuple[str, str], _Refund] = {}
        self._transfers: dict[tuple[str, str], _TransferBill] = {}
        self._injected: list[_InjectedError] = []
        self._losses: list[_InjectedLoss] = []
        self.requests: list[RecordedRequest] = []
        self._base_url = "http://testserver"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = self._build_app()

    # -- server lifecycle -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` once started, ``http://testserver`` (TestClient) before."""
        return self._base_url

    def start(self) -> None:
        """Serve on 127.0.0.1 on a free port in a background thread."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        logging.getLogger("uvicorn.error").addFilter(_LOST_ANSWERS)  # once: a filter is added once
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-wechat", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake WeChat server did not start")
            time.sleep(0.01)
        self._base_url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- setup: mini-program ------------------------------------------------------------------------

    def register_app(self, appid: str, secret: str) -> None:
        with self._lock:
            self._apps[appid] = secret

    def register_code(
        self, code: str, openid: str, unionid: str | None = None, *, appid: str | None = None
    ) -> None:
        """A ``wx.login`` code: usable once (then 40163); bound to ``appid`` when given."""
        with self._lock:
            self._codes[code] = _Code(openid=openid, unionid=unionid, appid=appid)

    def register_phone_code(self, code: str, phone: str, country_code: str = "86") -> None:
        """A ``getPhoneNumber`` button code for ``phone`` (national number), usable once."""
        with self._lock:
            self._phone_codes[code] = _PhoneCode(phone=phone, country_code=country_code)

    def revoke_access_tokens(self) -> None:
        """Invalidate every issued access token: their next use answers 40001."""
        with self._lock:
            for token in self._tokens.values():
                token.revoked = True

    def expire_access_tokens(self) -> None:
        """Expire every issued access token: their next use answers 42001."""
        with self._lock:
            for token in self._tokens.values():
                token.expires_at = 0.0

    # -- setup: pay -----------------------------------------------------------------------------

    def make_merchant(self, mchid: str, appid: str, apiv3_key: str | None = None) -> FakeMerchant:
        """Register a merchant with a fresh API key pair (the fake keeps the public half)."""
        key = _new_rsa_key()
        merchant = FakeMerchant(
            mchid=mchid,
            appid=appid,
            merchant_serial_no=secrets.token_hex(20).upper(),
            merchant_private_key_pem=_private_pem(key),
            merchant_public_key_pem=_public_pem(key.public_key()),
            apiv3_key=apiv3_key or secrets.token_hex(16),
            platform_public_keys={self.platform_serial: self.platform_public_key_pem},
        )
        if len(merchant.apiv3_key.encode()) != 32:
            raise ValueError("the APIv3 key must be 32 bytes")
        with self._lock:
            self._merchants[mchid] = merchant
            self._merchant_keys[mchid] = key.public_key()
        return merchant

    def pay_config(self, merchant: FakeMerchant, notify_url: str | None = None) -> WechatPayConfig:
        """A client configuration for ``merchant`` pointing at this fake."""
        return merchant.config(self.base_url, notify_url)

    def fail_next(
        self, method: str, path_prefix: str, status: int, code: str, message: str = "", times: int = 1
    ) -> None:
        """Answer the next ``times`` pay requests matching ``method`` + ``path_prefix`` with an error
        (after authentication), e.g. ``fail_next("POST", "/v3/refund", 403, "NOT_ENOUGH")``."""
        with self._lock:
            self._injected.append(
                _InjectedError(method.upper(), path_prefix, status, code, message or code, times)
            )

    def lose_transfer_answer_next(self, method: str, path_prefix: str, times: int = 1) -> None:
        """Carry out the next ``times`` transfer-bill requests matching ``method`` + ``path_prefix``
        and then drop their answers (the connection breaks half-way through the answer), e.g. a
        cancel WeChat accepted whose answer the merchant never got. Served fake only (``start``)."""
        with self._lock:
            self._losses.append(_InjectedLoss(method.upper(), path_prefix, times))

    def _take_loss(self, method: str, path: str) -> bool:
        with self._lock:
            for loss in self._losses:
                if loss.method == method and path.startswith(loss.path_prefix) and loss.times > 0:
                    loss.times -= 1
                    return True
        return False

    # -- inspection -----------------------------------------------------------------------------

    def transaction(self, out_trade_no: str, mchid: str | None = None) -> dict[str, Any]:
        """The transaction as the query API would answer it."""
        with self._lock:
            return self._transaction_view(self._find_transaction(out_trade_no, mchid))

    def refund(self, out_refund_no: str, mchid: str | None = None) -> dict[str, Any]:
        with self._lock:
            return self._refund_view(self._find_refund(out_refund_no, mchid))

    def count_requests(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    # -- simulation -----------------------------------------------------------------------------

    def pay(
        self, out_trade_no: str, *, mchid: str | None = None, bank_type: str = "OTHERS"
    ) -> tuple[dict[str, str], bytes]:
        """The payer pays: mark SUCCESS; return a signed, encrypted TRANSACTION.SUCCESS notification.
        Paying an already paid order returns a fresh delivery of the same notification."""
        with self._lock:
            trade = self._find_transaction(out_trade_no, mchid)
            if trade.state == "CLOSED":
                raise ValueError(f"transaction {out_trade_no} is closed")
            if trade.state == "NOTPAY":
                trade.state = "SUCCESS"
                trade.transaction_id = f"4200{_digits(24)}"
                trade.success_time = _china_now()
                trade.bank_type = bank_type
            resource = self._transaction_resource(trade)
        return self.make_notification("TRANSACTION.SUCCESS", resource, summary="支付成功")

    def pay_and_notify(self, out_trade_no: str, *, mchid: str | None = None) -> int:
        """``pay`` then POST the notification to the transaction's notify_url; the HTTP status."""
        headers, body = self.pay(out_trade_no, mchid=mchid)
        with self._lock:
            url = self._find_transaction(out_trade_no, mchid).notify_url
        return self.deliver(url, headers, body)

    def complete_refund(
        self, out_refund_no: str, *, mchid: str | None = None, status: str = "SUCCESS"
    ) -> tuple[dict[str, str], bytes]:
        """Settle a refund (SUCCESS, ABNORMAL or CLOSED); return its signed, encrypted notification."""
        if status not in REFUND_EVENTS:
            raise ValueError(f"refund status must be one of {sorted(REFUND_EVENTS)}")
        with self._lock:
            refund = self._find_refund(out_refund_no, mchid)
            if refund.status == "PROCESSING":
                refund.status = status
                if status == "SUCCESS":
                    refund.success_time = _china_now()
                    self._transactions[(refund.mchid, refund.out_trade_no)].state = "REFUND"
            resource = self._refund_resource(refund)
            settled = refund.status
        return self.make_notification(REFUND_EVENTS[settled], resource, summary=REFUND_SUMMARIES[settled])

    def complete_refund_and_notify(
        self, out_refund_no: str, *, mchid: str | None = None, status: str = "SUCCESS"
    ) -> int:
        """``complete_refund`` then POST it to the refund's notify_url; the HTTP status."""
        headers, body = self.complete_refund(out_refund_no, mchid=mchid, status=status)
        with self._lock:
            url = self._find_refund(out_refund_no, mchid).request.get("notify_url")
        if not url:
            raise ValueError(f"refund {out_refund_no} has no notify_url")
        return self.deliver(str(url), headers, body)

    def deliver(self, url: str, headers: Mapping[str, str], body: bytes) -> int:
        """POST a notification like WeChat Pay does; the HTTP status of the answer."""
        send_headers = {**headers, "Content-Type": "application/json", "User-Agent": "Mozilla/4.0"}
        if self._notify_http is not None:
            return self._notify_http.post(url, content=body, headers=send_headers).status_code
        with httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0)) as client:
            return client.post(url, content=body, headers=send_headers).status_code

    def sign_body(
        self,
        body: bytes,
        timestamp: int | None = None,
        serial: str | None = None,
        sign_with: rsa.RSAPrivateKey | str | None = None,
    ) -> dict[str, str]:
        """``Wechatpay-*`` headers signing an arbitrary ``body`` (to forge odd notifications)."""
        key = _as_private_key(sign_with) if sign_with else None
        return self._signature_headers(body, timestamp=timestamp, serial=serial, key=key)

    def make_notification(
        self,
        event_type: str,
        resource: dict[str, Any],
        timestamp: int | None = None,
        serial: str | None = None,
        sign_with: rsa.RSAPrivateKey | str | None = None,
        *,
        apiv3_key: str | None = None,
        summary: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """A notification envelope with ``resource`` encrypted (AEAD_AES_256_GCM) and signed.

        The APIv3 key is ``apiv3_key`` or that of the merchant ``resource["mchid"]``. Override
        ``timestamp``/``serial``/``sign_with`` (a private key or PEM) to forge bad deliveries.
        """
        key = apiv3_key or self._merchants[str(resource.get("mchid") or resource["mch_id"])].apiv3_key
        original_type = (
            "refund" if event_type.startswith("REFUND.")
            else "mch_payment" if event_type.startswith("MCHTRANSFER.")
            else "transaction"
        )
        nonce = secrets.token_hex(6)
        ciphertext = AESGCM(key.encode()).encrypt(nonce.encode(), _dumps(resource), original_type.encode())
        envelope = {
            "id": str(uuid.uuid4()),
            "create_time": _china_now(),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary or event_type,
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(ciphertext).decode(),
                "associated_data": original_type,
                "nonce": nonce,
            },
        }
        body = _dumps(envelope)
        return self.sign_body(body, timestamp=timestamp, serial=serial, sign_with=sign_with), body

    # -- protocol: signatures -------------------------------------------------------------------

    def _signature_headers(
        self,
        body: bytes,
        *,
        timestamp: int | None = None,
        serial: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
    ) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        nonce = secrets.token_hex(16)
        signature = _rsa_sign(key or self._platform_key, _lines(stamp, nonce, body))
        return {
            "Wechatpay-Timestamp": stamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signature,
            "Wechatpay-Serial": serial or self.platform_serial,
            "Wechatpay-Signature-Type": AUTH_SCHEME,
        }

    def _signed_response(self, status: int, data: Any = None) -> Response:
        body = b"" if data is None else _dumps(data)
        headers = self._signature_headers(body)
        headers["Request-ID"] = f"08{secrets.token_hex(16).upper()}"
        if data is None:
            return Response(status_code=status, headers=headers)
        return Response(content=body, status_code=status, headers=headers, media_type="application/json")

    def _authenticate(self, request: Request, body: bytes) -> FakeMerchant:
        """Check ``Authorization`` like WeChat Pay: scheme, fields, merchant, serial, time, signature."""
        scheme, _, rest = request.headers.get("authorization", "").partition(" ")
        if scheme != AUTH_SCHEME:
            raise _PayError(401, "SIGN_ERROR", "Authorization 认证类型不正确")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        missing = [
            n for n in ("mchid", "nonce_str", "signature", "timestamp", "serial_no") if not fields.get(n)
        ]
        if missing:
            raise _PayError(401, "SIGN_ERROR", f"Authorization 缺少 {','.join(missing)}")
        with self._lock:
            merchant = self._merchants.get(fields["mchid"])
            public_key = self._merchant_keys.get(fields["mchid"])
        if merchant is None or public_key is None:
            raise _PayError(400, "MCH_NOT_EXISTS", "商户号不存在")
        if fields["serial_no"] != merchant.merchant_serial_no:
            raise _PayError(401, "SIGN_ERROR", "商户证书序列号有误")
        if (
            not fields["timestamp"].isdigit()
            or abs(time.time() - int(fields["timestamp"])) > MAX_SKEW_SECONDS
        ):
            raise _PayError(401, "SIGN_ERROR", "请求时间戳已过期")
        message = _lines(request.method, _raw_url(request), fields["timestamp"], fields["nonce_str"], body)
        if not _rsa_verify(public_key, message, fields["signature"]):
            raise _PayError(401, "SIGN_ERROR", "签名错误")
        serial_header = request.headers.get("wechatpay-serial")
        if serial_header and serial_header != self.platform_serial:
            raise _PayError(400, "PARAM_ERROR", "Wechatpay-Serial 无效")
        return merchant

    def _take_injected(self, method: str, path: str) -> None:
        with self._lock:
            for injected in self._injected:
                if injected.method == method and path.startswith(injected.path_prefix) and injected.times > 0:
                    injected.times -= 1
                    raise _PayError(injected.status, injected.code, injected.message)

    # -- protocol: app --------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Fake WeChat", docs_url=None, redoc_url=None, openapi_url=None)

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Any:
            body = await request.body()
            with self._lock:
                self.requests.append(
                    RecordedRequest(request.method, request.url.path, request.url.query, body)
                )
            return await call_next(request)

        @app.exception_handler(_PayError)
        async def pay_error(request: Request, exc: _PayError) -> Response:
            return self._signed_response(exc.status, {"code": exc.code, "message": exc.message})

        @app.exception_handler(_MiniError)
        async def mini_error(request: Request, exc: _MiniError) -> Response:
            rid = f"{secrets.token_hex(4)}-{secrets.token_hex(4)}-{secrets.token_hex(8)}"
            return JSONResponse({"errcode": exc.errcode, "errmsg": f"{exc.errmsg} rid: {rid}"})

        self._mount_miniprogram(app)
        self._mount_pay(app)
        self._mount_transfer(app)
        return app

    def _mount_miniprogram(self, app: FastAPI) -> None:
        @app.get("/sns/jscode2session")
        async def jscode2session(request: Request) -> Response:
            data = self._code_to_session(request.query_params)
            # The real endpoint labels its JSON text/plain.
            return Response(content=_dumps(data), media_type="text/plain")

        @app.get("/cgi-bin/token")
        async def token(request: Request) -> Response:
            return JSONResponse(self._issue_token(request.query_params))

        @app.post("/wxa/business/getuserphonenumber")
        async def phone_number(request: Request) -> Response:
            appid = self._check_token(request.query_params.get("access_token"))
            return JSONResponse(self._phone_number(appid, _json_object(await request.body())))

        @app.post("/wxa/getwxacodeunlimit")
        async def qrcode(request: Request) -> Response:
            self._check_token(request.query_params.get("access_token"))
            body = _json_object(await request.body())
            scene = body.get("scene")
            if not isinstance(scene, str) or not 0 < len(scene) <= 32:
                raise _MiniError(40169, "invalid length for scene, or the data is not json string")
            width = body.get("width", 430)
            size = min(max(int(width) if isinstance(width, int) else 430, 280), 1280)
            return Response(content=_png(size // 10), media_type="image/png")

    def _mount_pay(self, app: FastAPI) -> None:
        @app.post("/v3/pay/transactions/jsapi")
        async def jsapi(request: Request) -> Response:
            merchant, body = await self._pay_request(request)
            return self._signed_response(200, {"prepay_id": self._prepay(merchant, _pay_body(body))})

        @app.get("/v3/pay/transactions/out-trade-no/{out_trade_no}")
        async def query(request: Request, out_trade_no: str) -> Response:
            merchant, _ = await self._pay_request(request)
            if request.query_params.get("mchid") != merchant.mchid:
                raise _PayError(400, "PARAM_ERROR", "mchid 与请求头中的商户号不一致")
            with self._lock:
                trade = self._merchant_transaction(merchant.mchid, out_trade_no)
                return self._signed_response(200, self._transaction_view(trade))

        @app.post("/v3/pay/transactions/out-trade-no/{out_trade_no}/close")
        async def close(request: Request, out_trade_no: str) -> Response:
            merchant, body = await self._pay_request(request)
            if _pay_body(body).get("mchid") != merchant.mchid:
                raise _PayError(400, "PARAM_ERROR", "mchid 与请求头中的商户号不一致")
            self._close(merchant, out_trade_no)
            return self._signed_response(204)

        @app.post("/v3/refund/domestic/refunds")
        async def create_refund(request: Request) -> Response:
            merchant, body = await self._pay_request(request)
            return self._signed_response(200, self._create_refund(merchant, _pay_body(body)))

        @app.get("/v3/refund/domestic/refunds/{out_refund_no}")
        async def query_refund(request: Request, out_refund_no: str) -> Response:
            merchant, _ = await self._pay_request(request)
            with self._lock:
                refund = self._refunds.get((merchant.mchid, out_refund_no))
                if refund is None:
                    raise _PayError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
                return self._signed_response(200, self._refund_view(refund))

    # -- merchant transfer to balance (商家转账, transfer bills) -----------------------------------

    def now(self) -> float:
        """The fake's clock (epoch seconds): real time plus what ``advance`` added."""
        return time.time() + self._clock_offset

    def advance(self, delta: dt.timedelta) -> None:
        """Move WeChat's clock forward, e.g. past ``transfer_confirm_window``: a bill still waiting
        for the user's confirmation is then CANCELLED (seen by the next query, cancel or create)."""
        with self._lock:
            self._clock_offset += delta.total_seconds()

    def transfer(self, out_bill_no: str, mchid: str | None = None) -> dict[str, Any]:
        """The transfer bill as the query API would answer it (without the query's own effects:
        a CANCELING bill stays CANCELING here)."""
        with self._lock:
            bill = self._find_transfer(out_bill_no, mchid)
            self._expire_transfer(bill)
            return self._transfer_view(bill)

    def transfer_user_name(self, out_bill_no: str, mchid: str | None = None) -> str | None:
        """The payee's real name the merchant sent with the bill, as the fake decrypted it."""
        with self._lock:
            return self._find_transfer(out_bill_no, mchid).user_name

    def finish_transfer(
        self, out_bill_no: str, *, mchid: str | None = None, state: str = "SUCCESS", fail_reason: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """The user confirmed (``SUCCESS``), or the transfer failed (``FAIL``) or was cancelled
        (``CANCELLED``); a final bill keeps its state, and a bill being cancelled (``CANCELING``) or
        past the confirmation window can only end ``CANCELLED``. Returns the signed, encrypted
        ``MCHTRANSFER.BILL.FINISHED`` notification."""
        if state not in TRANSFER_FINAL_STATES:
            raise ValueError(f"state must be one of {sorted(TRANSFER_FINAL_STATES)}")
        with self._lock:
            bill = self._find_transfer(out_bill_no, mchid)
            self._expire_transfer(bill)
            if bill.state == "CANCELING":
                state = "CANCELLED"
            if bill.state not in TRANSFER_FINAL_STATES:
                bill.state = state
                bill.fail_reason = fail_reason or ("TRANSFER_RISK" if state == "FAIL" else None)
                bill.update_time = _china_now()
            resource = self._transfer_resource(bill)
            apiv3_key = self._merchants[bill.mchid].apiv3_key
        return self.make_notification(
            "MCHTRANSFER.BILL.FINISHED", resource, apiv3_key=apiv3_key, summary="商家转账单据终态通知"
        )

    def finish_transfer_and_notify(
        self, out_bill_no: str, *, mchid: str | None = None, state: str = "SUCCESS"
    ) -> int:
        """``finish_transfer`` then POST it to the bill's notify_url; the HTTP status."""
        headers, body = self.finish_transfer(out_bill_no, mchid=mchid, state=state)
        with self._lock:
            url = self._find_transfer(out_bill_no, mchid).notify_url
        if not url:
            raise ValueError(f"transfer {out_bill_no} has no notify_url")
        return self.deliver(url, headers, body)

    def _expire_transfer(self, bill: _TransferBill) -> None:
        """WeChat closes a bill left in ``WAIT_USER_CONFIRM`` past the confirmation window."""
        waited = self.now() - bill.created_at
        if bill.state == "WAIT_USER_CONFIRM" and waited >= self.transfer_confirm_window.total_seconds():
            bill.state, bill.update_time = "CANCELLED", _china_now()

    def _find_transfer(self, out_bill_no: str, mchid: str | None) -> _TransferBill:
        for (m, no), bill in self._transfers.items():
            if no == out_bill_no and (mchid is None or m == mchid):
                return bill
        raise KeyError(out_bill_no)

    def _decrypt_user_name(self, ciphertext: Any, serial: str | None) -> str:
        """``user_name``: RSAES-OAEP (SHA-1) under our platform key named by ``Wechatpay-Serial``."""
        if not serial:
            raise _param_error("敏感信息加密时必须在 HTTP 头中上送 Wechatpay-Serial")
        if serial != self.platform_serial:
            raise _param_error("Wechatpay-Serial 无效")
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # SHA-1: WeChat Pay v3 requires it
        try:
            plain = self._platform_key.decrypt(base64.b64decode(str(ciphertext), validate=True), oaep)
            name = plain.decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise _param_error("请确认待处理的消息是否为加密后的密文") from exc
        if not name.strip():
            raise _param_error("user_name 不能为空")
        return name

    def _create_transfer(
        self, merchant: FakeMerchant, body: dict[str, Any], serial: str | None = None
    ) -> dict[str, Any]:
        appid = _require_string(body, "appid", 32)
        out_bill_no = _require_string(body, "out_bill_no", 32)
        if not OUT_BILL_NO_RE.match(out_bill_no):
            raise _param_error("out_bill_no 只能由数字、大小写字母组成")
        _require_string(body, "transfer_scene_id", 36)
        openid = _require_string(body, "openid", 64)
        remark = _require_string(body, "transfer_remark", 96)
        if len(remark) > 32:
            raise _param_error("transfer_remark 超过 32 个字符")
        raw_amount = body.get("transfer_amount")
        if not _is_fen(raw_amount):
            raise _param_error("transfer_amount 必须为正整数（分）")
        amount = int(raw_amount)  # type: ignore[arg-type]
        if amount >= 200_000 and not body.get("user_name"):
            raise _param_error("转账金额 >= 2000 元时 user_name 必填")
        user_name = None
        if body.get("user_name"):
            _require_string(body, "user_name", 1024)
            user_name = self._decrypt_user_name(body["user_name"], serial)
            # the ciphertext differs at every retry (random padding): compare what it says
            body = {**body, "user_name": user_name}
        infos = body.get("transfer_scene_report_infos")
        if not isinstance(infos, list) or not infos or not all(
            isinstance(i, dict) and isinstance(i.get("info_type"), str) and isinstance(i.get("info_content"), str)
            and i["info_type"] and i["info_content"]
            for i in infos
        ):
            raise _param_error("transfer_scene_report_infos 必填，且每项需有 info_type 与 info_content")
        if appid != merchant.appid:
            raise _PayError(400, "APPID_MCHID_NOT_MATCH", "appid 与商户号不匹配")
        with self._lock:
            existing = self._transfers.get((merchant.mchid, out_bill_no))
            if existing is not None:
                if existing.request != body:
                    raise _PayError(400, "INVALID_REQUEST", "商户单号重复，与之前请求参数不一致")
                self._expire_transfer(existing)
                return self._transfer_answer(existing)
            bill = _TransferBill(
                mchid=merchant.mchid, appid=appid, out_bill_no=out_bill_no,
                transfer_bill_no=f"1330{_digits(28)}", openid=openid, amount=int(amount), remark=remark,
                request=body, create_time=_china_now(), user_name=user_name, created_at=self.now(),
            )
            self._transfers[(merchant.mchid, out_bill_no)] = bill
            return self._transfer_answer(bill)

    def _transfer_answer(self, bill: _TransferBill) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "out_bill_no": bill.out_bill_no,
            "transfer_bill_no": bill.transfer_bill_no,
            "create_time": bill.create_time,
            "state": bill.state,
        }
        if bill.state == "WAIT_USER_CONFIRM":
            answer["package_info"] = "ABBQO+oYAAABAAAAAAAk" + base64.b64encode(bill.transfer_bill_no.encode()).decode()
        if bill.fail_reason:
            answer["fail_reason"] = bill.fail_reason
        return answer

    def _transfer_view(self, bill: _TransferBill) -> dict[str, Any]:
        view: dict[str, Any] = {
            "mch_id": bill.mchid,
            "out_bill_no": bill.out_bill_no,
            "transfer_bill_no": bill.transfer_bill_no,
            "appid": bill.appid,
            "state": bill.state,
            "transfer_amount": bill.amount,
            "transfer_remark": bill.remark,
            "openid": bill.openid,
            "create_time": bill.create_time,
            "update_time": bill.update_time or bill.create_time,
        }
        if bill.fail_reason:
            view["fail_reason"] = bill.fail_reason
        return view

    def _transfer_resource(self, bill: _TransferBill) -> dict[str, Any]:
        """The resource of a MCHTRANSFER.BILL.FINISHED notification."""
        view = self._transfer_view(bill)
        return {k: view[k] for k in (
            "mch_id", "out_bill_no", "transfer_bill_no", "state", "transfer_amount", "openid", "create_time",
            "update_time",
        )} | ({"fail_reason": bill.fail_reason} if bill.fail_reason else {})

    def _mount_transfer(self, app: FastAPI) -> None:
        @app.post("/v3/fund-app/mch-transfer/transfer-bills")
        async def create_transfer(request: Request) -> Response:
            merchant, body = await self._pay_request(request)
            serial = request.headers.get("wechatpay-serial")
            return self._transfer_response(request, self._create_transfer(merchant, _pay_body(body), serial))

        @app.get("/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}")
        async def query_transfer(request: Request, out_bill_no: str) -> Response:
            merchant, _ = await self._pay_request(request)
            with self._lock:
                bill = self._transfers.get((merchant.mchid, out_bill_no))
                if bill is None:
                    raise _PayError(404, "NOT_FOUND", "记录不存在")
                self._expire_transfer(bill)
                if bill.state == "CANCELING":  # the cancellation completes by the next query
                    bill.state, bill.update_time = "CANCELLED", _china_now()
                return self._transfer_response(request, self._transfer_view(bill))

        @app.post("/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}/cancel")
        async def cancel_transfer(request: Request, out_bill_no: str) -> Response:
            """Accepted before the user confirmed (any state that is not final): the bill becomes
            ``CANCELING`` (``CANCELLED`` at the next query). Cancelling again answers the current
            ``CANCELING`` / ``CANCELLED``; a ``SUCCESS`` or ``FAIL`` bill is refused."""
            merchant, _ = await self._pay_request(request)
            with self._lock:
                bill = self._transfers.get((merchant.mchid, out_bill_no))
                if bill is None:
                    raise _PayError(404, "NOT_FOUND", "记录不存在")
                self._expire_transfer(bill)
                if bill.state in TRANSFER_CANCELLABLE_STATES:
                    bill.state, bill.update_time = "CANCELING", _china_now()
                elif bill.state not in ("CANCELING", "CANCELLED"):
                    raise _PayError(400, "INVALID_REQUEST", f"单据状态为 {bill.state}，不可撤销")
                return self._transfer_response(
                    request,
                    {"out_bill_no": bill.out_bill_no, "transfer_bill_no": bill.transfer_bill_no,
                     "state": bill.state, "update_time": bill.update_time},
                )

    def _transfer_response(self, request: Request, data: dict[str, Any]) -> Response:
        """The signed answer of a transfer request carried out — or, when a loss was injected
        (``lose_transfer_answer_next``), none: the connection drops half-way through it."""
        if self._take_loss(request.method, request.url.path):
            return _LostAnswer()
        return self._signed_response(200, data)

    async def _pay_request(self, request: Request) -> tuple[FakeMerchant, bytes]:
        body = await request.body()
        merchant = self._authenticate(request, body)
        self._take_injected(request.method, request.url.path)
        return merchant, body

    # -- mini-program behaviour -----------------------------------------------------------------

    def _check_app(self, appid: str | None, secret: str | None) -> str:
        if not appid:
            raise _MiniError(41002, "appid missing")
        if not secret:
            raise _MiniError(41004, "appsecret missing")
        with self._lock:
            known = self._apps.get(appid)
        if known is None:
            raise _MiniError(40013, "invalid appid")
        if not secrets.compare_digest(known, secret):
            raise _MiniError(40125, "invalid appsecret")
        return appid

    def _code_to_session(self, params: Mapping[str, str]) -> dict[str, Any]:
        appid = self._check_app(params.get("appid"), params.get("secret"))
        if params.get("grant_type") != "authorization_code":
            raise _MiniError(40002, "invalid grant_type")
        code = params.get("js_code")
        if not code:
            raise _MiniError(41008, "missing code")
        with self._lock:
            entry = self._codes.get(code)
            if entry is None or (entry.appid is not None and entry.appid != appid):
                raise _MiniError(40029, "invalid code")
            if entry.used:
                raise _MiniError(40163, "code been used")
            entry.used = True
        data: dict[str, Any] = {
            "session_key": base64.b64encode(secrets.token_bytes(16)).decode(),
            "openid": entry.openid,
        }
        if entry.unionid:
            data["unionid"] = entry.unionid
        return data

    def _issue_token(self, params: Mapping[str, str]) -> dict[str, Any]:
        if params.get("grant_type") != "client_credential":
            raise _MiniError(40002, "invalid grant_type")
        appid = self._check_app(params.get("appid"), params.get("secret"))
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = _Token(appid=appid, expires_at=time.time() + TOKEN_LIFETIME_SECONDS)
        return {"access_token": token, "expires_in": TOKEN_LIFETIME_SECONDS}

    def _check_token(self, token: str | None) -> str:
        if not token:
            raise _MiniError(41001, "access_token missing")
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry.revoked:
            raise _MiniError(40001, "invalid credential, access_token is invalid or not latest")
        if entry.expires_at <= time.time():
            raise _MiniError(42001, "access_token expired")
        return entry.appid

    def _phone_number(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        code = body.get("code")
        with self._lock:
            entry = self._phone_codes.get(code) if isinstance(code, str) else None
            if entry is None:
                raise _MiniError(40029, "invalid code")
            if entry.used:
                raise _MiniError(40163, "code been used")
            entry.used = True
        full = entry.phone if entry.country_code == "86" else f"+{entry.country_code}{entry.phone}"
        return {
            "errcode": 0,
            "errmsg": "ok",
            "phone_info": {
                "phoneNumber": full,
                "purePhoneNumber": entry.phone,
                "countryCode": entry.country_code,
                "watermark": {"timestamp": int(time.time()), "appid": appid},
            },
        }

    # -- pay behaviour ----------------------------------------------------------------------------

    def _prepay(self, merchant: FakeMerchant, body: dict[str, Any]) -> str:
        _validate_jsapi(merchant, body)
        key = (merchant.mchid, str(body["out_trade_no"]))
        with self._lock:
            existing = self._transactions.get(key)
            if existing is None:
                prepay_id = f"wx{dt.datetime.now(CHINA_TZ):%d%H%M%S}{secrets.token_hex(13)}"
                self._transactions[key] = _Transaction(
                    mchid=merchant.mchid,
                    appid=merchant.appid,
                    out_trade_no=key[1],
                    request=body,
                    prepay_id=prepay_id,
                )
                return prepay_id
            if existing.state in ("SUCCESS", "REFUND"):
                raise _PayError(400, "ORDERPAID", "该订单已支付")
            if existing.state == "CLOSED":
                raise _PayError(400, "ORDER_CLOSED", "该订单已关闭")
            if existing.request != body:
                raise _PayError(400, "INVALID_REQUEST", "201 商户订单号重复")
            return existing.prepay_id

    def _close(self, merchant: FakeMerchant, out_trade_no: str) -> None:
        with self._lock:
            trade = self._merchant_transaction(merchant.mchid, out_trade_no)
            if trade.state in ("SUCCESS", "REFUND"):
                raise _PayError(400, "ORDERPAID", "该订单已支付，不能关闭")
            trade.state = "CLOSED"

    def _create_refund(self, merchant: FakeMerchant, body: dict[str, Any]) -> dict[str, Any]:
        _validate_refund(body)
        amount = body["amount"]
        with self._lock:
            trade = self._refund_target(merchant.mchid, body)
            existing = self._refunds.get((merchant.mchid, body["out_refund_no"]))
            if existing is not None:
                if existing.request != body:
                    raise _PayError(
                        400, "INVALID_REQUEST", "订单金额或退款金额与之前请求不一致，请核实后再试"
                    )
                return self._refund_view(existing)
            if trade.state not in ("SUCCESS", "REFUND") or trade.transaction_id is None:
                raise _PayError(400, "INVALID_REQUEST", "订单未支付，无法退款")
            if amount["total"] != trade.total:
                raise _PayError(400, "INVALID_REQUEST", "订单金额或退款金额与之前请求不一致，请核实后再试")
            if amount["refund"] > trade.total - self._refunded(trade):
                raise _PayError(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
            refund = _Refund(
                mchid=merchant.mchid,
                out_trade_no=trade.out_trade_no,
                transaction_id=trade.transaction_id,
                out_refund_no=body["out_refund_no"],
                refund_id=f"50{_digits(27)}",
                refund=amount["refund"],
                total=trade.total,
                request=body,
                create_time=_china_now(),
            )
            self._refunds[(merchant.mchid, refund.out_refund_no)] = refund
            return self._refund_view(refund)

    def _refund_target(self, mchid: str, body: dict[str, Any]) -> _Transaction:
        if "out_trade_no" in body:
            trade = self._transactions.get((mchid, str(body["out_trade_no"])))
        else:
            trade = next(
                (
                    t
                    for t in self._transactions.values()
                    if t.mchid == mchid and t.transaction_id == body.get("transaction_id")
                ),
                None,
            )
        if trade is None:
            raise _PayError(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        return trade

    def _refunded(self, trade: _Transaction) -> int:
        return sum(
            r.refund
            for r in self._refunds.values()
            if r.mchid == trade.mchid
            and r.out_trade_no == trade.out_trade_no
            and r.status in ("PROCESSING", "SUCCESS")
        )

    # -- lookups and views (caller holds the lock) --------------------------------------------------

    def _merchant_transaction(self, mchid: str, out_trade_no: str) -> _Transaction:
        trade = self._transactions.get((mchid, out_trade_no))
        if trade is None:
            raise _PayError(404, "ORDER_NOT_EXIST", "订单不存在")
        return trade

    def _find_transaction(self, out_trade_no: str, mchid: str | None) -> _Transaction:
        found = [t for (m, no), t in self._transactions.items() if no == out_trade_no and mchid in (None, m)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} transactions match {out_trade_no!r}")
        return found[0]

    def _find_refund(self, out_refund_no: str, mchid: str | None) -> _Refund:
        found = [r for (m, no), r in self._refunds.items() if no == out_refund_no and mchid in (None, m)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} refunds match {out_refund_no!r}")
        return found[0]

    def _transaction_view(self, trade: _Transaction) -> dict[str, Any]:
        view: dict[str, Any] = {
            "appid": trade.appid,
            "mchid": trade.mchid,
            "out_trade_no": trade.out_trade_no,
            "trade_state": trade.state,
            "trade_state_desc": TRADE_STATE_DESC[trade.state],
            "amount": {"total": trade.total, "payer_currency": "CNY"},
        }
        if trade.request.get("attach") is not None:
            view["attach"] = trade.request["attach"]
        if trade.transaction_id is not None:
            view.update(self._transaction_resource(trade))
        return view

    def _transaction_resource(self, trade: _Transaction) -> dict[str, Any]:
        """The transaction object as paid (notification resource and query answer)."""
        return {
            "mchid": trade.mchid,
            "appid": trade.appid,
            "out_trade_no": trade.out_trade_no,
            "transaction_id": trade.transaction_id,
            "trade_type": "JSAPI",
            "trade_state": trade.state,
            "trade_state_desc": TRADE_STATE_DESC[trade.state],
            "bank_type": trade.bank_type,
            "attach": trade.request.get("attach", ""),
            "success_time": trade.success_time,
            "payer": {"openid": trade.request["payer"]["openid"]},
            "amount": {
                "total": trade.total,
                "payer_total": trade.total,
                "currency": "CNY",
                "payer_currency": "CNY",
            },
        }

    def _refund_view(self, refund: _Refund) -> dict[str, Any]:
        view: dict[str, Any] = {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "transaction_id": refund.transaction_id,
            "out_trade_no": refund.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": refund.create_time,
            "status": refund.status,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": refund.total,
                "refund": refund.refund,
                "payer_total": refund.total,
                "payer_refund": refund.refund,
                "settlement_total": refund.total,
                "settlement_refund": refund.refund,
                "discount_refund": 0,
                "currency": "CNY",
                "refund_fee": 0,
            },
            "promotion_detail": [],
        }
        if refund.success_time:
            view["success_time"] = refund.success_time
        return view

    def _refund_resource(self, refund: _Refund) -> dict[str, Any]:
        """The resource of a REFUND.* notification."""
        resource: dict[str, Any] = {
            "mchid": refund.mchid,
            "out_trade_no": refund.out_trade_no,
            "transaction_id": refund.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": refund.status,
            "user_received_account": "支付用户零钱",
            "amount": {
                "total": refund.total,
                "refund": refund.refund,
                "payer_total": refund.total,
                "payer_refund": refund.refund,
            },
        }
        if refund.success_time:
            resource["success_time"] = refund.success_time
        return resource


# -- request validation -----------------------------------------------------------------------


def _raw_url(request: Request) -> str:
    """The request target exactly as sent (what the merchant signed)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string") or b""
    return (raw + (b"?" + query if query else b"")).decode("latin-1")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise _MiniError(47001, "data format error") from exc
    if not isinstance(data, dict):
        raise _MiniError(47001, "data format error")
    return data


def _pay_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise _PayError(400, "PARAM_ERROR", "请求体不是合法的 JSON") from exc
    if not isinstance(data, dict):
        raise _PayError(400, "PARAM_ERROR", "请求体不是 JSON 对象")
    return data


def _param_error(message: str) -> _PayError:
    return _PayError(400, "PARAM_ERROR", message)


def _require_string(body: Mapping[str, Any], name: str, max_length: int | None = None) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _param_error(f"输入源“/body/{name}”映射到值字段“{name}”必填性规则校验失败，此字段为必填项")
    if max_length is not None and len(value.encode()) > max_length:
        raise _param_error(f"{name} 长度超过 {max_length} 字节")
    return value


def _validate_amount(amount: Any, *names: str) -> None:
    if not isinstance(amount, dict):
        raise _param_error("amount 为必填项")
    for name in names:
        if not _is_fen(amount.get(name)):
            raise _param_error(f"amount.{name} 必须为大于 0 的整数（单位：分）")
    if amount.get("currency", "CNY") != "CNY":
        raise _param_error("amount.currency 仅支持 CNY")


def _validate_jsapi(merchant: FakeMerchant, body: dict[str, Any]) -> None:
    appid = _require_string(body, "appid")
    if _require_string(body, "mchid") != merchant.mchid:
        raise _param_error("mchid 与请求头中的商户号不一致")
    if appid != merchant.appid:
        raise _PayError(400, "APPID_MCHID_NOT_MATCH", "appid 和 mch_id 不匹配")
    _require_string(body, "description", 127)
    if not OUT_TRADE_NO_RE.match(_require_string(body, "out_trade_no")):
        raise _param_error("out_trade_no 须为 6-32 位数字、大小写字母或 _-|*")
    if not _require_string(body, "notify_url", 255).startswith(("https://", "http://")):
        raise _param_error("notify_url 格式不正确")
    if "attach" in body and (not isinstance(body["attach"], str) or len(body["attach"]) > 128):
        raise _param_error("attach 长度超过 128")
    if "time_expire" in body:
        _validate_rfc3339(body["time_expire"])
    _validate_amount(body.get("amount"), "total")
    payer = body.get("payer")
    if not isinstance(payer, dict) or not isinstance(payer.get("openid"), str) or not payer["openid"]:
        raise _param_error("payer.openid 为必填项")


def _validate_refund(body: dict[str, Any]) -> None:
    if not body.get("out_trade_no") and not body.get("transaction_id"):
        raise _param_error("transaction_id 和 out_trade_no 必须二选一")
    if not OUT_REFUND_NO_RE.match(_require_string(body, "out_refund_no")):
        raise _param_error("out_refund_no 格式不正确")
    if "reason" in body and (not isinstance(body["reason"], str) or len(body["reason"]) > 80):
        raise _param_error("reason 长度超过 80")
    if "notify_url" in body:
        _require_string(body, "notify_url", 256)
    _validate_amount(body.get("amount"), "refund", "total")
    if body["amount"]["refund"] > body["amount"]["total"]:
        raise _param_error("退款金额不能大于订单金额")


def _validate_rfc3339(value: Any) -> None:
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise _param_error("time_expire 不是合法的 RFC3339 时间") from exc
    if moment.tzinfo is None or "T" not in str(value):
        raise _param_error("time_expire 须为 yyyy-MM-DDTHH:mm:ss+TIMEZONE")
