"""The pricing pipeline: one explicit sequence of named stages.

    base price → member price → item promotions → order promotions → coupons → points → freight → payable

Each stage sees the amounts left by the stages before it (never the undiscounted total) and
records its discount on the lines it touches through ``PricingContext.discount``, which caps the
amount at what is left on the eligible lines and allocates it with the largest-remainder method,
so every line's discounts sum exactly to the stage total and no line goes below zero.

Other capabilities plug in with ``register_stage(STAGE, name)`` in their ``<domain>/stages.py``
(imported automatically on the first run); the pipeline runs the stage
functions in ``STAGES`` order (within a stage, in registration order). The same pipeline serves
the checkout preview and the submit, so what the customer sees is what is charged; the submit
recomputes everything on the server and ignores any client-sent price.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from siyu.kit.money import allocate

BASE = "base_price"
MEMBER_PRICE = "member_price"
ITEM_PROMOTIONS = "item_promotions"
ORDER_PROMOTIONS = "order_promotions"
COUPONS = "coupons"
POINTS = "points"
FREIGHT = "freight"
STAGES = (BASE, MEMBER_PRICE, ITEM_PROMOTIONS, ORDER_PROMOTIONS, COUPONS, POINTS, FREIGHT)
DISCOUNT_STAGES = (MEMBER_PRICE, ITEM_PROMOTIONS, ORDER_PROMOTIONS, COUPONS, POINTS)


@dataclass
class PricedLine:
    """One cart line as the pipeline sees it. Amounts are fen."""

    sku_id: int
    product_id: int
    category_id: int | None
    title: str
    spec_text: str
    image_url: str | None
    quantity: int
    list_price: int  # unit 原价
    sale_price: int  # unit price before any stage
    cost_price: int
    weight_g: int
    free_shipping: bool
    coupons_allowed: bool
    bonus_points: int
    freight_template_id: int | None = None
    stock: int | None = None  # normal stock on hand when loaded (advisory; ``catalog.stock.reserve`` binds)
    discounts: dict[str, int] = field(default_factory=dict)
    # Set by stages: e.g. {"activity": "flash_sale:12", "no_coupon": True, "no_points": True,
    # "no_order_promotions": True, "free_shipping": True}
    flags: dict[str, Any] = field(default_factory=dict)

    @property
    def goods_amount(self) -> int:
        return self.sale_price * self.quantity

    @property
    def discount_amount(self) -> int:
        return sum(self.discounts.values())

    @property
    def amount(self) -> int:
        """What is left to pay on this line after the stages so far."""
        return self.goods_amount - self.discount_amount


@dataclass
class StageEntry:
    stage: str
    code: str  # machine name of what applied, e.g. "coupon:123", "full_reduction:7"
    label: str  # what the customer reads, e.g. "满300减30"
    amount: int  # fen taken off (or freight added)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PricingContext:
    session: Session
    merchant_id: int
    member_id: int | None
    lines: list[PricedLine]
    now: dt.datetime
    timezone: str = "Asia/Shanghai"
    province: str | None = None  # shipping destination, for freight
    coupon_ids: list[int] | None = None  # None: let the pipeline pick the best combination
    points_to_use: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # e.g. {"activity": {"kind": "group_buy", ...}}
    entries: list[StageEntry] = field(default_factory=list)
    freight: int = 0
    free_shipping: bool = False
    # Per stage, what did not apply and why (e.g. unusable coupons with their reason codes).
    notes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Anything a stage wants to carry to submit (coupons to lock, points to spend...).
    reservations: dict[str, Any] = field(default_factory=dict)
    # Answers of the registered probes (``register_probe``), filled by ``run_pipeline``.
    probes: dict[str, bool] = field(default_factory=dict)

    def may_apply(self, probe: str) -> bool:
        """False only when the probe ran and found nothing that stage could use; an unknown or
        unrun probe answers True, so a stage that asks never skips by mistake."""
        return self.probes.get(probe, True)

    @property
    def goods_amount(self) -> int:
        return sum(line.goods_amount for line in self.lines)

    @property
    def discount_amount(self) -> int:
        return sum(line.discount_amount for line in self.lines)

    @property
    def lines_amount(self) -> int:
        return sum(line.amount for line in self.lines)

    @property
    def payable(self) -> int:
        return self.lines_amount + self.freight

    def eligible(self, predicate: Callable[[PricedLine], bool] | None = None) -> list[int]:
        return [i for i, line in enumerate(self.lines) if predicate is None or predicate(line)]

    def discount(
        self,
        stage: str,
        code: str,
        label: str,
        amount: int,
        line_indexes: Sequence[int] | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        """Take ``amount`` off the given lines (default: all), capped at what is left on them.

        Allocation is proportional to each line's current amount (largest remainder), so a
        line never goes negative. Returns the amount actually applied.
        """
        if stage not in DISCOUNT_STAGES:
            raise ValueError(f"{stage!r} is not a discount stage")
        if amount < 0:
            raise ValueError("a discount cannot be negative")
        indexes = list(range(len(self.lines))) if line_indexes is None else list(line_indexes)
        weights = [self.lines[i].amount for i in indexes]
        applied = min(amount, sum(weights))
        if applied <= 0:
            return 0
        for i, part in zip(indexes, allocate(applied, weights), strict=True):
            if part:
                line = self.lines[i]
                line.discounts[stage] = line.discounts.get(stage, 0) + part
        self.entries.append(StageEntry(stage, code, label, applied, details or {}))
        return applied

    def note(self, stage: str, **info: Any) -> None:
        self.notes.setdefault(stage, []).append(info)

    def breakdown(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [
            {"stage": BASE, "code": "goods", "label": "商品金额", "amount": self.goods_amount, "details": {}}
        ]
        rows += [
            {"stage": e.stage, "code": e.code, "label": e.label, "amount": -e.amount, "details": e.details}
            for e in self.entries
            if e.stage != FREIGHT
        ]
        rows.append({"stage": FREIGHT, "code": "freight", "label": "运费", "amount": self.freight, "details": {}})
        rows.append({"stage": "payable", "code": "payable", "label": "应付金额", "amount": self.payable, "details": {}})
        return rows


StageFn = Callable[[PricingContext], None]
_REGISTRY: dict[str, list[tuple[str, StageFn]]] = {stage: [] for stage in STAGES}


def register_stage(stage: str, name: str) -> Callable[[StageFn], StageFn]:
    """Decorator: plug ``fn`` into ``stage`` under a unique ``name`` (re-registering replaces it)."""
    if stage not in STAGES:
        raise ValueError(f"unknown pricing stage {stage!r}")

    def _register(fn: StageFn) -> StageFn:
        entries = _REGISTRY[stage]
        entries[:] = [(n, f) for n, f in entries if n != name]
        entries.append((name, fn))
        return fn

    return _register


def registered_stages() -> dict[str, list[str]]:
    return {stage: [name for name, _ in fns] for stage, fns in _REGISTRY.items()}


_stages_loaded = False


def load_stage_modules() -> None:
    """Import every ``siyu.<domain>.stages`` module: that is where domains register their stages."""
    global _stages_loaded
    if _stages_loaded:
        return
    import importlib
    import pkgutil

    import siyu

    for info in pkgutil.iter_modules(siyu.__path__):
        if info.ispkg and importlib.util.find_spec(f"siyu.{info.name}.stages") is not None:
            importlib.import_module(f"siyu.{info.name}.stages")
    _stages_loaded = True


# -- probes ------------------------------------------------------------------------------------------
# Most checkouts meet no member level, card, live promotion or coupon. Each such stage would
# spend a query to find that out; instead a stage registers a *probe*: an SQL boolean ("does this
# member/merchant have anything I could use?") over the bind parameters ``merchant_id``,
# ``member_id`` (NULL for an anonymous preview) and ``now``. ``run_pipeline`` asks every probe in
# ONE ``SELECT probe_1, probe_2, ...`` before the stages run, and a stage whose probe answered
# False (``ctx.may_apply(name)``) returns at once. A probe must be a superset of what its stage
# would load (True whenever the stage might change anything), so skipping never changes a price.
# Nothing is cached between requests: each answer is as fresh as the stage's own query.
ProbeFn = Callable[[], ColumnElement[bool]]
_PROBES: list[tuple[str, ProbeFn]] = []
_PROBE_STMT: list[Any] = []  # the combined statement, built once on first use
_PROBE_LOCK = threading.Lock()


def register_probe(name: str) -> Callable[[ProbeFn], ProbeFn]:
    """Decorator: ``fn()`` returns the probe's boolean SQL expression (built once, bound per run)."""

    def _register(fn: ProbeFn) -> ProbeFn:
        _PROBES[:] = [(n, f) for n, f in _PROBES if n != name]
        _PROBES.append((name, fn))
        _PROBE_STMT.clear()
        _PROBE_COLUMNS.clear()
        return fn

    return _register


