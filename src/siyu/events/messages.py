"""The field details of a rejected event (``Rejected.fields``) in the request's language.

Each detail keeps Pydantic's error type as its stable ``code`` (``string_too_short``,
``greater_than`` ...) and gets a message in zh-CN or English from the shared table in
``kit/validation_messages.py`` (also used by the API's 422 problems), plus ``naive``, a code of
the events module. The tests (``tests/events/test_ingest_field_messages.py``) produce every type
an event's envelope and the registered property schemas can raise and check that none of them
falls back.
"""

from __future__ import annotations

from pydantic import ValidationError

from siyu.kit.validation_messages import FALLBACK as _FALLBACK
from siyu.kit.validation_messages import FIELD_MESSAGES, field_message, register_field_messages
from siyu.kit.validation_messages import field_errors as _field_errors

__all__ = ["FIELD_MESSAGES", "_FALLBACK", "field_errors", "field_message", "naive_timestamp"]

register_field_messages(
    {
        # ours (service._NAIVE): the envelope parsed, but the timestamp has no offset
        "naive": ("时间必须带时区偏移（如 +08:00）", "The timestamp needs a time zone offset (e.g. +08:00)"),
    }
)


def field_errors(exc: ValidationError, lang: str, prefix: str = "") -> list[dict[str, str]]:
    """``path`` (dotted, ``prefix`` first), ``code`` (Pydantic's type) and ``message`` in ``lang``."""
    return _field_errors(exc.errors(include_url=False, include_input=False), lang, prefix)


def naive_timestamp(lang: str) -> dict[str, str]:
    return {"path": "timestamp", "code": "naive", "message": field_message("naive", lang)}
