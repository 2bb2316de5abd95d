"""Checkout submit over HTTP on PostgreSQL: orders/s, p50/p99, RSS per API process.

    .venv/bin/python bench/bench_checkout.py [--clients 32] [--seconds 20] [--workers 2]

Creates a fresh database (SIYU_BENCH_PG_URL server), a merchant with 20 SKUs of ample stock
and 400 customers with addresses and tokens, starts `uvicorn siyu.asgi:app --workers N`, then
runs N concurrent clients that each submit orders (unique Idempotency-Key, 1-3 lines) for the
duration. The load generator runs on the same machine and competes for its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, fresh_pg_database, machine, process_tree_rss_mb, start_server, summary


def prepare(url: str, customers: int) -> tuple[str, list[str], list[int]]:
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
        for i in range(20):
            sku = Sku(merchant_id=merchant.id, product_id=product.id, sku_code=f"B{i}", specs={"颜色": str(i)},
                      list_price=39900, sale_price=29900 + i * 100, cost_price=10000, stock=10_000_000)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--customers", type=int, default=400)
    args = parser.parse_args()

    url = fresh_pg_database("siyu_bench_checkout")
    _code, tokens, sku_ids = prepare(url, args.customers)
    port = free_port()
    server = start_server({"SIYU_DATABASE_URL": url, "SIYU_ENV": "bench", "SIYU_DB_POOL_SIZE": "20"},
                          workers=args.workers, port=port)
    try:
        base = f"http://127.0.0.1:{port}"
        asyncio.run(run_load(base, tokens, sku_ids, 4, 2))  # warm-up
        ok, failed, latencies, elapsed = asyncio.run(run_load(base, tokens, sku_ids, args.clients, args.seconds))
        rss = process_tree_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=20)
    print(f"machine: {machine()}")
    print(f"checkout submit over HTTP, PostgreSQL, {args.workers} API processes, {args.clients} concurrent clients, {elapsed:.1f} s")
    print(f"orders created: {ok} ({ok / elapsed:.0f} orders/s), failed: {failed}")
    print(f"latency: {summary(latencies)}")
    print("RSS per process (MB): " + ", ".join(f"{pid}: {mb:.0f}" for pid, mb in sorted(rss.items())))


if __name__ == "__main__":
    main()
