"""The submit's fast path keeps its promises: the order claims its key in one INSERT (no
pre-lookup), so a retry whose body no longer prices (stock gone, cart emptied) must still get
its order back; a refused insert is told apart from an order_no collision; the response's lines
are the ones written, without a re-read; the token brings its merchant along."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.orders import checkout, service
from siyu.orders.models import Order, OrderLine
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant, customer_login
from tests.factories.orders import buyer, make_address, make_sku, sku_stock

TIMEOUT = dt.timedelta(minutes=30)
STORE = "/api/store/v1"


def _body(items: list[tuple[int, int]] | None) -> CheckoutIn:
    data: dict[str, Any] = {}
    if items is not None:
        data["items"] = [{"sku_id": k, "quantity": q} for k, q in items]
    return CheckoutIn.model_validate(data)


def _submit(factory: sessionmaker[Session], tenant: Tenant, member: int, body: CheckoutIn, key: str) -> tuple[Order, bool]:
    with unit_of_work(factory) as s:
        return checkout.submit(s, tenant.id, member, body, idempotency_key=key, payment_timeout=TIMEOUT)


def _orders(factory: sessionmaker[Session], merchant_id: int) -> int:
    with factory() as s:
        return s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == merchant_id)) or 0


def test_retry_after_the_order_took_the_last_units_returns_that_order(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, stock=2)
    member = buyer(session_factory, tenant.id)
    first, created = _submit(session_factory, tenant, member, _body([(sku, 2)]), "last-units")
    assert created and sku_stock(session_factory, sku) == 0
    again, created_again = _submit(session_factory, tenant, member, _body([(sku, 2)]), "last-units")
    assert not created_again and again.id == first.id
    assert sku_stock(session_factory, sku) == 0 and _orders(session_factory, tenant.id) == 1


def test_retry_with_another_body_after_the_stock_is_gone_is_409(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, stock=1)
    member = buyer(session_factory, tenant.id)
    _submit(session_factory, tenant, member, _body([(sku, 1)]), "gone")
    with pytest.raises(DomainError) as err:
        _submit(session_factory, tenant, member, _body([(sku, 3)]), "gone")
    assert err.value.code == "idempotency_key_reused"
    assert sku_stock(session_factory, sku) == 0 and _orders(session_factory, tenant.id) == 1


def test_a_refusal_without_an_order_for_the_key_is_raised(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, stock=1)
    member = buyer(session_factory, tenant.id)
    with pytest.raises(DomainError) as err:
        _submit(session_factory, tenant, member, _body([(sku, 2)]), "never-made")
    assert err.value.code == "insufficient_stock" and _orders(session_factory, tenant.id) == 0


def test_retry_of_a_cart_checkout_after_the_cart_was_emptied_returns_the_order(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, stock=5)
    member = buyer(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        service.add_to_cart(s, tenant.id, member, sku, 1)
    first, _ = _submit(session_factory, tenant, member, _body(None), "cart-key")
    again, created = _submit(session_factory, tenant, member, _body(None), "cart-key")
    assert not created and again.id == first.id and sku_stock(session_factory, sku) == 4


def test_an_order_no_collision_draws_another_number(
    session_factory: sessionmaker[Session], tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    sku = make_sku(session_factory, tenant.id, stock=5)
    member = buyer(session_factory, tenant.id)
    numbers = itertools.chain(["20260101000000000001"] * 2, ["20260101000000000002"])
    monkeypatch.setattr(checkout, "new_order_no", lambda now, tz: next(numbers))
    first, _ = _submit(session_factory, tenant, member, _body([(sku, 1)]), "no-1")
    second, created = _submit(session_factory, tenant, member, _body([(sku, 1)]), "no-2")
    assert created and first.order_no == "20260101000000000001" and second.order_no == "20260101000000000002"
    assert sku_stock(session_factory, sku) == 3


def test_submit_returns_every_column_of_the_new_order(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, price=12300, stock=5)
    member = buyer(session_factory, tenant.id)
    order, _ = _submit(session_factory, tenant, member, _body([(sku, 2)]), "columns")
    with session_factory() as s:
        stored = s.get(Order, order.id)
        assert stored is not None
        columns = [c.key for c in Order.__table__.columns]
        assert {c: getattr(order, c) for c in columns} == {c: getattr(stored, c) for c in columns}


def test_response_lines_are_the_lines_written(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    a, b = make_sku(session_factory, tenant.id, price=1000), make_sku(session_factory, tenant.id, price=2500)
    headers = customer_login(client, tenant)
    me = client.get(f"{STORE}/addresses", headers=headers)
    assert me.status_code == 200
    r = client.post(f"{STORE}/addresses", headers=headers, json={
        "name": "张三", "phone": "13800000000", "province": "浙江省", "city": "杭州市", "district": "西湖区",
        "detail": "文三路 1 号", "is_default": True,
    })
    assert r.status_code == 201, r.text
    body = {"items": [{"sku_id": b, "quantity": 1}, {"sku_id": a, "quantity": 3}]}
    created = client.post(f"{STORE}/checkout/submit", json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    read_back = client.get(f"{STORE}/orders/{order_id}", headers=headers)
    assert read_back.status_code == 200
    assert created.json()["lines"] == read_back.json()["lines"]
    with session_factory() as s:
        ids = list(s.scalars(select(OrderLine.id).where(OrderLine.order_id == order_id).order_by(OrderLine.id)))
    assert [ln["id"] for ln in created.json()["lines"]] == ids and len(ids) == 2


def test_authenticated_request_finds_its_merchant_without_a_round_trip(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    from siyu.tenancy import service as tenancy

    headers = customer_login(client, tenant)
    token = headers["Authorization"].removeprefix("Bearer ")
    with session_factory() as s:
        statements: list[str] = []
        bind = s.get_bind()
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(bind, "before_cursor_execute", listener)
        try:
            principal = tenancy.authenticate(s, token, kinds=("customer",))
            after_token = len(statements)
            merchant = tenancy.get_merchant(s, principal.merchant_id)
        finally:
            event.remove(bind, "before_cursor_execute", listener)
    selects = [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]
    assert merchant.id == tenant.id and after_token == len(statements)
    assert len(selects) == 1 and "merchants" in selects[0] and "auth_tokens" in selects[0]


def test_an_address_of_another_member_still_refused(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id)
    member, other = buyer(session_factory, tenant.id), buyer(session_factory, tenant.id)
    foreign = make_address(session_factory, tenant.id, other)
    body = CheckoutIn.model_validate({"items": [{"sku_id": sku, "quantity": 1}], "address_id": foreign})
    with pytest.raises(DomainError) as err:
        _submit(session_factory, tenant, member, body, "foreign")
    assert err.value.code == "validation_error" and _orders(session_factory, tenant.id) == 0


def test_racing_retries_of_the_key_that_takes_the_last_unit_all_get_its_order(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """Real parallel connections: eight retries of one key for the last unit. Whichever way each
    one goes (waits on the key's unique index, or prices after the winner committed and finds no
    stock), every one answers with the one order, and the unit is taken once."""
    import threading

    sku = make_sku(session_factory, tenant.id, stock=1)
    member = buyer(session_factory, tenant.id)
    barrier = threading.Barrier(8)
    results: list[str] = [""] * 8

    def run(i: int) -> None:
        barrier.wait()
        try:
            order, _ = _submit(session_factory, tenant, member, _body([(sku, 1)]), "last-unit-race")
            results[i] = f"order:{order.id}"
        except Exception as exc:  # surfaced in the assertion message
            results[i] = f"error: {type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and results[0].startswith("order:"), results
    assert _orders(session_factory, tenant.id) == 1 and sku_stock(session_factory, sku) == 0
