"""Client for the WeChat mini-program server API (``https://api.weixin.qq.com``).

Protocol notes:

- Every endpoint answers HTTP 200. Failure is a JSON body with a non-zero ``errcode`` and an
  ``errmsg``: 40029 invalid code, 40163 code already used, 45011 rate limited, 40226 risky user,
  -1 system busy, 40013 invalid appid, 40125 invalid secret, 40001/42001 access token
  invalid/expired. Success bodies carry no ``errcode`` or ``errcode: 0``.
- ``/sns/jscode2session`` answers JSON with ``Content-Type: text/plain``, so bodies are parsed
  whatever the content type says.
- The ``access_token`` is per app and lives ``expires_in`` seconds (7200). Fetching a new one
  invalidates the previous one after a short overlap, so share one client (or one
  ``AccessTokenCache``) per app rather than fetching a token per request.
- ``/wxa/getwxacodeunlimit`` answers the image bytes on success, JSON on failure.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import httpx

from siyu.integrations.wechat.errors import WechatApiError

DEFAULT_BASE_URL: Final = "https://api.weixin.qq.com"
DEFAULT_TIMEOUT: Final = httpx.Timeout(10.0, connect=5.0)
TOKEN_REFRESH_MARGIN_SECONDS: Final = 300
TOKEN_INVALID_ERRCODES: Final = frozenset({40001, 42001})
MAX_SCENE_LENGTH: Final = 32


@dataclass(frozen=True)
class Session:
    """Answer of ``code_to_session``. ``session_key`` is a secret: never send it to the client."""

    openid: str
    unionid: str | None
    session_key: str


@dataclass(frozen=True)
class PhoneInfo:
    """``phone_number`` has the country code for foreign numbers; ``pure_phone_number`` never does."""

    phone_number: str
    pure_phone_number: str
    country_code: str


class AccessTokenCache:
    """A thread-safe in-memory access token, valid until ``refresh_margin`` seconds before expiry."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin: float = TOKEN_REFRESH_MARGIN_SECONDS,
    ) -> None:
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._token: str | None = None
        self._valid_until = 0.0
        self.lock = threading.Lock()

    def get(self) -> str | None:
        """The cached token if still fresh. Callers hold ``lock`` when they mean to refresh."""
        if self._token is not None and self._clock() < self._valid_until:
            return self._token
        return None

    def put(self, token: str, expires_in: float) -> None:
        """Cache ``token``; a lifetime shorter than the margin keeps it for half its lifetime."""
        margin = self._refresh_margin if expires_in > self._refresh_margin else expires_in / 2
        self._token = token
        self._valid_until = self._clock() + expires_in - margin

    def invalidate(self, token: str | None = None) -> None:
        """Forget the token (only if it is still ``token``, when given)."""
        if token is None or token == self._token:
            self._token = None
            self._valid_until = 0.0


