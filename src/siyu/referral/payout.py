"""Payout providers: how an approved withdrawal becomes money in the distributor's hands.

A provider is looked up by name (``ReferralSettings.payout_provider``). ``manual`` sends
nothing: finance transfers the money outside the system and marks the withdrawal paid with a
reference. An automatic provider implements ``send``; it is called by the ``referral.payout``
job after the approval committed, never inside a transaction, and returns ``paid`` with the
provider's reference, ``processing`` (asked again later through ``query`` when it has one) or
``failed`` (the amount returns to the distributor's available balance).

Optional hooks, looked up with ``getattr`` so a provider may leave them out:
``prepare(session, merchant_id, settings, member_id)`` reads what ``send`` / ``query`` need (credentials,
the member's openid) while the job's transaction is open and returns it as ``context``;
``query(request)`` asks about a ``processing`` payout; ``cancel(request)`` withdraws a payout the
payee has not taken yet (answers like ``query``: ``processing`` while the provider cancels,
``failed`` once cancelled); ``configured(session, merchant_id)`` says whether the merchant can use
the provider (checked when the settings choose it); ``send_seconds`` (the longest one send's HTTP
call takes) and ``confirm_window`` (how long a payout waits for the payee) time the late checks
of a payout that failed while a send may still have been on its way (``service.check_late_bill``).

``wechat_transfer``: WeChat Pay's merchant transfer to the user's balance (商家转账, see
``siyu.integrations.wechat.transfer``), with the merchant's WeChat Pay credentials (encrypted
merchant settings, as for payments). ``out_bill_no`` is ``WD<withdrawal id>``: a retried send
returns the same bill and never pays twice. The bill usually waits for the user to confirm in
the mini-program (``WAIT_USER_CONFIRM``, its ``package_info`` is shown on the withdrawal); the
``MCHTRANSFER.BILL.FINISHED`` notification or a status query then moves the withdrawal. Finance
may cancel a bill the payee has not confirmed (``cancel``: ``CANCELING`` → ``CANCELLED``), and
WeChat cancels one left unconfirmed for 24 hours itself; either way the status polls (or the
notification) see ``CANCELLED`` and the amount returns.
Scene ``1005`` (佣金报酬) with its report infos.

Transfers from 2,000 yuan (``name_required_from``) carry the payee's real name: collected with
the withdrawal request (or taken from the distributor's application), kept on the withdrawal
encrypted at rest (``pii.payee_box``: AES-GCM under a key derived from ``SIYU_SECRET_KEY`` with
its own purpose, bound to the withdrawal's merchant and id) next to a masked copy for display, decrypted only into
``PayoutRequest.payee_name`` (not in its repr) and sent RSA-OAEP encrypted with the platform key
(``WechatTransferClient``). Below 2,000 yuan no name is sent (WeChat would check an optional name
and fail the bill on any mismatch). A named transfer refused ``PARAM_ERROR`` (WeChat's answer to a
wrong ``Wechatpay-Serial`` or platform key) or a platform-key configuration we cannot encrypt
with is retryable: the withdrawal stays approved and the job tries again with the same
``out_bill_no`` once the merchant's platform keys are fixed. An old withdrawal of 2,000 yuan or
more without a stored name fails before anything is sent (the amount returns).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from siyu.referral import pii

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from siyu.config import Settings


@dataclass(frozen=True)
class PayoutRequest:
    merchant_id: int
    withdrawal_id: int
    member_id: int
    amount: int  # fen
    idempotency_key: str
    context: Any = None  # what the provider's ``prepare`` returned
    payee_name: str | None = field(default=None, repr=False)  # real name, decrypted for the send only


@dataclass(frozen=True)
class PayoutResult:
    status: str  # paid | processing | failed
    reference: str | None = None
    detail: str | None = None
    state: str | None = None  # the provider's own state, e.g. WAIT_USER_CONFIRM
    data: dict[str, Any] = field(default_factory=dict)  # e.g. {"package_info": ...}


class PayoutError(Exception):
    """A send or query that did not get an answer we can act on. ``retryable``: the outcome is
    unknown or temporary (network, 5xx, rate limit) — try again with the same idempotency key."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable


PAYEE_NAME_PURPOSE: Final = pii.PAYEE_NAME_PURPOSE
payee_box = pii.payee_box  # payees' real names at rest: see ``referral.pii``


class PayoutProvider(Protocol):
    name: str
    automatic: bool
    name_required_from: int | None  # fen; from this amount the payee's real name is needed

    def send(self, request: PayoutRequest) -> PayoutResult: ...


