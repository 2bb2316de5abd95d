"""Points ledger on PostgreSQL: award + spend throughput and the statement page latency.

    .venv/bin/python bench/bench_points.py [--clients 32] [--processes 1] [--seconds 15] [--members 2000]
                                           [--entries 10000] [--serial 2000] [--profile] [--sql] [--top 30]

Creates a fresh database (SIYU_BENCH_PG_URL server), a merchant and ``--members`` members.
Part 1: ``--clients`` threads, each with its own sessions (one transaction per operation),
alternate ``loyalty.points.award`` and ``spend`` on random members for ``--seconds`` and the
script prints operations/s (target >= 2,000) and the p50/p99 of one operation. Each award
opens a lot; each spend takes lots soonest-expiry first and records the lot uses, as in
production. ``--processes N`` spreads the clients over N processes (each with its own engine)
to show what one Python process's GIL costs. Part 2: one member gets ``--entries`` ledger entries (written through ``award``
in batches), then the script reads statement pages of 20 (first page and random deeper pages
by keyset) and prints p50/p99 (target <= 20 ms). The load generator shares the machine.

``--serial N`` (part 0, before part 1) runs N awards and N spends one after another on one
thread and prints, per operation kind, the Python CPU ms (``time.process_time``), the
PostgreSQL backend CPU ms (from /proc: the server is local), the Python function calls (a
separate cProfile pass of 200 operations), the statements sent and the round trips including
BEGIN and COMMIT: stable figures on a shared machine, where ops/s are not.

``--commit-delay US`` sets PostgreSQL's ``commit_delay`` (with ``commit_siblings`` 5) on the
bench's connections (a superuser setting: normally set in postgresql.conf): with many clients
committing at once, the backend that flushes the WAL waits that long so that more commits share
one fsync — the commit is most of the server's CPU per operation on a virtual disk. ``--profile`` adds a cProfile top list of that serial run (CPU
time; figures inflated by the profiler), ``--sql`` prints the statements of one award and one
spend. ``--seconds 0`` skips part 1, ``--entries 0`` part 2.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_pg_database, machine, percentile, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--entries", type=int, default=10000)
    parser.add_argument("--serial", type=int, default=2000, help="part 0: serial awards and spends each (0: skip)")
    parser.add_argument("--profile", action="store_true", help="cProfile top list of the serial run")
    parser.add_argument("--sql", action="store_true", help="print the statements of one award and one spend")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--commit-delay", type=int, default=0, help="PostgreSQL commit_delay in µs (0: server's)")
    args = parser.parse_args()

    from sqlalchemy import select, text

    from siyu.api.routes import import_all_models
    from siyu.db.base import Base
    from siyu.db.engine import make_engine
    from siyu.db.session import make_session_factory, unit_of_work
    from siyu.kit.events import subscribers
    from siyu.loyalty import points
    from siyu.members.models import Member
    from siyu.tenancy import service as tenancy

    url = fresh_pg_database("siyu_bench_points")
    import_all_models()
    engine = make_engine(url, pool_size=4, max_overflow=0)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    subscribers("points.earned")  # load every subscriber once, outside the timed part
    with unit_of_work(factory) as s:
        merchant_id = tenancy.create_merchant(s, code="bench", name="Bench store").id
        s.add_all(Member(merchant_id=merchant_id, openid=f"bench-{i}") for i in range(args.members + 1))
    with factory() as s:
        members = list(s.scalars(select(Member.id).where(Member.merchant_id == merchant_id).order_by(Member.id)))
    heavy, members = members[0], members[1:]
    with unit_of_work(factory) as s:  # everyone starts with some points
        for m in members:
            points.award(s, merchant_id, m, 1000, reason="seed", idempotency_key=f"seed:{m}")

    print(f"machine: {machine()}; load average {_load()}")
    if args.serial:
        _serial(engine, factory, merchant_id, members, args.serial, profile=args.profile, sql=args.sql, top=args.top)
    if args.seconds <= 0:
        engine.dispose()
        return
    print(f"part 1: award + spend, {args.clients} clients (threads, own sessions) in {args.processes} process(es), "
          f"{args.seconds:.0f} s, {len(members)} members"
          + (f", commit_delay {args.commit_delay} µs" if args.commit_delay else ""))
    if args.processes <= 1:
        counts, latencies, elapsed = _throughput(url, merchant_id, members, 0, args.clients, args.seconds,
                                                 args.commit_delay)
    else:
        import multiprocessing as mp

        per = [args.clients // args.processes + (1 if p < args.clients % args.processes else 0)
               for p in range(args.processes)]
        with mp.get_context("spawn").Pool(args.processes) as pool:
            parts = pool.starmap(_throughput, [(url, merchant_id, members, p, n, args.seconds, args.commit_delay)
                                               for p, n in enumerate(per)])
        counts = {k: sum(c[k] for c, _, _ in parts) for k in parts[0][0]}
        latencies = [x for _, lat, _ in parts for x in lat]
        elapsed = max(e for _, _, e in parts)
    ops = counts["award"] + counts["spend"] + counts["refused"]
    print(f"  {ops} operations in {elapsed:.1f} s = {ops / elapsed:,.0f} ops/s "
          f"(awards {counts['award']}, spends {counts['spend']}, refused {counts['refused']}); {summary(latencies)}")
    print(f"  per operation: Python CPU {counts['python_cpu_ms'] / max(ops, 1):.3f} ms (all bench processes), "
          f"PostgreSQL backend CPU {counts['pg_cpu_ms'] / max(ops, 1):.3f} ms, "
          f"{counts['executes'] / max(ops, 1):.2f} statements (+ BEGIN and COMMIT); load average {_load()}")
    with factory() as s:
        mismatched = s.execute(text(
            "SELECT count(*) FROM points_accounts a WHERE a.merchant_id = :m AND a.balance <> "
            "(SELECT coalesce(sum(delta), 0) FROM points_entries e WHERE e.merchant_id = a.merchant_id "
            "AND e.member_id = a.member_id)"), {"m": merchant_id}).scalar_one()
        lots_off = s.execute(text(
            "SELECT count(*) FROM points_accounts a WHERE a.merchant_id = :m AND a.balance <> "
            "(SELECT coalesce(sum(remaining), 0) FROM points_lots l WHERE l.merchant_id = a.merchant_id "
            "AND l.member_id = a.member_id AND l.expired_at IS NULL)"), {"m": merchant_id}).scalar_one()
    print(f"  accounts whose balance differs from the sum of their entries: {mismatched}; "
          f"from the points left in their lots: {lots_off}")

    if args.entries <= 0:
        engine.dispose()
        return
    print(f"part 2: statement page of 20 for a member with {args.entries} entries")
    batch = 1000
    for start in range(0, args.entries, batch):
        with unit_of_work(factory) as s:
            for k in range(start, min(args.entries, start + batch)):
                points.award(s, merchant_id, heavy, 1 + k % 7, reason="bench", idempotency_key=f"h:{k}")
    with factory() as s:
        s.execute(text("ANALYZE points_entries"))
        ids = list(s.scalars(text("SELECT id FROM points_entries WHERE merchant_id = :m AND member_id = :h"),
                             {"m": merchant_id, "h": heavy}))
    rng = random.Random(7)
    first: list[float] = []
    deep: list[float] = []
    with factory() as s:
        for i in range(400):
            before = None if i % 2 == 0 else rng.choice(ids)
            t0 = time.perf_counter()
            rows, _ = points.statement(s, merchant_id, heavy, before=before, limit=20)
            took = (time.perf_counter() - t0) * 1000
            assert len(rows) == 20 or before is not None
            (first if before is None else deep).append(took)
            s.rollback()
        plan = "\n    ".join(s.scalars(text(
            "EXPLAIN ANALYZE SELECT * FROM points_entries WHERE merchant_id = :m AND member_id = :h AND id < :b "
            "ORDER BY id DESC LIMIT 21"), {"m": merchant_id, "h": heavy, "b": ids[len(ids) // 2]}))
    print(f"  first page : {summary(first)}")
    print(f"  deeper page: {summary(deep)} (keyset ?before=<id>)")
    print(f"  p99 overall: {percentile(first + deep, 99):.2f} ms")
    print(f"  plan:\n    {plan}")
    engine.dispose()


def _serial(
    engine: Any, factory: Any, merchant_id: int, members: list[int], n: int, *, profile: bool, sql: bool, top: int
) -> None:
    """Part 0: ``n`` awards then ``n`` spends, one transaction each, on one thread: CPU and statements per op."""
    import cProfile
    import io
    import pstats

    from sqlalchemy import event

    from siyu.db.session import unit_of_work
    from siyu.loyalty import points

    sent: list[str] = []
    trips = {"begin": 0, "commit": 0}

    @event.listens_for(engine, "before_cursor_execute")
    def _count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    @event.listens_for(engine, "begin")
    def _begin(_c: Any) -> None:
        trips["begin"] += 1

    @event.listens_for(engine, "commit")
    def _commit(_c: Any) -> None:
        trips["commit"] += 1

    rng = random.Random(11)

    def one(kind: str, i: int) -> None:
        with unit_of_work(factory) as s:
            if kind == "award":
                points.award(s, merchant_id, rng.choice(members), rng.randint(1, 50), reason="bench",
                             idempotency_key=f"serial-a:{i}")
            else:
                points.spend(s, merchant_id, rng.choice(members), rng.randint(1, 25), reason="bench",
                             idempotency_key=f"serial-s:{i}")

    for kind in ("award", "spend"):
        for i in range(50):  # warm caches, pools and the statement cache
            one(kind, -1 - i)
    with engine.connect() as conn:  # the server processes of this database (the bench's pool only)
        backend = {int(pid) for pid in conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()").scalars()}
    print(f"part 0: {n} awards then {n} spends, one thread, one transaction each (stable figures)")
    profiler = cProfile.Profile(time.process_time) if profile else None
    for kind in ("award", "spend"):
        sent.clear()
        trips.update(begin=0, commit=0)
        cpu0, t0, pg0 = time.process_time(), time.perf_counter(), _backend_cpu(backend)
        if profiler:
            profiler.enable()
        for i in range(n):
            one(kind, i)
        if profiler:
            profiler.disable()
        cpu, wall, pg = time.process_time() - cpu0, time.perf_counter() - t0, _backend_cpu(backend) - pg0
        statements, begins, commits = len(sent), trips["begin"], trips["commit"]
        counted = cProfile.Profile()  # the call count only (its timings are the profiler's)
        counted.enable()
        for i in range(200):
            one(kind, n + 10 + i)
        counted.disable()
        calls = pstats.Stats(counted).total_calls / 200  # type: ignore[attr-defined]
        print(f"  {kind:5}: Python CPU {1000 * cpu / n:.3f} ms/op, PostgreSQL CPU {1000 * pg / n:.3f} ms/op, "
              f"{calls:.0f} Python calls/op, wall {1000 * wall / n:.3f} ms/op, "
              f"{statements / n:.2f} statements/op + {begins / n:.2f} BEGIN + {commits / n:.2f} COMMIT"
              + (" (under cProfile)" if profiler else ""))
        if sql:
            sent.clear()
            one(kind, n + 1000)
            for stmt in sent:
                print("    " + " ".join(stmt.split())[:300])
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
        print(out.getvalue())
    event.remove(engine, "before_cursor_execute", _count)
    event.remove(engine, "begin", _begin)
    event.remove(engine, "commit", _commit)


def _throughput(
    url: str, merchant_id: int, members: list[int], proc: int, clients: int, seconds: float, commit_delay: int = 0
) -> tuple[dict[str, int], list[float], float]:
    """``clients`` threads alternating award and spend on random members for ``seconds``;
    returns the counts, the latencies (ms) and the measured wall time."""
    from sqlalchemy import event

    from siyu.api.routes import import_all_models
    from siyu.db.engine import make_engine
    from siyu.db.session import make_session_factory, unit_of_work
    from siyu.kit.errors import DomainError
    from siyu.kit.events import subscribers
    from siyu.loyalty import points

    import_all_models()
    subscribers("points.earned")
    engine = make_engine(url, pool_size=clients + 1, max_overflow=0)
    if commit_delay:

        @event.listens_for(engine, "connect")
        def _delay(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET commit_delay = {int(commit_delay)}")
                cur.execute("SET commit_siblings = 5")
            dbapi_conn.commit()

    factory = make_session_factory(engine)
    latencies: list[float] = []
    counts = {"award": 0, "spend": 0, "refused": 0}
    lock = threading.Lock()
    executes = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_: object) -> None:
        executes[0] += 1  # statements sent through SQLAlchemy (BEGIN / COMMIT are not among them)

    # Open every pooled connection before the clock starts and note their server processes, so
    # the PostgreSQL CPU of exactly this run can be read from /proc (the server is local).
    backends: set[int] = set()
    gate = threading.Barrier(clients)

    def warm() -> None:
        with engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with lock:
                backends.add(int(pid))
            gate.wait()

    warmers = [threading.Thread(target=warm) for _ in range(clients)]
    for t in warmers:
        t.start()
    for t in warmers:
        t.join()
    executes[0] = 0
    pg_cpu0 = _backend_cpu(backends)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)

    stop = time.perf_counter() + seconds

    def client(n: int) -> None:
        rng = random.Random(proc * 1000 + n)
        mine: list[float] = []
        done = {"award": 0, "spend": 0, "refused": 0}
        i = 0
        while time.perf_counter() < stop:
            member = rng.choice(members)
            i += 1
            t0 = time.perf_counter()
            try:
                with unit_of_work(factory) as s:
                    if i % 2:
                        points.award(s, merchant_id, member, rng.randint(1, 50), reason="bench",
                                      idempotency_key=f"a:{proc}:{n}:{i}")
                        done["award"] += 1
                    else:
                        points.spend(s, merchant_id, member, rng.randint(1, 50), reason="bench",
                                      idempotency_key=f"s:{proc}:{n}:{i}")
                        done["spend"] += 1
            except DomainError:
                done["refused"] += 1
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            latencies.extend(mine)
            for k, v in done.items():
                counts[k] += v

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    pg_cpu = _backend_cpu(backends) - pg_cpu0
    engine.dispose()
    counts["python_cpu_ms"] = round(1000 * (usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime))
    counts["pg_cpu_ms"] = round(1000 * pg_cpu)
    counts["executes"] = executes[0]
    return counts, latencies, elapsed


def _backend_cpu(pids: set[int]) -> float:
    """CPU seconds (user + system) the given local server processes have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
