"""Checkout preview with ten wallet coupons, in process: p50 / p99 latency and queries per preview.

    .venv/bin/python bench/bench_coupon_stage.py [--n 1000] [--sqlite]

A fresh PostgreSQL database (SIYU_BENCH_PG_URL server; ``--sqlite`` for a temporary file), one
merchant, a default freight template, a 3-line cart and a member with ten unused coupons of
mixed kinds (fixed, percent with a cap, thresholds, category scope, free shipping). Each
iteration runs ``checkout.preview`` in its own session, with the pipeline choosing the best
combination and noting why every other coupon does not apply; the coupon stage is timed on
its own too. ``bench_preview.py`` measures the whole pipeline with promotions as well.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()

    from sqlalchemy import event

    from bench.common import fresh_pg_database, machine
    from siyu.api.routes import import_all_models
    from siyu.catalog.models import PRODUCT_ON_SALE, Category, Product, Sku
    from siyu.coupons import service
    from siyu.coupons.schemas import TemplateIn
    from siyu.db.base import Base
    from siyu.db.engine import make_engine
    from siyu.db.session import make_session_factory, unit_of_work
    from siyu.members.models import Member
    from siyu.orders import checkout
    from siyu.orders.models import Address, FreightTemplate
    from siyu.orders.schemas import CheckoutIn
    from siyu.tenancy import service as tenancy

    if args.sqlite:
        url = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite"
    else:
        url = fresh_pg_database("siyu_bench_coupons")
    import_all_models()
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    with unit_of_work(factory) as s:
        merchant = tenancy.create_merchant(s, code="bench-coupons", name="Bench")
        mid = merchant.id
        cat = Category(merchant_id=mid, name="镜片")
        s.add(cat)
        s.add(FreightTemplate(merchant_id=mid, name="快递", mode="count", is_default=True,
                              rules=[{"regions": ["*"], "first_units": 1, "first_fee": 800, "extra_units": 1,
                                      "extra_fee": 200}], unreachable_regions=[]))
        s.flush()
        skus = []
        for i, price in enumerate((29900, 12900, 4900)):
            p = Product(merchant_id=mid, title=f"商品 {i}", status=PRODUCT_ON_SALE, spec_names=["颜色"], images=[],
                        category_id=cat.id if i == 0 else None)
            s.add(p)
            s.flush()
            sku = Sku(merchant_id=mid, product_id=p.id, sku_code=f"B{i}", specs={"颜色": "黑"}, list_price=price,
                      sale_price=price, cost_price=price // 2, weight_g=100, stock=1000, active=True)
            s.add(sku)
            s.flush()
            skus.append(sku.id)
        member = Member(merchant_id=mid, openid="bench-member")
        s.add(member)
        s.flush()
        member_id = member.id
        s.add(Address(merchant_id=mid, member_id=member_id, name="张三", phone="13800000000", province="浙江省",
                      city="杭州市", district="西湖区", detail="文三路 1 号", is_default=True))
        specs: list[dict[str, Any]] = [
            {"kind": "fixed", "amount": 1000}, {"kind": "fixed", "amount": 2000, "threshold": 100000},
            {"kind": "percent", "percent_off": 10, "max_discount": 3000},
            {"kind": "percent", "percent_off": 25, "max_discount": 8000},
            {"kind": "threshold", "amount": 3000, "threshold": 20000},
            {"kind": "threshold", "amount": 9000, "threshold": 90000},
            {"kind": "threshold", "amount": 5000, "threshold": 25000, "scope": "categories", "scope_ids": [cat.id]},
            {"kind": "fixed", "amount": 500, "stackable": True},
            {"kind": "free_shipping", "stackable": True}, {"kind": "free_shipping"},
        ]
        for i, spec in enumerate(specs):
            t = service.create_template(s, mid, TemplateIn.model_validate(
                {"name": f"券 {i}", "validity_mode": "relative", "valid_days": 30, "status": "active",
                 "channels": ["api"], **spec}), actor=("system", None))
            service.issue_to_member(s, mid, t.id, member_id, source="api", idempotency_key=f"bench:{i}")
    body = CheckoutIn.model_validate({"items": [{"sku_id": k, "quantity": 1} for k in skus]})

    queries = 0

    def _count(*_: object) -> None:
        nonlocal queries
        queries += 1

    with unit_of_work(factory) as s:  # the same cart for a member with an empty wallet: the baseline
        empty = Member(merchant_id=mid, openid="bench-empty")
        s.add(empty)
        s.flush()
        empty_id = empty.id
        s.add(Address(merchant_id=mid, member_id=empty_id, name="李四", phone="13800000001", province="浙江省",
                      city="杭州市", district="西湖区", detail="文三路 2 号", is_default=True))

    stage_times: list[float] = []
    original = service.apply_to_pricing

    def timed_stage(ctx: object) -> None:
        started = time.perf_counter()
        original(ctx)  # type: ignore[arg-type]
        stage_times.append((time.perf_counter() - started) * 1000)

    service.apply_to_pricing = timed_stage  # type: ignore[assignment]
    for _ in range(50):  # warm-up
        with factory() as s:
            checkout.preview(s, mid, member_id, body)
            checkout.preview(s, mid, empty_id, body)
    stage_times.clear()
    event.listen(engine, "before_cursor_execute", _count)
    times, base_times = [], []
    out = None
    for _ in range(args.n):
        started = time.perf_counter()
        with factory() as s:
            out = checkout.preview(s, mid, member_id, body)
        times.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        with factory() as s:
            checkout.preview(s, mid, empty_id, body)
        base_times.append((time.perf_counter() - started) * 1000)
    event.remove(engine, "before_cursor_execute", _count)
    queries //= 2
    assert out is not None
    times.sort()
    base_times.sort()
    stage_times = sorted(stage_times[0::2])  # the ten-coupon previews only
    chosen = [r["code"] for r in out.breakdown if r["stage"] == "coupons"]
    print(f"machine: {machine()}")
    print(f"database: {engine.dialect.name}; previews: {args.n}; wallet: 10 coupons; chosen: {chosen}; "
          f"notes: {len(out.notes.get('coupons', []))}; payable: {out.payable_amount}")
    print(f"latency ms: p50 {statistics.median(times):.2f}  p90 {times[int(0.9 * len(times))]:.2f}  "
          f"p99 {times[int(0.99 * len(times)) - 1]:.2f}  max {times[-1]:.2f}")
    print(f"empty wallet, same cart: p50 {statistics.median(base_times):.2f}  "
          f"p99 {base_times[int(0.99 * len(base_times)) - 1]:.2f}")
    print(f"COUPONS stage alone (ten coupons): p50 {statistics.median(stage_times):.2f}  "
          f"p99 {stage_times[int(0.99 * len(stage_times)) - 1]:.2f}")
    print(f"queries per preview (whole checkout, average of both): {queries / args.n:.1f}")
    engine.dispose()


if __name__ == "__main__":
    main()
