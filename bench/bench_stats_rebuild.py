"""The member-statistics rebuild (``audience.repository.rebuild_stats``) after a bulk load or an import.

    .venv/bin/python bench/bench_stats_rebuild.py --generate --members 150000   # once: fresh DB siyu_bench_stats
    .venv/bin/python bench/bench_stats_rebuild.py [--db siyu_bench_stats] [--mode load|all|import] [--repeat 2]
    PYTHONPATH=/tmp/base/src .venv/bin/python bench/bench_stats_rebuild.py ...   # older code, same database

Modes, each in ONE transaction that is rolled back at the end (the database is left as it was,
so runs of older and newer code can alternate on the same data):

- ``load`` (the data generator's step): the merchant's stats rows are deleted first (not timed),
  then ``backfill_rows`` + ``rebuild_stats(<every member id>)`` are timed, as
  ``demo.generator.rebuild_member_stats`` ran them;
- ``all``: the same with ``rebuild_stats(session, merchant, None)`` (the whole-merchant path;
  older code without it is skipped);
- ``import``: ``rebuild_stats`` of ``--import-share`` of the members (random, their order columns
  zeroed first, not timed), as after a CSV import that touched them.

Printed per run: seconds, SQL statements sent (counted at the driver: psycopg ``execute`` /
``executemany`` / ``copy`` calls, so the raw COPY path of ``bulk_update`` counts too), the rows
of ``member_stats`` inserted / updated (``pg_stat_xact_user_tables``: load-insensitive), and a
checksum of the rebuilt columns (equal checksums = equal results between code versions).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_pg_database, machine

CALLS = {"n": 0}


def count_driver_statements() -> None:
    import psycopg

    for name in ("execute", "executemany", "copy"):
        original = getattr(psycopg.Cursor, name)

        def counted(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            CALLS["n"] += 1
            return _original(self, *args, **kwargs)

        setattr(psycopg.Cursor, name, counted)


CHECKSUM_SQL = """
SELECT count(*), sum(paid_orders), sum(paid_total), count(second_order_at),
       sum(extract(epoch FROM first_order_at)), sum(extract(epoch FROM second_order_at)),
       sum(extract(epoch FROM last_order_at)), sum(hashtext(member_id::text || ':' || paid_orders || ':' || paid_total
           || ':' || coalesce(second_order_at::text, '-') || ':' || coalesce(last_order_at::text, '-'))::numeric)
FROM member_stats WHERE merchant_id = %(m)s
"""
TUPLES_SQL = "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'member_stats'"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="siyu_bench_stats", help="database on the SIYU_BENCH_PG_URL server")
    parser.add_argument("--merchant", default="bench")
    parser.add_argument("--generate", action="store_true", help="drop and create --db, generate --members first")
    parser.add_argument("--members", type=int, default=150_000)
    parser.add_argument("--mode", choices=("load", "all", "import"), action="append",
                        help="what to time (repeatable; default load, all and import)")
    parser.add_argument("--import-share", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    modes = args.mode or ["load", "all", "import"]

    import inspect

    from sqlalchemy import delete, select, text, update
    from sqlalchemy.engine import make_url

    import siyu
    from siyu.api.routes import import_all_models
    from siyu.audience import repository as audience_repo
    from siyu.audience.models import MemberStats
    from siyu.db.base import Base
    from siyu.db.engine import make_engine
    from siyu.db.session import make_session_factory
    from siyu.members.models import Member
    from siyu.tenancy import repository as tenancy_repo

    base = os.environ.get("SIYU_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    url = fresh_pg_database(args.db) if args.generate else make_url(base).set(database=args.db).render_as_string(
        hide_password=False
    )
    import_all_models()
    engine = make_engine(url)
    factory = make_session_factory(engine)
    print(f"machine: {machine()}; code: {Path(siyu.__file__).parent}")
    if args.generate:
        from siyu.demo import generator

        Base.metadata.create_all(engine)
        result = generator.generate(factory, members=args.members, merchant_code=args.merchant,
                                    log=lambda msg: print("  generate " + msg, flush=True))
        print(result)
    with factory() as s:
        merchant = tenancy_repo.merchant_by_code(s, args.merchant)
        assert merchant is not None, f"no merchant {args.merchant!r}: run with --generate first"
        merchant_id = merchant.id
        member_ids = sorted(s.scalars(select(Member.id).where(Member.merchant_id == merchant_id)))
        orders = s.execute(text("SELECT count(*) FROM orders WHERE merchant_id = :m"), {"m": merchant_id}).scalar()
    print(f"merchant {args.merchant!r}: {len(member_ids):,} members, {orders:,} orders")
    has_all = "member_ids" in inspect.signature(audience_repo.rebuild_stats).parameters and (
        inspect.signature(audience_repo.rebuild_stats).parameters["member_ids"].default is None
    )
    count_driver_statements()
    subset = sorted(random.Random(7).sample(member_ids, int(len(member_ids) * args.import_share)))

    for _ in range(args.repeat):
        for mode in modes:
            if mode == "all" and not has_all:
                print(f"{mode:>6}: skipped (this code has no whole-merchant path)")
                continue
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM (ANALYZE) member_stats")  # the previous run's rolled-back rows
            with factory() as s:
                s.connection()
                s.execute(text("SET LOCAL work_mem = '64MB'"))
                if mode in ("load", "all"):
                    s.execute(delete(MemberStats).where(MemberStats.merchant_id == merchant_id))
                else:
                    s.execute(
                        update(MemberStats)
                        .where(MemberStats.merchant_id == merchant_id, MemberStats.member_id.in_(subset))
                        .values(paid_orders=0, paid_total=0, first_order_at=None, second_order_at=None, last_order_at=None)
                    )
                raw = s.connection().exec_driver_sql
                ins0, upd0, hot0 = raw(TUPLES_SQL).one()
                calls0 = CALLS["n"]
                started = time.perf_counter()
                if mode == "load":
                    audience_repo.backfill_rows(s, merchant_id)
                    audience_repo.rebuild_stats(s, merchant_id, member_ids)
                elif mode == "all":
                    audience_repo.rebuild_stats(s, merchant_id, None)
                else:
                    audience_repo.rebuild_stats(s, merchant_id, subset)
                elapsed = time.perf_counter() - started
                statements = CALLS["n"] - calls0
                ins1, upd1, hot1 = raw(TUPLES_SQL).one()
                checksum = raw(CHECKSUM_SQL, {"m": merchant_id}).one()
                s.rollback()
            members = len(subset) if mode == "import" else len(member_ids)
            print(f"{mode:>6}: {elapsed:8.2f} s for {members:,} members, {statements:,} statements; member_stats rows "
                  f"inserted {ins1 - ins0:,}, updated {upd1 - upd0:,} (HOT {hot1 - hot0:,}); "
                  f"checksum {hashlib.sha1(repr(tuple(checksum)).encode()).hexdigest()[:10]} "
                  f"(paid orders {checksum[1]:,}, net {checksum[2]:,} fen, second purchases {checksum[3]:,})", flush=True)
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
