"""Segment preview on PostgreSQL at the generated scale: seconds per preview (count + 20-row sample).

    .venv/bin/python bench/gen_data.py --members 100000 --fresh siyu_bench      # once
    .venv/bin/python bench/bench_segments.py [--db siyu_bench] [--merchant bench] [--repeat 5] [--explain]

Runs ``audience.segments.preview`` (the same code as ``POST /api/admin/v1/segments/preview``)
for a few definitions against the merchant made by ``gen_data.py``, at the time the data was
generated (the newest event), so "last 30 days" means what it meant to the generator. The first
run of each is reported as cold, then the median of ``--repeat`` runs. ``--explain`` prints
``EXPLAIN (ANALYZE, BUFFERS)`` of the main definition's count query and of the purchase
definitions. Besides wall-clock seconds (noisy on a shared machine) it reports the PostgreSQL
backend's CPU milliseconds per preview (from /proc, so the server must run on this machine;
parallel workers' CPU is not in it unless ``--no-parallel``) and
the SQL statements per preview. ``--before`` first runs the purchase definitions with the paid
orders' covering index (``ix_orders_paid_member``) dropped inside a transaction that is rolled
back, i.e. as before it existed, for a ratio in one run (the order lines' covering index stays:
it replaced the plain order index).
Product / category conditions read only the order lines' ``ix_order_lines_bought`` (see
``siyu.audience.purchase_facts``; ``--before`` does not undo that). For a before/after of a code
change, run this script from a worktree of the old commit (``PYTHONPATH=<worktree>/src``) against
the same database, back to back, and compare the backend CPU and the EXPLAIN buffers.
Target (issue 5): the main definition <= 2 s at 1M members; purchase conditions about a second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine

TARGET_S = 2.0

MAIN = {
    "type": "and",
    "nodes": [
        {"type": "stage", "in": ["silent"]},
        {"type": "attribute", "field": "city", "op": "eq", "value": "杭州市"},
        {"type": "behavior", "event": "product_view", "op": "gte", "count": 2, "within_days": 30},
        {"type": "not", "node": {"type": "purchase", "within_days": 30}},
    ],
}
PURCHASES: dict[str, dict[str, Any]] = {
    "repeat buyers, >= 3 orders and >= 1000 yuan in 365 days": {
        "type": "purchase", "within_days": 365, "min_orders": 3, "min_amount": 100000,
    },
    "repeat buyers of all time, >= 3 orders and >= 1000 yuan": {"type": "purchase", "min_orders": 3, "min_amount": 100000},
    "bought in the last 30 days": {"type": "purchase", "within_days": 30},
    "did NOT buy in the last 90 days": {"type": "not", "node": {"type": "purchase", "within_days": 90}},
    "bought category 1 in the last 180 days": {"type": "purchase", "within_days": 180, "category_ids": [1]},
    ">= 200 yuan of category 1 in the last 90 days": {
        "type": "purchase", "within_days": 90, "category_ids": [1], "min_amount": 20000,
    },
    "bought product 1 (all time)": {"type": "purchase", "product_ids": [1]},
    ">= 2 orders of product 1 in the last 365 days": {"type": "purchase", "within_days": 365, "product_ids": [1], "min_orders": 2},
    "did NOT buy category 1 in the last 365 days": {"type": "not", "node": {"type": "purchase", "within_days": 365, "category_ids": [1]}},
}
# Dropped by --before. The lines' covering index (ix_order_lines_order_cover) stays: it replaced
# the plain (merchant_id, order_id) index, so without it the lines would have no order index at all.
COVERING_INDEXES = ("ix_orders_paid_member",)
OTHERS: dict[str, dict[str, Any]] = {
    "attributes only: female, in 上海市, registered via community group or staff QR": {
        "type": "and", "nodes": [
            {"type": "attribute", "field": "gender", "op": "eq", "value": "female"},
            {"type": "attribute", "field": "city", "op": "eq", "value": "上海市"},
            {"type": "attribute", "field": "registration_channel", "op": "in", "value": ["community_group", "staff_qr"]},
        ],
    },
    "added to cart in 7 days, no checkout (did NOT)": {
        "type": "and", "nodes": [
            {"type": "behavior", "event": "add_to_cart", "op": "gte", "count": 1, "within_days": 7},
            {"type": "behavior", "event": "checkout_start", "op": "eq", "count": 0, "within_days": 7},
        ],
    },
    "sleeping or pre-churn with RFM tier important_retain": {
        "type": "and", "nodes": [
            {"type": "stage", "in": ["sleeping", "pre_churn"]},
            {"type": "attribute", "field": "rfm_tier", "op": "eq", "value": "important_retain"},
        ],
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="siyu_bench", help="database on the SIYU_BENCH_PG_URL server")
    parser.add_argument("--url", help="full database URL (overrides --db)")
    parser.add_argument("--merchant", default="bench")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--before", action="store_true", help="also time the purchase definitions without the covering indexes")
    parser.add_argument("--no-parallel", action="store_true",
                        help="max_parallel_workers_per_gather = 0, so the backend CPU is all the CPU a preview used")
    parser.add_argument("--only-purchases", action="store_true", help="skip the main and the other definitions")
    args = parser.parse_args()

    import os

    from sqlalchemy import func, select, text
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.engine import make_url

    from siyu.api.routes import import_all_models
    from siyu.audience import segments
    from siyu.audience.compiler import Compiler
    from siyu.db.engine import make_engine
    from siyu.db.session import make_session_factory
    from siyu.events.models import Event
    from siyu.members.models import Member
    from siyu.orders.models import Order
    from siyu.tenancy import repository as tenancy_repo

    base = os.environ.get("SIYU_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    url = args.url or make_url(base).set(database=args.db).render_as_string(hide_password=False)
    import_all_models()
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory() as s:
        merchant = tenancy_repo.merchant_by_code(s, args.merchant)
        if merchant is None:
            raise SystemExit(f"no merchant {args.merchant!r} in {args.db}: run bench/gen_data.py first")
        mid = merchant.id
        members = s.scalar(select(func.count()).select_from(Member).where(Member.merchant_id == mid)) or 0
        orders = s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == mid)) or 0
        events = s.scalar(select(func.count()).select_from(Event).where(Event.merchant_id == mid)) or 0
        now = s.scalar(select(func.max(Event.occurred_at)).where(Event.merchant_id == mid))
    if now is None:
        raise SystemExit(f"merchant {args.merchant!r} has no events: run bench/gen_data.py first")
    from siyu.orders.models import PAID_STATUSES, OrderLine

    facts = getattr(OrderLine, "bought_at", None)  # absent when run with an older commit's code
    with factory() as s:  # product / category conditions read the lines' purchase facts
        bought = facts is None or s.scalar(select(func.count()).select_from(OrderLine).where(
            OrderLine.merchant_id == mid, facts.is_not(None)))
        paid = s.scalar(select(func.count()).select_from(Order).where(
            Order.merchant_id == mid, Order.status.in_(PAID_STATUSES)))
    if paid and not bought:
        raise SystemExit("the order lines carry no purchase facts (bought_at): generate the data with the current "
                         "bench/gen_data.py, or run siyu.audience.purchase_facts.backfill on it")
    print(f"machine: {machine()}")
    print(f"scale: {members:,} members, {orders:,} orders, {events:,} events (merchant {args.merchant}, as of {now:%Y-%m-%d %H:%M} UTC)")

    from sqlalchemy import event

    statements = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_: Any) -> None:
        statements[0] += 1

    def backend_cpu_ms(s: Any) -> float:
        pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")  # utime + stime

    def run(definition: dict[str, Any], *, drop: bool = False, repeat: int | None = None) -> tuple[float, float, float, int, int]:
        parsed = segments.parse_definition(definition)
        times, cpus = [], []
        count = per_preview = 0
        for _ in range((args.repeat if repeat is None else repeat) + 1):
            with factory() as s:
                if args.no_parallel:
                    s.execute(text("SET max_parallel_workers_per_gather = 0"))
                if drop:
                    for name in COVERING_INDEXES:
                        s.execute(text(f"DROP INDEX IF EXISTS {name}"))  # rolled back below
                cpu0 = backend_cpu_ms(s)
                n0 = statements[0]
                t0 = time.perf_counter()
                count = segments.preview(s, mid, parsed, now=now).count
                times.append(time.perf_counter() - t0)
                per_preview = statements[0] - n0
                cpus.append(backend_cpu_ms(s) - cpu0)
                s.rollback()
        return times[0], statistics.median(times[1:]), statistics.median(cpus[1:]), per_preview, count

    def show(label: str, result: tuple[float, float, float, int, int]) -> None:
        cold, warm, cpu, n, count = result
        print(f"{label}\n  {count:,} members; cold {cold:.3f} s, warm median {warm:.3f} s, "
              f"PostgreSQL backend CPU {cpu:,.0f} ms, {n} SQL statements per preview")

    if not args.only_purchases:
        cold, warm, cpu, n, count = run(MAIN)
        verdict = "within" if warm <= TARGET_S else "OVER"
        print("\nmain: silent members in 杭州市 who viewed a product >= 2 times in the last 30 days and did not order")
        print(f"  {count:,} members; cold {cold:.3f} s, warm median {warm:.3f} s, backend CPU {cpu:,.0f} ms, {n} statements "
              f"(target <= {TARGET_S:.0f} s at 1,000,000 members; {verdict} it at {members:,})")
        for label, definition in OTHERS.items():
            show(label, run(definition))
    print("\npurchase conditions" + (" (each first without the covering indexes: 2 runs, then with them)" if args.before else ""))
    for label, definition in PURCHASES.items():
        if args.before:
            before = run(definition, drop=True, repeat=1)
            show(f"{label} [without covering indexes]", before)
        after = run(definition)
        show(label, after)
        if args.before:
            print(f"  ratio without/with: wall {before[1] / max(after[1], 1e-9):.1f}x, backend CPU {before[2] / max(after[2], 1e-9):.1f}x")

    if args.explain:
        explained = {"main": MAIN} if args.only_purchases is False else {}
        explained.update(PURCHASES)
        for label, definition in explained.items():
            with factory() as s:
                ids = Compiler(s, mid, now).members(segments.parse_definition(definition).root).subquery()
                stmt = select(func.count()).select_from(ids)
                sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
                print(f"\nEXPLAIN (ANALYZE, BUFFERS) of the count of {label}:")
                for (line,) in s.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql)):
                    print("  " + line)
    engine.dispose()


if __name__ == "__main__":
    main()
