"""Checkout submit over HTTP on PostgreSQL: orders/s, p50/p99, RSS per API process.

    .venv/bin/python bench/bench_checkout.py [--clients 32] [--seconds 20] [--workers 2] [--load auto|wrk|httpx]

Creates a fresh database (SIYU_BENCH_PG_URL server), a merchant with 20 SKUs (``--skus``) of ample stock
and 400 customers with addresses and tokens, starts `uvicorn siyu.asgi:app --workers N`, then
runs N concurrent clients that each submit orders (unique Idempotency-Key, 1-3 lines) for the
duration. The load generator runs on the same machine and competes for its cores: with
``--load auto`` (default) it is ``wrk`` when installed (``apt-get install wrk``; a C event loop,
a small fraction of the CPU of the Python one) driven by a Lua script that sends a unique
Idempotency-Key per request, else Python httpx. The figures say which one ran.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, fresh_pg_database, machine, process_tree_rss_mb, start_server, summary


def prepare(url: str, customers: int, sku_count: int = 20) -> tuple[str, list[str], list[int]]:
    from siyu.api.routes import import_all_models
    from siyu.catalog.models import PRODUCT_ON_SALE, Product, Sku
    from siyu.db.base import Base
    from siyu.db.engine import make_engine
    from siyu.db.session import make_session_factory, unit_of_work
    from siyu.members.models import Member
    from siyu.orders.models import Address
    from siyu.tenancy import service as tenancy

    import_all_models()
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    tokens: list[str] = []
    with unit_of_work(factory) as s:
        merchant = tenancy.create_merchant(s, code="bench", name="Bench store")
        product = Product(merchant_id=merchant.id, title="Bench frame", status=PRODUCT_ON_SALE, free_shipping=True,
                          spec_names=["颜色"])
        s.add(product)
        s.flush()
        skus = []
        for i in range(sku_count):
            sku = Sku(merchant_id=merchant.id, product_id=product.id, sku_code=f"B{i}", specs={"颜色": str(i)},
                      list_price=39900, sale_price=29900 + i % 100 * 100, cost_price=10000, stock=10_000_000)
            s.add(sku)
            skus.append(sku)
        s.flush()
        for i in range(customers):
            m = Member(merchant_id=merchant.id, openid=f"bench-{i}")
            s.add(m)
            s.flush()
            s.add(Address(merchant_id=merchant.id, member_id=m.id, name="张三", phone="13800000000",
                          province="浙江省", city="杭州市", district="西湖区", detail="文三路 1 号", is_default=True))
            token, _ = tenancy.issue_customer_token(s, merchant.id, m.id, dt.timedelta(days=1))
            tokens.append(token)
        sku_ids = [sku.id for sku in skus]
    engine.dispose()
    return "bench", tokens, sku_ids


async def run_load(base: str, tokens: list[str], sku_ids: list[int], clients: int, seconds: float) -> tuple[int, int, list[float], float]:
    latencies: list[float] = []
    ok = 0
    failed = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(worker: int) -> None:
        nonlocal ok, failed
        rng = random.Random(worker)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
            while time.perf_counter() < stop_at:
                token = rng.choice(tokens)
                items = [{"sku_id": sid, "quantity": rng.randint(1, 2)} for sid in rng.sample(sku_ids, rng.randint(1, 3))]
                started = time.perf_counter()
                r = await http.post(
                    "/api/store/v1/checkout/submit",
                    json={"items": items},
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
                )
                latencies.append((time.perf_counter() - started) * 1000)
                if r.status_code == 201:
                    ok += 1
                else:
                    failed += 1
                    if failed <= 3:
                        print("failure:", r.status_code, r.text[:300])

    began = time.perf_counter()
    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    return ok, failed, latencies, time.perf_counter() - began


WRK_SCRIPT = r"""
local tokens, skus, threads = {}, {}, {}
counter, created, failed = 0, 0, 0  -- globals: done() reads them with thread:get()

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do table.insert(tokens, line) end
  for s in string.gmatch(args[2], "%d+") do table.insert(skus, tonumber(s)) end
  nonce = args[3]
  math.randomseed(os.time() + id * 7919)
end

