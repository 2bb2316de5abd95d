"""After-sales on virtual lines (a paid membership card): an order of virtual lines only was
never shipped, so refund-only follows the before-shipment rule even though it is completed,
and a virtual line can be neither returned nor exchanged; each refusal changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.aftersales import service
from siyu.aftersales.models import AfterSale
from siyu.aftersales.schemas import AfterSaleCreate
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.orders import service as orders_service
from siyu.orders.models import COMPLETED, PAID
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.factories.orders import buyer, make_sku
from tests.orders.test_virtual_checkout import _pay, _submit, virtual_sku


def _request(kind: str, lines: list[tuple[int, int]]) -> AfterSaleCreate:
    return AfterSaleCreate.model_validate(
        {"kind": kind, "reason_code": "other", "lines": [{"order_line_id": i, "quantity": q} for i, q in lines]}
    )


def _lines(factory: sessionmaker[Session], tenant: Tenant, order_id: int) -> dict[bool, int]:
    """order line id by ``is_virtual``."""
    with factory() as s:
        return {line.is_virtual: line.id for line in orders_service.order_lines(s, tenant.id, order_id)}


def _create(factory: sessionmaker[Session], tenant: Tenant, member: int, order_id: int, body: AfterSaleCreate,
            settings: Settings) -> Any:
    with unit_of_work(factory) as s:
        aftersale, _ = service.create(s, tenant.id, member, order_id, body, settings)
        return aftersale.kind, aftersale.status


def _count(factory: sessionmaker[Session], tenant: Tenant) -> int:
    with factory() as s:
        return s.scalar(select(func.count()).select_from(AfterSale).where(AfterSale.merchant_id == tenant.id)) or 0


def test_a_card_only_order_takes_refund_only_and_nothing_else(
    session_factory: sessionmaker[Session], tenant: Tenant, settings: Settings
) -> None:
    member = buyer(session_factory, tenant.id)
    card = virtual_sku(session_factory, tenant.id)
    order = _pay(session_factory, tenant, _submit(session_factory, tenant, member,
                                                  CheckoutIn.model_validate({"items": [{"sku_id": card, "quantity": 1}]})))
    assert order.status == COMPLETED
    line = _lines(session_factory, tenant, order.id)[True]
    for kind in ("return_refund", "exchange"):
        with pytest.raises(DomainError) as refused:
            _create(session_factory, tenant, member, order.id, _request(kind, [(line, 1)]), settings)
        assert refused.value.code == "aftersale_kind_not_allowed"
    assert _count(session_factory, tenant) == 0
    # completed, but never shipped: the default policy allows refund-only before shipment
    assert _create(session_factory, tenant, member, order.id, _request("refund_only", [(line, 1)]), settings)[0] == (
        "refund_only"
    )


def test_in_a_mixed_order_the_card_line_cannot_be_returned(
    session_factory: sessionmaker[Session], tenant: Tenant, settings: Settings
) -> None:
    member = buyer(session_factory, tenant.id)
    card = virtual_sku(session_factory, tenant.id)
    glasses = make_sku(session_factory, tenant.id, price=30000)
    body = CheckoutIn.model_validate({"items": [{"sku_id": card, "quantity": 1}, {"sku_id": glasses, "quantity": 1}]})
    order = _pay(session_factory, tenant, _submit(session_factory, tenant, member, body))
    assert order.status == PAID
    with unit_of_work(session_factory) as s:
        orders_service.ship(s, tenant.id, order.id, carrier="SF", tracking_no="SF1", actor=("system", None))
    lines = _lines(session_factory, tenant, order.id)
    with pytest.raises(DomainError) as refused:
        _create(session_factory, tenant, member, order.id,
                _request("return_refund", [(lines[False], 1), (lines[True], 1)]), settings)
    assert refused.value.code == "aftersale_quantity_invalid"
    assert [(f.path, f.code) for f in refused.value.fields] == [("body.lines.1.order_line_id", "virtual_line")]
    assert _count(session_factory, tenant) == 0
    assert _create(session_factory, tenant, member, order.id, _request("return_refund", [(lines[False], 1)]),
                   settings)[0] == "return_refund"
