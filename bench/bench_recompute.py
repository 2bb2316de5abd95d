"""Full lifecycle + RFM recompute for every member, super-user scores, (``--nightly``) the whole
nightly job and the prediction refit, and one member's stage after a payment.

    .venv/bin/python bench/gen_data.py --members 100000 --fresh siyu_bench      # once
    .venv/bin/python bench/bench_recompute.py [--db siyu_bench] [--merchant bench] [--days-later 45]

Uses the audience module's own code on the merchant made by ``gen_data.py``:

- lifecycle: ``audience.service.recompute_lifecycle`` (backfill missing stats rows, then the
  set-based transitions INSERT ... SELECT and stage UPDATE), evaluated ``--days-later`` days
  after the data was generated so a realistic share of members changes stage;
- RFM: ``audience.scoring.recompute_rfm`` (one query into numpy, quintiles, tiers, COPY + one
  UPDATE of the rows that changed), in its own transaction; ``--all-rfm-rows`` clears the
  scores first (untimed) for the worst case where every buyer's row is written;
- one member's stage after a payment: ``audience.service.record_payment`` (what the
  ``order.paid`` job does before re-checking saved segments), for ``--payments`` random
  members, each in its own transaction.

Everything is rolled back at the end unless ``--commit``, so the benchmark can be repeated.
Peak RSS is the process's high-water mark (``getrusage``), numpy arrays included.
Targets (issue 5): lifecycle + RFM <= 60 s and <= 2 GB RSS at 1M members; one member <= 50 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, percentile

TARGET_FULL_S = 60.0
TARGET_RSS_MB = 2048.0
TARGET_ONE_MS = 50.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="siyu_bench", help="database on the SIYU_BENCH_PG_URL server")
    parser.add_argument("--url", help="full database URL (overrides --db)")
    parser.add_argument("--merchant", default="bench")
    parser.add_argument("--days-later", type=float, default=45)
    parser.add_argument("--payments", type=int, default=50)
    parser.add_argument("--commit", action="store_true")
    parser.add_argument("--nightly", action="store_true",
                        help="also time the whole nightly job (with three saved segments) and the prediction refit")
    parser.add_argument("--all-rfm-rows", action="store_true",
                        help="clear the RFM columns first (not timed) so every buyer's row is rewritten")
    args = parser.parse_args()

    import os

    from sqlalchemy import func, select, update
    from sqlalchemy.engine import make_url

    from siyu.api.routes import import_all_models
    from siyu.audience import scoring
    from siyu.audience import service as audience
    from siyu.audience.models import MemberStats
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
            raise SystemExit(f"no merchant {args.merchant!r}: run bench/gen_data.py first")
        mid = merchant.id
        members = s.scalar(select(func.count()).select_from(Member).where(Member.merchant_id == mid)) or 0
        orders = s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == mid)) or 0
        events = s.scalar(select(func.count()).select_from(Event).where(Event.merchant_id == mid)) or 0
        generated_at = s.scalar(select(func.max(Event.occurred_at)).where(Event.merchant_id == mid))
        member_ids = list(s.scalars(select(Member.id).where(Member.merchant_id == mid)))
    if generated_at is None:
        raise SystemExit("the merchant has no events: run bench/gen_data.py first")
    now = generated_at + dt.timedelta(days=args.days_later)
    rss_before = peak_rss_mb()

    finish = "commit" if args.commit else "rollback"
    with factory() as s:
        t0 = time.perf_counter()
        changed = audience.recompute_lifecycle(s, mid, now=now)
        t_life = time.perf_counter() - t0
        getattr(s, finish)()
    with factory() as s:
        if args.all_rfm_rows:  # worst case: nobody scored yet, every buyer's row is written
            s.execute(update(MemberStats).where(MemberStats.merchant_id == mid)
                      .values(rfm_r=None, rfm_f=None, rfm_m=None, rfm_tier=None))
        t0 = time.perf_counter()
        scored = scoring.recompute_rfm(s, mid, now)
        t_rfm = time.perf_counter() - t0
        getattr(s, finish)()
    with factory() as s:
        t0 = time.perf_counter()
        supers = scoring.recompute_super_users(s, mid, now)
        t_super = time.perf_counter() - t0
        getattr(s, finish)()
    nightly: dict[str, int] = {}
    t_nightly = t_predict = 0.0
    t_segments: list[float] = []
    prediction = None
    if args.nightly:
        from siyu.audience import segments
        from siyu.audience.definitions import SegmentDefinition
        from siyu.audience.demo_data import SEGMENTS

        with factory() as s:  # the demo's three saved segments (committed here, deleted at the end)
            saved = [segments.save_segment(s, mid, name=f"bench {name}", description=description,
                                           definition=SegmentDefinition.model_validate({"root": root})).id
                     for name, description, root in SEGMENTS]
            s.commit()
        try:
            with factory() as s:  # the 00:05 job's own transaction (rolled back)
                t0 = time.perf_counter()
                nightly = audience.daily_recompute(s, mid, now=now, day=now.date())
                t_nightly = time.perf_counter() - t0
                s.rollback()
            for segment_id in saved:  # then one job per saved segment, each in its own transaction
                with factory() as s:
                    t0 = time.perf_counter()
                    result = segments.recompute(s, mid, segment_id, now=now)
                    t_segments.append(time.perf_counter() - t0)
                    nightly[f"segment {segment_id} changes"] = result.entered + result.left
                    s.rollback()
        finally:
            with factory() as s:
                for segment_id in saved:
                    segments.delete_segment(s, mid, segment_id)
                s.commit()
        with factory() as s:  # the 02:30 job
            t0 = time.perf_counter()
            prediction = scoring.refresh_predictions(s, mid, now=now, timezone="Asia/Shanghai")
            t_predict = time.perf_counter() - t0
            s.rollback()
    rss_full = peak_rss_mb()

    rng = random.Random(5)
    latencies = []
    for member_id in rng.sample(member_ids, min(args.payments, len(member_ids))):
        with factory() as s:
            t0 = time.perf_counter()
            audience.record_payment(s, mid, member_id, 29900, now)
            latencies.append((time.perf_counter() - t0) * 1000)
            stage = s.scalar(select(MemberStats.lifecycle_stage).where(MemberStats.merchant_id == mid,
                                                                       MemberStats.member_id == member_id))
            assert stage == "active", stage
            s.rollback()
    engine.dispose()

    full = t_life + t_rfm
    print(f"machine: {machine()}")
    print(f"scale: {members:,} members, {orders:,} orders, {events:,} events; evaluated {args.days_later:g} days "
          f"after generation ({'committed' if args.commit else 'rolled back'})")
    print(f"lifecycle recompute: {t_life:.2f} s, {changed:,} members changed stage")
    print(f"RFM recompute:       {t_rfm:.2f} s, {scored:,} buyers scored"
          f"{' (every row rewritten)' if args.all_rfm_rows else ' (rows whose scores or tier changed rewritten)'}")
    print(f"lifecycle + RFM:     {full:.2f} s (target <= {TARGET_FULL_S:.0f} s at 1,000,000 members; "
          f"{'within' if full <= TARGET_FULL_S else 'OVER'} it at {members:,})")
    print(f"super-user scores:   {t_super:.2f} s, {supers:,} buyers scored (with referrals and reviews)")
    if args.nightly:
        print(f"nightly 00:05 job:   {t_nightly:.2f} s (stages, stage counts, RFM, super users in one transaction), "
              f"then the 3 saved segments' jobs {', '.join(f'{t:.2f}' for t in t_segments)} s ({nightly})")
        assert prediction is not None
        print(f"nightly 02:30 job:   {t_predict:.2f} s (prediction refit: {prediction.status}"
              f"{', ' + prediction.reason if prediction.reason else ''}; {prediction.customers:,} customers)")
    print(f"peak RSS:            {rss_full:.0f} MB (before the recomputes {rss_before:.0f} MB; "
          f"target <= {TARGET_RSS_MB:.0f} MB)")
    print(f"one member's stage after a payment (record_payment, {len(latencies)} members): p50 "
          f"{percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.1f} ms "
          f"(target <= {TARGET_ONE_MS:.0f} ms)")


if __name__ == "__main__":
    main()