function request()
  counter = counter + 1
  local n, picked, items = math.random(1, 3), {}, {}
  while #items < n do
    local sid = skus[math.random(#skus)]
    if not picked[sid] then
      picked[sid] = true
      table.insert(items, string.format('{"sku_id":%d,"quantity":%d}', sid, math.random(1, 2)))
    end
  end
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)],
    ["Idempotency-Key"] = string.format("wrk-%s-%d-%d", nonce, id, counter),
  }
  return wrk.format("POST", "/api/store/v1/checkout/submit", headers, '{"items":[' .. table.concat(items, ",") .. ']}')
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  else
    failed = failed + 1
    if failed <= 3 then io.stderr:write("failure: " .. status .. " " .. string.sub(body, 1, 300) .. "\n") end
  end
end

function done(summary, latency, requests)
  local c, f = 0, 0
  for _, t in ipairs(threads) do c = c + t:get("created"); f = f + t:get("failed") end
  local e = summary.errors
  io.write(string.format("WRK_RESULT %d %d %d %.3f %.3f %.3f %.3f\n", c, f, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.mean / 1000, summary.duration / 1e6))
end
"""


def run_wrk(base: str, tokens: list[str], sku_ids: list[int], clients: int, seconds: float, threads: int) -> tuple[int, int, str, float]:
    """Orders created, failures, the latency summary and the elapsed seconds, measured by wrk."""
    with tempfile.TemporaryDirectory() as tmp:
        script, token_file = Path(tmp, "submit.lua"), Path(tmp, "tokens.txt")
        script.write_text(WRK_SCRIPT)
        token_file.write_text("\n".join(tokens) + "\n")
        cmd = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
               "-s", str(script), base, "--", str(token_file), ",".join(map(str, sku_ids)), uuid.uuid4().hex[:12]]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    if out.stderr.strip():
        print(out.stderr.strip()[:1000])
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("WRK_RESULT"))
    created, failed, socket_errors, p50, p99, mean, elapsed = line.split()[1:]
    latency = f"p50 {float(p50):.1f} ms, p99 {float(p99):.1f} ms, mean {float(mean):.1f} ms"
    return int(created), int(failed) + int(socket_errors), latency, float(elapsed)


class WaitSampler:
    """What the bench database's backends are doing, sampled from ``pg_stat_activity`` every
    ``interval`` seconds during the run: tells lock waits from CPU queueing.

    Each sample puts every client backend of the database in one state:

    * ``lock: <event>``: waiting for a lock (``transactionid``/``tuple``: a row lock another
      transaction holds, e.g. a hot SKU's stock row);
    * ``running``: executing a statement, not waiting (on a CPU or runnable);
    * ``io/other: <type>:<event>``: waiting for anything else (WAL write, data file read, ...);
    * ``idle in transaction``: the server waits for the API process inside a transaction (the
      API's Python queued behind other requests on a busy CPU, or between statements);
    * ``idle``: a pooled connection nobody uses.

    The averages are "backends in that state at any moment"; their ratio is the answer.
    """

    QUERY = (
        "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )

    def __init__(self, url: str, interval: float = 0.02) -> None:
        self.url = url
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @staticmethod
    def classify(state: str | None, wait_type: str | None, wait_event: str | None) -> str:
        if state == "active":
            if wait_type == "Lock":
                return f"lock: {wait_event}"
            if wait_type in (None, "CPU"):
                return "running"
            return f"io/other: {wait_type}:{wait_event}"
        if state in ("idle in transaction", "idle in transaction (aborted)"):
            return "idle in transaction"
        return state or "unknown"

    def _run(self) -> None:
        import psycopg

        conninfo = self.url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            while not self._stop.is_set():
                rows = conn.execute(self.QUERY).fetchall()
                self.samples += 1
                for state, wait_type, wait_event in rows:
                    self.counts[self.classify(state, wait_type, wait_event)] += 1
                self._stop.wait(self.interval)

    def report(self) -> str:
        if not self.samples:
            return "backend states: no samples"
        busy = sum(v for k, v in self.counts.items() if k != "idle")
        parts = [f"{k} {v / self.samples:.1f}" for k, v in self.counts.most_common() if k != "idle"]
        locks = sum(v for k, v in self.counts.items() if k.startswith("lock:"))
        idle_tx = self.counts.get("idle in transaction", 0)
        return (
            f"backend states, mean backends per sample over {self.samples} samples of pg_stat_activity: "
            + ", ".join(parts) + f"; idle {self.counts.get('idle', 0) / self.samples:.1f}\n"
            f"of the non-idle backend time: waiting for a lock {locks / max(busy, 1):.0%}, "
            f"waiting for the API inside a transaction {idle_tx / max(busy, 1):.0%}, "
            f"running {self.counts.get('running', 0) / max(busy, 1):.0%}"
        )


def process_tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its children (uvicorn's master and workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--server", choices=("siyu", "uvicorn"), default="siyu",
                        help="siyu serve (one SO_REUSEPORT socket per process) or uvicorn --workers (one shared socket)")
    parser.add_argument("--skus", type=int, default=20,
                        help="SKUs the orders draw from (20: hot rows, lock waits; 1000: mostly CPU queueing)")
    parser.add_argument("--load", choices=("auto", "wrk", "httpx"), default="auto",
                        help="load generator: wrk when installed (auto), or Python httpx")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--start-timeout", type=float, default=300,
                        help="seconds the API processes get to answer /healthz (a loaded machine needs more)")
    parser.add_argument("--no-wait-sampling", action="store_true",
                        help="do not sample pg_stat_activity (lock waits vs. CPU queueing) during the run")
    args = parser.parse_args()
    use_wrk = args.load == "wrk" or (args.load == "auto" and shutil.which("wrk") is not None)
    if use_wrk and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk), use --load httpx")

    url = fresh_pg_database("siyu_bench_checkout")
    _code, tokens, sku_ids = prepare(url, args.customers, args.skus)
    port = free_port()
    server = start_server({"SIYU_DATABASE_URL": url, "SIYU_ENV": "bench", "SIYU_DB_POOL_SIZE": "20"},
                           workers=args.workers, port=port, wait_s=args.start_timeout, server=args.server)
    try:
        base = f"http://127.0.0.1:{port}"
        asyncio.run(run_load(base, tokens, sku_ids, 4, 2))  # warm-up
        load_before = os.getloadavg()[0]
        api_cpu_before = process_tree_cpu_seconds(server.pid)
        sampler = WaitSampler(url)
        with sampler if not args.no_wait_sampling else contextlib.nullcontext():
            if use_wrk:
                generator = f"wrk ({args.wrk_threads} threads, Lua script, unique Idempotency-Key per request)"
                ok, failed, latency, elapsed = run_wrk(base, tokens, sku_ids, args.clients, args.seconds,
                                                       args.wrk_threads)
            else:
                generator = "Python httpx (asyncio, one process)"
                ok, failed, latencies, elapsed = asyncio.run(run_load(base, tokens, sku_ids, args.clients, args.seconds))
                latency = summary(latencies)
        api_cpu = process_tree_cpu_seconds(server.pid) - api_cpu_before
        load_after = os.getloadavg()[0]
        rss = process_tree_rss_mb(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:  # a loaded machine: do not lose the figures for it
            server.kill()
            server.wait(timeout=20)
    print(f"machine: {machine()}")
    print(f"checkout submit over HTTP, PostgreSQL, {args.workers} API processes ({args.server}), {args.clients} concurrent clients, {len(sku_ids)} SKUs, {elapsed:.1f} s")
    print(f"load generator: {generator}")
    print(f"orders created: {ok} ({ok / elapsed:.0f} orders/s), failed: {failed}")
    print(f"latency: {latency}")
    if ok:
        print(f"API processes' CPU per order: {api_cpu / ok * 1000:.2f} ms (utime+stime of the uvicorn tree, /proc; "
              "load-insensitive, unlike orders/s)")
    print(f"load average (1 min) before / after the run: {load_before:.1f} / {load_after:.1f} (2 cores: above 2 the "
          "machine was shared, the throughput is not the code's)")
    if not args.no_wait_sampling:
        print(sampler.report())
    print("RSS per process (MB): " + ", ".join(f"{pid}: {mb:.0f}" for pid, mb in sorted(rss.items())))


if __name__ == "__main__":
    main()
