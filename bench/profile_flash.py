"""CPU cost of one flash-sale buy-now attempt, in process, on PostgreSQL + Redis: grant and refusal.

    .venv/bin/python bench/profile_flash.py [--grants 200] [--refusals 1000] [--profile] [--log]

Builds a fresh database (SIYU_BENCH_PG_URL server) with ``bench_flash_sale``'s data (a merchant,
one SKU in a running flash sale, limit 1, members with an address and a customer token) and
drives the real ASGI app (middleware, problem rendering, token check, validation, Lua gate,
order, serialisation) with a minimal hand-written ASGI client, one attempt after the other,
each with a new Idempotency-Key, in three phases:

* **grant**: a member who has not bought yet, stock left: ``201`` and an order;
* **limit**: a member who already bought tries again while a unit is left: ``409
  flash_sale_limit_reached`` (Redis says "limit", the database confirms with two reads);
* **sold out**: after the last unit, ``--crowd`` members who never bought try again and again
  (their tokens cached by a first attempt): ``409 flash_sale_sold_out``, the crowd's answer
  (memory and one Lua call, no database).

Per attempt of each phase it prints the CPU of this Python process (``time.process_time()``,
every thread), SQL statements, Redis round trips (commands sent, a pipeline counting once),
and with ``--profile`` the Python function calls (cProfile, deterministic: the load-insensitive
figure) plus a top list. Under ``--profile`` the CPU figures are inflated; run once without.

``--log`` attaches a handler (to /dev/null) to the ``siyu.request`` logger so that the request
log line is actually built and written, as in a deployment that configures logging. Redis:
SIYU_BENCH_REDIS_URL (default ``redis://127.0.0.1:6379/14``), keys under this script's prefix.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_flash_sale import _setup
from bench.common import fresh_pg_database, machine
from bench.profile_checkout import StatementCounter, _asgi_caller, _inline_threadpool

REDIS_URL = os.environ.get("SIYU_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PREFIX = "siyu-bench:profile-flash"


class RedisCounter:
    """Round trips to Redis: every packed command sent (a pipeline is one send)."""

    def __init__(self) -> None:
        import redis.connection

        self.count = 0
        original = redis.connection.AbstractConnection.send_packed_command
        counter = self

        def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            counter.count += 1
            original(conn, command, check_health)

        redis.connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grants", type=int, default=200)
    parser.add_argument("--limits", type=int, default=200)
    parser.add_argument("--refusals", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--crowd", type=int, default=100,
                        help="members of the sold-out crowd, each trying again and again (token cached)")
    parser.add_argument("--profile", action="store_true", help="count Python calls (cProfile) and print top lists")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--dump", help="with --profile: write each phase's raw cProfile stats to DUMP.<phase>")
    parser.add_argument("--log", action="store_true", help="write the request log lines (to /dev/null)")
    parser.add_argument("--phase", choices=("grant", "limit", "sold_out"), action="append",
                        help="print top lists only for these phases (default all)")
    parser.add_argument("--sql", action="store_true", help="list the statements of the first measured attempt of each phase")
    parser.add_argument("--db", default="siyu_profile_flash", help="name of the database (re)created")
    args = parser.parse_args()

    import redis

    units = args.warmup + args.grants + 1  # the last unit stays for the limit phase
    fresh = args.crowd  # members who never buy: the sold-out crowd
    url = fresh_pg_database(args.db)
    rclient = redis.Redis.from_url(REDIS_URL)
    for key in rclient.scan_iter(f"{PREFIX}:*"):
        rclient.delete(key)
    ids = _setup(url, units=units, members=units + fresh, limit=1, tokens=True)
    tokens: list[str] = ids["tokens"]
    os.environ.update({"SIYU_DATABASE_URL": url, "SIYU_ENV": "bench", "SIYU_REDIS_URL": REDIS_URL,
                       "SIYU_FLASH_SALE_REDIS_PREFIX": PREFIX})

    from sqlalchemy import event

    from siyu.app import create_app
    from siyu.config import Settings

    app = create_app(Settings())
    if args.log:
        handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
        logging.getLogger("siyu.request").addHandler(handler)
    sql = StatementCounter()
    event.listen(app.state.engine, "before_cursor_execute", sql)
    trips = RedisCounter()
    if args.profile:
        _inline_threadpool()  # cProfile sees one thread only: FastAPI's threadpool and the buy
        import anyio.to_thread  # endpoint's own thread hop run inline

        async def inline(func: Any, *a: Any, **_kw: Any) -> Any:
            return func(*a)

        anyio.to_thread.run_sync = inline  # type: ignore[assignment]
    post = _asgi_caller(app)
    path = f"/api/store/v1/flash-sales/{ids['item_id']}/buy"
    body = json.dumps({"quantity": 1}).encode()

    def attempt(token: str, expect: int, code: str | None = None) -> None:
        headers = [(b"authorization", f"Bearer {token}".encode()), (b"idempotency-key", uuid.uuid4().hex.encode()),
                   (b"accept-language", b"zh-CN,zh;q=0.9,en;q=0.8")]
        status, out = post(path, body, headers)
        if status != expect or (code is not None and json.loads(out).get("code") != code):
            raise SystemExit(f"expected {expect} {code or ''}, got {status} {out[:300]!r}")

    buyers = tokens[:units]
    crowd = tokens[units:]
    results: list[str] = []

    def measure(name: str, calls: list[tuple[str, int, str | None]]) -> None:
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        sql.count = trips.count = 0
        cpu0 = time.process_time()
        if profiler:
            profiler.enable()
        for i, (token, expect, code) in enumerate(calls):
            if args.sql and i == 0:
                sql.recording = []
            attempt(token, expect, code)
            if sql.recording is not None:
                print(f"-- {name}: statements of one attempt ({len(sql.recording)})")
                for stmt in sql.recording:
                    print(f"   {stmt}")
                sql.recording = None
        if profiler:
            profiler.disable()
        cpu = time.process_time() - cpu0
        n = len(calls)
        line = (f"{name:9s} {n:5d} attempts: CPU {cpu / n * 1e6:7.0f} µs/attempt, SQL {sql.count / n:5.2f}, "
                f"Redis round trips {trips.count / n:5.2f}")
        if profiler:
            stats = pstats.Stats(profiler)
            if args.dump:
                profiler.dump_stats(f"{args.dump}.{name}")
            line += f", Python calls {stats.total_calls / n:6.0f}/attempt"  # type: ignore[attr-defined]
            if args.phase is None or name in args.phase:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
                print(f"==== {name}: cumulative\n{out.getvalue()}")
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
                print(f"==== {name}: tottime\n{out.getvalue()}")
        results.append(line)

    for token in buyers[:args.warmup]:
        attempt(token, 201)
    measure("grant", [(t, 201, None) for t in buyers[args.warmup:args.warmup + args.grants]])
    repeaters = buyers[:args.warmup + args.grants]
    for i in range(args.warmup):
        attempt(repeaters[i % len(repeaters)], 409, "flash_sale_limit_reached")
    measure("limit", [(repeaters[i % len(repeaters)], 409, "flash_sale_limit_reached") for i in range(args.limits)])
    attempt(buyers[-1], 201)  # the last unit
    for token in crowd:  # each crowd member's first attempt reads its token from the database
        attempt(token, 409, "flash_sale_sold_out")
    measure("sold_out", [(crowd[i % len(crowd)], 409, "flash_sale_sold_out") for i in range(args.refusals)])

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"flash-sale buy-now in process (ASGI), PostgreSQL + Redis, request log {'written' if args.log else 'off'}"
          + (" (under cProfile: CPU figures inflated)" if args.profile else ""))
    for line in results:
        print(line)
    for key in rclient.scan_iter(f"{PREFIX}:*"):
        rclient.delete(key)
    rclient.close()
    app.state.engine.dispose()


if __name__ == "__main__":
    main()
