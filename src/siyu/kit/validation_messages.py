"""Field validation messages in zh-CN or English, for Pydantic's error types.

A field error keeps Pydantic's error type as its stable ``code`` (``string_too_short``,
``greater_than`` ...) and gets a message in the request's language from this table, with the
constraint's value from the error's context (``{min_length}``, ``{gt}`` ...). The API's 422
problem (``api/problems.py``) and a rejected event's details (``events/messages.py``) both use
it. A domain with field codes of its own adds them with ``register_field_messages`` at import
time (as ``kit.errors.register_messages`` does for problem codes). A type missing here still
gets a message in the right language (``FALLBACK``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic_core import ErrorDetails

_ISO = (
    "应为 ISO-8601 时间，并带时区偏移（如 2026-01-01T08:00:00+08:00）",
    "Must be an ISO-8601 timestamp with an offset (e.g. 2026-01-01T08:00:00+08:00)",
)
_DATE = ("应为日期（如 2026-01-01）", "Must be a date (e.g. 2026-01-01)")
_TIME = ("应为时间（如 08:30）", "Must be a time of day (e.g. 08:30)")
_INT = ("应为整数", "Must be an integer")
_NUMBER = ("应为数字", "Must be a number")
_BOOL = ("应为 true 或 false", "Must be true or false")
_OBJECT = ("应为 JSON 对象", "Must be a JSON object")
_CHOICE = ("取值应为 {expected} 之一", "Must be one of {expected}")

#: Pydantic error type (the stable field code) -> (zh-CN, English)
FIELD_MESSAGES: dict[str, tuple[str, str]] = {
    "missing": ("缺少必填字段", "This field is required"),
    "extra_forbidden": ("不支持的字段", "Unknown field"),
    "string_type": ("应为字符串", "Must be a string"),
    "string_too_short": ("至少 {min_length} 个字符", "At least {min_length} characters"),
    "string_too_long": ("最多 {max_length} 个字符", "At most {max_length} characters"),
    "text_nul_character": ("文本不能包含 NUL（\\u0000）字符", "Text cannot contain the NUL (\\u0000) character"),
    "string_pattern_mismatch": ("格式不正确，应符合 {pattern}", "Must match {pattern}"),
    "string_unicode": ("应为合法的 Unicode 字符串", "Must be a valid Unicode string"),
    "int_type": _INT,
    "int_parsing": _INT,
    "int_parsing_size": ("整数超出范围", "The integer is out of range"),
    "int_from_float": ("应为整数，不能带小数点", "Must be a whole number, without a decimal point"),
    "greater_than": ("必须大于 {gt}", "Must be greater than {gt}"),
    "greater_than_equal": ("不能小于 {ge}", "Must be at least {ge}"),
    "less_than": ("必须小于 {lt}", "Must be less than {lt}"),
    "less_than_equal": ("不能大于 {le}", "Must be at most {le}"),
    "multiple_of": ("应为 {multiple_of} 的整数倍", "Must be a multiple of {multiple_of}"),
    "finite_number": ("应为有限的数字", "Must be a finite number"),
    "float_type": _NUMBER,
    "float_parsing": _NUMBER,
    "decimal_type": _NUMBER,
    "decimal_parsing": _NUMBER,
    "decimal_max_digits": ("最多 {max_digits} 位数字", "At most {max_digits} digits"),
    "decimal_max_places": ("最多 {decimal_places} 位小数", "At most {decimal_places} decimal places"),
    "bool_type": _BOOL,
    "bool_parsing": _BOOL,
    "datetime_type": _ISO,
    "datetime_parsing": _ISO,
    "datetime_from_date_parsing": _ISO,
    "datetime_object_invalid": _ISO,
    "timezone_aware": ("时间必须带时区偏移（如 +08:00）", "The timestamp needs a time zone offset (e.g. +08:00)"),
    "date_type": _DATE,
    "date_parsing": _DATE,
    "date_from_datetime_parsing": _DATE,
    "date_from_datetime_inexact": _DATE,
    "time_type": _TIME,
    "time_parsing": _TIME,
    "uuid_type": ("应为 UUID", "Must be a UUID"),
    "uuid_parsing": ("应为 UUID", "Must be a UUID"),
    "url_type": ("应为网址", "Must be a URL"),
    "url_parsing": ("应为网址", "Must be a URL"),
    "url_scheme": ("网址协议应为 {expected_schemes}", "The URL scheme must be {expected_schemes}"),
    "literal_error": _CHOICE,
    "enum": _CHOICE,
    "dict_type": _OBJECT,
    "model_type": _OBJECT,
    "model_attributes_type": _OBJECT,
    "list_type": ("应为列表", "Must be a list"),
    "set_type": ("应为列表", "Must be a list"),
    "too_short": ("至少 {min_length} 项", "At least {min_length} items"),
    "too_long": ("最多 {max_length} 项", "At most {max_length} items"),
    "union_tag_invalid": ("{discriminator} 的取值应为 {expected_tags} 之一", "{discriminator} must be one of {expected_tags}"),
    "union_tag_not_found": ("缺少区分字段 {discriminator}", "The field {discriminator} is required"),
    "none_required": ("应为 null", "Must be null"),
    "json_invalid": ("不是合法的 JSON", "Not valid JSON"),
    "value_error": ("取值不正确：{error}", "{error}"),
    "assertion_error": ("取值不正确：{error}", "{error}"),
}
FALLBACK = ("取值不正确", "Invalid value")


def register_field_messages(messages: Mapping[str, tuple[str, str]]) -> None:
    """Add a domain's own field codes; the same code twice with different text is a bug."""
    for code, text in messages.items():
        existing = FIELD_MESSAGES.get(code)
        if existing is not None and existing != text:
            raise ValueError(f"field code {code!r} registered twice with different text")
        FIELD_MESSAGES[code] = text


def field_message(code: str, lang: str, ctx: Mapping[str, Any] | None = None) -> str:
    """The message of field code ``code`` in ``lang`` (``en`` or zh-CN), filled from ``ctx``."""
    zh, en = FIELD_MESSAGES.get(code, FALLBACK)
    template = en if lang == "en" else zh
    if "{" in template:
        values = dict(ctx or {})
        if lang != "en" and isinstance(values.get("expected"), str):
            values["expected"] = values["expected"].replace(" or ", " 或 ")  # Pydantic's "'a', 'b' or 'c'"
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):
            # a constraint missing from the context: the message without its value
            fallback_zh, fallback_en = FALLBACK
            return fallback_en if lang == "en" else fallback_zh
    return template


def dotted(loc: Iterable[Any]) -> str:
    return ".".join(str(p) for p in loc)


def field_errors(errors: Iterable[ErrorDetails], lang: str, prefix: str = "") -> list[dict[str, str]]:
    """``path`` (dotted, ``prefix`` first), ``code`` (Pydantic's type) and ``message`` in ``lang``
    for each of Pydantic's ``errors()``."""
    return [
        {
            "path": prefix + dotted(e["loc"]),
            "code": e["type"],
            "message": field_message(e["type"], lang, e.get("ctx")),
        }
        for e in errors
    ]
