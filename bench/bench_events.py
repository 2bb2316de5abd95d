"""Event ingestion over HTTP on PostgreSQL: sustained events/s with batches of 500.

    .venv/bin/python bench/bench_events.py [--clients 8] [--seconds 20] [--workers 2] [--job-workers 1] [--members 20000]

Creates a fresh database (SIYU_BENCH_PG_URL server), a merchant with ``--members`` members and
an API key, starts ``uvicorn siyu.asgi:app --workers N`` on 127.0.0.1, then runs ``--clients``
concurrent clients that each post batches of ``--batch`` (500) events to
``POST /api/events/v1/batch`` for the duration: a server-to-server feed naming members
(API key), a mix of page_view / product_view / add_to_cart / search / favorite with a unique
``event_id`` each, timestamps in the last hour. Afterwards it checks that the database holds
exactly the events the server accepted, and that a replayed batch is all duplicates. Members
start with their statistics rows (steady state); ``--new-members`` starts without them, so the
first events of each member also create its row.

Member counters (last visit, views, cart adds, favourites) are added by one worker job per
batch: ``--job-workers`` ``siyu worker`` processes run beside the API, their CPU counts in the
total, the run waits for the backlog to drain afterwards (reported), and the counters are then
checked against the stored events (every member's sums equal).

The load generator runs on the same machine and competes for its cores (bodies are
pre-serialised before the clock starts so it costs as little as possible).

``--service-only N`` skips HTTP and the worker: N batches go straight through
``events.service.ingest`` in this process (parse, validate, insert, enqueue, commit, response
JSON), one after another, and it prints this process's CPU and the PostgreSQL backend's CPU
per event and the SQL statements per batch: steadier figures than the HTTP run when other
work shares the machine.
On a shared machine CPU per event moves with the load; compare two trees by running them AT THE
SAME TIME, each in its own database, e.g. (a worktree of the old commit in /tmp/base):

    (cd /tmp/base && PYTHONPATH=/tmp/base/src python bench/bench_events.py --service-only 120 --profile \
        --database siyu_bench_events_base) & python bench/bench_events.py --service-only 120 --profile; wait

``--profile`` adds the Python function calls per batch (load-insensitive).
Target (issue 5): >= 20,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, fresh_pg_database, machine, process_tree_rss_mb, start_server, summary

TARGET_EVENTS_PER_S = 20_000
MARK = "@@@@@@@@@@"  # replaced by the batch number, so a few templates give any number of unique batches


def prepare(url: str, members: int, with_stats: bool) -> tuple[str, list[int], list[tuple[int, int]]]:
    from siyu.api.routes import import_all_models
    from siyu.db.base import Base
    from siyu.db.engine import make_engine
    from siyu.db.session import make_session_factory, unit_of_work
    from siyu.members.models import Member
    from siyu.tenancy import service as tenancy
    from siyu.tenancy.permissions import Role

    import_all_models()
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    with unit_of_work(factory) as s:
        merchant = tenancy.create_merchant(s, code="bench-events", name="Bench events")
        key, _ = tenancy.create_api_key(s, merchant.id, name="bench feed", role=Role.OPERATOR, created_by=None)
        s.add_all([Member(merchant_id=merchant.id, openid=f"ev-{i}") for i in range(members)])
        s.flush()
        from sqlalchemy import select

        member_ids = list(s.scalars(select(Member.id).where(Member.merchant_id == merchant.id)))
        if with_stats:  # steady state: every member already has a statistics row
            from siyu.audience.repository import backfill_rows

            backfill_rows(s, merchant.id)
    engine.dispose()
    products = [(1000 + p, 5000 + p * 3) for p in range(60)]
    return key, member_ids, products


def make_batches(count: int, size: int, member_ids: list[int], products: list[tuple[int, int]], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    names = ["page_view"] * 5 + ["product_view"] * 3 + ["add_to_cart", "search", "favorite"]
    out = []
    for _ in range(count):
        events = []
        for _ in range(size):
            name = rng.choice(names)
            product, sku = rng.choice(products)
            props: dict[str, object]
            if name == "page_view":
                props = {"page": rng.choice(["pages/index/index", "pages/category/index", "pages/goods/detail"])}
            elif name == "product_view":
                props = {"product_id": product, "sku_id": sku, "price": rng.choice([29900, 49900, 9900])}
            elif name == "add_to_cart":
                props = {"product_id": product, "sku_id": sku, "quantity": 1, "price": 29900}
            elif name == "search":
                props = {"keyword": rng.choice(["防蓝光", "太阳镜", "儿童"])}
            else:
                props = {"product_id": product}
            ts = now - dt.timedelta(seconds=rng.randint(0, 3600))
            events.append({"event_id": MARK + uuid.uuid4().hex[:20], "name": name, "timestamp": ts.isoformat(),
                           "member_id": rng.choice(member_ids), "properties": props})
        out.append(json.dumps({"events": events}, ensure_ascii=False).encode())
    return out


class Batches:
    """Unique batches from a few pre-serialised templates (the event ids get the batch number)."""

    def __init__(self, templates: list[bytes], limit: int, first: int = 0) -> None:
        self.templates, self.limit, self.next = templates, limit, first

    def __len__(self) -> int:
        return self.limit

    def __getitem__(self, n: int) -> bytes:
        return self.templates[n % len(self.templates)].replace(MARK.encode(), f"{n:010d}".encode())


async def run_load(base: str, key: str, batches: Batches, clients: int, seconds: float) -> tuple[int, int, int, list[float], float]:
    latencies: list[float] = []
    accepted = duplicates = failed = 0
    next_batch = 0
    stop_at = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def client_loop() -> None:
        nonlocal accepted, duplicates, failed, next_batch
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            while time.perf_counter() < stop_at and next_batch < len(batches):
                body = batches[batches.next + next_batch]
                next_batch += 1
                started = time.perf_counter()
                try:
                    r = await http.post("/api/events/v1/batch", content=body, headers=headers)
                except httpx.HTTPError as exc:
                    failed += 1
                    print("failure:", type(exc).__name__, exc)
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                if r.status_code == 200:
                    data = r.json()
                    accepted += data["accepted"]
                    duplicates += data["duplicates"]
                    if data["rejected"] and failed < 3:
                        print("rejected:", data["rejected"][:2])
                    failed += len(data["rejected"])
                else:
                    failed += 1
                    if failed <= 3:
                        print("failure:", r.status_code, r.text[:300])

    began = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    return accepted, duplicates, failed, latencies, time.perf_counter() - began


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU seconds of these processes so far (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def pg_backends(url: str) -> list[int]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    engine = create_engine(parsed.set(drivername="postgresql+psycopg"))
    with engine.connect() as conn:
        pids = [int(p) for p in conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :d AND backend_type = 'client backend' "
                 "AND pid <> pg_backend_pid()"), {"d": parsed.database}
        ).scalars()]
    engine.dispose()
    return pids


def analyze(url: str) -> None:
    """Planner statistics, as a live database has them (autovacuum's first ANALYZE of a table that
    grew from empty would only come after the run; without it PostgreSQL plans for an empty
    events table and scans the merchant's events on every batch)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for table in ("events", "member_stats", "members", "auth_tokens"):
            conn.exec_driver_sql(f"VACUUM (ANALYZE) {table}")
    engine.dispose()


def start_job_workers(url: str, n: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "SIYU_DATABASE_URL": url, "SIYU_ENV": "bench", "SIYU_WORKER_POLL_SECONDS": "0.05"}
    return [subprocess.Popen([sys.executable, "-m", "siyu.cli", "worker"], env=env, stdout=subprocess.DEVNULL)
            for _ in range(n)]


def pending_jobs(url: str) -> int:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    with engine.connect() as conn:
        n = int(conn.execute(text("SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')")).scalar_one())
    engine.dispose()
    return n


def counters_match_events(url: str) -> str:
    """Each member's counters against its stored events (the statistics must be exact)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    with engine.connect() as conn:
        bad = conn.execute(text("""
            SELECT count(*) FROM member_stats s FULL JOIN (
                SELECT member_id, count(*) FILTER (WHERE name = 'product_view') AS v,
                       count(*) FILTER (WHERE name = 'add_to_cart') AS c,
                       count(*) FILTER (WHERE name = 'favorite') AS f, max(occurred_at) AS last
                FROM events GROUP BY member_id) e ON e.member_id = s.member_id
            WHERE s.product_views IS DISTINCT FROM coalesce(e.v, 0) OR s.cart_adds IS DISTINCT FROM coalesce(e.c, 0)
               OR s.favorites IS DISTINCT FROM coalesce(e.f, 0) OR s.last_visit_at IS DISTINCT FROM e.last""")).scalar_one()
        members = conn.execute(text("SELECT count(*) FROM member_stats")).scalar_one()
    engine.dispose()
    return f"{members - bad:,} of {members:,} members exact" + ("" if bad == 0 else f": {bad} MISMATCH")


def stored_events(url: str) -> int:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    with engine.connect() as conn:
        n = int(conn.execute(text("SELECT count(*) FROM events")).scalar_one())
    engine.dispose()
    return n


def service_only(
    batches_n: int, members: int, size: int, with_stats: bool, profile: bool = False,
    database: str = "siyu_bench_events_service",
) -> None:
    import cProfile
    import pstats

    import pydantic_core
    from sqlalchemy import event, select
    from sqlalchemy.engine import Engine

    url = fresh_pg_database(database)
    _key, member_ids, products = prepare(url, members, with_stats)
    import siyu.audience.service  # noqa: F401 - registers the member-counter hook, as the app does
    from siyu.db.engine import make_engine
    from siyu.db.session import make_session_factory, unit_of_work
    from siyu.events import service
    from siyu.members.models import Member

    engine = make_engine(url, pool_size=1, max_overflow=0)
    factory = make_session_factory(engine)
    with factory() as s:
        merchant_id = int(s.scalar(select(Member.merchant_id).limit(1)) or 0)
    caller = service.Caller(merchant_id=merchant_id, member_id=None, trusted=True)
    batches = Batches(make_batches(32, size, member_ids, products, seed=1), 10**9)
    statements = 0

    @event.listens_for(Engine, "before_cursor_execute")
    def _count(*_: object) -> None:
        nonlocal statements
        statements += 1

    def one(n: int) -> None:
        events = pydantic_core.from_json(batches[n])["events"]
        with unit_of_work(factory) as s:
            out = service.ingest(s, caller, events, now=dt.datetime.now(dt.UTC))
            out.__pydantic_serializer__.to_json(out)
        assert out.accepted == size, out.rejected[:2]

    for n in range(40):
        one(n)
    analyze(url)
    backends = pg_backends(url)
    db_before, statements = cpu_seconds(backends), 0
    began = time.process_time()
    per_batch_cpu = []
    for n in range(40, 40 + batches_n):
        t0 = time.process_time()
        one(n)
        per_batch_cpu.append(time.process_time() - t0)
    cpu_py = time.process_time() - began
    per_batch_cpu.sort()
    # the lower quartile and median per batch move less with the machine's load than the total
    quartile, median = per_batch_cpu[len(per_batch_cpu) // 4], per_batch_cpu[len(per_batch_cpu) // 2]
    cpu_db = cpu_seconds(backends) - db_before
    per_batch = statements / batches_n
    calls = ""
    if profile:  # the same number of batches again under cProfile: Python function calls per batch
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for n in range(40 + batches_n, 40 + 2 * batches_n):
            one(n)
        profiler.disable()
        stats = pstats.Stats(profiler)
        calls = f", {stats.total_calls / batches_n:,.0f} Python function calls per batch"  # type: ignore[attr-defined]
        stats.sort_stats("tottime").print_stats(20)
    engine.dispose()
    events_n = batches_n * size
    print(f"machine: {machine()}")
    print(f"service only (no HTTP, no job worker), PostgreSQL, {batches_n} batches of {size} one after another, "
          f"{members:,} members: this process {cpu_py / events_n * 1e6:.1f} µs CPU per event (per batch: lower quartile "
          f"{quartile / size * 1e6:.1f}, median {median / size * 1e6:.1f}), PostgreSQL backend "
          f"{cpu_db / events_n * 1e6:.1f} µs per event, {per_batch:.1f} SQL statements per batch{calls}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2, help="API processes")
    parser.add_argument("--job-workers", type=int, default=1, help="siyu worker processes (member counters)")
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--new-members", action="store_true",
                        help="members start without statistics rows (each first event creates one)")
    parser.add_argument("--service-only", type=int, default=0, metavar="N",
                        help="N batches straight through events.service in this process (no HTTP, no worker)")
    parser.add_argument("--database", default="siyu_bench_events_service",
                        help="with --service-only: the database to (re)create, so that two trees can run side by side")
    parser.add_argument("--profile", action="store_true",
                        help="with --service-only: N more batches under cProfile (function calls per batch, top 20)")
    args = parser.parse_args()
    if args.service_only:
        service_only(args.service_only, args.members, args.batch, not args.new_members, args.profile, args.database)
        return

    url = fresh_pg_database("siyu_bench_events")
    key, member_ids, products = prepare(url, args.members, not args.new_members)
    templates = make_batches(32, args.batch, member_ids, products, seed=1)
    warm = Batches(templates, 40)  # 20,000 events before the clock starts, then ANALYZE
    batches = Batches(templates, 10**9, first=10**6)
    port = free_port()
    server = start_server({"SIYU_DATABASE_URL": url, "SIYU_ENV": "bench", "SIYU_DB_POOL_SIZE": "20"},
                          workers=args.workers, port=port)
    job_workers = start_job_workers(url, args.job_workers)
    worker_pids = [w.pid for w in job_workers]
    try:
        base = f"http://127.0.0.1:{port}"
        w_acc, _, _, _, _ = asyncio.run(run_load(base, key, warm, args.clients, 120))
        while pending_jobs(url):  # the warm-up's counters first
            time.sleep(0.2)
        analyze(url)
        api_pids = list(process_tree_rss_mb(server.pid))
        db_before = {pid: cpu_seconds([pid]) for pid in pg_backends(url)}
        api_before, jobs_before = cpu_seconds(api_pids), cpu_seconds(worker_pids)
        accepted, dups, failed, latencies, elapsed = asyncio.run(run_load(base, key, batches, args.clients, args.seconds))
        backlog = pending_jobs(url)
        cpu_api = cpu_seconds(api_pids) - api_before
        cpu_jobs_during = cpu_seconds(worker_pids) - jobs_before
        drain_began = time.perf_counter()
        while pending_jobs(url):
            time.sleep(0.1)
        drain = time.perf_counter() - drain_began
        cpu_jobs = cpu_seconds(worker_pids) - jobs_before
        # backends that connected during the run count from zero (API and job workers' both)
        cpu_db = sum(cpu_seconds([pid]) - db_before.get(pid, 0.0) for pid in set(pg_backends(url)) | set(db_before))
        # a replayed batch is harmless: every event comes back as a duplicate
        replay_acc, replay_dups, _, _, _ = asyncio.run(run_load(base, key, Batches(templates, 1, first=10**6), 1, 60))
        rss = process_tree_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=20)
        for w in job_workers:
            w.terminate()
            w.wait(timeout=20)
    stored = stored_events(url)
    exact = counters_match_events(url)
    rate = accepted / elapsed
    print(f"machine: {machine()}")
    print(f"event ingestion over HTTP, PostgreSQL, {args.workers} API processes + {args.job_workers} job worker(s), "
          f"{args.clients} concurrent clients, "
          f"batches of {args.batch}, {elapsed:.1f} s, {args.members:,} members "
          f"({'without' if args.new_members else 'with'} statistics rows at the start)")
    print(f"events accepted: {accepted:,} ({rate:,.0f} events/s, target >= {TARGET_EVENTS_PER_S:,}: "
          f"{'met' if rate >= TARGET_EVENTS_PER_S else 'NOT met'}), duplicates {dups}, rejected/failed {failed}")
    print(f"batch latency: {summary(latencies)} ({len(latencies)} batches)")
    print(f"stored events: {stored:,} (expected {w_acc + accepted:,}: {'ok' if stored == w_acc + accepted else 'MISMATCH'}); "
          f"replayed batch: {replay_acc} accepted, {replay_dups} duplicates")
    print(f"member counters: {backlog} batch jobs pending when the load stopped, drained {drain:.1f} s later "
          f"(job workers' CPU {cpu_jobs_during:.1f} s during the load); {exact}")
    if accepted:
        total = cpu_api + cpu_jobs + cpu_db
        per_cpu = accepted / max(total, 1e-9)
        print(f"CPU used: API processes {cpu_api:.1f} s, job workers {cpu_jobs:.1f} s, PostgreSQL backends {cpu_db:.1f} s "
              f"(load + drain) = {cpu_api / accepted * 1e6:.0f} + {cpu_jobs / accepted * 1e6:.0f} + "
              f"{cpu_db / accepted * 1e6:.0f} = {total / accepted * 1e6:.0f} µs per event: {per_cpu:,.0f} events per "
              f"CPU-second, so about {per_cpu * (os.cpu_count() or 1):,.0f} events/s if these {os.cpu_count()} cores "
              "served only this (load generator excluded)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("RSS per process (MB): " + ", ".join(f"{pid}: {mb:.0f}" for pid, mb in sorted(rss.items())))


if __name__ == "__main__":
    main()
