"""The field details of a rejected event (``Rejected.fields``) in the request's language.

Each detail keeps Pydantic's error type as its stable ``code`` (``string_too_short``,
``greater_than`` ...) and gets a message in zh-CN or English from this table, with the
constraint's value from the error's context (``{min_length}``, ``{gt}`` ...). A type missing
here still gets a message in the right language (``_FALLBACK``); the tests
(``tests/events/test_ingest_field_messages.py``) produce every type an event's envelope and the
registered property schemas can raise and check that none of them falls back.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

_ISO = ("应为 ISO-8601 时间，并带时区偏移（如 2026-01-01T08:00:00+08:00）", "Must be an ISO-8601 timestamp with an offset (e.g. 2026-01-01T08:00:00+08:00)")
_INT = ("应为整数", "Must be an integer")
_OBJECT = ("应为 JSON 对象", "Must be a JSON object")

#: Pydantic error type (our stable field code) -> (zh-CN, English)
FIELD_MESSAGES: dict[str, tuple[str, str]] = {
    "missing": ("缺少必填字段", "This field is required"),
    "extra_forbidden": ("不支持的字段", "Unknown field"),
    "string_type": ("应为字符串", "Must be a string"),
    "string_too_short": ("至少 {min_length} 个字符", "At least {min_length} characters"),
    "string_too_long": ("最多 {max_length} 个字符", "At most {max_length} characters"),
    "string_pattern_mismatch": ("格式不正确，应符合 {pattern}", "Must match {pattern}"),
    "int_type": _INT,
    "int_parsing": _INT,
    "int_from_float": ("应为整数，不能带小数", "Must be a whole number"),
    "greater_than": ("必须大于 {gt}", "Must be greater than {gt}"),
    "greater_than_equal": ("不能小于 {ge}", "Must be at least {ge}"),
    "less_than": ("必须小于 {lt}", "Must be less than {lt}"),
    "less_than_equal": ("不能大于 {le}", "Must be at most {le}"),
    "float_type": ("应为数字", "Must be a number"),
    "float_parsing": ("应为数字", "Must be a number"),
    "bool_type": ("应为 true 或 false", "Must be true or false"),
    "bool_parsing": ("应为 true 或 false", "Must be true or false"),
    "datetime_type": _ISO,
    "datetime_parsing": _ISO,
    "datetime_from_date_parsing": _ISO,
    "datetime_object_invalid": _ISO,
    "dict_type": _OBJECT,
    "model_type": _OBJECT,
    "list_type": ("应为列表", "Must be a list"),
    # ours (service._NAIVE): the envelope parsed, but the timestamp has no offset
    "naive": ("时间必须带时区偏移（如 +08:00）", "The timestamp needs a time zone offset (e.g. +08:00)"),
}
_FALLBACK = ("取值不正确", "Invalid value")


def field_message(code: str, lang: str, ctx: dict[str, Any] | None = None) -> str:
    zh, en = FIELD_MESSAGES.get(code, _FALLBACK)
    template = en if lang == "en" else zh
    if ctx and "{" in template:
        try:
            return template.format(**ctx)
        except (KeyError, IndexError, ValueError):
            return template
    return template


def field_errors(exc: ValidationError, lang: str, prefix: str = "") -> list[dict[str, str]]:
    """``path`` (dotted, ``prefix`` first), ``code`` (Pydantic's type) and ``message`` in ``lang``."""
    return [
        {
            "path": prefix + ".".join(str(p) for p in e["loc"]),
            "code": e["type"],
            "message": field_message(e["type"], lang, e.get("ctx")),
        }
        for e in exc.errors(include_url=False, include_input=False)
    ]


def naive_timestamp(lang: str) -> dict[str, str]:
    return {"path": "timestamp", "code": "naive", "message": field_message("naive", lang)}
