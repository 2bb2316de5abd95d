"""Finds, by reading the source with ``ast``, each field error made without zh-CN text.

A *sink* is a call that makes a field error's message:

- ``kit.errors.invalid(path, code, message, zh)`` and ``kit.errors.FieldError(path, code,
  message, message_zh)``;
- any function that passes its own parameter on as a sink's ``message`` (a helper such as
  coupons' ``_field`` or aftersales' ``_quantity_error``): found here, not listed, so a new helper
  is checked without anyone adding it;
- the constructor of any class that declares a ``message_zh`` field (a row error that becomes a
  field error later, as the CSV imports' ``_RowError``).

Each sink call must pass zh-CN text: a string or f-string whose literal part has Chinese in it,
a call to a function of ``LOCALIZERS`` (the shared tables: ``field_message`` in a language other
than ``"en"``), a helper's own parameter (then the helper's callers are checked), or
``<record>.message_zh`` (a record whose constructor is checked). Calls whose ``message`` is
already in the request's language (``field_message(code, lang, ...)`` with ``lang`` not a
constant, as the API's own 422s) need none.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "siyu"

#: functions that return the zh-CN text of a field message from a table (each covered by a test)
LOCALIZERS = {
    "field_message",  # kit/validation_messages.py: Pydantic's error types and the domains' own codes
}
_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


@dataclass(frozen=True)
class Sink:
    """How a call of ``name`` takes its English message and its zh-CN text."""

    name: str
    message_pos: int | None
    message_kw: str
    zh_pos: int | None
    zh_kw: str
    where: str  # where it is defined ("kit/errors.py" ...), for the failure message


BASE = {
    "invalid": Sink("invalid", 2, "message", 3, "zh", "kit/errors.py"),
    "FieldError": Sink("FieldError", 2, "message", 3, "message_zh", "kit/errors.py"),
}


@dataclass(frozen=True)
class Finding:
    file: str  # relative to src/siyu
    line: int
    call: str
    reason: str

    def __str__(self) -> str:
        return f"src/siyu/{self.file}:{self.line}: {self.call}(...) {self.reason}"


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _arg(call: ast.Call, pos: int | None, kw: str) -> ast.expr | None:
    if pos is not None and len(call.args) > pos and not any(isinstance(a, ast.Starred) for a in call.args[: pos + 1]):
        return call.args[pos]
    for k in call.keywords:
        if k.arg == kw:
            return k.value
    return None


def _has_chinese(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and bool(_CJK.search(node.value))
    if isinstance(node, ast.JoinedStr):
        return any(_has_chinese(v) for v in node.values if isinstance(v, ast.Constant))
    return False


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    return [p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]]


def _positional_params(fn: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> list[str]:
    names = [p.arg for p in [*fn.args.posonlyargs, *fn.args.args]]
    return names[1:] if method and names and names[0] in ("self", "cls") else names


class _Module:
    def __init__(self, rel: str, tree: ast.Module) -> None:
        self.rel = rel
        self.tree = tree
        # every call with the function (and whether it is a method) it sits in, if any
        self.calls: list[tuple[ast.Call, ast.FunctionDef | ast.AsyncFunctionDef | None, bool]] = []
        self.functions: list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, bool]] = []
        self._walk(tree, None, False)

    def _walk(self, node: ast.AST, fn: ast.FunctionDef | ast.AsyncFunctionDef | None, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions.append((child, in_class))
                self._walk(child, child, False)
            elif isinstance(child, ast.ClassDef):
                self._walk(child, fn, True)
            else:
                if isinstance(child, ast.Call):
                    self.calls.append((child, fn, in_class if fn is None else False))
                self._walk(child, fn, in_class)


def _localised_message(call: ast.Call, sink: Sink) -> bool:
    """``message`` is already in the request's language: ``field_message(code, lang, ...)``."""
    msg = _arg(call, sink.message_pos, sink.message_kw)
    if not (isinstance(msg, ast.Call) and _name(msg.func) == "field_message"):
        return False
    lang = _arg(msg, 1, "lang")
    return lang is not None and not isinstance(lang, ast.Constant)


