"""Stacking with the other stages as configured: flash-sale lines, coupons, free shipping; and
the idempotency of submit replays and of the cancel release."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.coupons import service as coupons
from siyu.coupons.schemas import TemplateIn
from siyu.db.session import unit_of_work
from siyu.orders import service as orders_service
from siyu.promotions import service
from siyu.promotions.models import PromotionMemberCounter, PromotionUsage
from tests.conftest import Tenant
from tests.factories.orders import make_freight_template, make_sku
from tests.factories.promotions import STORE, create_promotion, entries, preview, shopper
from tests.flash_sales.helpers import make_sale


def _coupon(factory: sessionmaker[Session], merchant_id: int, member_id: int, amount: int) -> None:
    body: dict[str, Any] = {"name": "券", "kind": "fixed", "amount": amount, "validity_mode": "relative",
                            "valid_days": 30, "status": "active", "channels": ["api"]}
    with unit_of_work(factory) as s:
        t = coupons.create_template(s, merchant_id, TemplateIn.model_validate(body), actor=("system", None))
        coupons.issue_to_member(s, merchant_id, t.id, member_id, source="api", idempotency_key=uuid.uuid4().hex)


def _order_member(factory: sessionmaker[Session], tenant: Tenant, order_id: int) -> int:
    with factory() as s:
        return orders_service.get_order(s, tenant.id, order_id).member_id


def test_flash_sale_line_is_left_to_the_flash_sale(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    flash = make_sku(session_factory, tenant.id, price=30000, free_shipping=True)
    plain = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    _, (item_id,) = make_sale(session_factory, tenant.id, [{"sku_id": flash, "flash_price": 9900, "activity_stock": 5}])
    create_promotion(client, tenant, "limited_discount", {"items": [{"sku_id": flash, "price": 5000}]})
    create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 20000, "discount": 2000}]})
    headers = shopper(client, tenant)
    out = preview(client, headers, [(flash, 1), (plain, 1)], options={"flash_sale": {"item_id": item_id}}).json()
    flash_line = out["lines"][0]
    assert flash_line["payable_amount"] == 9900 and "promotion" not in flash_line["flags"]
    assert [r["code"].split(":")[0] for r in entries(out, "item_promotions")] == ["flash_sale"]
    assert entries(out, "order_promotions") == []  # only ¥100 of eligible goods: the flash line does not count


def test_coupons_skip_lines_whose_promotion_forbids_them(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    promo_sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    plain = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    create_promotion(client, tenant, "limited_discount", {"items": [{"sku_id": promo_sku, "price": 8000}]},
                     allows_coupons=False)
    headers = shopper(client, tenant)
    first = client.post(f"{STORE}/checkout/submit", json={"items": [{"sku_id": plain, "quantity": 1}]},
                        headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
    member_id = _order_member(session_factory, tenant, first.json()["id"])
    _coupon(session_factory, tenant.id, member_id, 3000)
    out = preview(client, headers, [(promo_sku, 1)]).json()
    assert entries(out, "coupons") == [] and out["payable_amount"] == 8000
    # the reason names the promotion's rule, not the product's own switch (which allows coupons)
    assert [n["code"] for n in out["notes"]["coupons"]] == ["activity_excludes_coupons"]
    out = preview(client, headers, [(promo_sku, 1), (plain, 1)]).json()
    (row,) = entries(out, "coupons")
    assert row["amount"] == -3000
    assert "coupons" not in out["lines"][0]["discounts"] and out["lines"][1]["discounts"]["coupons"] == 3000


def test_spend_save_with_free_shipping_frees_the_order(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    template = make_freight_template(session_factory, tenant.id, default=True)
    sku = make_sku(session_factory, tenant.id, price=10000, freight_template_id=template)
    create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 30000, "discount": 3000}]},
                     free_shipping=True)
    headers = shopper(client, tenant)
    assert preview(client, headers, [(sku, 2)]).json()["freight_amount"] > 0
    out = preview(client, headers, [(sku, 3)]).json()
    assert out["freight_amount"] == 0 and out["payable_amount"] == 30000 - 3000


def test_replayed_submit_and_repeated_release_count_once(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    promo = create_promotion(client, tenant, "limited_discount", {"items": [{"sku_id": sku, "price": 8000}]},
                             per_member_limit=5)
    headers = shopper(client, tenant)
    body = {"items": [{"sku_id": sku, "quantity": 2}]}
    key = {**headers, "Idempotency-Key": "same-key"}
    first = client.post(f"{STORE}/checkout/submit", json=body, headers=key)
    again = client.post(f"{STORE}/checkout/submit", json=body, headers=key)
    assert first.status_code == 201 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
    order_id = first.json()["id"]

    def ledger() -> tuple[int, int | None]:
        with session_factory() as s:
            usages = s.scalar(select(func.count()).select_from(PromotionUsage).where(
                PromotionUsage.merchant_id == tenant.id))
            units = s.scalar(select(PromotionMemberCounter.units).where(
                PromotionMemberCounter.promotion_id == promo["id"]))
            return int(usages or 0), units

    assert ledger() == (1, 2)
    with unit_of_work(session_factory) as s:
        orders_service.cancel(s, tenant.id, order_id, reason="test", actor=("system", None))
        assert service.release_order(s, tenant.id, order_id) == 1
    with unit_of_work(session_factory) as s:
        assert service.release_order(s, tenant.id, order_id) == 0  # the job running twice gives back once
    assert ledger() == (1, 0)


def test_a_gift_taken_by_a_concurrent_order_fails_the_submit_cleanly_and_a_retry_goes_without_it(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], monkeypatch: Any
) -> None:
    """The documented race: the gift's stock is taken by the checkout's binding reservation; if
    another order took the last unit since the pricing, the submit is refused as a whole (nothing
    written) and the retry prices again: no gift, a note."""
    from sqlalchemy import update

    from siyu.catalog.models import Sku
    from siyu.orders.models import Order
    from siyu.orders.pricing import PricingContext
    from tests.factories.orders import sku_stock
    from tests.factories.promotions import submit

    sku = make_sku(session_factory, tenant.id, price=20000, free_shipping=True)
    gift = make_sku(session_factory, tenant.id, price=1500, stock=1, free_shipping=True)
    create_promotion(client, tenant, "spend_gift", {"tiers": [{"threshold": 30000, "gift_sku_id": gift}]})
    headers = shopper(client, tenant)
    real_take = service.take

    def raced(ctx: PricingContext, order_id: int) -> None:
        # another order takes the last gift between this order's pricing and its stock reservation
        ctx.session.execute(update(Sku).where(Sku.id == gift).values(stock=0))
        real_take(ctx, order_id)

    monkeypatch.setattr(service, "take", raced)
    r = submit(client, headers, [(sku, 2)])
    assert r.status_code == 409 and r.json()["code"] == "insufficient_stock", r.text
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == tenant.id)) == 0
        assert s.scalar(select(func.count()).select_from(PromotionUsage).where(
            PromotionUsage.merchant_id == tenant.id)) == 0
    assert sku_stock(session_factory, gift) == 1  # the simulated competitor rolled back with it
    monkeypatch.setattr(service, "take", real_take)
    with unit_of_work(session_factory) as s:  # the competitor really takes the last unit
        s.execute(update(Sku).where(Sku.id == gift).values(stock=0))
    r = submit(client, headers, [(sku, 2)])
    assert r.status_code == 201, r.text
    assert [ln["sku_id"] for ln in r.json()["lines"]] == [sku]


def test_a_cancel_returns_the_gift_unit(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    from tests.factories.orders import sku_stock
    from tests.factories.promotions import submit

    sku = make_sku(session_factory, tenant.id, price=20000, free_shipping=True)
    gift = make_sku(session_factory, tenant.id, price=1500, stock=3, free_shipping=True)
    create_promotion(client, tenant, "spend_gift", {"tiers": [{"threshold": 30000, "gift_sku_id": gift,
                                                               "quantity": 2}]})
    headers = shopper(client, tenant)
    order = submit(client, headers, [(sku, 2)]).json()
    assert [ln["sku_id"] for ln in order["lines"]] == [sku, gift]
    assert sku_stock(session_factory, gift) == 1
    r = client.post(f"{STORE}/orders/{order['id']}/cancel", headers=headers)
    assert r.status_code == 200, r.text
    assert sku_stock(session_factory, gift) == 3


def test_a_flash_sale_line_counts_for_spend_and_save_only_when_the_sale_allows_it(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    flash = make_sku(session_factory, tenant.id, price=30000, free_shipping=True)
    plain = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    item = {"sku_id": flash, "flash_price": 9900, "activity_stock": 5}
    _, (off,) = make_sale(session_factory, tenant.id, [item])
    _, (on,) = make_sale(session_factory, tenant.id, [item], allows_order_promotions=True)
    save = create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 15000, "discount": 2000}]})
    headers = shopper(client, tenant)
    out = preview(client, headers, [(flash, 1), (plain, 1)], coupon_ids=[],
                  options={"flash_sale": {"item_id": off}}).json()
    assert entries(out, "order_promotions") == []  # ¥100 of eligible goods only
    # allowed: ¥99 + ¥100 = ¥199 ≥ ¥150 saves ¥20, allocated 99:100 by largest remainder (994.97 / 1005.03)
    out = preview(client, headers, [(flash, 1), (plain, 1)], coupon_ids=[],
                  options={"flash_sale": {"item_id": on}}).json()
    assert [(r["code"], r["amount"]) for r in entries(out, "order_promotions")] == [(f"spend_save:{save['id']}", -2000)]
    assert [ln["discounts"].get("order_promotions", 0) for ln in out["lines"]] == [995, 1005]
    assert [ln["payable_amount"] for ln in out["lines"]] == [9900 - 995, 10000 - 1005]


STACKING = {"allows_coupons", "allows_points", "allows_order_promotions", "free_shipping", "per_member_limit"}


def test_every_activity_kind_states_the_same_stacking_settings() -> None:
    """Flash sale, group buy, bargain and the promotions table (limited-time discount, first-order
    special, add-on deal, spend-and-save, spend-and-gift): each takes the five settings on create,
    can change them (before the start), and shows them to the operator and on its store page."""
    from siyu.bargains import schemas as bargains
    from siyu.flash_sales import schemas as flash_sales
    from siyu.group_buys import schemas as group_buys
    from siyu.promotions import schemas as promotions

    kinds: dict[str, tuple[type[BaseModel], ...]] = {
        "flash_sale": (flash_sales.FlashSaleIn, flash_sales.FlashSaleUpdate, flash_sales.FlashSaleOut,
                       flash_sales.StoreItemOut),
        "group_buy": (group_buys.GroupBuyIn, group_buys.GroupBuyUpdate, group_buys.GroupBuyOut,
                      group_buys.StoreGroupBuyOut),
        "bargain": (bargains.BargainActivityIn, bargains.BargainActivityUpdate, bargains.BargainActivityOut,
                    bargains.StoreActivityOut),
        "promotion": (promotions.PromotionIn, promotions.PromotionUpdate, promotions.PromotionOut,
                      promotions.StorePromotionOut),
    }
    for kind, models in kinds.items():
        for model in models:
            assert set(model.model_fields) >= STACKING, (kind, model.__name__, STACKING - set(model.model_fields))
        create = models[0]
        for name in STACKING - {"per_member_limit"}:
            assert create.model_fields[name].description, (kind, name)
    # the defaults follow common practice: activity items take no coupon, points or order promotion
    for create in (flash_sales.FlashSaleIn, group_buys.GroupBuyIn, bargains.BargainActivityIn):
        assert [create.model_fields[n].default for n in ("allows_coupons", "allows_points",
                                                         "allows_order_promotions")] == [False, False, False]