_PROBE_COLUMNS: list[Any] = []


def probe_columns() -> list[Any]:
    """Every registered probe as a labelled column (the same objects until a probe is registered),
    for a caller that reads the probes along with a query of its own (bind parameters
    ``merchant_id``, ``member_id``, ``now``) and hands the answers over with ``answer_probes``."""
    load_stage_modules()
    if not _PROBE_COLUMNS:
        # Built under a lock: two request threads arriving together must not both extend the
        # list (the answers would then be twice as many as the probes).
        with _PROBE_LOCK:
            if not _PROBE_COLUMNS:
                _PROBE_COLUMNS[:] = [fn().label(f"probe_{i}") for i, (_, fn) in enumerate(_PROBES)]
    return list(_PROBE_COLUMNS)


def answer_probes(ctx: PricingContext, values: Sequence[Any]) -> None:
    """Set the probes' answers read with ``probe_columns()`` (same order); the pipeline then
    does not ask them again."""
    ctx.probes = {name: bool(value) for (name, _), value in zip(_PROBES, values, strict=True)}


def run_probes(ctx: PricingContext) -> None:
    """Answer every registered probe for this context in one query (none registered: no query;
    answered already through ``answer_probes``: no query)."""
    if not _PROBES or ctx.probes:
        return
    if not _PROBE_STMT:
        with _PROBE_LOCK:
            if not _PROBE_STMT:
                _PROBE_STMT[:] = [select(*(fn().label(f"probe_{i}") for i, (_, fn) in enumerate(_PROBES)))]
    row = ctx.session.execute(
        _PROBE_STMT[0], {"merchant_id": ctx.merchant_id, "member_id": ctx.member_id, "now": ctx.now}
    ).one()
    ctx.probes = {name: bool(value) for (name, _), value in zip(_PROBES, row, strict=True)}