class ManualProvider:
    """Finance pays by hand and records the reference (``POST .../mark-paid``)."""

    name = "manual"
    automatic = False
    name_required_from: int | None = None

    def send(self, request: PayoutRequest) -> PayoutResult:
        raise NotImplementedError("manual payouts are marked paid by hand")


def out_bill_no(withdrawal_id: int) -> str:
    return f"WD{withdrawal_id}"


def withdrawal_id_of(out_bill_no_: str) -> int | None:
    if out_bill_no_.startswith("WD") and out_bill_no_[2:].isdigit():
        return int(out_bill_no_[2:])
    return None


@dataclass(frozen=True)
class WechatTransferContext:
    config: Any  # siyu.integrations.wechat.pay_v3.WechatPayConfig
    openid: str | None
    notify_url: str


# WeChat Pay states → payout status
_TRANSFER_STATUS = {"SUCCESS": "paid", "FAIL": "failed", "CANCELLED": "failed"}
# refusals that are final (no bill was created): anything else is retried with the same out_bill_no
_RETRYABLE_CODES = frozenset({"SYSTEM_ERROR", "FREQUENCY_LIMITED", "FREQ_LIMITED", "RATELIMIT_EXCEEDED"})


def needs_real_name(provider_name: str, amount: int) -> bool:
    """Whether a withdrawal of ``amount`` fen paid by ``provider_name`` needs the payee's real name."""
    threshold = name_threshold(provider_name)
    return threshold is not None and amount >= threshold


def name_threshold(provider_name: str) -> int | None:
    return getattr(_PROVIDERS.get(provider_name), "name_required_from", None)


class WechatTransferProvider:
    name = "wechat_transfer"
    automatic = True
    name_required_from: int | None = 200_000  # transfer.NAME_REQUIRED_FROM (checked by a test)
    scene_id = "1005"  # 佣金报酬
    report_infos = (("岗位类型", "分销员"), ("报酬说明", "分销佣金提现"))
    user_recv_perception = "劳务报酬"
    remark = "分销佣金提现"

    @property
    def send_seconds(self) -> float:
        """The longest one send's HTTP call can take before it gives up (connect + write + read
        timeouts of the WeChat Pay client): a late check looks after a frozen send's lease plus this."""
        from siyu.integrations.wechat.pay_v3 import DEFAULT_TIMEOUT

        return float(sum(t or 0.0 for t in (DEFAULT_TIMEOUT.connect, DEFAULT_TIMEOUT.write, DEFAULT_TIMEOUT.read)))

    @property
    def confirm_window(self) -> dt.timedelta:
        """How long WeChat keeps a bill waiting for the payee before it cancels it itself."""
        from siyu.integrations.wechat.transfer import CONFIRM_WINDOW

        return CONFIRM_WINDOW

    def configured(self, session: Session, merchant_id: int) -> bool:
        """The merchant pays with WeChat Pay and its credentials are all there (checked when the
        provider is chosen; a key that turns out unreadable fails the payout later)."""
        from siyu.tenancy import service as tenancy_service

        m = tenancy_service.get_merchant(session, merchant_id)
        return bool(
            m.pay_provider == "wechatpay" and m.pay_mchid and m.wechat_appid and m.pay_serial_no
            and m.pay_private_key_enc and m.pay_apiv3_key_enc and m.pay_platform_keys_enc
        )

    def prepare(
        self, session: Session, merchant_id: int, settings: Settings, member_id: int
    ) -> WechatTransferContext:
        from sqlalchemy import select

        from siyu.kit.crypto import SecretBox
        from siyu.kit.errors import DomainError
        from siyu.members.models import Member
        from siyu.payments import providers
        from siyu.tenancy import service as tenancy_service

        merchant = tenancy_service.get_merchant(session, merchant_id)
        try:
            creds = providers.wechatpay_credentials(merchant, SecretBox(settings.secret_key))
        except DomainError as exc:
            raise PayoutError("NOT_CONFIGURED", "WeChat Pay is not configured", retryable=False) from exc
        base = settings.public_base_url.rstrip("/")
        notify_url = f"{base}/api/pay/wechat/transfer-notify/{merchant.code}"
        try:
            config = providers.client_config(
                creds, base_url=settings.wechatpay_api_base, notify_url=notify_url
            )
        except ValueError as exc:
            raise PayoutError("NOT_CONFIGURED", str(exc), retryable=False) from exc
        member = session.scalar(
            select(Member).where(Member.merchant_id == merchant_id, Member.id == member_id)
        )
        openid = member.openid if member is not None else None
        return WechatTransferContext(config=config, openid=openid, notify_url=notify_url)

    def _client(self, request: PayoutRequest) -> Any:
        from siyu.integrations.wechat.transfer import WechatTransferClient

        ctx = request.context
        if not isinstance(ctx, WechatTransferContext):
            raise PayoutError("NOT_CONFIGURED", "no WeChat Pay context", retryable=False)
        return WechatTransferClient(ctx.config)

    def send(self, request: PayoutRequest) -> PayoutResult:
        from siyu.integrations.wechat.transfer import NAME_REQUIRED_FROM

        ctx = request.context
        if not isinstance(ctx, WechatTransferContext) or not ctx.openid:
            return PayoutResult(status="failed", detail="no openid for the member")
        named = request.amount >= NAME_REQUIRED_FROM
        if named and not request.payee_name:
            return PayoutResult(status="failed", detail="transfers from 2,000 yuan need the payee's real name")
        with self._client(request) as client, _mapped_errors(named=named):
            bill = client.create_transfer_bill(
                out_bill_no(request.withdrawal_id),
                ctx.openid,
                request.amount,
                self.remark,
                scene_id=self.scene_id,
                report_infos=self.report_infos,
                notify_url=ctx.notify_url,
                user_recv_perception=self.user_recv_perception,
                user_name=request.payee_name if named else None,
            )
        return result_of(bill)

    def query(self, request: PayoutRequest) -> PayoutResult:
        with self._client(request) as client, _mapped_errors():
            bill = client.query_transfer_bill(out_bill_no(request.withdrawal_id))
        return result_of(bill)

    def cancel(self, request: PayoutRequest) -> PayoutResult:
        """Ask WeChat Pay to cancel the bill before the payee confirms it: ``processing`` with state
        ``CANCELING`` (accepted; ``CANCELLED`` comes by query or notification) or ``failed`` with
        ``CANCELLED``. ``PayoutError``: ``INVALID_REQUEST`` (final, not retryable) when the bill is
        ``SUCCESS`` / ``FAIL`` — query it; ``NOT_FOUND`` when no bill was ever created."""
        with self._client(request) as client, _mapped_errors():
            bill = client.cancel_transfer_bill(out_bill_no(request.withdrawal_id))
        return result_of(bill)


