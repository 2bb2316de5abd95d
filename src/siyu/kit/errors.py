"""Typed domain errors with stable machine codes and zh-CN / English messages.

A service raises ``DomainError(code, **params)``; the API turns it into a JSON problem
response ``{"type", "title", "status", "code", "message", "fields", "request_id"}``. Each
domain registers its codes with ``register_messages`` at import time, so the catalogue of
codes lives next to the code that raises them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Message:
    status: int
    zh: str
    en: str


_CATALOGUE: dict[str, Message] = {}


def register_messages(messages: dict[str, tuple[int, str, str]]) -> None:
    for code, (status, zh, en) in messages.items():
        existing = _CATALOGUE.get(code)
        if existing and existing != Message(status, zh, en):
            raise ValueError(f"error code {code!r} registered twice with different text")
        _CATALOGUE[code] = Message(status, zh, en)


def catalogue() -> dict[str, Message]:
    return dict(_CATALOGUE)


@dataclass
class FieldError:
    """One field's refusal: ``message`` in English, ``message_zh`` in zh-CN (when a service gives
    one; the 422 problem picks by ``Accept-Language`` and falls back to ``message``)."""

    path: str
    code: str
    message: str
    message_zh: str | None = None

    def text(self, lang: str) -> str:
        return self.message if lang == "en" or not self.message_zh else self.message_zh


@dataclass
class DomainError(Exception):
    code: str
    params: dict[str, Any] = field(default_factory=dict)
    fields: list[FieldError] = field(default_factory=list)

    def __init__(self, code: str, fields: list[FieldError] | None = None, **params: Any) -> None:
        super().__init__(code)
        if code not in _CATALOGUE:
            raise KeyError(f"unregistered error code {code!r}")
        self.code = code
        self.params = params
        self.fields = fields or []

    @property
    def status(self) -> int:
        return _CATALOGUE[self.code].status

    def message(self, lang: str) -> str:
        msg = _CATALOGUE[self.code]
        template = msg.en if lang == "en" else msg.zh
        params = dict(self.params)
        if lang == "en":
            # "resource_en" overrides "resource" in English messages, and so on.
            params.update({k[:-3]: v for k, v in self.params.items() if k.endswith("_en")})
        try:
            return template.format(**params)
        except (KeyError, IndexError):
            return template

    def __str__(self) -> str:
        return f"{self.code}: {self.message('en')}"


register_messages(
    {
        "validation_error": (422, "请求参数不正确", "The request is not valid"),
        "malformed_body": (400, "请求体不是合法的 JSON", "The request body is not valid JSON"),
        "not_found": (404, "{resource}不存在", "{resource} not found"),
        "route_not_found": (404, "接口不存在", "No such endpoint"),
        "method_not_allowed": (405, "不支持该请求方法", "Method not allowed"),
        "unauthenticated": (401, "请先登录", "Authentication required"),
        "invalid_token": (401, "登录已失效，请重新登录", "The token is invalid or expired"),
        "invalid_credentials": (401, "账号或密码错误", "Wrong username or password"),
        "forbidden": (403, "没有权限执行此操作", "You are not allowed to do this"),
        "conflict": (409, "操作冲突，请重试", "Conflicting change, please retry"),
        "idempotency_key_required": (
            400,
            "缺少 Idempotency-Key 请求头",
            "The Idempotency-Key header is required",
        ),
        "idempotency_key_reused": (
            409,
            "该 Idempotency-Key 已用于另一个不同的请求",
            "This Idempotency-Key was already used for a different request",
        ),
        "rate_limited": (429, "请求过于频繁", "Too many requests"),
        "internal_error": (500, "服务器内部错误", "Internal server error"),
        "provider_error": (502, "支付或微信服务暂时不可用：{detail}", "Upstream provider error: {detail}"),
    }
)


def not_found(resource_zh: str, resource_en: str) -> DomainError:
    """A 404 whose message names the resource in the caller's language."""
    return DomainError("not_found", resource=resource_zh, resource_en=resource_en)


def invalid(path: str, code: str, message: str, zh: str | None = None) -> DomainError:
    """A 422 validation error on one field, raised by services for rules a schema cannot express;
    ``message`` in English, ``zh`` in zh-CN."""
    return DomainError("validation_error", fields=[FieldError(path, code, message, zh)])