def _zh_ok(node: ast.expr | None, params: set[str]) -> tuple[bool, str | None]:
    """Whether ``node`` is zh-CN text; the parameter it forwards, if it is one."""
    if node is None:
        return False, None
    if isinstance(node, ast.Constant | ast.JoinedStr):
        return _has_chinese(node), None
    if isinstance(node, ast.Name) and node.id in params:
        return True, node.id
    if isinstance(node, ast.Attribute) and node.attr == "message_zh":
        return True, None
    if isinstance(node, ast.Call) and _name(node.func) in LOCALIZERS:
        if _name(node.func) == "field_message":
            lang = _arg(node, 1, "lang")
            return isinstance(lang, ast.Constant) and lang.value != "en", None
        return True, None
    if isinstance(node, ast.IfExp):
        body, _ = _zh_ok(node.body, params)
        orelse, _ = _zh_ok(node.orelse, params)
        return body and orelse, None
    return False, None


def _record_classes(modules: list[_Module]) -> dict[str, Sink]:
    out: dict[str, Sink] = {}
    for m in modules:
        for node in ast.walk(m.tree):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and s.target.id == "message_zh"
                for s in node.body
            ):
                out[node.name] = Sink(node.name, None, "message", None, "message_zh", m.rel)
    return out


@functools.cache
def _load_src() -> list[_Module]:
    return load(SRC, cached=False)


def load(root: Path = SRC, *, cached: bool = True) -> list[_Module]:
    """The modules under ``root`` (``src/siyu``'s read once per test run)."""
    if cached and root == SRC:
        return _load_src()
    return [
        _Module(str(p.relative_to(root)), ast.parse(p.read_text(encoding="utf-8"), filename=str(p)))
        for p in sorted(root.rglob("*.py"))
    ]


def sinks(modules: list[_Module]) -> dict[str, Sink]:
    """The base sinks, the record classes and every helper that forwards a message (to a fixpoint)."""
    found = {**_record_classes(modules), **BASE}
    changed = True
    while changed:
        changed = False
        for m in modules:
            for fn, method in m.functions:
                if fn.name in found:
                    continue
                params = set(_params(fn))
                for call, where, _ in m.calls:
                    sink = found.get(_name(call.func) or "")
                    if where is not fn or sink is None:
                        continue
                    msg = _arg(call, sink.message_pos, sink.message_kw)
                    msg_param = msg.id if isinstance(msg, ast.Name) and msg.id in params else None
                    zh = _arg(call, sink.zh_pos, sink.zh_kw)
                    zh_param = zh.id if isinstance(zh, ast.Name) and zh.id in params else None
                    if msg_param is None and zh_param is None:
                        continue
                    positional = _positional_params(fn, method)
                    found[fn.name] = Sink(
                        fn.name,
                        positional.index(msg_param) if msg_param in positional else None,
                        msg_param or "message",
                        positional.index(zh_param) if zh_param in positional else None,
                        zh_param or "zh",
                        m.rel,
                    )
                    changed = True
                    break
    return found


def findings(modules: list[_Module] | None = None) -> Iterator[Finding]:
    modules = load() if modules is None else modules
    table = sinks(modules)
    for m in modules:
        for call, fn, _ in m.calls:
            name = _name(call.func)
            sink = table.get(name or "")
            if sink is None:
                continue
            if _localised_message(call, sink):
                continue
            params = set(_params(fn)) if fn is not None else set()
            zh = _arg(call, sink.zh_pos, sink.zh_kw)
            ok, _ = _zh_ok(zh, params)
            if ok:
                continue
            if zh is None:
                reason = f"passes no zh-CN text ({sink.zh_kw}= of {sink.name}, {sink.where})"
            else:
                reason = f"passes {ast.unparse(zh)!r} as zh-CN text: not a string with Chinese in it"
            yield Finding(m.rel, call.lineno, name or "?", reason)