def run_pipeline(ctx: PricingContext) -> PricingContext:
    load_stage_modules()
    run_probes(ctx)
    for stage in STAGES:
        for _, fn in _REGISTRY[stage]:
            fn(ctx)
    assert all(line.amount >= 0 for line in ctx.lines), "a stage drove a line below zero"
    return ctx


# -- submit hooks ------------------------------------------------------------------------------
# Run by the order submit in its transaction, after the order and its lines exist, so a stage
# can turn what it reserved in ``ctx.reservations`` into durable state (lock the coupons,
# spend the points, take activity stock). Raising a DomainError aborts the whole submit.
SubmitHook = Callable[[PricingContext, int], None]
_SUBMIT_HOOKS: list[tuple[str, SubmitHook]] = []


def register_submit_hook(name: str) -> Callable[[SubmitHook], SubmitHook]:
    def _register(fn: SubmitHook) -> SubmitHook:
        _SUBMIT_HOOKS[:] = [(n, f) for n, f in _SUBMIT_HOOKS if n != name]
        _SUBMIT_HOOKS.append((name, fn))
        return fn

    return _register


def run_submit_hooks(ctx: PricingContext, order_id: int) -> None:
    load_stage_modules()
    for _, fn in _SUBMIT_HOOKS:
        fn(ctx, order_id)


# -- ship guards -------------------------------------------------------------------------------
# Run by ``orders.service.ship`` with the order row locked, before it moves to shipped. An
# activity that must hold its orders back (a group buy until its team succeeds) registers a
# guard in its ``stages.py``; raising a DomainError refuses the shipment and changes nothing.
ShipGuard = Callable[[Session, Any], None]
_SHIP_GUARDS: list[tuple[str, ShipGuard]] = []


def register_ship_guard(name: str) -> Callable[[ShipGuard], ShipGuard]:
    def _register(fn: ShipGuard) -> ShipGuard:
        _SHIP_GUARDS[:] = [(n, f) for n, f in _SHIP_GUARDS if n != name]
        _SHIP_GUARDS.append((name, fn))
        return fn

    return _register


def run_ship_guards(session: Session, order: Any) -> None:
    load_stage_modules()
    for _, fn in _SHIP_GUARDS:
        fn(session, order)
