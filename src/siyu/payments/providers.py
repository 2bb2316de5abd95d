"""Payment providers: WeChat Pay API v3 (JSAPI / mini-program) and a local **sandbox**.

``provider_for(merchant, box, settings)`` picks the merchant's provider from
``merchant.pay_provider``:

- ``wechatpay`` → ``WechatPayProvider``, a thin adapter over
  ``siyu.integrations.wechat.pay_v3.WechatPayClient`` built from the merchant's decrypted
  credentials. A merchant configured for ``wechatpay`` never gets the sandbox: missing keys are
  the 409 ``payments_not_configured``.
- ``sandbox`` → ``SandboxProvider``: **SANDBOX — NO MONEY MOVES.** For the demo store only. A
  payment completes when the customer calls the sandbox complete endpoint; refunds succeed at
  once. It talks to nobody.

Every provider call is a remote call (or stands for one): callers make them with no database
transaction open.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from siyu.config import Settings
from siyu.kit.crypto import SecretBox
from siyu.kit.errors import DomainError, register_messages
from siyu.kit.timeutil import utcnow
from siyu.payments.models import SANDBOX, WECHATPAY
from siyu.tenancy.models import Merchant
from siyu.tenancy.service import open_merchant_secret

register_messages(
    {
        "payments_not_configured": (
            409,
            "商户尚未完整配置微信支付（商户号、证书序列号、私钥、APIv3 密钥、平台公钥、AppID）",
            "The merchant has not fully configured WeChat Pay (mchid, serial, private key, APIv3 key, "
            "platform keys, AppID)",
        ),
    }
)

# Trade states of WeChat Pay v3 (the sandbox uses the same words).
TRADE_SUCCESS = "SUCCESS"
TRADE_NOTPAY = "NOTPAY"
TRADE_CLOSED = "CLOSED"
TRADE_REFUND = "REFUND"
TRADE_USERPAYING = "USERPAYING"
# Refund states
REFUND_SUCCESS = "SUCCESS"
REFUND_PROCESSING = "PROCESSING"
REFUND_CLOSED = "CLOSED"
REFUND_ABNORMAL = "ABNORMAL"


class ProviderError(Exception):
    """A provider call failed. ``retryable`` is False when sending it again cannot succeed
    (the request itself was refused), True for network errors, timeouts and 5xx."""

    def __init__(self, code: str, message: str = "", *, retryable: bool = True, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.status = status


@dataclass(frozen=True)
class TransactionResult:
    """A payment's state as the provider reports it (query answer or decrypted notification)."""

    out_trade_no: str
    trade_state: str
    transaction_id: str | None = None
    amount_total: int | None = None
    payer_openid: str | None = None
    success_time: dt.datetime | None = None
    mchid: str | None = None
    appid: str | None = None


@dataclass(frozen=True)
class RefundResult:
    out_refund_no: str
    status: str  # SUCCESS | PROCESSING | CLOSED | ABNORMAL
    provider_refund_id: str | None = None
    amount: int | None = None
    out_trade_no: str | None = None
    success_time: dt.datetime | None = None
    mchid: str | None = None


class Provider(Protocol):
    name: str

    def create_payment(
        self, *, out_trade_no: str, amount: int, description: str, payer_openid: str | None,
        expires_at: dt.datetime | None,
    ) -> str | None:
        """Create the provider-side payment; returns its prepay id (None for the sandbox)."""

    def payment_params(self, *, prepay_id: str | None, out_trade_no: str) -> dict[str, Any]:
        """What the client needs to pay (signed ``wx.requestPayment`` fields for WeChat Pay)."""

    def query(self, out_trade_no: str) -> TransactionResult: ...

    def close(self, out_trade_no: str) -> None: ...

    def refund(
        self, *, out_trade_no: str, out_refund_no: str, amount: int, total: int, reason: str
    ) -> RefundResult: ...

    def query_refund(self, out_refund_no: str) -> RefundResult: ...


def parse_time(value: Any) -> dt.datetime | None:
    """WeChat's RFC 3339 times (``2026-03-01T10:00:00+08:00``) as aware UTC."""
    if not value:
        return None
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(dt.UTC)


def transaction_from_resource(data: dict[str, Any]) -> TransactionResult:
    """A WeChat Pay v3 transaction object (query answer or decrypted notification resource)."""
    amount = data.get("amount") or {}
    payer = data.get("payer") or {}
    total = amount.get("total")
    return TransactionResult(
        out_trade_no=str(data.get("out_trade_no") or ""),
        trade_state=str(data.get("trade_state") or ""),
        transaction_id=data.get("transaction_id") or None,
        amount_total=int(total) if isinstance(total, int) and not isinstance(total, bool) else None,
        payer_openid=payer.get("openid"),
        success_time=parse_time(data.get("success_time")),
        mchid=data.get("mchid"),
        appid=data.get("appid"),
    )


