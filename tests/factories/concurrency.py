"""Race helper for concurrency tests: run callables in real threads released together.

Each callable opens its own session (its own database connection), so on PostgreSQL the
attempts really run in parallel; the test then asserts exact counts over the outcomes."""

from __future__ import annotations

import threading
from collections.abc import Callable

from siyu.kit.errors import DomainError


def race(n: int, fn: Callable[[int], str]) -> list[str]:
    """Run ``fn(i)`` for ``i`` in ``range(n)`` in ``n`` threads released together by a barrier.

    Returns each outcome in ``i`` order: what ``fn`` returned, the code of a ``DomainError`` it
    raised, or ``"crash: <type>: <message>"`` for any other exception (so it shows in the
    assertion message instead of being lost in a thread)."""
    barrier = threading.Barrier(n)
    results: list[str] = [""] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except DomainError as exc:
            results[i] = exc.code
        except Exception as exc:  # surfaced in the assertion message
            results[i] = f"crash: {type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