def result_of(bill: Any) -> PayoutResult:
    """A transfer bill (``siyu.integrations.wechat.transfer.TransferBill``) as a payout result."""
    data = {k: v for k, v in (("package_info", bill.package_info), ("fail_reason", bill.fail_reason)) if v}
    return PayoutResult(
        status=_TRANSFER_STATUS.get(bill.state, "processing"),
        reference=bill.transfer_bill_no,
        detail=bill.fail_reason,
        state=bill.state,
        data=data,
    )


@contextmanager
def _mapped_errors(*, named: bool = False) -> Iterator[None]:
    """Client exceptions → ``PayoutError``; a refusal (4xx other than rate limits) is final, except
    ``PARAM_ERROR`` on a ``named`` transfer: WeChat's answer to a name encrypted with a platform key
    it does not accept (wrong ``Wechatpay-Serial``, rotated key), which the merchant fixes in its
    pay settings — the same ``out_bill_no`` is then sent again (no bill was created)."""
    import httpx

    from siyu.integrations.wechat.errors import ResponseSignatureError, WechatApiError

    try:
        yield
    except PayoutError:
        raise
    except ValueError as exc:  # the platform keys cannot encrypt the name (ambiguous / unreadable)
        if not named:
            raise
        raise PayoutError("PLATFORM_KEY", str(exc), retryable=True) from exc
    except ResponseSignatureError as exc:  # an answer we cannot trust: the outcome is unknown
        raise PayoutError(str(exc.errcode), exc.errmsg, retryable=True) from exc
    except WechatApiError as exc:
        status = exc.http_status
        retryable = status is None or status >= 500 or status == 429 or str(exc.errcode) in _RETRYABLE_CODES
        retryable = retryable or (named and str(exc.errcode) == "PARAM_ERROR")
        raise PayoutError(str(exc.errcode), exc.errmsg, retryable=retryable) from exc
    except httpx.HTTPError as exc:
        raise PayoutError("NETWORK", str(exc), retryable=True) from exc


_PROVIDERS: dict[str, PayoutProvider] = {
    "manual": ManualProvider(),
    "wechat_transfer": WechatTransferProvider(),
}


def register(provider: PayoutProvider) -> None:
    _PROVIDERS[provider.name] = provider


def get(name: str) -> PayoutProvider | None:
    return _PROVIDERS.get(name)


def names() -> list[str]:
    return sorted(_PROVIDERS)
