"""The zh-CN text of a merchant-defined field's value error (custom profile fields, member
records): ``members.schemas.check_values`` words them in English and ``members.profile``'s
table gives each its zh-CN text. Every message ``check_values`` can make is made here, so a new
or reworded one without an entry fails (it would otherwise fall back to 取值不正确：<English>)."""

from __future__ import annotations

from typing import Any

from siyu.members.profile import _VALUE_MESSAGES_ZH, value_message_zh
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
BAD: list[dict[str, Any]] = [
    {"t": 5}, {"t": "abcd"}, {"n": "x"}, {"n": 0}, {"n": 9}, {"d": 5}, {"d": "2020-13-01"}, {"b": "yes"},
    {"c": "z"}, {"m": "a"}, {"m": ["a", "z"]}, {"nope": 1}, {},
]


def _messages() -> list[tuple[str, str]]:
    out = []
    for values in BAD:
        _, errors = check_values(DEFS, values, prefix="data")
        out += [(code, message) for _, code, message in errors]
    return out


def test_every_value_error_has_its_zh_text() -> None:
    messages = _messages()
    assert {code for code, _ in messages} >= {"text_expected", "number_expected", "out_of_range", "unknown_field",
                                              "required", "date_expected", "bool_expected", "choice_expected"}
    for _, message in messages:
        zh = value_message_zh(message)
        assert not zh.startswith("取值不正确"), f"no zh text for {message!r}"
    used = {p.pattern for p, _ in _VALUE_MESSAGES_ZH for _, m in messages if p.fullmatch(m)}
    assert used == {p.pattern for p, _ in _VALUE_MESSAGES_ZH}, "an entry no message uses"


def test_values_are_kept_in_the_zh_text() -> None:
    assert value_message_zh("at most 3 characters") == "最多 3 个字符"
    assert value_message_zh("must be ≥ 1") == "不能小于 1"
    assert value_message_zh("must be ≤ 5.5") == "不能大于 5.5"
    assert value_message_zh("unknown option(s) ['z']; options: ['a', 'b']") == "未知选项 ['z']；可选项：['a', 'b']"
    assert value_message_zh("something new") == "取值不正确：something new"
