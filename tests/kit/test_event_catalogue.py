"""``kit.events.EVENTS`` is the catalogue integrators and journeys read: every event name a
module emits is in it (found in the source, so a new ``emit`` without an entry fails here)."""

from __future__ import annotations

import ast
from pathlib import Path

import siyu
from siyu.kit.events import EVENTS

SRC = Path(siyu.__file__).parent


def _emitted() -> dict[str, str]:
    """Each literal event name passed to ``emit(session, merchant_id, name, ...)``, with where."""
    found: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or len(node.args) < 3:
                continue
            func = node.func
            if (func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)) != "emit":
                continue
            name = node.args[2]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                found.setdefault(name.value, f"{path.relative_to(SRC)}:{node.lineno}")
    return found


def test_every_emitted_event_is_in_the_catalogue() -> None:
    emitted = _emitted()
    assert len(emitted) > 20  # the scan finds the emits (a broken scan would pass vacuously)
    missing = {name: where for name, where in emitted.items() if name not in EVENTS}
    assert not missing, f"add these to kit.events.EVENTS: {missing}"


def test_the_points_events_emitted_by_name_are_in_the_catalogue() -> None:
    """``loyalty.points`` emits through a variable (``points.earned`` / ``points.spent``)."""
    assert {"points.earned", "points.spent"} <= EVENTS.keys()
