"""The zh-CN text of a merchant-defined field's value error (custom profile fields, member
records): ``members.schemas.check_values`` words each error in both languages at its source.
Every error it can make is made here, with its code, English and zh-CN text."""

from __future__ import annotations

from typing import Any

from siyu.members.schemas import FieldDef, check_values

DEFS = [
    FieldDef(key="t", label="文本", type="text", max_length=3),
    FieldDef(key="n", label="数字", type="number", min=1, max=5.5),
    FieldDef(key="d", label="日期", type="date"),
    FieldDef(key="b", label="是否", type="bool"),
    FieldDef(key="c", label="单选", type="choice", options=["a", "b"]),
    FieldDef(key="m", label="多选", type="multi_choice", options=["a", "b"]),
    FieldDef(key="r", label="必填", type="text", required=True),
]
EXPECTED: list[tuple[dict[str, Any], str, str, str, str]] = [  # values, path, code, English, zh-CN
    ({"t": 5}, "data.t", "text_expected", "expected text", "应为文本"),
    ({"t": "abcd"}, "data.t", "out_of_range", "at most 3 characters", "最多 3 个字符"),
    ({"n": "x"}, "data.n", "number_expected", "expected a number", "应为数字"),
    ({"n": 0}, "data.n", "out_of_range", "must be ≥ 1", "不能小于 1"),
    ({"n": 9}, "data.n", "out_of_range", "must be ≤ 5.5", "不能大于 5.5"),
    ({"d": 5}, "data.d", "date_expected", "expected a date YYYY-MM-DD", "应为日期（YYYY-MM-DD）"),
    ({"d": "2020-13-01"}, "data.d", "date_expected", "expected a date YYYY-MM-DD", "应为日期（YYYY-MM-DD）"),
    ({"b": "yes"}, "data.b", "bool_expected", "expected true or false", "应为 true 或 false"),
    ({"c": "z"}, "data.c", "choice_expected", "expected one of ['a', 'b']", "应为以下选项之一：['a', 'b']"),
    ({"m": "a"}, "data.m", "multi_choice_expected", "expected a list of options", "应为选项列表"),
    ({"m": ["a", "z"]}, "data.m", "out_of_range", "unknown option(s) ['z']; options: ['a', 'b']",
     "未知选项 ['z']；可选项：['a', 'b']"),
    ({"nope": 1}, "data.nope", "unknown_field", "no such field", "没有这个字段"),
    ({}, "data.r", "required", "this field is required", "此项为必填"),
]


def test_every_value_error_carries_its_code_english_and_zh_text() -> None:
    for values, path, code, en, zh in EXPECTED:
        _, errors = check_values(DEFS, values, prefix="data", check_required=code == "required")
        assert [(e.path, e.code, e.message, e.message_zh) for e in errors] == [(path, code, en, zh)], values


def test_a_required_field_with_a_wrong_value_reports_the_value_not_the_absence() -> None:
    _, errors = check_values(DEFS, {"r": 5}, prefix="data")
    assert [(e.path, e.code) for e in errors] == [("data.r", "text_expected")]
