"""A schema's own rule (a validator) is refused with a field code of its own that has zh-CN and
English text, never Pydantic's ``value_error`` (whose message is the validator's English text
behind a zh-CN prefix)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import siyu
from siyu.kit.validation_messages import FIELD_MESSAGES

SRC = Path(siyu.__file__).parent


def _modules() -> list[Path]:
    """Every module that declares Pydantic validators (schemas, segment definitions)."""
    return [p for p in sorted(SRC.rglob("*.py")) if "_validator" in p.read_text(encoding="utf-8")]


def _import(path: Path) -> None:
    importlib.import_module("siyu." + ".".join(path.relative_to(SRC).with_suffix("").parts))


def test_no_validator_raises_a_bare_value_error() -> None:
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any(
                "validator" in ast.unparse(d) for d in node.decorator_list
            ):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Raise) and inner.exc is not None and "ValueError(" in ast.unparse(inner.exc):
                        found.append(f"{path.relative_to(SRC)}:{inner.lineno}")
    assert not found, f"raise PydanticCustomError(<code>, ...) with registered text instead: {found}"


def test_every_custom_field_code_has_zh_and_english_text() -> None:
    codes: dict[str, str] = {}
    for path in _modules():
        _import(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("PydanticCustomError") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    codes[first.value] = f"{path.relative_to(SRC)}:{node.lineno}"
    assert len(codes) >= 10  # the scan finds them
    missing = {c: where for c, where in codes.items() if c not in FIELD_MESSAGES}
    assert not missing, f"register_field_messages for: {missing}"
