"""Checkout preview in process with five active promotions and ten wallet coupons: p50/p99.

    .venv/bin/python bench/bench_preview.py [--previews 2000] [--sqlite]

Creates a fresh database (PostgreSQL on the SIYU_BENCH_PG_URL server, or a SQLite file with
``--sqlite``), a merchant with 12 SKUs, one promotion of each kind (limited-time discount,
first-order special, spend-and-save with two tiers, spend-and-gift, add-on deal) and a member
with ten coupons in the wallet (fixed, threshold and percent; the pipeline picks the best
combination), then times ``checkout.preview`` — the whole pipeline: member price, item and
order promotions, coupons, points, freight — over carts of 1-4 lines, half of them asking for
the add-on. Each preview runs in its own session, as a request would.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_pg_database, machine, percentile, summary


def prepare(url: str) -> tuple[object, int, int, list[int], int, int]:
    from siyu.api.routes import import_all_models
    from siyu.catalog.models import PRODUCT_ON_SALE, Product, Sku
    from siyu.coupons import service as coupons
    from siyu.coupons.schemas import TemplateIn
    from siyu.db.base import Base
    from siyu.db.engine import make_engine
    from siyu.db.session import make_session_factory, unit_of_work
    from siyu.members.models import Member
    from siyu.orders.models import Address
    from siyu.promotions import service as promotions
    from siyu.promotions.schemas import PromotionIn
    from siyu.tenancy import service as tenancy

    import_all_models()
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    system = ("system", None)
    now = dt.datetime.now(dt.UTC)
    with unit_of_work(factory) as s:
        merchant = tenancy.create_merchant(s, code="bench-preview", name="Bench store")
        skus = []
        for i in range(12):
            product = Product(merchant_id=merchant.id, title=f"Frame {i}", status=PRODUCT_ON_SALE,
                              free_shipping=i % 2 == 0, spec_names=["颜色"], images=[])
            s.add(product)
            s.flush()
            sku = Sku(merchant_id=merchant.id, product_id=product.id, sku_code=f"B-{uuid.uuid4().hex[:10]}",
                      specs={"颜色": "黑"}, list_price=20000 + 1000 * i, sale_price=15000 + 1000 * i,
                      cost_price=5000, weight_g=200, stock=10**6, active=True)
            s.add(sku)
            s.flush()
            skus.append(sku.id)
        member = Member(merchant_id=merchant.id, openid=f"bench-{uuid.uuid4().hex}", registered_at=now)
        s.add(member)
        s.flush()
        s.add(Address(merchant_id=merchant.id, member_id=member.id, name="张三", phone="13800000000",
                      province="浙江省", city="杭州市", district="西湖区", detail="文三路 1 号", is_default=True))
        window = {"starts_at": now - dt.timedelta(hours=1), "ends_at": now + dt.timedelta(days=1)}
        specs = [
            ("limited_discount", {"items": [{"sku_id": skus[0], "price": 9900}, {"sku_id": skus[1], "percent_off": 20},
                                            {"sku_id": skus[2], "percent_off": 15}]}, {"per_member_limit": 50}),
            ("first_order", {"items": [{"sku_id": skus[3], "price": 990}]}, {}),
            ("spend_save", {"tiers": [{"threshold": 30000, "discount": 3000}, {"threshold": 50000, "discount": 6000}]},
             {}),
            ("spend_gift", {"tiers": [{"threshold": 40000, "gift_sku_id": skus[11], "quantity": 1}]}, {}),
            ("add_on", {"threshold": 20000, "items": [{"sku_id": skus[10], "price": 990, "per_order_limit": 2,
                                                       "stock": 10**6}]}, {}),
        ]
        promo_ids = []
        for kind, rules, extra in specs:
            body = PromotionIn.model_validate({"name": kind, "kind": kind, "rules": rules, **window, **extra})
            promo = promotions.create(s, merchant.id, body, actor=system)
            promotions.activate(s, merchant.id, promo.id, actor=system)
            promo_ids.append(promo.id)
        for i in range(10):
            kind = ("fixed", "threshold", "percent")[i % 3]
            body = {"name": f"券 {i}", "kind": kind, "validity_mode": "relative", "valid_days": 30, "status": "active",
                    "channels": ["api"], "stackable": i == 0}
            if kind != "percent":
                body["amount"] = 500 + 100 * i
            if kind == "threshold":
                body["threshold"] = 20000 + 5000 * i
            if kind == "percent":
                body["percent_off"] = 5 + i
                body["max_discount"] = 3000
            t = coupons.create_template(s, merchant.id, TemplateIn.model_validate(body), actor=system)
            coupons.issue_to_member(s, merchant.id, t.id, member.id, source="api", idempotency_key=f"bench:{i}")
        merchant_id, member_id = merchant.id, member.id
    return factory, merchant_id, member_id, skus, promo_ids[4], skus[10]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--previews", type=int, default=2000)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    if args.sqlite:
        url = f"sqlite:///{tempfile.mkdtemp()}/bench-preview.sqlite"
    else:
        url = fresh_pg_database("siyu_bench_preview")
    factory, merchant_id, member_id, skus, add_on_id, add_on_sku = prepare(url)

    from siyu.orders import checkout
    from siyu.orders.schemas import CheckoutIn

    rng = random.Random(7)
    bodies = []
    for i in range(200):
        items = [{"sku_id": sku, "quantity": rng.randint(1, 3)} for sku in rng.sample(skus[:10], rng.randint(1, 4))]
        options = {"add_on": [{"promotion_id": add_on_id, "sku_id": add_on_sku}]} if i % 2 else {}
        bodies.append(CheckoutIn.model_validate({"items": items, "options": options}))

    def one(body: CheckoutIn) -> tuple[float, int, int]:
        start = time.perf_counter()
        with factory() as s:  # type: ignore[operator]
            try:
                out = checkout.preview(s, merchant_id, member_id, body)
                stages = len(out.breakdown)
                coupons_used = sum(1 for row in out.breakdown if row["stage"] == "coupons")
            except Exception as exc:  # an add-on under its threshold is refused: still a priced request
                if getattr(exc, "code", None) != "add_on_threshold_not_met":
                    raise
                stages, coupons_used = 0, 0
            s.rollback()
        return (time.perf_counter() - start) * 1000, stages, coupons_used

    for body in bodies[:50]:  # warm-up (imports, stage loading, connection pool)
        one(body)
    stage_ms = _time_stages()
    load_before = os.getloadavg()[0]
    latencies, with_coupon, refused = [], 0, 0
    for i in range(args.previews):
        ms, stages, coupons_used = one(bodies[i % len(bodies)])
        latencies.append(ms)
        with_coupon += coupons_used > 0
        refused += stages == 0
    print(f"machine: {machine()}")
    print(f"database: {'SQLite' if args.sqlite else 'PostgreSQL'}; 5 active promotions (one of each kind), "
          f"10 wallet coupons; {args.previews} previews (1-4 lines, half asking for the add-on)")
    print(f"checkout preview: {summary(latencies)}, max {max(latencies):.1f} ms, p99.9 {percentile(latencies, 99.9):.1f} ms")
    print(f"previews with a coupon applied: {with_coupon}; add-on refused under threshold: {refused}")
    print("per stage (mean ms): " + ", ".join(
        f"{name} {sum(v) / len(v):.2f}" for name, v in sorted(stage_ms.items(), key=lambda kv: -sum(kv[1])) if v))
    print(f"load average (1 min) before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def _time_stages() -> dict[str, list[float]]:
    """Wrap every registered stage to time it (the registry is the pipeline's own list)."""
    from siyu.orders import pricing

    pricing.load_stage_modules()
    times: dict[str, list[float]] = {}
    for stage, fns in pricing._REGISTRY.items():
        wrapped = []
        for name, fn in fns:
            samples = times.setdefault(name, [])

            def timed(ctx: pricing.PricingContext, fn: pricing.StageFn = fn, samples: list[float] = samples) -> None:
                start = time.perf_counter()
                fn(ctx)
                samples.append((time.perf_counter() - start) * 1000)

            wrapped.append((name, timed))
        pricing._REGISTRY[stage] = wrapped
    return times


if __name__ == "__main__":
    main()
