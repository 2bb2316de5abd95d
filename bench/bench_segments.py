"""Segment preview on PostgreSQL at the generated scale: seconds per preview (count + 20-row sample).

    .venv/bin/python bench/gen_data.py --members 100000 --fresh siyu_bench      # once
    .venv/bin/python bench/bench_segments.py [--db siyu_bench] [--merchant bench] [--repeat 5] [--explain]

Runs ``audience.segments.preview`` (the same code as ``POST /api/admin/v1/segments/preview``)
for a few definitions against the merchant made by ``gen_data.py``, at the time the data was
generated (the newest event), so "last 30 days" means what it meant to the generator. The first
run of each is reported as cold, then the median of ``--repeat`` runs. ``--explain`` prints
``EXPLAIN (ANALYZE, BUFFERS)`` of the main definition's count query.
Target (issue 5): the main definition <= 2 s at 1M members.
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
    "repeat buyers, >= 3 orders and >= 1000 yuan in 365 days": {
        "type": "purchase", "within_days": 365, "min_orders": 3, "min_amount": 100000,
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
    print(f"machine: {machine()}")
    print(f"scale: {members:,} members, {orders:,} orders, {events:,} events (merchant {args.merchant}, as of {now:%Y-%m-%d %H:%M} UTC)")

    def run(definition: dict[str, Any]) -> tuple[float, float, int]:
        parsed = segments.parse_definition(definition)
        times = []
        count = 0
        for _ in range(args.repeat + 1):
            with factory() as s:
                t0 = time.perf_counter()
                count = segments.preview(s, mid, parsed, now=now).count
                times.append(time.perf_counter() - t0)
        return times[0], statistics.median(times[1:]), count

    cold, warm, count = run(MAIN)
    verdict = "within" if warm <= TARGET_S else "OVER"
    print("\nmain: silent members in 杭州市 who viewed a product >= 2 times in the last 30 days and did not order")
    print(f"  {count:,} members; cold {cold:.3f} s, warm median {warm:.3f} s "
          f"(target <= {TARGET_S:.0f} s at 1,000,000 members; {verdict} it at {members:,})")
    for label, definition in OTHERS.items():
        cold, warm, count = run(definition)
        print(f"{label}\n  {count:,} members; cold {cold:.3f} s, warm median {warm:.3f} s")

    if args.explain:
        with factory() as s:
            ids = Compiler(s, mid, now).members(segments.parse_definition(MAIN).root).subquery()
            stmt = select(func.count()).select_from(ids)
            sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
            print("\nEXPLAIN (ANALYZE, BUFFERS) of the main count:")
            for (line,) in s.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql)):
                print("  " + line)
    engine.dispose()


if __name__ == "__main__":
    main()
