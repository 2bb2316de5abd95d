"""Flash-sale gate throughput: the Redis Lua gate alone, the database gate alone on PostgreSQL,
and buy-now end to end over HTTP on PostgreSQL + Redis. Prints each figure with its target.

    .venv/bin/python bench/bench_flash_sale.py [--gate-seconds 5] [--db-connections 32]
        [--http-clients 64] [--http-seconds 15] [--workers 2]

1. **Redis gate alone**: ``RedisGate.try_acquire_many`` (one pipelined round trip per batch of
   attempts, as an API fleet's many concurrent requests arrive at Redis) from several processes,
   each attempt by one of 100,000 members, limit 2, on an item with 20,000 units. Afterwards
   the Redis counters must show exactly the units granted, nobody past the limit.
2. **Database gate alone**: 32 threads, each with its own PostgreSQL connection, each attempt
   one transaction (``DatabaseGate.try_acquire`` + commit, or rollback when refused) on an
   item with 1,000 units (in 8 stock shards), 20,000 members, limit 1, 32,000 attempts. Afterwards ``sold``
   must equal the units granted and never exceed the stock. Once sold out, refusals come from the
   gate's per-process sold-out memo (no statement): the refusal figure shows it.
3. **End to end**: ``uvicorn siyu.asgi:app --workers N`` (default 2 processes with a 20-connection
   pool each: the PostgreSQL server here is shared, max_connections=100) with ``SIYU_REDIS_URL`` set
   (and ``SIYU_FLASH_SALE_REDIS_PREFIX`` to this benchmark's prefix), load from ``wrk`` when installed
   (else httpx; ``--loader``), 64 concurrent clients posting ``/api/store/v1/flash-sales/{item}/buy`` (each attempt a new
   Idempotency-Key, a random member of 2,000, limit 1) for an item with 200 units. Then the
   database must show exactly 200 units sold in 200 orders and Redis 0 remaining.

Databases: fresh ``siyu_bench_flash_*`` databases on the SIYU_BENCH_PG_URL server; Redis from
SIYU_BENCH_REDIS_URL (default ``redis://127.0.0.1:6379/14``); only this benchmark's keys are
touched. The load generator runs on the same machine and competes for its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, fresh_pg_database, machine, start_server, summary

REDIS_URL = os.environ.get("SIYU_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PREFIX = "siyu-bench:fs"


def _setup(url: str, *, units: int, members: int, limit: int, tokens: bool = False) -> dict[str, Any]:
    """A fresh schema with a merchant, one SKU in a running flash sale, and members (with
    addresses, and customer tokens if asked). Returns the ids."""
    from siyu.api.routes import import_all_models
    from siyu.catalog.models import PRODUCT_ON_SALE, Product, Sku
    from siyu.db.base import Base
    from siyu.db.engine import make_engine
    from siyu.db.session import make_session_factory, unit_of_work
    from siyu.flash_sales import repository as repo
    from siyu.flash_sales import service
    from siyu.flash_sales.schemas import FlashSaleIn
    from siyu.kit.timeutil import utcnow
    from siyu.members.models import Member
    from siyu.orders.models import Address
    from siyu.tenancy import service as tenancy

    import_all_models()
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    out: dict[str, Any] = {"tokens": []}
    with unit_of_work(factory) as s:
        merchant = tenancy.create_merchant(s, code="bench", name="Bench store")
        product = Product(merchant_id=merchant.id, title="Bench frame", status=PRODUCT_ON_SALE, free_shipping=True,
                          spec_names=["颜色"])
        s.add(product)
        s.flush()
        sku = Sku(merchant_id=merchant.id, product_id=product.id, sku_code="FS1", specs={"颜色": "黑"},
                  list_price=39900, sale_price=29900, cost_price=10000, stock=units + 1000)
        s.add(sku)
        s.flush()
        now = utcnow()
        sale = service.create_flash_sale(s, merchant.id, FlashSaleIn.model_validate({
            "name": "Bench 秒杀", "starts_at": (now - dt.timedelta(minutes=5)).isoformat(),
            "ends_at": (now + dt.timedelta(hours=2)).isoformat(), "per_member_limit": limit,
            "items": [{"sku_id": sku.id, "flash_price": 990, "activity_stock": units}],
        }), actor=("system", None))
        service.start(s, merchant.id, sale.id, actor=("system", None))
        (item,) = repo.items(s, merchant.id, [sale.id])
        out.update(merchant_id=merchant.id, sku_id=sku.id, item_id=item.id, sku_stock=sku.stock)
        batch = [Member(merchant_id=merchant.id, openid=f"bench-{i}") for i in range(members)]
        s.add_all(batch)
        s.flush()
        out["members"] = [m.id for m in batch]
        if tokens:
            s.add_all(Address(merchant_id=merchant.id, member_id=m.id, name="张三", phone="13800000000",
                              province="浙江省", city="杭州市", district="西湖区", detail="文三路 1 号", is_default=True)
                      for m in batch)
            for m in batch:
                token, _ = tenancy.issue_customer_token(s, merchant.id, m.id, dt.timedelta(days=1))
                out["tokens"].append(token)
    engine.dispose()
    return out


def _line(name: str, value: float, unit: str, target: float) -> str:
    mark = "meets" if value >= target else "BELOW"
    return f"{name}: {value:,.0f} {unit}  (target ≥ {target:,.0f} {unit}: {mark})"


# -- 1. Redis gate alone ------------------------------------------------------------------------------------


def _redis_worker(args: tuple[int, int, int, int, float, int, int]) -> tuple[int, int]:
    """One load process: pipelined attempts until ``stop_at`` (wall clock); returns (attempts, granted)."""
    from siyu.flash_sales.gate import Acquired, RedisGate

    seed, merchant_id, item_id, members, stop_at, limit, batch = args
    client = redis.Redis.from_url(REDIS_URL)
    gate = RedisGate(client, prefix=PREFIX)
    rng = random.Random(seed)
    attempts = granted = 0
    while time.time() < stop_at:
        results = gate.try_acquire_many([(merchant_id, item_id, rng.randrange(members), 1, limit) for _ in range(batch)])
        attempts += len(results)
        granted += sum(1 for r in results if isinstance(r, Acquired))
    client.close()
    return attempts, granted


def bench_redis_gate(seconds: float, processes: int, batch: int) -> list[str]:
    """Several load processes (an API fleet's replicas; one Python process cannot feed Redis
    alone), each sending pipelines of ``batch`` attempts."""
    from concurrent.futures import ProcessPoolExecutor

    from siyu.flash_sales.gate import RedisGate

    units, members, limit = 20_000, 100_000, 2
    merchant_id, item_id = 1, int(time.time())
    client = redis.Redis.from_url(REDIS_URL)
    gate = RedisGate(client, prefix=PREFIX)
    gate.clear(merchant_id, item_id)
    gate.load(merchant_id, item_id, units, {})
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_redis_worker, [(i, merchant_id, item_id, members, 0.0, limit, batch) for i in range(processes)]))
        began = time.time()
        stop_at = began + seconds
        results = list(pool.map(_redis_worker, [(i, merchant_id, item_id, members, stop_at, limit, batch)
                                                for i in range(processes)]))
        elapsed = time.time() - began
    snapshot = gate.snapshot(merchant_id, item_id)
    gate.clear(merchant_id, item_id)
    client.close()
    assert snapshot is not None
    remaining, held = snapshot
    total, won = sum(a for a, _ in results), sum(g for _, g in results)
    exact = remaining == units - won and sum(held.values()) == won and max(held.values(), default=0) <= limit
    return [
        f"Redis gate alone: {processes} load processes, pipelines of {batch}, {elapsed:.1f} s, {total:,} attempts, "
        f"{won:,} granted of {units:,} units, limit {limit}",
        _line("  Redis gate", total / elapsed, "attempts/s", 50_000),
        f"  check: remaining {remaining} = units - granted, counters sum {sum(held.values())}, "
        f"max per member {max(held.values(), default=0)}: {'exact' if exact else 'MISMATCH'}",
    ]


# -- 2. database gate alone ---------------------------------------------------------------------------------


def _pids_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of local processes (PostgreSQL backends), as far as readable."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue
    return total


def bench_db_gate(connections: int, attempts_total: int, units: int) -> list[str]:
    from sqlalchemy import text

    from siyu.db.engine import make_engine
    from siyu.db.session import make_session_factory
    from siyu.flash_sales.gate import Acquired, DatabaseGate
    from siyu.flash_sales.models import FlashSaleItem

    members, limit = 20_000, 1
    url = fresh_pg_database("siyu_bench_flash_gate")
    ids = _setup(url, units=units, members=members, limit=limit)
    engine = make_engine(url, pool_size=connections, max_overflow=0)
    factory = make_session_factory(engine)
    merchant_id, item_id, member_ids = ids["merchant_id"], ids["item_id"], ids["members"]
    per_thread = attempts_total // connections
    granted = [0] * connections
    last_grant = [0.0] * connections
    latencies: list[list[float]] = [[] for _ in range(connections)]
    start = threading.Barrier(connections)

    backends: list[int] = []
    statements = [0]

    def count(*_: Any) -> None:
        statements[0] += 1

    def worker(w: int) -> None:
        rng = random.Random(w)
        with factory() as s:
            backends.append(int(s.execute(text("SELECT pg_backend_pid()")).scalar_one()))  # connect before the clock
            s.rollback()
            start.wait()
            gate = DatabaseGate(s)
            for _ in range(per_thread):
                t0 = time.perf_counter()
                outcome = gate.try_acquire(merchant_id, item_id, rng.choice(member_ids), 1, limit)
                if isinstance(outcome, Acquired):
                    s.commit()
                    granted[w] += 1
                    last_grant[w] = time.perf_counter()
                else:
                    s.rollback()
                latencies[w].append((time.perf_counter() - t0) * 1000)

    from sqlalchemy import event

    event.listen(engine, "before_cursor_execute", count)
    event.listen(engine, "rollback", count)
    event.listen(engine, "commit", count)
    cpu0 = time.process_time()
    began = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(worker, range(connections)))
    elapsed = time.perf_counter() - began
    client_cpu = time.process_time() - cpu0
    pg_cpu = _pids_cpu(backends)
    load = os.getloadavg()
    with factory() as s:
        item = s.get(FlashSaleItem, item_id)
        assert item is not None
        sold, stock = item.sold, item.activity_stock
    engine.dispose()
    total, won = per_thread * connections, sum(granted)
    flat = [x for xs in latencies for x in xs]
    selling = max(last_grant) - began
    return [
        f"Database gate alone (PostgreSQL): {connections} connections, {elapsed:.1f} s, {total:,} attempts "
        f"(one transaction each), {won:,} granted of {units:,} units, limit {limit}",
        _line("  database gate", total / elapsed, "attempts/s", 3_000),
        f"  of which: {won:,} grants in the first {selling:.1f} s ({won / selling:,.0f} grants/s: every grant "
        f"commits while holding its stock shard), then {total - won:,} refusals in {elapsed - selling:.1f} s "
        f"({(total - won) / max(elapsed - selling, 1e-9):,.0f}/s)",
        f"  attempt latency: {summary(flat)}",
        f"  load-insensitive: {statements[0] / total:.2f} statements per attempt (commit/rollback counted), "
        f"client CPU {client_cpu / total * 1e6:,.0f} µs per attempt, PostgreSQL backends' CPU "
        f"{pg_cpu / total * 1e6:,.0f} µs per attempt (total since connect); load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"  check: sold {sold} = granted {won}, sold <= stock {stock}: {'exact' if sold == won <= stock else 'MISMATCH'}",
    ]


# -- 3. end to end over HTTP ----------------------------------------------------------------------------------


async def _http_load(base: str, tokens: list[str], item_id: int, clients: int, seconds: float) -> dict[str, Any]:
    codes: dict[str, int] = {}
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:

        async def client_loop(worker: int) -> None:
            rng = random.Random(worker)
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    r = await http.post(f"/api/store/v1/flash-sales/{item_id}/buy", json={"quantity": 1}, headers={
                        "Authorization": f"Bearer {rng.choice(tokens)}", "Idempotency-Key": uuid.uuid4().hex})
                    code = "order" if r.status_code == 201 else str(r.json().get("code", r.status_code))
                except httpx.HTTPError as exc:
                    code = f"client error {type(exc).__name__}"
                latencies.append((time.perf_counter() - t0) * 1000)
                codes[code] = codes.get(code, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(client_loop(i) for i in range(clients)))
    return {"codes": codes, "latencies": latencies, "elapsed": time.perf_counter() - began}


WRK_LUA = """
local tokens = {%s}
counter = 0
codes = {}  -- globals: done() reads each thread's with thread:get
threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  math.randomseed(os.time() * 100 + id)
  codes = {}
