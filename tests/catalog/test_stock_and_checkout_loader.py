"""catalog.stock reserve/release (all or nothing) and the service reads other domains use."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog import service, stock
from siyu.catalog.models import Sku
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.tenancy import service as tenancy_service
from tests.conftest import unique
from tests.factories.catalog import make_product, sku_body


def new_merchant(factory: sessionmaker[Session]) -> int:
    with unit_of_work(factory) as s:
        return tenancy_service.create_merchant(s, code=unique("m"), name="Stock test").id


def two_skus(factory: sessionmaker[Session], merchant_id: int, first: int, second: int) -> tuple[int, int]:
    with unit_of_work(factory) as s:
        product = make_product(
            s, merchant_id, skus=[sku_body({"颜色": "黑"}, stock=first), sku_body({"颜色": "白"}, stock=second)]
        )
        ids = s.scalars(select(Sku.id).where(Sku.product_id == product.id).order_by(Sku.id)).all()
        return ids[0], ids[1]


def stock_of(factory: sessionmaker[Session], *sku_ids: int) -> list[int]:
    with factory() as s:
        return [s.scalars(select(Sku.stock).where(Sku.id == i)).one() for i in sku_ids]


def test_reserve_and_release(session_factory: sessionmaker[Session]) -> None:
    merchant_id = new_merchant(session_factory)
    a, b = two_skus(session_factory, merchant_id, 5, 5)
    with unit_of_work(session_factory) as s:
        stock.reserve(s, merchant_id, {b: 2, a: 5})
    assert stock_of(session_factory, a, b) == [0, 3]
    with unit_of_work(session_factory) as s:
        stock.release(s, merchant_id, {a: 1, b: 0})
    assert stock_of(session_factory, a, b) == [1, 3]


def test_reserve_is_all_or_nothing(session_factory: sessionmaker[Session]) -> None:
    merchant_id = new_merchant(session_factory)
    a, b = two_skus(session_factory, merchant_id, 5, 1)  # a is reserved first (lower id), b lacks stock
    with pytest.raises(DomainError) as err, unit_of_work(session_factory) as s:
        stock.reserve(s, merchant_id, {a: 2, b: 3})
    assert err.value.code == "insufficient_stock" and err.value.params["sku_id"] == b
    assert stock_of(session_factory, a, b) == [5, 1]  # the rollback undid a's decrement


def test_reserve_refuses_other_merchants_skus(session_factory: sessionmaker[Session]) -> None:
    merchant_id = new_merchant(session_factory)
    intruder = new_merchant(session_factory)
    a, _ = two_skus(session_factory, merchant_id, 5, 5)
    with pytest.raises(DomainError) as err, unit_of_work(session_factory) as s:
        stock.reserve(s, intruder, {a: 1})
    assert err.value.code == "insufficient_stock"
    with unit_of_work(session_factory) as s:
        stock.release(s, intruder, {a: 10})
    assert stock_of(session_factory, a) == [5]


def test_load_skus_for_checkout(session_factory: sessionmaker[Session]) -> None:
    merchant_id = new_merchant(session_factory)
    other = new_merchant(session_factory)
    a, b = two_skus(session_factory, merchant_id, 5, 5)
    foreign, _ = two_skus(session_factory, other, 5, 5)
    with unit_of_work(session_factory) as s:
        draft = make_product(s, merchant_id, "draft", on_sale=False)
        draft_sku = s.scalars(select(Sku.id).where(Sku.product_id == draft.id)).one()

    with session_factory() as s:
        found = service.load_skus_for_checkout(s, merchant_id, [b, a, a])
        assert sorted(found) == [a, b] and found[a][1].id == found[b][1].id

        for ids, code, bad in [
            ([a, foreign], "sku_not_found", foreign),
            ([a, 987654321], "sku_not_found", 987654321),
            ([a, draft_sku], "product_not_on_sale", draft_sku),
        ]:
            with pytest.raises(DomainError) as err:
                service.load_skus_for_checkout(s, merchant_id, ids)
            assert (err.value.code, err.value.params["sku_id"]) == (code, bad)
            assert err.value.status == (404 if code == "sku_not_found" else 409)

    with unit_of_work(session_factory) as s:
        sku = s.get(Sku, b)
        assert sku is not None
        sku.active = False
    with session_factory() as s, pytest.raises(DomainError) as err:
        service.load_skus_for_checkout(s, merchant_id, [a, b])
    assert err.value.code == "product_not_on_sale" and err.value.params["sku_id"] == b


def test_get_product_and_get_sku_scope_by_merchant(session_factory: sessionmaker[Session]) -> None:
    merchant_id = new_merchant(session_factory)
    other = new_merchant(session_factory)
    a, _ = two_skus(session_factory, merchant_id, 1, 1)
    with session_factory() as s:
        sku = service.get_sku(s, merchant_id, a)
        assert service.get_product(s, merchant_id, sku.product_id).id == sku.product_id
        for call in (lambda: service.get_sku(s, other, a), lambda: service.get_product(s, other, sku.product_id)):
            with pytest.raises(DomainError) as err:
                call()
            assert err.value.code == "not_found" and err.value.status == 404


def test_concurrent_stock_decrements_never_oversell(session_factory: sessionmaker[Session]) -> None:
    """16 parallel connections each take 1 unit of 10 through ``adjust_stock``: exactly 10 succeed."""
    merchant_id = new_merchant(session_factory)
    a, _ = two_skus(session_factory, merchant_id, 10, 0)
    results: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def take() -> None:
        barrier.wait()
        try:
            with unit_of_work(session_factory) as s:
                service.adjust_stock(s, merchant_id, a, mode="delta", quantity=-1)
            outcome = "ok"
        except DomainError as exc:
            outcome = exc.code
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=take) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] * 10 + ["stock_would_go_negative"] * 6
    assert stock_of(session_factory, a) == [0]
