"""Generate customer data at a chosen scale for one merchant (benchmarks, or a bigger demo).

    .venv/bin/python bench/gen_data.py --members 100000 --url postgresql://postgres@127.0.0.1:5432/siyu_bench
    .venv/bin/python bench/gen_data.py --members 1000000 --fresh siyu_bench      # the issue's 1M / 5M / 20M scale
    .venv/bin/python bench/gen_data.py --members 20000 --url sqlite:///data/big-demo.sqlite --owner-password demo-owner-123

``--fresh NAME`` drops and creates database NAME on the SIYU_BENCH_PG_URL server first;
``--url`` writes into an existing database (tables are created when missing). The merchant
code (``--merchant``, default ``bench``) must not exist yet. Orders and events scale with the
members (``--orders-per-member`` 5, ``--events-per-member`` 20). See ``siyu.demo.generator``
for the distributions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_pg_database, machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100_000)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="database URL (postgresql://... or sqlite:///...)")
    target.add_argument("--fresh", metavar="NAME", help="drop and create PostgreSQL database NAME first")
    parser.add_argument("--merchant", default="bench", help="merchant code to create (default bench)")
    parser.add_argument("--orders-per-member", type=float, default=5.0)
    parser.add_argument("--events-per-member", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--owner-password", help="also create staff 'owner' with this password (to browse it as a demo)")
    args = parser.parse_args(argv)

    from siyu.api.routes import import_all_models
    from siyu.db.base import Base
    from siyu.db.engine import make_engine
    from siyu.db.session import make_session_factory
    from siyu.demo import generator

    url = fresh_pg_database(args.fresh) if args.fresh else args.url
    import_all_models()
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    print(f"machine: {machine()}")
    print(f"generating {args.members:,} members (~{args.orders_per_member:g} orders, ~{args.events_per_member:g} "
          f"events each) into {engine.url.render_as_string(hide_password=True)}")
    started = time.perf_counter()
    result = generator.generate(
        factory, members=args.members, merchant_code=args.merchant, orders_per_member=args.orders_per_member,
        events_per_member=args.events_per_member, seed=args.seed, log=lambda msg: print("  " + msg, flush=True),
    )
    elapsed = time.perf_counter() - started
    if args.owner_password:
        from siyu.db.session import unit_of_work
        from siyu.tenancy import service as tenancy

        with unit_of_work(factory) as s:
            tenancy.create_staff(s, result.merchant_id, username="owner", password=args.owner_password, role="owner")
        print(f"staff login: merchant {args.merchant!r}, username 'owner'")
    print(result)
    with factory() as s:
        for step, (events, members) in generator.funnel_counts(s, result.merchant_id).items():
            print(f"  funnel {step:<15s} {events:>12,} events {members:>10,} members")
    rows = result.members + result.orders * 2 + result.events
    print(f"total {elapsed:.1f} s ({rows / elapsed:,.0f} rows/s incl. order lines and stats rebuild)")
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