end

function request()
  counter = counter + 1
  local token = tokens[math.random(#tokens)]
  local key = string.format("%%08x%%08x%%d", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff), counter)
  return wrk.format("POST", wrk.path, {["Authorization"] = "Bearer " .. token, ["Idempotency-Key"] = key,
    ["Content-Type"] = "application/json"}, '{"quantity": 1}')
end

function response(status, headers, body)
  local code = tostring(status)
  if status == 409 then
    code = body:match('"code":"([%%w_]+)"') or code
  elseif status == 201 then
    code = "order"
  end
  codes[code] = (codes[code] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("CODE %%s %%d\\n", k, v)) end
  io.write(string.format("P50 %%f\\nP99 %%f\\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def _wrk_load(base: str, tokens: list[str], item_id: int, clients: int, seconds: float, threads: int) -> dict[str, Any]:
    """wrk (C, event loop) with a Lua script: each request a random token and a new Idempotency-Key."""
    import shutil
    import subprocess
    import tempfile

    wrk = shutil.which("wrk")
    assert wrk is not None
    script = WRK_LUA % ", ".join(f'"{t}"' for t in tokens)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    cmd = [wrk, "-t", str(threads), "-c", str(clients), "-d", f"{int(seconds)}s", "--timeout", "30s", "-s", f.name,
           f"{base}/api/store/v1/flash-sales/{item_id}/buy"]
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stderr or proc.stdout}")
    out = proc.stdout
    elapsed = time.perf_counter() - began
    codes: dict[str, int] = {}
    p50 = p99 = float("nan")
    for line in out.splitlines():
        parts = line.split()
        if parts[:1] == ["CODE"]:
            codes[parts[1]] = int(parts[2])
        elif parts[:1] == ["P50"]:
            p50 = float(parts[1])
        elif parts[:1] == ["P99"]:
            p99 = float(parts[1])
    req = next((ln for ln in out.splitlines() if "requests in" in ln), "")
    os.unlink(f.name)
    return {"codes": codes, "elapsed": min(elapsed, seconds + 0.5), "p50": p50, "p99": p99, "raw": req.strip()}


def _server_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children still alive (uvicorn and its workers)."""
    from pathlib import Path as P

    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in P(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        try:
            fields = P(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue
    return total


def bench_http(
    clients: int, seconds: float, workers: int, units: int, pool: int, loader: str, refusal_seconds: float,
    members: int = 2_000,
) -> list[str]:
    import shutil

    from sqlalchemy import create_engine, func, select

    from siyu.flash_sales.gate import RedisGate
    from siyu.flash_sales.models import FlashSaleItem
    from siyu.orders.models import Order

    limit = 1
    url = fresh_pg_database("siyu_bench_flash_http")
    rclient = redis.Redis.from_url(REDIS_URL)
    stale = RedisGate(rclient, prefix=PREFIX)
    for item_id in range(1, 4):  # a fresh database reuses ids: drop what an earlier run left
        stale.clear(1, item_id)
    ids = _setup(url, units=units, members=members, limit=limit, tokens=True)
    stale.clear(ids["merchant_id"], ids["item_id"])  # loaded lazily from the database by the first attempt
    port = free_port()
    server = start_server({"SIYU_DATABASE_URL": url, "SIYU_REDIS_URL": REDIS_URL, "SIYU_ENV": "bench",
                           "SIYU_FLASH_SALE_REDIS_PREFIX": PREFIX,
                           "SIYU_DB_POOL_SIZE": str(pool), "SIYU_DB_MAX_OVERFLOW": "0"}, workers=workers, port=port)
    use_wrk = loader == "wrk" or (loader == "auto" and shutil.which("wrk") is not None)
    try:
        cpu0 = _server_cpu(server.pid)
        if use_wrk:
            run = _wrk_load(f"http://127.0.0.1:{port}", ids["tokens"], ids["item_id"], clients, seconds,
                            threads=2)
        else:
            run = asyncio.run(_http_load(f"http://127.0.0.1:{port}", ids["tokens"], ids["item_id"], clients, seconds))
        cpu = _server_cpu(server.pid) - cpu0
        load = os.getloadavg()
        refusals = None
        if use_wrk and refusal_seconds > 0:  # the sold-out crowd alone, caches warm
            cpu1 = _server_cpu(server.pid)
            refusals = _wrk_load(f"http://127.0.0.1:{port}", ids["tokens"], ids["item_id"], clients,
                                 refusal_seconds, threads=2)
            refusals["cpu"] = _server_cpu(server.pid) - cpu1
            refusals["load"] = os.getloadavg()
    finally:
        server.terminate()
        server.wait(timeout=20)
    engine = create_engine(url)
    with engine.connect() as conn:
        sold = conn.execute(select(FlashSaleItem.sold).where(FlashSaleItem.id == ids["item_id"])).scalar_one()
        orders = conn.execute(select(func.count()).select_from(Order)).scalar_one()
    engine.dispose()
    snapshot = stale.snapshot(ids["merchant_id"], ids["item_id"])
    stale.clear(ids["merchant_id"], ids["item_id"])
    rclient.close()
    attempts = sum(run["codes"].values())
    exact = sold == units == orders == run["codes"].get("order", 0) and snapshot is not None and snapshot[0] == 0
    latency = (f"p50 {run['p50']:.1f} ms, p99 {run['p99']:.1f} ms" if use_wrk else summary(run["latencies"]))
    return [
        f"End to end over HTTP (PostgreSQL + Redis): {workers} uvicorn worker processes, {clients} concurrent "
        f"clients as {members:,} members, "
        f"load from {'wrk, 2 threads' if use_wrk else 'httpx asyncio, 1 process'}, {run['elapsed']:.1f} s, "
        f"{attempts:,} buy attempts; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        _line("  buy-now", attempts / run["elapsed"], "attempts/s", 1_500),
        f"  server CPU: {cpu:.1f} s for {attempts:,} attempts = {cpu / max(attempts, 1) * 1e6:,.0f} µs per attempt "
        f"(load-insensitive: {1 / max(cpu / max(attempts, 1), 1e-9):,.0f} attempts per CPU-second)",
        f"  latency: {latency}",
        f"  answers: {dict(sorted(run['codes'].items()))}",
        f"  check: {units} units, database sold {sold} in {orders} orders, Redis remaining "
        f"{snapshot[0] if snapshot else 'absent'}: {'exactly the stock sold' if exact else 'MISMATCH'}",
    ] + ([] if refusals is None else [
        f"  then sold out, {refusal_seconds:.0f} s more (every answer a refusal; load average "
        f"{refusals['load'][0]:.2f}): {sum(refusals['codes'].values()) / refusals['elapsed']:,.0f} attempts/s, "
        f"server CPU {refusals['cpu'] / max(sum(refusals['codes'].values()), 1) * 1e6:,.0f} µs per attempt, "
        f"p50 {refusals['p50']:.1f} ms, p99 {refusals['p99']:.1f} ms, answers {dict(sorted(refusals['codes'].items()))}",
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gate-seconds", type=float, default=5)
    parser.add_argument("--redis-processes", type=int, default=3)
    parser.add_argument("--redis-batch", type=int, default=256)
    parser.add_argument("--db-connections", type=int, default=32)
    parser.add_argument("--db-attempts", type=int, default=32_000)
    parser.add_argument("--db-units", type=int, default=1_000)
    parser.add_argument("--http-clients", type=int, default=64)
    parser.add_argument("--http-seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--refusal-seconds", type=float, default=10,
                        help="after the HTTP run, this long again on the sold-out item (wrk only)")
    parser.add_argument("--loader", choices=["auto", "wrk", "httpx"], default="auto",
                        help="HTTP load generator: wrk when installed (Debian package wrk), else httpx")
    parser.add_argument("--http-units", type=int, default=200)
    parser.add_argument("--http-members", type=int, default=2_000)
    parser.add_argument("--pool", type=int, default=20,
                        help="connections per API process; keep workers x pool under the server's max_connections")
    parser.add_argument("--only", choices=["redis", "db", "http"], default=None)
    args = parser.parse_args()

    parts: list[tuple[str, Callable[[], list[str]]]] = [
        ("redis", lambda: bench_redis_gate(args.gate_seconds, args.redis_processes, args.redis_batch)),
        ("db", lambda: bench_db_gate(args.db_connections, args.db_attempts, args.db_units)),
        ("http", lambda: bench_http(args.http_clients, args.http_seconds, args.workers, args.http_units, args.pool, args.loader,
                                     args.refusal_seconds, args.http_members)),
    ]
    print(f"machine: {machine()}")
    for name, fn in parts:
        if args.only in (None, name):
            for line in fn():
                print(line, flush=True)


if __name__ == "__main__":
    main()
