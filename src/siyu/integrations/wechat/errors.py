"""Typed errors of the WeChat clients.

- ``WechatApiError``: WeChat answered and said no. The mini-program API reports errors as HTTP
  200 with ``{"errcode": 40029, "errmsg": "..."}`` (``errcode`` is an ``int``); WeChat Pay v3
  answers 4xx/5xx with ``{"code": "PARAM_ERROR", "message": "..."}`` (``errcode`` is that
  ``str`` and ``http_status`` the HTTP status).
- ``ResponseSignatureError``: a WeChat Pay 2xx answer whose platform signature does not verify.
  The content must not be trusted (someone between us and WeChat may have changed it).
- ``NotificationError``: an incoming WeChat Pay notification was rejected; ``reason`` is a
  stable machine code (see ``NOTIFICATION_REASONS``).

Network failures are not wrapped: they surface as ``httpx.HTTPError`` (``httpx.TimeoutException``,
``httpx.ConnectError``...). For WeChat Pay a timeout means *unknown outcome*: query before retrying
anything that moves money.
"""

from __future__ import annotations

from typing import Any, Final

NOTIFICATION_REASONS: Final = frozenset(
    {
        "missing_headers",
        "unknown_serial",
        "stale_timestamp",
        "bad_signature",
        "malformed_body",
        "decrypt_failed",
    }
)


class WechatError(Exception):
    """Base class of every error raised by ``siyu.integrations.wechat``."""


class WechatApiError(WechatError):
    """WeChat refused a request (or answered something that is not a valid answer)."""

    def __init__(
        self,
        errcode: int | str,
        errmsg: str,
        http_status: int | None = None,
        *,
        request_id: str | None = None,
        detail: Any = None,
    ) -> None:
        status = f" (HTTP {http_status})" if http_status is not None else ""
        super().__init__(f"WeChat error {errcode}{status}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.http_status = http_status
        self.request_id = request_id
        self.detail = detail


class ResponseSignatureError(WechatApiError):
    """A WeChat Pay answer failed platform-signature verification; ``errmsg`` says why."""

    CODE: Final = "RESPONSE_SIGNATURE_INVALID"

    def __init__(self, errmsg: str, http_status: int | None = None, *, request_id: str | None = None) -> None:
        super().__init__(self.CODE, errmsg, http_status, request_id=request_id)


class NotificationError(WechatError):
    """An incoming WeChat Pay notification failed verification or decryption."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        if reason not in NOTIFICATION_REASONS:
            raise ValueError(f"unknown notification rejection reason {reason!r}")
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
