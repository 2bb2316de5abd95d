"""CPU cost of one checkout submit, in process, on PostgreSQL: what the wall clock cannot show on a busy machine.

    .venv/bin/python bench/profile_checkout.py [--orders 600] [--mode asgi|service] [--profile] [--sql]

Creates a fresh database (SIYU_BENCH_PG_URL server) with the data of ``bench_checkout.py`` (a
merchant, 20 SKUs, customers with a default address and a token), then runs ``--orders``
submits one after the other (1-3 lines each, a unique Idempotency-Key each) and prints per order:

* **CPU ms of this Python process** (``time.process_time()``, every thread: the API's share of
  a request, the part that the number of API processes has to cover on 2 cores);
* **SQL statements** sent (a SQLAlchemy ``before_cursor_execute`` counter; ``--sql`` lists them
  for one order);
* **PostgreSQL backend CPU** when ``pg_stat_statements`` is loaded (its ``total_exec_time`` delta
  over the run, which is execution time on the server, mostly CPU with the data cached); else
  a note that it was skipped.

``--mode asgi`` (default) drives the real ASGI app (middleware, dependencies, token check,
validation, serialisation, FastAPI's threadpool) with a minimal hand-written ASGI client, so
the client costs almost nothing; ``--mode service`` calls ``checkout.submit`` in a unit of work.
``--profile`` adds a cProfile top list (cumulative time) of the measured run.

Wall clock is printed too, but on a loaded machine only the CPU figures are comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import random
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_checkout import prepare
from bench.common import fresh_pg_database, machine


class StatementCounter:
    def __init__(self) -> None:
        self.count = 0
        self.recording: list[str] | None = None

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.count += 1
        if self.recording is not None:
            self.recording.append(" ".join(statement.split())[:160])


def _count_writes_sent_with_the_commit(counter: StatementCounter) -> None:
    """Statements that ``db.final_write`` sends in the COMMIT's round trip (the stock take on
    PostgreSQL) bypass SQLAlchemy's cursor events: count them too, marked, so the figure stays
    every statement the server runs (the COMMIT itself is not counted, as before)."""
    try:
        from siyu.db import final_write
    except ImportError:  # older code (a back-to-back run): nothing is sent with the commit
        return

    original = final_write.commit

    def commit(session: Any) -> None:
        for write in final_write.pending(session):
            counter(None, None, "[with the COMMIT] " + write.sql)
        original(session)

    final_write.commit = commit  # type: ignore[assignment]  # the request boundary and unit_of_work look it up per call


def _asgi_caller(app: Any) -> Callable[[str, bytes, list[tuple[bytes, bytes]]], tuple[int, bytes]]:
    """POST through the ASGI app without a network or an HTTP client library."""
    loop = asyncio.new_event_loop()

    async def call(path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()), *headers],
            "client": ("127.0.0.1", 1), "server": ("bench", 80), "state": {},
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(scope, receive, send)
        return status, b"".join(chunks)

    # The app's lifespan runs first, as under uvicorn: it finishes the routing set-up (endpoint
    # commits, the static route index) that a request would otherwise go without.
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())

    def run(path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
        return loop.run_until_complete(call(path, body, headers))

    return run


def _inline_threadpool() -> None:
    """Profile mode only: run what FastAPI sends to its threadpool in the calling thread."""
    import fastapi.concurrency
    import fastapi.dependencies.utils
    import fastapi.routing
    import starlette.concurrency

    async def inline(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    for module in (fastapi.concurrency, fastapi.dependencies.utils, fastapi.routing, starlette.concurrency):
        module.run_in_threadpool = inline  # type: ignore[attr-defined]


class BackendCpu:
    """CPU of this engine's PostgreSQL backend processes, from /proc (a server on this machine only)."""

    def __init__(self, engine: Any) -> None:
        self.pids: set[int] = set()
        self.tick = os.sysconf("SC_CLK_TCK")

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("SELECT pg_backend_pid()")
            self.pids.add(int(cur.fetchone()[0]))
            cur.close()

        from sqlalchemy import event

        event.listen(engine, "connect", on_connect)
        engine.dispose()  # connections made from now on report their backend

    def seconds(self) -> float | None:
        total = 0.0
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None  # not on this machine, or not readable
            total += (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime
        return total


def _pg_exec_ms(url: str) -> float | None:
    """Sum of ``total_exec_time`` over this database's statements, or None without pg_stat_statements."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            value = conn.execute(text(
                "SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements "
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )).scalar()
            return float(value or 0)
    except Exception:
        return None
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--mode", choices=("asgi", "service"), default="asgi")
    parser.add_argument("--profile", action="store_true", help="print a cProfile top list")
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--dump", help="with --profile: also write the raw cProfile stats to this file (pstats)")
    parser.add_argument("--sql", action="store_true", help="list the statements of one submit")
    parser.add_argument("--db", default="siyu_profile_checkout", help="name of the database (re)created")
    args = parser.parse_args()

    url = fresh_pg_database(args.db)
    _code, tokens, sku_ids = prepare(url, args.customers)
    os.environ.update({"SIYU_DATABASE_URL": url, "SIYU_ENV": "test"})  # env=test: no request log lines

    from sqlalchemy import event

    from siyu.app import create_app
    from siyu.config import Settings
    from siyu.db.session import unit_of_work
    from siyu.orders import checkout
    from siyu.orders.schemas import CheckoutIn
    from siyu.tenancy import service as tenancy

    app = create_app(Settings())
    counter = StatementCounter()
    event.listen(app.state.engine, "before_cursor_execute", counter)
    _count_writes_sent_with_the_commit(counter)
    backends = BackendCpu(app.state.engine)
    rng = random.Random(7)

    def payload() -> dict[str, Any]:
        return {"items": [{"sku_id": sid, "quantity": rng.randint(1, 2)} for sid in rng.sample(sku_ids, rng.randint(1, 3))]}

    if args.mode == "asgi":
        if args.profile:
            _inline_threadpool()  # cProfile sees one thread only: run sync endpoints/dependencies inline
        post = _asgi_caller(app)

        def one() -> None:
            body = json.dumps(payload()).encode()
            headers = [(b"authorization", f"Bearer {rng.choice(tokens)}".encode()),
                       (b"idempotency-key", uuid.uuid4().hex.encode())]
            status, out = post("/api/store/v1/checkout/submit", body, headers)
            if status != 201:
                raise SystemExit(f"submit failed: {status} {out[:300]!r}")
    else:
        factory = app.state.session_factory
        with unit_of_work(factory) as s:
            principals = [tenancy.authenticate(s, t, kinds=("customer",)) for t in tokens]
            members = [(p.merchant_id, p.subject_id) for p in principals]

        def one() -> None:
            merchant_id, member_id = rng.choice(members)
            assert member_id is not None
            body = CheckoutIn.model_validate(payload())
            with unit_of_work(factory) as s:
                checkout.submit(s, merchant_id, member_id, body, idempotency_key=uuid.uuid4().hex,
                                payment_timeout=dt.timedelta(minutes=30))

    for _ in range(args.warmup):
        one()
    if args.sql:
        counter.recording = []
        one()
        print(f"-- statements of one submit ({len(counter.recording)}):")
        for i, stmt in enumerate(counter.recording, 1):
            print(f"{i:3d}  {stmt}")
        counter.recording = None

    pg_before = _pg_exec_ms(url)
    backend_before = backends.seconds()
    profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU, not wall time
    counter.count = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    batch_cpu: list[float] = []  # CPU per order of each batch of 50: the least disturbed one is the floor
    for i in range(args.orders):
        if i % 50 == 0:
            batch_started = time.process_time()
        one()
        if i % 50 == 49:
            batch_cpu.append((time.process_time() - batch_started) / 50)
    if profiler:
        profiler.disable()
        if args.dump:
            profiler.dump_stats(args.dump)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    pg_after = _pg_exec_ms(url)
    backend_after = backends.seconds()

    n = args.orders
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"checkout submit in process ({args.mode}), PostgreSQL, {n} orders sequentially"
          + (" (under cProfile: CPU figures inflated)" if profiler else ""))
    print(f"python CPU per order: {cpu / n * 1000:.2f} ms  (=> {n / cpu:.0f} orders/s per fully busy core)")
    if batch_cpu:
        ordered = sorted(batch_cpu)
        print(f"python CPU per order, batches of 50: min {ordered[0] * 1000:.2f} ms, "
              f"median {ordered[len(ordered) // 2] * 1000:.2f} ms (the min is the least load-sensitive figure)")
    print(f"SQL statements per order: {counter.count / n:.1f}")
    if pg_before is None or pg_after is None:
        print("PostgreSQL exec time per order: skipped (pg_stat_statements not available)")
    else:
        print(f"PostgreSQL exec time per order: {(pg_after - pg_before) / n:.2f} ms (pg_stat_statements)")
    if backend_before is None or backend_after is None or not backends.pids:
        print("PostgreSQL backend CPU per order: skipped (server not on this machine or /proc not readable)")
    else:
        print(f"PostgreSQL backend CPU per order: {(backend_after - backend_before) / n * 1000:.2f} ms "
              f"({len(backends.pids)} backend processes, /proc; clock-tick resolution)")
    print(f"wall per order: {wall / n * 1000:.2f} ms (sensitive to machine load)")
    if profiler:
        calls = pstats.Stats(profiler).total_calls  # type: ignore[attr-defined]
        print(f"Python function calls per order: {calls / n:.0f} (deterministic, independent of load)")
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
        print(out.getvalue())
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
        print(out.getvalue())
    app.state.engine.dispose()


if __name__ == "__main__":
    main()
