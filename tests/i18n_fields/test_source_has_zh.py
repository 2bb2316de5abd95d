"""Every field-level validation error a service raises carries zh-CN text as well as English.

``checker`` reads ``src/siyu`` with ``ast``: each ``invalid(...)``, ``FieldError(...)``, helper
that forwards a message to them, and row record with a ``message_zh`` field must be given zh-CN
text. A failure names ``file:line`` of each call without it. ``KNOWN_GAPS`` lists the files
left for now, each with its reason; a file that no longer has a gap must leave the list.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.i18n_fields import checker

#: src/siyu-relative files whose field errors still lack zh-CN text, and why they may for now
KNOWN_GAPS: dict[str, str] = {}


def test_every_field_error_a_service_raises_has_zh_text() -> None:
    missing = [f for f in checker.findings() if f.file not in KNOWN_GAPS]
    assert not missing, "field errors without zh-CN text (give each the zh text of its message):\n" + "\n".join(
        str(f) for f in missing
    )


def test_known_gaps_are_still_gaps() -> None:
    with_gaps = {f.file for f in checker.findings()}
    stale = sorted(set(KNOWN_GAPS) - with_gaps)
    assert not stale, f"these files give zh text everywhere now: take them off KNOWN_GAPS: {stale}"


def test_the_helpers_of_the_services_are_found() -> None:
    """The helpers that pass a message on are found by reading the code, not from a list."""
    found = checker.sinks(checker.load())
    for helper in ("_field", "_quantity_error", "activity_line", "_RowError"):
        assert helper in found, helper


# -- the checker on made-up modules --------------------------------------------------------------


def _findings(tmp_path: Path, **modules: str) -> list[tuple[str, int, str]]:
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return [(f.file, f.line, f.call) for f in checker.findings(checker.load(tmp_path))]


def test_checker_flags_calls_without_zh_and_accepts_calls_with_it(tmp_path: Path) -> None:
    found = _findings(
        tmp_path,
        svc='''
        from siyu.kit.errors import FieldError, invalid
        from siyu.kit.validation_messages import field_message

        def f(key, lang, e):
            invalid("a", "c", "English only")
            invalid("a", "c", "English", "English again")
            invalid("a", "c", "English", "中文")
            invalid("a", "c", f"{key} English", zh=f"{key} 中文")
            invalid(
                "a", "c",
                "several lines",
            )
            FieldError("a", "c", "English")
            FieldError("a", "c", "English", message_zh="中文")
            FieldError("a", "c", field_message("x", lang))
            FieldError("a", "c", field_message("x", "en"), field_message("x", "zh-CN"))
            FieldError("a", "c", field_message("x", "en"), field_message("x", "en"))
            FieldError("a", "c", e.message, e.message_zh)
            FieldError("a", "c", "English", e.zh_text)
        ''',
    )
    assert found == [
        ("svc.py", 6, "invalid"),
        ("svc.py", 7, "invalid"),
        ("svc.py", 10, "invalid"),
        ("svc.py", 14, "FieldError"),
        ("svc.py", 18, "FieldError"),
        ("svc.py", 20, "FieldError"),
    ]


def test_checker_follows_helpers_and_records(tmp_path: Path) -> None:
    found = _findings(
        tmp_path,
        helpers='''
        from pydantic import BaseModel
        from siyu.kit.errors import DomainError, FieldError, invalid

        def english_only(path, message):
            return DomainError("x", fields=[FieldError(path, "c", message)])

        def both(path, message, zh):
            return invalid(path, "c", message, zh)

        def on_top(path, message, zh):
            return both(path, message, zh)

        class Row(BaseModel):
            message: str
            message_zh: str
        ''',
        callers='''
        from helpers import both, english_only, on_top
        import helpers

        def g():
            english_only("a", "English")
            both("a", "English", "中文")
            both("a", "English")
            helpers.both("a", "English")
            on_top("a", "English", zh="中文")
            on_top("a", "English")
            helpers.Row(message="English", message_zh="中文")
            helpers.Row(message="English")
        ''',
    )
    assert found == [
        ("callers.py", 6, "english_only"),
        ("callers.py", 8, "both"),
        ("callers.py", 9, "both"),
        ("callers.py", 11, "on_top"),
        ("callers.py", 13, "Row"),
        ("helpers.py", 6, "FieldError"),
    ]