def refund_from_resource(data: dict[str, Any]) -> RefundResult:
    """A WeChat Pay v3 refund object (create/query answer, or a refund notification's resource)."""
    amount = data.get("amount") or {}
    refund = amount.get("refund")
    return RefundResult(
        out_refund_no=str(data.get("out_refund_no") or ""),
        status=str(data.get("status") or data.get("refund_status") or ""),
        provider_refund_id=data.get("refund_id"),
        amount=int(refund) if isinstance(refund, int) and not isinstance(refund, bool) else None,
        out_trade_no=data.get("out_trade_no"),
        success_time=parse_time(data.get("success_time")),
        mchid=data.get("mchid"),
    )


# -- sandbox ---------------------------------------------------------------------------------------


class SandboxProvider:
    """SANDBOX — NO MONEY MOVES. The demo's stand-in for a payment provider.

    Payments complete only through ``POST /api/store/v1/sandbox/payments/{out_trade_no}/complete``
    (which the service records through the same path as a verified WeChat Pay notification), so
    a query always answers ``NOTPAY``; refunds succeed immediately.
    """

    name = SANDBOX

    def create_payment(
        self, *, out_trade_no: str, amount: int, description: str, payer_openid: str | None,
        expires_at: dt.datetime | None,
    ) -> str | None:
        return None

    def payment_params(self, *, prepay_id: str | None, out_trade_no: str) -> dict[str, Any]:
        return {"sandbox": True, "complete_url": f"/api/store/v1/sandbox/payments/{out_trade_no}/complete"}

    def query(self, out_trade_no: str) -> TransactionResult:
        return TransactionResult(out_trade_no=out_trade_no, trade_state=TRADE_NOTPAY)

    def close(self, out_trade_no: str) -> None:
        return None

    def refund(self, *, out_trade_no: str, out_refund_no: str, amount: int, total: int, reason: str) -> RefundResult:
        return RefundResult(
            out_refund_no=out_refund_no, status=REFUND_SUCCESS, provider_refund_id=sandbox_id("SBXR"),
            amount=amount, out_trade_no=out_trade_no, success_time=utcnow(),
        )

    def query_refund(self, out_refund_no: str) -> RefundResult:
        # Sandbox refunds are final the moment they are made; a query only follows a lost answer.
        return RefundResult(out_refund_no=out_refund_no, status=REFUND_SUCCESS, provider_refund_id=sandbox_id("SBXR"))


def sandbox_id(prefix: str) -> str:
    return f"{prefix}{utcnow():%Y%m%d%H%M%S}{secrets.token_hex(6)}"


# -- WeChat Pay v3 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WechatPayCredentials:
    mchid: str
    appid: str
    serial_no: str
    private_key_pem: str
    apiv3_key: str
    platform_keys: dict[str, str]  # serial -> PEM


def wechatpay_credentials(merchant: Merchant, box: SecretBox) -> WechatPayCredentials:
    private_key, apiv3_key, platform_keys = (
        open_merchant_secret(box, merchant, column)
        for column in ("pay_private_key_enc", "pay_apiv3_key_enc", "pay_platform_keys_enc")
    )
    if not (
        merchant.pay_mchid and merchant.wechat_appid and merchant.pay_serial_no and private_key and apiv3_key
        and platform_keys
    ):
        raise DomainError("payments_not_configured")
    return WechatPayCredentials(
        mchid=merchant.pay_mchid,
        appid=merchant.wechat_appid,
        serial_no=merchant.pay_serial_no,
        private_key_pem=private_key,
        apiv3_key=apiv3_key,
        platform_keys=json.loads(platform_keys),
    )


def notify_urls(settings: Settings, merchant_code: str) -> tuple[str, str]:
    base = settings.public_base_url.rstrip("/")
    return (f"{base}/api/pay/wechat/notify/{merchant_code}", f"{base}/api/pay/wechat/refund-notify/{merchant_code}")


class NotificationRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedNotification:
    id: str | None
    event_type: str | None
    resource: dict[str, Any]  # the decrypted resource