class MiniProgramClient:
    """The mini-program server API for one app (``appid`` + ``secret``)."""

    def __init__(
        self,
        appid: str,
        secret: str,
        base_url: str = DEFAULT_BASE_URL,
        http: httpx.Client | None = None,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        token_cache: AccessTokenCache | None = None,
    ) -> None:
        self.appid = appid
        self._secret = secret
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._tokens = token_cache if token_cache is not None else AccessTokenCache(clock)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP connection pool if this client created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- API ------------------------------------------------------------------------------------

    def code_to_session(self, code: str) -> Session:
        """Exchange a ``wx.login`` code (single use, valid 5 minutes) for the user's identity."""
        params = {
            "appid": self.appid,
            "secret": self._secret,
            "js_code": code,
            "grant_type": "authorization_code",
        }
        data = self._get_json("/sns/jscode2session", params)
        openid = data.get("openid")
        session_key = data.get("session_key")
        if not isinstance(openid, str) or not isinstance(session_key, str):
            raise WechatApiError(-1, "jscode2session answer lacks openid/session_key")
        unionid = data.get("unionid")
        return Session(
            openid=openid, unionid=unionid if isinstance(unionid, str) else None, session_key=session_key
        )

    def get_access_token(self, *, force_refresh: bool = False) -> str:
        """The app's access token, fetched once and cached until 5 minutes before it expires."""
        with self._tokens.lock:
            cached = None if force_refresh else self._tokens.get()
            if cached is not None:
                return cached
            return self._fetch_access_token()

    def get_phone_number(self, code: str) -> PhoneInfo:
        """Exchange a ``getPhoneNumber`` button code for the user's phone number."""
        response = self._post_with_token("/wxa/business/getuserphonenumber", {"code": code})
        info = _raise_for_errcode(_parse_json(response)).get("phone_info")
        if not isinstance(info, dict):
            raise WechatApiError(-1, "getuserphonenumber answer lacks phone_info")
        return PhoneInfo(
            phone_number=str(info.get("phoneNumber", "")),
            pure_phone_number=str(info.get("purePhoneNumber", "")),
            country_code=str(info.get("countryCode", "")),
        )

    def get_unlimited_qrcode(
        self,
        scene: str,
        page: str | None = None,
        width: int = 430,
        *,
        check_path: bool | None = None,
        env_version: str | None = None,
    ) -> bytes:
        """A mini-program code image (unlimited kind) whose ``scene`` reaches the page's ``onLoad``.

        ``scene`` is at most 32 visible characters; ``page`` has no leading slash and must be
        published unless ``check_path`` is False; ``env_version`` is release/trial/develop.
        """
        if not scene or len(scene) > MAX_SCENE_LENGTH:
            raise ValueError(f"scene must be 1..{MAX_SCENE_LENGTH} characters")
        body: dict[str, Any] = {"scene": scene, "width": width}
        if page is not None:
            body["page"] = page
        if check_path is not None:
            body["check_path"] = check_path
        if env_version is not None:
            body["env_version"] = env_version
        response = self._post_with_token("/wxa/getwxacodeunlimit", body)
        if _looks_like_json(response):
            _raise_for_errcode(_parse_json(response))
            raise WechatApiError(-1, "getwxacodeunlimit answered JSON instead of an image")
        return response.content

    # -- internals ------------------------------------------------------------------------------

    def _fetch_access_token(self) -> str:
        params = {"grant_type": "client_credential", "appid": self.appid, "secret": self._secret}
        data = self._get_json("/cgi-bin/token", params)
        token = data.get("access_token")
        expires_in = data.get("expires_in")
        if not isinstance(token, str) or not isinstance(expires_in, int):
            raise WechatApiError(-1, "token answer lacks access_token/expires_in")
        self._tokens.put(token, expires_in)
        return token

    def _get_json(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        response = self._http.get(f"{self.base_url}{path}", params=params, timeout=self._timeout)
        return _raise_for_errcode(_parse_json(response))

    def _post_with_token(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST with the access token; on 40001/42001 refresh the token once and retry."""
        token = self.get_access_token()
        response = self._post(path, token, body)
        if _token_rejected(response):
            self._tokens.invalidate(token)
            response = self._post(path, self.get_access_token(), body)
        return response

    def _post(self, path: str, token: str, body: dict[str, Any]) -> httpx.Response:
        content = json.dumps(body, ensure_ascii=False).encode()
        return self._http.post(
            f"{self.base_url}{path}",
            params={"access_token": token},
            content=content,
            headers={"Content-Type": "application/json"},
            timeout=self._timeout,
        )


def _looks_like_json(response: httpx.Response) -> bool:
    content_type = response.headers.get("content-type", "")
    return "json" in content_type or response.content.lstrip()[:1] == b"{"


def _parse_json(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of an answer, whatever its content type; HTTP errors become WechatApiError."""
    if response.status_code >= 400:
        raise WechatApiError(-1, f"HTTP {response.status_code}: {response.text[:200]}", response.status_code)
    try:
        data = json.loads(response.content)
    except ValueError as exc:
        raise WechatApiError(-1, "answer is not JSON", response.status_code) from exc
    if not isinstance(data, dict):
        raise WechatApiError(-1, "answer is not a JSON object", response.status_code)
    return data


def _raise_for_errcode(data: dict[str, Any]) -> dict[str, Any]:
    errcode = data.get("errcode", 0)
    if errcode not in (0, None):
        code = errcode if isinstance(errcode, int) else str(errcode)
        raise WechatApiError(code, str(data.get("errmsg", "")))
    return data


def _token_rejected(response: httpx.Response) -> bool:
    if response.status_code >= 400 or not _looks_like_json(response):
        return False
    try:
        data = json.loads(response.content)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("errcode") in TOKEN_INVALID_ERRCODES
