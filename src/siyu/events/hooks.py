"""What happens after events are stored: other modules register listeners here.

The audience module keeps per-member statistics (last visit, cart adds, favourites) from the
events; it registers with ``on_events`` so ingestion does not import it.

A listener gets the merchant and the events just stored (not the duplicates), each a dict with
``event_id``, ``name``, ``member_id`` (None when unknown), ``occurred_at`` (aware) and, when
sent, ``anonymous_id``, ``source`` and ``properties`` (the rows as ``repository.insert_events``
takes them: the merchant and the receipt time are not repeated per event).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

Listener = Callable[[Session, int, list[dict[str, Any]]], None]
_LISTENERS: list[Listener] = []


def on_events(fn: Listener) -> Listener:
    if fn not in _LISTENERS:
        _LISTENERS.append(fn)
    return fn


def after_insert(session: Session, merchant_id: int, rows: list[dict[str, Any]]) -> None:
    for fn in _LISTENERS:
        fn(session, merchant_id, rows)