class WechatPayProvider:
    """WeChat Pay API v3, JSAPI (mini-program) payments, over ``WechatPayClient``."""

    name = WECHATPAY

    def __init__(self, creds: WechatPayCredentials, *, base_url: str, notify_url: str, refund_notify_url: str) -> None:
        from siyu.integrations.wechat.pay_v3 import WechatPayClient

        self.creds = creds
        self.refund_notify_url = refund_notify_url
        self.client = WechatPayClient(client_config(creds, base_url=base_url, notify_url=notify_url))

    def create_payment(
        self, *, out_trade_no: str, amount: int, description: str, payer_openid: str | None,
        expires_at: dt.datetime | None,
    ) -> str | None:
        if not payer_openid:
            raise ProviderError("PAYER_OPENID_MISSING", "the member has no openid", retryable=False)
        with self._session(), _mapped_errors():
            prepay_id = self.client.create_jsapi_prepay(
                out_trade_no, description[:127], amount, payer_openid, time_expire=expires_at
            )
        return prepay_id

    def payment_params(self, *, prepay_id: str | None, out_trade_no: str) -> dict[str, Any]:
        if not prepay_id:
            raise ProviderError("PREPAY_MISSING", "no prepay id", retryable=False)
        return dict(self.client.miniprogram_payment_params(prepay_id))

    def query(self, out_trade_no: str) -> TransactionResult:
        with self._session(), _mapped_errors():
            data = self.client.query_by_out_trade_no(out_trade_no)
        return transaction_from_resource(data)

    def close(self, out_trade_no: str) -> None:
        with self._session(), _mapped_errors():
            self.client.close(out_trade_no)

    def refund(self, *, out_trade_no: str, out_refund_no: str, amount: int, total: int, reason: str) -> RefundResult:
        with self._session(), _mapped_errors():
            data = self.client.create_refund(
                out_trade_no, out_refund_no, amount, total, reason=reason[:80] or None,
                notify_url=self.refund_notify_url,
            )
        return refund_from_resource(data)

    def query_refund(self, out_refund_no: str) -> RefundResult:
        with self._session(), _mapped_errors():
            data = self.client.query_refund(out_refund_no)
        return refund_from_resource(data)

    @contextmanager
    def _session(self) -> Iterator[None]:
        try:
            yield
        finally:
            self.client.close_http()


def client_config(creds: WechatPayCredentials, *, base_url: str | None = None, notify_url: str | None = None) -> Any:
    from siyu.integrations.wechat.pay_v3 import DEFAULT_BASE_URL, WechatPayConfig

    return WechatPayConfig(
        mchid=creds.mchid, appid=creds.appid, merchant_serial_no=creds.serial_no,
        merchant_private_key_pem=creds.private_key_pem, apiv3_key=creds.apiv3_key,
        platform_public_keys=creds.platform_keys, base_url=base_url or DEFAULT_BASE_URL, notify_url=notify_url,
    )


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Client exceptions → ``ProviderError``: a refused request (4xx other than rate limits and
    the codes WeChat Pay documents as temporary) is final; network errors and 5xx are retryable."""
    from siyu.integrations.wechat.errors import ResponseSignatureError, WechatApiError

    try:
        yield
    except ProviderError:
        raise
    except ResponseSignatureError as exc:  # an answer we cannot trust: the outcome is unknown
        raise ProviderError(str(exc.errcode), exc.errmsg, retryable=True, status=exc.http_status) from exc
    except WechatApiError as exc:
        status, code = exc.http_status, str(exc.errcode)
        retryable = status is None or status >= 500 or status == 429 or code in RETRYABLE_CODES
        raise ProviderError(code, exc.errmsg, retryable=retryable, status=status) from exc
    except Exception as exc:  # httpx.HTTPError and friends: unknown outcome, ask again later
        raise ProviderError("NETWORK_ERROR", type(exc).__name__, retryable=True) from exc


RETRYABLE_CODES = frozenset({"SYSTEM_ERROR", "SYSTEMERROR", "FREQUENCY_LIMITED", "NOT_ENOUGH", "BANK_ERROR"})


def verify_wechat_notification(
    creds: WechatPayCredentials, headers: Any, body: bytes, *, now: dt.datetime | None = None
) -> VerifiedNotification:
    """Signature (platform key by ``Wechatpay-Serial``), freshness (5 minutes) and AEAD decryption."""
    from siyu.integrations.wechat.errors import NotificationError
    from siyu.integrations.wechat.pay_v3 import verify_notification

    try:
        verified = verify_notification(client_config(creds), headers, body, now=now, max_age_seconds=300)
    except NotificationError as exc:
        raise NotificationRejected(exc.reason) from exc
    except ValueError as exc:  # a malformed key in the merchant's configuration
        raise NotificationRejected("not_configured") from exc
    return VerifiedNotification(id=verified.id or None, event_type=verified.event_type, resource=verified.resource)


def provider_for(merchant: Merchant, box: SecretBox, settings: Settings) -> Provider:
    """The merchant's provider. A ``wechatpay`` merchant never falls back to the sandbox."""
    if merchant.pay_provider == WECHATPAY:
        creds = wechatpay_credentials(merchant, box)
        notify, refund_notify = notify_urls(settings, merchant.code)
        try:
            return WechatPayProvider(
                creds, base_url=settings.wechatpay_api_base, notify_url=notify, refund_notify_url=refund_notify
            )
        except ValueError as exc:  # an unreadable private key, an APIv3 key of the wrong length...
            raise DomainError("payments_not_configured") from exc
    if merchant.pay_provider == SANDBOX:
        return SandboxProvider()
    raise DomainError("payments_not_configured")
