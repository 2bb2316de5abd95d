"""Window edges (start inclusive, end exclusive, stop immediate) and the zh-CN labels."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.orders import checkout
from siyu.orders.schemas import CheckoutIn
from siyu.promotions import service
from siyu.promotions.models import Promotion
from siyu.promotions.schemas import SpendSaveRules
from tests.conftest import Tenant
from tests.factories.orders import buyer, make_sku
from tests.factories.promotions import make_promotion


def _payable(factory: sessionmaker[Session], tenant: Tenant, member: int, sku: int, now: dt.datetime) -> int:
    with factory() as s:
        body = CheckoutIn.model_validate({"items": [{"sku_id": sku, "quantity": 1}]})
        return checkout.preview(s, tenant.id, member, body, now=now).payable_amount


def test_window_start_is_inclusive_end_exclusive_and_stop_is_immediate(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    pid = make_promotion(session_factory, tenant.id, "limited_discount", {"items": [{"sku_id": sku, "price": 7000}]})
    member = buyer(session_factory, tenant.id)
    with session_factory() as s:
        promo = s.get(Promotion, pid)
        assert promo is not None
        starts_at, ends_at = promo.starts_at, promo.ends_at
    tick = dt.timedelta(microseconds=1)
    assert _payable(session_factory, tenant, member, sku, starts_at - tick) == 10000
    assert _payable(session_factory, tenant, member, sku, starts_at) == 7000
    assert _payable(session_factory, tenant, member, sku, ends_at - tick) == 7000
    assert _payable(session_factory, tenant, member, sku, ends_at) == 10000
    with unit_of_work(session_factory) as s:
        service.stop(s, tenant.id, pid, actor=("system", None))
    assert _payable(session_factory, tenant, member, sku, starts_at) == 10000


@pytest.mark.parametrize(("fen", "text"), [(30000, "300"), (2550, "25.5"), (2505, "25.05"), (99, "0.99"), (100, "1")])
def test_short_yuan(fen: int, text: str) -> None:
    assert service.short_yuan(fen) == text


@pytest.mark.parametrize(("percent_off", "text"), [(20, "8折"), (15, "8.5折"), (5, "9.5折"), (50, "5折"), (1, "9.9折")])
def test_percent_label(percent_off: int, text: str) -> None:
    assert service.percent_label(percent_off) == text


def test_spend_save_labels() -> None:
    rules = SpendSaveRules.model_validate({"tiers": [{"threshold": 30000, "discount": 3000},
                                                     {"threshold": 50050, "discount": 6000}]})
    assert [service.spend_save_label(rules, i) for i in range(2)] == ["满300减30", "满500.5减60"]
    repeat = SpendSaveRules.model_validate({"tiers": [{"threshold": 30000, "discount": 3000}], "repeat": True})
    assert service.spend_save_label(repeat, 0) == "每满300减30"
