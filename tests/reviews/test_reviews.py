"""Product reviews: a customer reviews an item of their shipped / completed order once; bad
input changes nothing; the store lists visible reviews with the rating summary; the admin
hides, shows and replies; the first review completes the loyalty task once."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.kit.timeutil import utcnow
from siyu.loyalty.models import PointsEntry
from siyu.orders.models import Order
from siyu.reviews.models import ProductReview
from tests.conftest import Tenant
from tests.factories import aftersales as af
from tests.referral import helpers as h

STORE = "/api/store/v1"
ADMIN = "/api/admin/v1"


def _reviews(session_factory: sessionmaker[Session], merchant_id: int) -> list[tuple[Any, ...]]:
    with session_factory() as s:
        rows = s.scalars(
            select(ProductReview).where(ProductReview.merchant_id == merchant_id).order_by(ProductReview.id)
        )
        return [(r.id, r.order_line_id, r.rating, r.content, r.status, r.reply) for r in rows]


def _task_entries(session_factory: sessionmaker[Session], merchant_id: int, member_id: int, task: str) -> int:
    with session_factory() as s:
        return int(
            s.scalar(
                select(func.count()).where(
                    PointsEntry.merchant_id == merchant_id,
                    PointsEntry.member_id == member_id,
                    PointsEntry.idempotency_key.like(f"task:{task}:%"),
                )
            )
            or 0
        )


def _post(client: TestClient, headers: dict[str, str], line: int, rating: int = 5, **kw: Any) -> Any:
    body = {
        "order_line_id": line,
        "rating": rating,
        "content": kw.pop("content", "镜框很轻，戴着舒服"),
        "images": kw.pop("images", ["https://img.example.com/a.jpg"]),
        **kw,
    }
    return client.post(f"{STORE}/reviews", json=body, headers=headers)


def test_review_lifecycle_and_refusals(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku_a, sku_b = af.make_product(session_factory, tenant.id, [9900, 12900])
    _, alice = h.login(client, tenant)
    _, bob = h.login(client, tenant)
    order = af.paid_order(client, tenant, session_factory, alice, [(sku_a, 1), (sku_b, 1)])
    line_a, line_b = af.line_id(order, sku_a), af.line_id(order, sku_b)
    product_id = next(ln["product_id"] for ln in order["lines"])

    def refused(r: Any, status: int, code: str) -> None:
        assert r.status_code == status, r.text
        assert r.json()["code"] == code
        assert _reviews(session_factory, tenant.id) == []

    refused(_post(client, alice, line_a), 409, "review_not_allowed")  # paid, not shipped yet
    af.ship(client, tenant, order["id"])
    refused(_post(client, bob, line_a), 404, "not_found")  # not Bob's order
    refused(_post(client, alice, 10**12), 404, "not_found")
    for bad in (
        {"rating": 0},
        {"rating": 6},
        {"images": ["ftp://x"]},
        {"images": ["https://x/y.jpg"] * 10},
        {"content": "长" * 1001},
        {"extra": 1},
    ):
        refused(_post(client, alice, line_a, **bad), 422, "validation_error")

    r = _post(client, alice, line_a, rating=5)
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["rating"], first["status"], first["product_id"]) == (5, "visible", product_id)
    again = _post(client, alice, line_a, rating=5)  # a retried submit returns the first review
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    before = _reviews(session_factory, tenant.id)
    r = _post(client, alice, line_a, rating=1, content="改主意了")
    assert r.status_code == 409 and r.json()["code"] == "review_exists"
    assert _reviews(session_factory, tenant.id) == before
    assert _post(client, alice, line_b, rating=2, content="一般", images=[]).status_code == 201

    listing = client.get(f"{STORE}/products/{product_id}/reviews", headers=tenant.store_headers).json()
    assert listing["summary"] == {
        "count": 2,
        "average_rating": 3.5,
        "counts": {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1},
    }
    assert [i["rating"] for i in listing["items"]] == [2, 5]  # newest first
    # anyone may read the product page: the reviewer shows as a masked nickname, never an id
    assert all("member_id" not in i and i["reviewer"] for i in listing["items"])
    assert all(i["reviewer"] == "微信用户" or "*" in i["reviewer"] for i in listing["items"])
    mine = client.get(f"{STORE}/me/reviews", headers=alice).json()
    assert mine["total"] == 2
    unknown = client.get(f"{STORE}/products/999999/reviews", headers=tenant.store_headers)
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"

    # moderation: hide, reply, show — audited; the summary counts visible reviews only
    low = listing["items"][0]["id"]
    r = client.post(f"{ADMIN}/reviews/{low}/hide", headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["status"] == "hidden"
    listing = client.get(f"{STORE}/products/{product_id}/reviews", headers=tenant.store_headers).json()
    assert (listing["summary"]["count"], listing["summary"]["average_rating"], listing["total"]) == (
        1,
        5.0,
        1,
    )
    r = client.put(
        f"{ADMIN}/reviews/{first['id']}/reply", json={"reply": "感谢支持！"}, headers=tenant.admin_headers
    )
    assert r.status_code == 200 and r.json()["reply"] == "感谢支持！"
    assert (
        client.put(
            f"{ADMIN}/reviews/{first['id']}/reply", json={"reply": ""}, headers=tenant.admin_headers
        ).status_code
        == 422
    )
    listing = client.get(f"{STORE}/products/{product_id}/reviews", headers=tenant.store_headers).json()
    assert listing["items"][0]["reply"] == "感谢支持！"
    admin_list = client.get(
        f"{ADMIN}/reviews", params={"status": "hidden"}, headers=tenant.admin_headers
    ).json()
    assert [i["id"] for i in admin_list["items"]] == [low]
    replied = client.get(f"{ADMIN}/reviews", params={"replied": "true"}, headers=tenant.admin_headers).json()
    assert [i["id"] for i in replied["items"]] == [first["id"]]
    assert (
        client.post(f"{ADMIN}/reviews/{low}/show", headers=tenant.admin_headers).json()["status"] == "visible"
    )
    listing = client.get(f"{STORE}/products/{product_id}/reviews", headers=tenant.store_headers).json()
    assert listing["summary"]["count"] == 2
    other = h.other_tenant(session_factory)
    assert client.post(f"{ADMIN}/reviews/{low}/hide", headers=other.admin_headers).status_code == 404


def test_first_review_completes_the_loyalty_task_once(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sku_a, sku_b = af.make_product(session_factory, tenant.id, [5000, 6000])
    member_id, alice = h.login(client, tenant)
    order = af.paid_order(client, tenant, session_factory, alice, [(sku_a, 1), (sku_b, 1)], completed=True)
    assert _post(client, alice, af.line_id(order, sku_a)).status_code == 201
    h.drain(session_factory, settings, tenant)
    assert _task_entries(session_factory, tenant.id, member_id, "first_review") == 1
    assert _post(client, alice, af.line_id(order, sku_b), rating=4).status_code == 201
    h.drain(session_factory, settings, tenant)
    h.drain(session_factory, settings, tenant)
    assert _task_entries(session_factory, tenant.id, member_id, "first_review") == 1


def test_demo_data_reviews_completed_orders_once(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    from siyu.db.session import unit_of_work
    from siyu.reviews import demo_data

    (sku,) = af.make_product(session_factory, tenant.id, [3000])
    buyers = [h.login(client, tenant)[1] for _ in range(3)]
    for headers in buyers:
        af.paid_order(client, tenant, session_factory, headers, [(sku, 1)], completed=True)
    af.paid_order(client, tenant, session_factory, buyers[0], [(sku, 1)])  # not completed: not reviewed
    month_ago = utcnow() - dt.timedelta(days=30)
    with unit_of_work(session_factory) as s:  # the demo's orders completed in the past
        s.execute(
            update(Order).where(Order.merchant_id == tenant.id, Order.completed_at.is_not(None))
            .values(completed_at=month_ago)
        )
    for _ in range(2):
        with unit_of_work(session_factory) as s:
            demo_data.seed(s, tenant.id)
    rows = _reviews(session_factory, tenant.id)
    assert [r[2] for r in rows] == [5, 5, 5]
    with session_factory() as s:  # dated after the order completed, within a week, not at seed time
        dates = s.execute(select(ProductReview.created_at).where(ProductReview.merchant_id == tenant.id)).scalars()
        for created in dates:
            assert month_ago < created <= month_ago + dt.timedelta(days=7)


def test_a_merged_member_reviews_the_orders_of_the_member_folded_into_it(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    (sku,) = af.make_product(session_factory, tenant.id, [4000])
    keep_id, keep = h.login(client, tenant)
    _, drop = h.login(client, tenant)
    order = af.paid_order(client, tenant, session_factory, drop, [(sku, 1)], shipped=True)
    code = "sandbox-77001234"
    assert client.post(f"{STORE}/me/phone", json={"code": code}, headers=drop).status_code == 200
    assert client.post(f"{STORE}/me/phone", json={"code": code}, headers=keep).json()["id"] == keep_id
    r = _post(client, keep, af.line_id(order, sku))
    assert r.status_code == 201, r.text
    assert r.json()["member_id"] == keep_id


def test_an_order_line_id_beyond_bigint_is_a_field_error(client: TestClient, tenant: Tenant) -> None:
    """Was a 500 (SQLite OverflowError, PostgreSQL 'bigint out of range'); found fuzzing POST /reviews."""
    from tests.conftest import customer_login

    headers = customer_login(client, tenant)
    r = _post(client, headers, 2**70)
    assert r.status_code == 422 and [(f["path"], f["code"]) for f in r.json()["fields"]] == [
        ("body.order_line_id", "less_than_equal")
    ], r.text
    r = _post(client, headers, 0)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "greater_than_equal"
