"""Customer data at scale: members, orders and behaviour events for one merchant, then its stats.

Used by ``bench/gen_data.py`` (benchmarks at 100k … 1M members, or a bigger demo) and by the
tests. Everything is drawn with numpy from one seeded generator, so a scale and a seed always
give the same data (ids aside).

What is generated (``now`` is the reference time, default the clock):

- **Catalogue**: the demo eyewear catalogue (``seed._seed_catalog``, ~50 products / ~120 SKUs).
  Product popularity is Zipf-like; each member leans to one category.
- **Members**: gender (45% female, 40% male, 15% unknown), birthday from age bands
  (18-24 / 25-34 / 35-44 / 45-54 / 55+, 25% not given), province/city skewed like the demo
  (杭州市 first) with a long tail, occupation and income band, registration channel with
  weights, registration time over ``history_days`` skewed to recent (Beta(1, 1.6)) at
  realistic local hours (lunch and evening peaks, Asia/Shanghai).
- **Orders** (one line each): a BG/NBD-like process per member — 35% never buy; the others
  make a first purchase an exponential delay after registering, then buy as a Poisson process
  with their own rate ``lambda ~ Gamma(0.9, ·)`` and drop out after each purchase with their own
  probability ``p ~ Beta(1.2, 4)``. The rate scale is calibrated so the mean is
  ``orders_per_member``, then the purchases are thinned to it. Statuses by age (pending, paid,
  shipped, completed) with 8% cancelled (unpaid) and 4% closed (fully refunded).
- **Events** over the last ``event_days`` days: every order in the window gets its funnel
  session (page_view → product_view → add_to_cart → checkout_start → order_paid, the last one
  ``srv:order_paid:<order id>`` exactly as the events module records it; cancelled orders stop
  at checkout_start); browsing sessions fill the budget of ``events_per_member`` with
  drop-offs (45% stop at page_view, then 30% add to cart, 40% of those start a checkout).
  Every product view comes from a page view, so each funnel step has at most the events and
  the members of the step before. Some search, favourite and share events and 2% anonymous
  page views (no member) are mixed in.
- **Statistics**: the member statistics are rebuilt with the audience code
  (``backfill_rows``, ``rebuild_stats``, ``rebuild_activity``, ``recompute_lifecycle``,
  ``recompute_rfm``).

Writing: on PostgreSQL every table is written with ``COPY ... FROM STDIN`` (psycopg 3); on
SQLite with one ``executemany`` per chunk (meant for small scales: tests and demos). Ids come
from the tables' own sequences and are read back in insertion order, so the generator can run
against a live database next to other merchants. This bulk loader is a tool, not a request
path: it is the one place outside ``db/`` that picks its write method by dialect.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import repository as audience_repo
from siyu.audience import scoring
from siyu.audience import service as audience_service
from siyu.db.dialect import is_postgres
from siyu.db.session import unit_of_work
from siyu.demo.seed import CHANNELS, CITIES, GIVEN, SURNAMES, _seed_catalog
from siyu.events.models import Event
from siyu.members.models import Member
from siyu.orders import models as om
from siyu.tenancy import repository as tenancy_repo
from siyu.tenancy import service as tenancy_service

IntArray = npt.NDArray[np.int64]
US = 1_000_000
MIN_US = 60 * US
HOUR_US = 3600 * US
DAY_US = 86400 * US
LOCAL_OFFSET_US = 8 * HOUR_US  # Asia/Shanghai, no DST

TAIL_CITIES = [
    ("四川省", "成都市", 6), ("湖北省", "武汉市", 5), ("陕西省", "西安市", 4), ("重庆市", "重庆市", 4),
    ("福建省", "厦门市", 3), ("山东省", "青岛市", 3), ("湖南省", "长沙市", 3), ("天津市", "天津市", 2),
    ("河南省", "郑州市", 2), ("安徽省", "合肥市", 2),
]
ALL_CITIES = [*CITIES, *TAIL_CITIES]
GENDERS = (("female", 45), ("male", 40), ("unknown", 15))
AGE_BANDS = ((18, 24, 20), (25, 34, 35), (35, 44, 25), (45, 54, 12), (55, 70, 8))
CHANNEL_WEIGHTS = (30, 8, 20, 15, 17, 10)  # aligned with seed.CHANNELS
OCCUPATIONS = ("白领", "学生", "教师", "医生", "工程师", "自由职业", "个体经营", "退休")
INCOME_BANDS = ("<5k", "5k-10k", "10k-20k", "20k-50k", ">50k")
# Relative frequency of registrations / sessions by local hour (lunch and evening peaks).
HOUR_WEIGHTS = (1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 1.5, 2.5, 3, 3.2, 3.5, 4.5, 4, 3.2, 3, 3, 3.2, 3.8, 4.5, 5.5, 6, 4.5, 2.5)
PAGES = ("pages/index/index", "pages/category/index", "pages/activity/index", "pages/user/index", "pages/search/index")

# Event name codes used while generating.
PAGE_VIEW, SEARCH, PRODUCT_VIEW, FAVORITE, SHARE, ADD_TO_CART, CHECKOUT_START, ORDER_PAID = range(8)
EVENT_NAMES = ("page_view", "search", "product_view", "favorite", "share", "add_to_cart", "checkout_start", "order_paid")
FUNNEL = ("page_view", "product_view", "add_to_cart", "checkout_start", "order_paid")


@dataclass
class GenResult:
    merchant_id: int
    members: int = 0
    orders: int = 0
    paid_orders: int = 0
    events: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items())
        return (f"merchant {self.merchant_id}: {self.members:,} members, {self.orders:,} orders "
                f"({self.paid_orders:,} paid), {self.events:,} events; {phases}")


@dataclass
class _Catalog:
    sku_id: IntArray
    product_id: IntArray
    category: IntArray  # index 0..k-1 of the category
    category_id: IntArray
    price: IntArray
    list_price: IntArray
    cost: IntArray
    bonus: IntArray
    title: list[str]
    spec_text: list[str]
    popularity: npt.NDArray[np.float64]


def generate(
    factory: sessionmaker[Session],
    *,
    members: int,
    merchant_code: str = "bench",
    orders_per_member: float = 5.0,
    events_per_member: float = 20.0,
    history_days: int = 730,
    event_days: int = 180,
    seed: int = 20261123,
    now: dt.datetime | None = None,
    chunk: int = 100_000,
    log: Callable[[str], None] | None = None,
) -> GenResult:
    """Create merchant ``merchant_code`` (must not exist yet) and its customer data; see module doc."""
    now = now or dt.datetime.now(dt.UTC)
    now_us = int(now.timestamp() * US)
    rng = np.random.default_rng(seed)
    say = log or (lambda _msg: None)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal started
        timings[name] = time.perf_counter() - started
        say(f"{name}: {timings[name]:.1f} s")
        started = time.perf_counter()

    with unit_of_work(factory) as s:
        if tenancy_repo.merchant_by_code(s, merchant_code) is not None:
            raise ValueError(f"merchant {merchant_code!r} already exists")
        merchant = tenancy_service.create_merchant(s, code=merchant_code, name=f"Generated store {merchant_code}")
        merchant_id = merchant.id
        import random

        pairs = _seed_catalog(s, merchant_id, random.Random(seed))
        catalog = _catalog(pairs, rng)
    result = GenResult(merchant_id=merchant_id, timings=timings)

    m = _members(rng, members, now_us, history_days)
    with unit_of_work(factory) as s:
        member_ids = _write_members(s, merchant_id, m, rng)
    result.members = members
    lap("members")

    o = _orders(rng, m, catalog, now_us, orders_per_member)
    with unit_of_work(factory) as s:
        order_ids = _write_orders(s, merchant_id, member_ids, o, catalog, chunk)
    result.orders = int(o["member"].shape[0])
    result.paid_orders = int(np.count_nonzero(o["paid_at"] >= 0))
    lap("orders")

    e = _events(rng, m, o, order_ids, catalog, now_us, event_days, events_per_member)
    with unit_of_work(factory) as s:
        _write_events(s, merchant_id, member_ids, e, chunk)
    result.events = int(e["name"].shape[0])
    lap("events")

    rebuild_member_stats(factory, merchant_id, now=now, log=say)
    lap("stats")
    analyze(factory)
    lap("analyze")
    return result


def analyze(factory: sessionmaker[Session]) -> None:
    """Planner statistics (and on PostgreSQL the visibility map, for index-only scans) after a
    bulk load: without them the first segment queries plan for empty tables."""
    tables = ("members", "orders", "order_lines", "events", "member_stats")
    with factory() as s:
        engine = s.get_bind()
        pg = is_postgres(s)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:  # type: ignore[union-attr]
        for table in tables:
            conn.exec_driver_sql(f"VACUUM (ANALYZE) {table}" if pg else f"ANALYZE {table}")


def rebuild_member_stats(
    factory: sessionmaker[Session], merchant_id: int, *, now: dt.datetime, log: Callable[[str], None] | None = None
) -> None:
    """Member statistics from the stored orders and events, with the audience module's own code:
    every member's row and order columns (``rebuild_stats`` for the whole merchant: set-based,
    by ranges of members), the activity counters, the stages, then RFM. ``log`` gets each
    step's time.

    Two transactions: ``db.dialect.bulk_update`` (RFM) keeps its temporary table until commit.
    """
    say = log or (lambda _msg: None)
    with unit_of_work(factory) as session:
        for name, step in (
            ("order stats", lambda: audience_repo.rebuild_stats(session, merchant_id, None)),
            ("activity", lambda: audience_repo.rebuild_activity(session, merchant_id)),
            ("lifecycle", lambda: audience_service.recompute_lifecycle(session, merchant_id, now=now)),
        ):
            started = time.perf_counter()
            step()
            say(f"  {name}: {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    with unit_of_work(factory) as session:
        scoring.recompute_rfm(session, merchant_id, now)
    say(f"  rfm: {time.perf_counter() - started:.1f} s")


# -- drawing ---------------------------------------------------------------------------------


def _choice(rng: np.random.Generator, n: int, weights: Sequence[float]) -> IntArray:
    w = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(w), size=n, p=w / w.sum()).astype(np.int64)


def _at_local_hours(rng: np.random.Generator, t_us: IntArray, now_us: int) -> IntArray:
    """Move each time to the same local day at an hour drawn from ``HOUR_WEIGHTS``; never after now."""
    day = (t_us + LOCAL_OFFSET_US) // DAY_US * DAY_US - LOCAL_OFFSET_US
    hour = _choice(rng, t_us.shape[0], HOUR_WEIGHTS)
    out = day + hour * HOUR_US + rng.integers(0, HOUR_US, t_us.shape[0])
    return np.where(out > now_us, out - DAY_US, out)


def _catalog(pairs: list[Any], rng: np.random.Generator) -> _Catalog:
    cats = sorted({p.category_id for _, p in pairs})
    n = len(pairs)
    popularity = 1.0 / np.arange(1, n + 1) ** 0.9
    rng.shuffle(popularity)
    return _Catalog(
        sku_id=np.array([s.id for s, _ in pairs], dtype=np.int64),
        product_id=np.array([p.id for _, p in pairs], dtype=np.int64),
        category=np.array([cats.index(p.category_id) for _, p in pairs], dtype=np.int64),
        category_id=np.array([p.category_id for _, p in pairs], dtype=np.int64),
        price=np.array([s.sale_price for s, _ in pairs], dtype=np.int64),
        list_price=np.array([s.list_price for s, _ in pairs], dtype=np.int64),
        cost=np.array([s.cost_price for s, _ in pairs], dtype=np.int64),
        bonus=np.array([p.bonus_points for _, p in pairs], dtype=np.int64),
        title=[p.title for _, p in pairs],
        spec_text=[" ".join(str(v) for v in s.specs.values()) for s, _ in pairs],
        popularity=popularity / popularity.sum(),
    )


def _members(rng: np.random.Generator, n: int, now_us: int, history_days: int) -> dict[str, Any]:
    days_ago = rng.beta(1.0, 1.6, n) * history_days
    registered = _at_local_hours(rng, now_us - (days_ago * DAY_US).astype(np.int64), now_us)
    registered = np.minimum(registered, now_us - MIN_US)
    band = _choice(rng, n, [w for _, _, w in AGE_BANDS])
    lo = np.array([a for a, _, _ in AGE_BANDS])[band]
    hi = np.array([b for _, b, _ in AGE_BANDS])[band]
    age_days = (rng.uniform(lo, hi + 1) * 365.25).astype(np.int64)
    return {
        "n": n,
        "registered": registered,
        "gender": _choice(rng, n, [w for _, w in GENDERS]),
        "city": _choice(rng, n, [w for _, _, w in ALL_CITIES]),
        "channel": _choice(rng, n, CHANNEL_WEIGHTS),
        "birth_day": (now_us // DAY_US - age_days),  # day number
        "has_birthday": rng.random(n) >= 0.25,
        "favourite_category": rng.integers(0, 6, n),
        "leans": rng.random(n) < 0.6,
    }


def _orders(
    rng: np.random.Generator, m: dict[str, Any], catalog: _Catalog, now_us: int, per_member: float
) -> dict[str, IntArray]:
    n = m["n"]
    registered: IntArray = m["registered"]
    buyer = rng.random(n) >= 0.35
    first = registered + (rng.exponential(20.0, n) * DAY_US).astype(np.int64)
    buyer &= first < now_us
    p_drop = rng.beta(1.2, 4.0, n)
    shape = rng.gamma(0.9, 1.0, n)
    target = per_member * n

    def simulate(scale: float) -> tuple[IntArray, IntArray]:
        lam = shape * scale  # purchases per day while alive
        cust = [np.flatnonzero(buyer)]
        times = [first[cust[0]]]
        active, t = cust[0], times[0]
        for _ in range(400):
            alive = rng.random(active.size) >= p_drop[active]
            active, t = active[alive], t[alive]
            gap = (rng.exponential(1.0, active.size) / np.maximum(lam[active], 1e-9) * DAY_US).astype(np.int64)
            t = t + gap
            inside = t < now_us
            active, t = active[inside], t[inside]
            if not active.size:
                break
            cust.append(active)
            times.append(t)
        return np.concatenate(cust), np.concatenate(times)

    scale = 1 / 30
    cust, times = simulate(scale)
    for _ in range(3):
        if cust.size >= target * 1.05 or cust.size == 0:
            break
        scale *= 1.4 * target / max(cust.size, 1)
        cust, times = simulate(scale)
    if cust.size > target:  # thinning keeps each member's process Poisson-like
        keep = np.sort(rng.choice(cust.size, size=int(target), replace=False))
        cust, times = cust[keep], times[keep]
    order = np.argsort(times, kind="stable")
    cust, times = cust[order], times[order]
    k = cust.size

    # What they buy: a favourite category for most, Zipf-like popularity inside it.
    sku = rng.choice(catalog.sku_id.size, size=k, p=catalog.popularity)
    fav_cat = m["favourite_category"][cust] % (int(catalog.category.max()) + 1)
    lean = m["leans"][cust]
    for c in np.unique(fav_cat[lean]):
        in_cat = np.flatnonzero(catalog.category == c)
        w = catalog.popularity[in_cat] / catalog.popularity[in_cat].sum()
        rows = np.flatnonzero(lean & (fav_cat == c))
        sku[rows] = in_cat[rng.choice(in_cat.size, size=rows.size, p=w)]
    qty = np.where(rng.random(k) < 0.8, 1, rng.integers(2, 4, k))
    goods = catalog.price[sku] * qty
    freight = np.where(goods >= 9900, 0, 800)

    age = now_us - times
    u = rng.random(k)
    status = np.full(k, 3, dtype=np.int64)  # 0 pending 1 paid 2 shipped 3 completed 4 cancelled 5 closed
    status[age < 8 * DAY_US] = np.where(u[age < 8 * DAY_US] < 0.5, 2, 3)
    status[age < 2 * DAY_US] = np.where(u[age < 2 * DAY_US] < 0.5, 1, 2)
    status[u > 0.88] = 5
    status[u > 0.92] = 4
    status[age < 30 * MIN_US] = 0
    paid = (status >= 1) & (status <= 3) | (status == 5)
    paid_at = np.where(paid, times + rng.integers(1, 21, k) * MIN_US, -1)
    shipped_at = np.where((status == 2) | (status == 3), paid_at + rng.integers(2, 41, k) * HOUR_US, -1)
    completed_at = np.where(status == 3, shipped_at + rng.integers(2, 8, k) * DAY_US, -1)
    completed_at = np.where(completed_at > now_us, now_us, completed_at)
    shipped_at = np.where(shipped_at > now_us, now_us, shipped_at)
    return {
        "member": cust, "created": times, "sku": sku, "qty": qty, "goods": goods, "freight": freight,
        "status": status, "paid_at": paid_at, "shipped_at": shipped_at, "completed_at": completed_at,
    }


def _events(
    rng: np.random.Generator, m: dict[str, Any], o: dict[str, IntArray], order_ids: IntArray, catalog: _Catalog,
    now_us: int, event_days: int, per_member: float,
) -> dict[str, Any]:
    """Sessions as arrays, then one row per event. Returns aligned arrays (member index, -1 = anonymous)."""
    start_window = now_us - event_days * DAY_US
    n = m["n"]
    # Order sessions: paid orders (ending in order_paid) and cancelled ones (ending at checkout_start).
    in_window = (o["created"] >= start_window) & ((o["paid_at"] >= 0) | (o["status"] == 4))
    oi = np.flatnonzero(in_window)
    o_depth = np.where(o["paid_at"][oi] >= 0, 5, 4)
    o_views = 1 + rng.poisson(1.0, oi.size)
    o_end = np.where(o["paid_at"][oi] >= 0, o["paid_at"][oi], o["created"][oi])
    o_start = o_end - o_views * 90 * US - 180 * US

    order_events = int(np.sum(2 * o_views + 1 + (o_depth >= 3) + (o_depth >= 4) + (o_depth >= 5)))
    budget = max(0, int(per_member * n) - order_events)
    # Browsing sessions: members weighted by engagement, only after they registered.
    mean_events = 3.0
    sessions = int(budget / mean_events)
    engagement = rng.gamma(0.8, 1.0, n)
    b_member = rng.choice(n, size=sessions, p=engagement / engagement.sum())
    lo = np.maximum(m["registered"][b_member], start_window)
    b_start = _at_local_hours(rng, lo + (rng.random(sessions) * (now_us - lo)).astype(np.int64), now_us)
    b_start = np.maximum(b_start, lo)
    u = rng.random(sessions)
    b_depth = np.ones(sessions, dtype=np.int64)
    b_depth[u >= 0.45] = 2
    b_depth[(u >= 0.45) & (rng.random(sessions) < 0.30)] = 3
    b_depth[(b_depth == 3) & (rng.random(sessions) < 0.40)] = 4
    b_views = np.where(b_depth >= 2, 1 + rng.poisson(0.6, sessions), 0)

    s_member = np.concatenate([o["member"][oi], b_member])
    s_start = np.concatenate([o_start, b_start])
    s_depth = np.concatenate([o_depth, b_depth])
    s_views = np.concatenate([o_views, b_views])
    s_sku = np.concatenate([o["sku"][oi], rng.choice(catalog.sku_id.size, size=sessions, p=catalog.popularity)])
    s_order = np.concatenate([oi, np.full(sessions, -1)])
    s_amount = np.concatenate([o["goods"][oi] + o["freight"][oi], catalog.price[s_sku[oi.size:]]])
    ns = s_member.size

    parts: list[dict[str, Any]] = []

    def expand(counts: IntArray, name: int, offset_us: IntArray | int, step_us: int) -> None:
        idx = np.repeat(np.arange(ns), counts)
        if not idx.size:
            return
        first = np.cumsum(counts) - counts
        j = np.arange(idx.size) - np.repeat(first, counts)
        base = s_start[idx] + (offset_us[idx] if isinstance(offset_us, np.ndarray) else offset_us)
        parts.append({"session": idx, "name": np.full(idx.size, name), "t": base + j * step_us})

    expand(1 + s_views, PAGE_VIEW, 0, 90 * US)
    expand(((s_depth >= 2) & (rng.random(ns) < 0.2)).astype(np.int64), SEARCH, 15 * US, 0)
    expand(s_views, PRODUCT_VIEW, 30 * US, 90 * US)
    tail = s_views * 90 * US
    expand(((s_views > 0) & (rng.random(ns) < 0.08)).astype(np.int64), FAVORITE, tail + 20 * US, 0)
    expand(((s_views > 0) & (rng.random(ns) < 0.03)).astype(np.int64), SHARE, tail + 40 * US, 0)
    expand((s_depth >= 3).astype(np.int64), ADD_TO_CART, tail + 60 * US, 0)
    expand((s_depth >= 4).astype(np.int64), CHECKOUT_START, tail + 120 * US, 0)
    expand((s_depth >= 5).astype(np.int64), ORDER_PAID, tail + 180 * US, 0)

    session = np.concatenate([p["session"] for p in parts])
    name = np.concatenate([p["name"] for p in parts])
    t = np.minimum(np.concatenate([p["t"] for p in parts]), now_us)
    member = s_member[session]
    # Anonymous page views (visitors who never logged in): 2% of the volume.
    n_anon = int(name.size * 0.02)
    anon_t = start_window + (rng.random(n_anon) * (now_us - start_window)).astype(np.int64)
    return {
        "member": np.concatenate([member, np.full(n_anon, -1)]),
        "name": np.concatenate([name, np.full(n_anon, PAGE_VIEW)]),
        "t": np.concatenate([t, anon_t]),
        "sku": np.concatenate([s_sku[session], np.zeros(n_anon, dtype=np.int64)]),
        "order": np.concatenate([np.where(s_order[session] >= 0, order_ids[np.maximum(s_order[session], 0)], -1),
                                 np.full(n_anon, -1)]),
        "amount": np.concatenate([s_amount[session], np.zeros(n_anon, dtype=np.int64)]),
        "page": np.concatenate([rng.integers(0, len(PAGES), name.size), rng.integers(0, len(PAGES), n_anon)]),
        "anon": np.concatenate([np.full(name.size, -1), rng.integers(0, max(1, n_anon // 3), n_anon)]),
        "catalog": catalog,
    }


# -- writing ---------------------------------------------------------------------------------


def _ts(us: IntArray, pg: bool) -> list[str | None]:
    """Timestamps (µs since 1970, UTC; negative = NULL) as the text each dialect stores."""
    text = np.datetime_as_string(np.maximum(us, 0).astype("datetime64[us]"), unit="us")
    out = np.char.add(text, "+00") if pg else np.char.replace(text, "T", " ")
    return [None if u < 0 else s for u, s in zip(us.tolist(), out.tolist(), strict=True)]


def _write(session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY on PostgreSQL, executemany on SQLite. Values are already in storage form (JSON as text)."""
    if is_postgres(session):
        conn = session.connection().connection.driver_connection
        assert conn is not None
        with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    batch: list[Sequence[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= 5000:
            session.connection().exec_driver_sql(sql, batch)
            batch = []
    if batch:
        session.connection().exec_driver_sql(sql, batch)


def _ids(session: Session, column: Any, merchant_col: Any, merchant_id: int, expected: int) -> IntArray:
    ids = np.fromiter(
        session.scalars(select(column).where(merchant_col == merchant_id).order_by(column)), dtype=np.int64
    )
    if ids.size != expected:
        raise RuntimeError(f"expected {expected} rows for merchant {merchant_id}, found {ids.size}")
    return ids


def _write_members(session: Session, merchant_id: int, m: dict[str, Any], rng: np.random.Generator) -> IntArray:
    pg = is_postgres(session)
    n = m["n"]
    registered = _ts(m["registered"], pg)
    birthdays = np.datetime_as_string(m["birth_day"].astype("datetime64[D]")).tolist()
    surname = rng.integers(0, len(SURNAMES), n).tolist()
    given = rng.integers(0, len(GIVEN), n).tolist()
    phone = rng.integers(10_000_000, 99_999_999, n).tolist()
    has_phone = (rng.random(n) < 0.8).tolist()
    occupation = rng.integers(-2, len(OCCUPATIONS), n).tolist()  # negative: not given
    income = rng.integers(-1, len(INCOME_BANDS), n).tolist()
    genders = [g for g, _ in GENDERS]
    columns = ("merchant_id", "openid", "nickname", "phone", "gender", "province", "city", "registered_at",
               "registration_channel", "status", "birthday", "occupation", "income_band", "interests",
               "custom_fields", "created_at", "updated_at")
    gender, city, channel, has_bd = (m["gender"].tolist(), m["city"].tolist(), m["channel"].tolist(),
                                     m["has_birthday"].tolist())

    def rows() -> Iterable[tuple[Any, ...]]:
        for i in range(n):
            province, city_name, _ = ALL_CITIES[city[i]]
            yield (
                merchant_id, f"gen-{i:07d}", SURNAMES[surname[i]] + GIVEN[given[i]],
                f"13{i % 10}{phone[i]}" if has_phone[i] else None, genders[gender[i]], province, city_name,
                registered[i], CHANNELS[channel[i]], "active", birthdays[i] if has_bd[i] else None,
                OCCUPATIONS[occupation[i]] if occupation[i] >= 0 else None,
                INCOME_BANDS[income[i]] if income[i] >= 0 else None, "[]", "{}", registered[i], registered[i],
            )

    _write(session, "members", columns, rows())
    return _ids(session, Member.id, Member.merchant_id, merchant_id, n)


ORDER_STATUS = (om.PENDING_PAYMENT, om.PAID, om.SHIPPED, om.COMPLETED, om.CANCELLED, om.CLOSED)


def _write_orders(
    session: Session, merchant_id: int, member_ids: IntArray, o: dict[str, IntArray], catalog: _Catalog, chunk: int
) -> IntArray:
    pg = is_postgres(session)
    k = int(o["member"].shape[0])
    columns = ("merchant_id", "order_no", "member_id", "status", "refund_status", "idempotency_key", "request_hash",
               "goods_amount", "discount_amount", "points_used", "freight_amount", "payable_amount", "paid_amount",
               "refunded_amount", "pricing", "address", "channel", "pay_deadline", "paid_at", "shipped_at",
               "completed_at", "cancelled_at", "closed_at", "cancel_reason", "closed_from", "created_at", "updated_at")
    for lo in range(0, k, chunk):
        sl = slice(lo, min(k, lo + chunk))
        created = o["created"][sl]
        status = o["status"][sl].tolist()
        goods, freight = o["goods"][sl].tolist(), o["freight"][sl].tolist()
        mids = member_ids[o["member"][sl]].tolist()
        c_ts, deadline = _ts(created, pg), _ts(created + 30 * MIN_US, pg)
        paid_ts, ship_ts, done_ts = _ts(o["paid_at"][sl], pg), _ts(o["shipped_at"][sl], pg), _ts(o["completed_at"][sl], pg)
        cancelled = _ts(np.where(o["status"][sl] == 4, created + 30 * MIN_US, -1), pg)
        closed = _ts(np.where(o["status"][sl] == 5, np.maximum(o["paid_at"][sl], 0) + DAY_US, -1), pg)

        _write(session, "orders", columns, _order_rows(
            merchant_id, sl.start, status, goods, freight, mids, deadline, paid_ts, ship_ts, done_ts, cancelled, closed, c_ts
        ))
    order_ids = _ids(session, om.Order.id, om.Order.merchant_id, merchant_id, k)

    line_cols = ("merchant_id", "order_id", "product_id", "sku_id", "title", "spec_text", "quantity", "list_price",
                 "sale_price", "cost_price", "goods_amount", "discounts", "discount_amount", "payable_amount",
                 "bonus_points", "refunded_quantity", "refunded_amount", "member_id", "bought_at")
    sku, qty, status_all = o["sku"].tolist(), o["qty"].tolist(), o["status"].tolist()
    # the purchase facts segments read (audience.purchase_facts): the member, and the payment time
    # while the order counts as bought (paid, shipped, completed)
    line_members = member_ids[o["member"]].tolist()
    bought = np.isin(o["status"], [ORDER_STATUS.index(x) for x in om.PAID_STATUSES]) & (o["paid_at"] >= 0)
    bought_ts = _ts(np.where(bought, o["paid_at"], -1), pg)
    c = catalog
    skus, products, prices, lists, costs, bonus = (c.sku_id.tolist(), c.product_id.tolist(), c.price.tolist(),
                                                   c.list_price.tolist(), c.cost.tolist(), c.bonus.tolist())
    oids = order_ids.tolist()

    def line_rows() -> Iterable[tuple[Any, ...]]:
        for i in range(k):
            s, q = sku[i], qty[i]
            amount = prices[s] * q
            closed = status_all[i] == 5
            yield (merchant_id, oids[i], products[s], skus[s], c.title[s], c.spec_text[s], q, lists[s], prices[s],
                   costs[s], amount, "{}", 0, amount, bonus[s] * q, q if closed else 0, amount if closed else 0,
                   line_members[i], bought_ts[i])

    _write(session, "order_lines", line_cols, line_rows())
    return order_ids


def _order_rows(
    merchant_id: int, start: int, status: list[int], goods: list[int], freight: list[int], mids: list[int],
    deadline: list[str | None], paid_ts: list[str | None], ship_ts: list[str | None], done_ts: list[str | None],
    cancelled: list[str | None], closed: list[str | None], c_ts: list[str | None],
) -> Iterable[tuple[Any, ...]]:
    for j, st in enumerate(status):
        i = start + j
        payable = goods[j] + freight[j]
        paid = payable if st in (1, 2, 3, 5) else 0
        yield (
            merchant_id, f"G{i:012d}", mids[j], ORDER_STATUS[st], om.REFUND_FULL if st == 5 else om.REFUND_NONE,
            f"gen-{i}", "gen", goods[j], 0, 0, freight[j], payable, paid, paid if st == 5 else 0, "[]", "{}",
            "mini_program", deadline[j], paid_ts[j], ship_ts[j], done_ts[j], cancelled[j], closed[j],
            "payment_timeout" if st == 4 else None, om.COMPLETED if st == 5 else None, c_ts[j], c_ts[j],
        )


def _write_events(session: Session, merchant_id: int, member_ids: IntArray, e: dict[str, Any], chunk: int) -> None:
    pg = is_postgres(session)
    c: _Catalog = e["catalog"]
    total = int(e["name"].shape[0])
    columns = ("merchant_id", "event_id", "name", "member_id", "anonymous_id", "source", "occurred_at",
               "received_at", "properties")
    ids = member_ids.tolist()
    for lo in range(0, total, chunk):
        sl = slice(lo, min(total, lo + chunk))
        cols = {"ts": _ts(e["t"][sl], pg), "names": e["name"][sl].tolist(), "member": e["member"][sl].tolist(),
                "sku": e["sku"][sl].tolist(), "order": e["order"][sl].tolist(), "amount": e["amount"][sl].tolist(),
                "page": e["page"][sl].tolist(), "anon": e["anon"][sl].tolist()}
        _write(session, "events", columns, _event_rows(merchant_id, lo, ids, c, cols))


def _event_rows(
    merchant_id: int, lo: int, member_ids: list[int], c: _Catalog, cols: dict[str, list[Any]]
) -> Iterable[tuple[Any, ...]]:
    products, skus, cats, prices = c.product_id.tolist(), c.sku_id.tolist(), c.category_id.tolist(), c.price.tolist()
    ts, sku, order, amount, page, anon, member = (cols[k] for k in ("ts", "sku", "order", "amount", "page", "anon", "member"))
    for j, code in enumerate(cols["names"]):
        s = sku[j]
        if code == PAGE_VIEW:
            props = json.dumps({"page": PAGES[page[j]]})
        elif code == SEARCH:
            props = json.dumps({"keyword": c.title[s].split()[0]}, ensure_ascii=False)
        elif code == PRODUCT_VIEW:
            props = (f'{{"product_id": {products[s]}, "sku_id": {skus[s]}, "category_id": {cats[s]}, '
                     f'"price": {prices[s]}}}')
        elif code in (FAVORITE, SHARE):
            props = f'{{"product_id": {products[s]}}}'
        elif code == ADD_TO_CART:
            props = f'{{"product_id": {products[s]}, "sku_id": {skus[s]}, "quantity": 1, "price": {prices[s]}}}'
        elif code == CHECKOUT_START:
            props = f'{{"amount": {amount[j]}}}'
        else:
            props = f'{{"order_id": {order[j]}, "amount": {amount[j]}}}'
        if code == ORDER_PAID:
            event_id, source = f"srv:order_paid:{order[j]}", "server"
        else:
            event_id, source = f"gen-{lo + j}", "mini_program"
        mid = member[j]
        yield (merchant_id, event_id, EVENT_NAMES[code], member_ids[mid] if mid >= 0 else None,
               f"anon-{anon[j]}" if mid < 0 else None, source, ts[j], ts[j], props)


def funnel_counts(session: Session, merchant_id: int) -> dict[str, tuple[int, int]]:
    """Per funnel step: (events, distinct members). Used by the tests and the CLI summary."""
    from sqlalchemy import func

    stmt = (
        select(Event.name, func.count(), func.count(func.distinct(Event.member_id)))
        .where(Event.merchant_id == merchant_id, Event.name.in_(FUNNEL))
        .group_by(Event.name)
    )
    found = {name: (int(n), int(d)) for name, n, d in session.execute(stmt)}
    return {step: found.get(step, (0, 0)) for step in FUNNEL}
