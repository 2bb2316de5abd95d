"""The pricing probes' combined columns are built once, also when request threads ask together.

A flash-sale bench on two API processes hit ``zip() argument 2 is longer than argument 1`` in
``answer_probes``: two threads both found the lazily built column list empty and both extended it.
"""

from __future__ import annotations

import sys

from siyu.orders import pricing
from tests.factories.concurrency import race


def test_probe_columns_built_once_under_concurrent_first_use() -> None:
    pricing.load_stage_modules()
    expected = len(pricing._PROBES)
    assert expected > 0
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to make the race likely
    try:
        for _ in range(20):
            pricing._PROBE_COLUMNS.clear()
            outcomes = race(16, lambda _i: str(len(pricing.probe_columns())))
            assert outcomes == [str(expected)] * 16
            assert len(pricing._PROBE_COLUMNS) == expected
    finally:
        sys.setswitchinterval(old)
