"""Finding NUL characters (U+0000) in parsed JSON: PostgreSQL cannot store them in text or JSONB.

``ESCAPE`` is how a NUL appears in a JSON document (a raw NUL byte is not valid JSON), so a
body without it holds none and need not be walked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

ESCAPE = b"\\u0000"


def nul_paths(value: Any, prefix: str) -> Iterator[str]:
    """The paths of the strings (keys included) in a parsed JSON value that hold a NUL, dotted
    after ``prefix`` (none when it is empty)."""
    if isinstance(value, str):
        if "\x00" in value:
            yield prefix
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if "\x00" in key:
                yield path
            else:
                yield from nul_paths(item, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from nul_paths(item, f"{prefix}.{i}" if prefix else str(i))
