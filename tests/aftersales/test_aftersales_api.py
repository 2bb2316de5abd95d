"""After-sales over HTTP: return and refund, refund only, exchange, and every refused input.

Each refused call asserts its error code and that nothing changed (``snapshot``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from siyu.tenancy import service as tenancy_service
from tests.conftest import Tenant, customer_login, unique
from tests.factories.aftersales import (
    ADMIN,
    STORE,
    admin_order,
    drain,
    line_id,
    make_product,
    paid_order,
    request_aftersale,
    set_order_times,
    snapshot,
    stock_of,
    submit_order,
)


@pytest.fixture
def shop(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> dict[str, Any]:
    a, b, a2 = make_product(session_factory, tenant.id, [3333, 5000, 3333])
    return {"a": a, "b": b, "a2": a2, "headers": customer_login(client, tenant)}


def _admin(client: TestClient, tenant: Tenant, method: str, path: str, **kw: Any) -> Any:
    return client.request(method, f"{ADMIN}{path}", headers=tenant.admin_headers, **kw)


def _refused(resp: Any, status: int, code: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == code, resp.text
    assert after == before


# -- happy paths -------------------------------------------------------------------------------


def test_return_and_refund_full_flow(
    client: TestClient,
    tenant: Tenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
    shop: dict[str, Any],
) -> None:
    h = shop["headers"]
    order = paid_order(
        client,
        tenant,
        session_factory,
        h,
        [(shop["a"], 3), (shop["b"], 2)],
        discount_amount=1000,
        completed=True,
    )
    assert order["status"] == "completed" and order["paid_amount"] == 3333 * 3 + 5000 * 2 - 1000
    la, lb = line_id(order, shop["a"]), line_id(order, shop["b"])
    pay_a = next(ln["payable_amount"] for ln in order["lines"] if ln["id"] == la)
    assert stock_of(session_factory, tenant.id, shop["a"]) == 7

    # The customer asks to return 2 of the 3 units of A.
    r = request_aftersale(client, h, order["id"], "return_refund", [(la, 2)], images=["https://img/1.jpg"])
    assert r.status_code == 201, r.text
    aftersale = r.json()
    share = pay_a * 2 // 3  # the allocated paid share of 2 units
    assert aftersale["status"] == "requested" and aftersale["computed_amount"] == share
    assert aftersale["refund_amount"] == share and aftersale["lines"][0]["amount"] == share
    asid = aftersale["id"]

    r = _admin(client, tenant, "POST", f"/aftersales/{asid}/approve", json={})
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text

    r = client.post(
        f"{STORE}/aftersales/{asid}/return-shipment",
        json={"carrier": "SF", "tracking_no": "SF200"},
        headers=h,
    )
    assert r.status_code == 200 and r.json()["status"] == "awaiting_return", r.text

    r = _admin(client, tenant, "POST", f"/aftersales/{asid}/receive", json={"restock": True})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "refunding" and r.json()["refund_id"] and r.json()["restocked"] is True
    assert stock_of(session_factory, tenant.id, shop["a"]) == 9  # the 2 returned units are back

    drain(session_factory, settings, tenant)
    detail = _admin(client, tenant, "GET", f"/aftersales/{asid}").json()
    assert detail["status"] == "completed" and detail["completed_at"]
    actions = [(e["action"], e["to_state"]) for e in detail["audit"]]
    assert actions == [
        ("requested", "requested"),
        ("approved", "approved"),
        ("return_shipped", "awaiting_return"),
        ("received", "returned"),
        ("refund_requested", "refunding"),
        ("refunded", "completed"),
    ]
    order = admin_order(client, tenant, order["id"])
    assert order["refunded_amount"] == share
    line_a = next(ln for ln in order["lines"] if ln["id"] == la)
    assert (line_a["refunded_quantity"], line_a["refunded_amount"]) == (2, share)

    # Then everything that is left: exactly the full paid amount in total.
    r = request_aftersale(client, h, order["id"], "return_refund", [(la, 1), (lb, 2)])
    assert r.status_code == 201, r.text
    second = r.json()
    assert second["computed_amount"] == order["paid_amount"] - share
    _admin(client, tenant, "POST", f"/aftersales/{second['id']}/approve")
    client.post(
        f"{STORE}/aftersales/{second['id']}/return-shipment",
        json={"carrier": "YTO", "tracking_no": "Y1"},
        headers=h,
    )
    r = _admin(client, tenant, "POST", f"/aftersales/{second['id']}/receive", json={"restock": False})
    assert r.json()["status"] == "refunding", r.text
    assert stock_of(session_factory, tenant.id, shop["a"]) == 9  # restock=false keeps stock as it was
    drain(session_factory, settings, tenant)
    order = admin_order(client, tenant, order["id"])
    assert order["refunded_amount"] == order["paid_amount"]
    assert all(ln["refunded_amount"] == ln["payable_amount"] for ln in order["lines"])
    assert client.get(f"{STORE}/aftersales/{second['id']}", headers=h).json()["status"] == "completed"

    mine = client.get(f"{STORE}/aftersales", headers=h).json()
    assert mine["total"] == 2 and {a["status"] for a in mine["items"]} == {"completed"}


def test_refund_only_before_shipment(
    client: TestClient,
    tenant: Tenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
    shop: dict[str, Any],
) -> None:
    h = shop["headers"]
    order = paid_order(client, tenant, session_factory, h, [(shop["a"], 1), (shop["b"], 2)])
    lb = line_id(order, shop["b"])

    # No goods went out: nothing to return or exchange.
    before = snapshot(session_factory, tenant.id)
    r = request_aftersale(client, h, order["id"], "return_refund", [(lb, 1)])
    _refused(r, 409, "aftersale_kind_not_allowed", before, snapshot(session_factory, tenant.id))

    r = request_aftersale(client, h, order["id"], "refund_only", [(lb, 1)], reason_code="changed_mind")
    assert r.status_code == 201, r.text
    asid = r.json()["id"]
    assert r.json()["refund_amount"] == 5000

    r = _admin(client, tenant, "POST", f"/aftersales/{asid}/approve")
    assert r.json()["status"] == "refunding", r.text
    drain(session_factory, settings, tenant)
    assert client.get(f"{STORE}/aftersales/{asid}", headers=h).json()["status"] == "completed"
    order = admin_order(client, tenant, order["id"])
    assert order["refunded_amount"] == 5000 and order["refund_status"] == "partial"
    assert stock_of(session_factory, tenant.id, shop["b"]) == 9  # refunded before shipment: back in stock

    # After shipment refund-only is off by default; the merchant can allow it.
    from tests.factories.aftersales import ship

    ship(client, tenant, order["id"])
    before = snapshot(session_factory, tenant.id)
    r = request_aftersale(client, h, order["id"], "refund_only", [(lb, 1)])
    _refused(r, 409, "aftersale_kind_not_allowed", before, snapshot(session_factory, tenant.id))
    policy = _admin(client, tenant, "GET", "/aftersale-policy").json()
    assert policy.pop("is_default") and policy["window_days"] == settings.aftersales_window_days
    r = _admin(
        client, tenant, "PUT", "/aftersale-policy", json={**policy, "refund_only_after_shipment": True}
    )
    assert r.status_code == 200 and r.json()["refund_only_after_shipment"] and not r.json()["is_default"]
    r = request_aftersale(client, h, order["id"], "refund_only", [(lb, 1)])
    assert r.status_code == 201, r.text


def test_operator_may_lower_the_refund_but_not_raise_it(
    client: TestClient,
    tenant: Tenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
    shop: dict[str, Any],
) -> None:
    h = shop["headers"]
    order = paid_order(client, tenant, session_factory, h, [(shop["a"], 1), (shop["b"], 1)])
    lines = [(line_id(order, shop["a"]), 1), (line_id(order, shop["b"]), 1)]
    asid = request_aftersale(client, h, order["id"], "refund_only", lines).json()["id"]

    # The customer cannot name an amount at all.
    before = snapshot(session_factory, tenant.id)
    r = client.post(
        f"{STORE}/orders/{order['id']}/aftersales",
        json={
            "kind": "refund_only",
            "reason_code": "other",
            "lines": [{"order_line_id": lines[0][0], "quantity": 1}],
            "refund_amount": 999999,
        },
        headers=h,
    )
    _refused(r, 422, "validation_error", before, snapshot(session_factory, tenant.id))

    for bad in (8334, 0, -1):
        r = _admin(client, tenant, "POST", f"/aftersales/{asid}/approve", json={"refund_amount": bad})
        _refused(r, 422, "aftersale_amount_invalid", before, snapshot(session_factory, tenant.id))

    r = _admin(
        client, tenant, "POST", f"/aftersales/{asid}/approve", json={"refund_amount": 8000, "note": "partial"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["refund_amount"] == 8000 and sum(ln["refund_amount"] for ln in r.json()["lines"]) == 8000
    drain(session_factory, settings, tenant)
    assert admin_order(client, tenant, order["id"])["refunded_amount"] == 8000


def test_exchange_flow(
    client: TestClient,
    tenant: Tenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
    shop: dict[str, Any],
) -> None:
    h = shop["headers"]
    order = paid_order(client, tenant, session_factory, h, [(shop["a"], 2)], shipped=True)
    la = line_id(order, shop["a"])

    before = snapshot(session_factory, tenant.id)
    r = request_aftersale(
        client,
        h,
        order["id"],
        "exchange",
        [],
        line_bodies=[{"order_line_id": la, "quantity": 1, "exchange_sku_id": shop["b"]}],
    )
    _refused(r, 422, "aftersale_exchange_sku_invalid", before, snapshot(session_factory, tenant.id))

    r = request_aftersale(
        client,
        h,
        order["id"],
        "exchange",
        [],
        reason_code="size_fit",
        line_bodies=[{"order_line_id": la, "quantity": 1, "exchange_sku_id": shop["a2"]}],
    )
    assert r.status_code == 201, r.text
    asid = r.json()["id"]
    assert r.json()["refund_amount"] == 0

    before = snapshot(session_factory, tenant.id)
    r = _admin(client, tenant, "POST", f"/aftersales/{asid}/approve", json={"refund_amount": 100})
    _refused(r, 422, "aftersale_amount_invalid", before, snapshot(session_factory, tenant.id))
    r = _admin(
        client,
        tenant,
        "POST",
        f"/aftersales/{asid}/ship-exchange",
        json={"carrier": "SF", "tracking_no": "X"},
    )
    _refused(r, 409, "aftersale_state_invalid", before, snapshot(session_factory, tenant.id))

    assert _admin(client, tenant, "POST", f"/aftersales/{asid}/approve").json()["status"] == "approved"
    r = client.post(
        f"{STORE}/aftersales/{asid}/return-shipment", json={"carrier": "ZTO", "tracking_no": "Z1"}, headers=h
    )
    assert r.json()["status"] == "awaiting_return"
    r = _admin(client, tenant, "POST", f"/aftersales/{asid}/receive")
    assert r.json()["status"] == "returned", r.text
    assert stock_of(session_factory, tenant.id, shop["a"]) == 9  # 10 - 2 sold + 1 returned
    r = _admin(
        client,
        tenant,
        "POST",
        f"/aftersales/{asid}/ship-exchange",
        json={"carrier": "SF", "tracking_no": "SF9"},
    )
    assert r.status_code == 200 and r.json()["status"] == "exchange_shipped", r.text
    assert stock_of(session_factory, tenant.id, shop["a2"]) == 9  # the replacement left the warehouse
    r = client.post(f"{STORE}/aftersales/{asid}/confirm-receipt", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    order = admin_order(client, tenant, order["id"])
    assert order["refunded_amount"] == 0

    # The timer completes a replacement nobody confirmed.
    r = request_aftersale(client, h, order["id"], "exchange", [(la, 1)])
    asid = r.json()["id"]
    _admin(client, tenant, "POST", f"/aftersales/{asid}/approve")
    client.post(
        f"{STORE}/aftersales/{asid}/return-shipment", json={"carrier": "ZTO", "tracking_no": "Z2"}, headers=h
    )
    _admin(client, tenant, "POST", f"/aftersales/{asid}/receive")
    _admin(
        client,
        tenant,
        "POST",
        f"/aftersales/{asid}/ship-exchange",
        json={"carrier": "SF", "tracking_no": "SF10"},
    )
    drain(session_factory, settings, tenant)
    assert client.get(f"{STORE}/aftersales/{asid}", headers=h).json()["status"] == "exchange_shipped"
    drain(
        session_factory,
        settings,
        tenant,
        now=utcnow() + dt.timedelta(days=settings.order_auto_complete_days + 1),
    )
    assert client.get(f"{STORE}/aftersales/{asid}", headers=h).json()["status"] == "completed"


def test_exchange_out_of_stock_changes_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], shop: dict[str, Any]
) -> None:
    h = shop["headers"]
    order = paid_order(client, tenant, session_factory, h, [(shop["a"], 1)], shipped=True)
    la = line_id(order, shop["a"])
    r = request_aftersale(
        client,
        h,
        order["id"],
        "exchange",
        [],
        line_bodies=[{"order_line_id": la, "quantity": 1, "exchange_sku_id": shop["a2"]}],
    )
    asid = r.json()["id"]
    _admin(client, tenant, "POST", f"/aftersales/{asid}/approve")
    client.post(
        f"{STORE}/aftersales/{asid}/return-shipment", json={"carrier": "ZTO", "tracking_no": "Z"}, headers=h
    )
    _admin(client, tenant, "POST", f"/aftersales/{asid}/receive", json={"restock": False})
    from siyu.catalog.models import Sku

    with unit_of_work(session_factory) as s:
        sku = s.get(Sku, shop["a2"])
        assert sku is not None
        sku.stock = 0
    before = snapshot(session_factory, tenant.id)
    r = _admin(
        client,
        tenant,
        "POST",
        f"/aftersales/{asid}/ship-exchange",
        json={"carrier": "SF", "tracking_no": "S"},
    )
    _refused(r, 409, "insufficient_stock", before, snapshot(session_factory, tenant.id))


def test_cancel_and_reject_free_the_lines(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], shop: dict[str, Any]
) -> None:
    h = shop["headers"]
    order = paid_order(client, tenant, session_factory, h, [(shop["a"], 2)], completed=True)
    la = line_id(order, shop["a"])
    asid = request_aftersale(client, h, order["id"], "return_refund", [(la, 1)]).json()["id"]

    # Duplicate open request on the same line.
    before = snapshot(session_factory, tenant.id)
    r = request_aftersale(client, h, order["id"], "return_refund", [(la, 1)])
    _refused(r, 422, "aftersale_quantity_invalid", before, snapshot(session_factory, tenant.id))
    assert r.json()["fields"][0]["code"] == "line_in_open_aftersale"

    r = client.post(f"{STORE}/aftersales/{asid}/cancel", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    before = snapshot(session_factory, tenant.id)
    r = client.post(f"{STORE}/aftersales/{asid}/cancel", headers=h)
    _refused(r, 409, "aftersale_state_invalid", before, snapshot(session_factory, tenant.id))

    asid = request_aftersale(client, h, order["id"], "return_refund", [(la, 2)]).json()["id"]
    before = snapshot(session_factory, tenant.id)
    for body in ({}, {"reason": "   "}):
        r = _admin(client, tenant, "POST", f"/aftersales/{asid}/reject", json=body)
        _refused(r, 422, "aftersale_reject_reason_required", before, snapshot(session_factory, tenant.id))
    r = _admin(
        client, tenant, "POST", f"/aftersales/{asid}/reject", json={"reason": "镜片已定制，不支持退货"}
    )
    assert r.status_code == 200 and r.json()["status"] == "rejected" and r.json()["reject_reason"]
    before = snapshot(session_factory, tenant.id)
    r = _admin(client, tenant, "POST", f"/aftersales/{asid}/approve")
    _refused(r, 409, "aftersale_state_invalid", before, snapshot(session_factory, tenant.id))
    assert request_aftersale(client, h, order["id"], "return_refund", [(la, 2)]).status_code == 201


def test_illegal_transitions(
    client: TestClient,
    tenant: Tenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
    shop: dict[str, Any],
) -> None:
    h = shop["headers"]
    order = paid_order(client, tenant, session_factory, h, [(shop["a"], 1), (shop["b"], 1)], shipped=True)
    ret = request_aftersale(client, h, order["id"], "return_refund", [(line_id(order, shop["a"]), 1)]).json()[
        "id"
    ]
    before = snapshot(session_factory, tenant.id)
    for path, body in (
        (f"/aftersales/{ret}/receive", {}),
        (f"/aftersales/{ret}/ship-exchange", {"carrier": "SF", "tracking_no": "1"}),
        (f"/aftersales/{ret}/complete", None),
    ):
        r = _admin(client, tenant, "POST", path, json=body)
        _refused(r, 409, "aftersale_state_invalid", before, snapshot(session_factory, tenant.id))
    r = client.post(
        f"{STORE}/aftersales/{ret}/return-shipment", json={"carrier": "SF", "tracking_no": "1"}, headers=h
    )
    _refused(r, 409, "aftersale_state_invalid", before, snapshot(session_factory, tenant.id))

    _admin(
        client,
        tenant,
        "PUT",
        "/aftersale-policy",
        json={"window_days": 7, "refund_only_after_shipment": True},
    )
    only = request_aftersale(client, h, order["id"], "refund_only", [(line_id(order, shop["b"]), 1)]).json()[
        "id"
    ]
    assert _admin(client, tenant, "POST", f"/aftersales/{only}/approve").json()["status"] == "refunding"
    before = snapshot(session_factory, tenant.id)
    r = client.post(f"{STORE}/aftersales/{only}/cancel", headers=h)
    _refused(r, 409, "aftersale_state_invalid", before, snapshot(session_factory, tenant.id))
    r = client.post(
        f"{STORE}/aftersales/{only}/return-shipment", json={"carrier": "SF", "tracking_no": "1"}, headers=h
    )
    _refused(r, 409, "aftersale_state_invalid", before, snapshot(session_factory, tenant.id))
    r = _admin(client, tenant, "POST", f"/aftersales/{only}/approve")
    _refused(r, 409, "aftersale_state_invalid", before, snapshot(session_factory, tenant.id))


# -- refused requests --------------------------------------------------------------------------


def test_someone_elses_order_is_404(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], shop: dict[str, Any]
) -> None:
    order = paid_order(client, tenant, session_factory, shop["headers"], [(shop["a"], 1)], completed=True)
    la = line_id(order, shop["a"])
    other = customer_login(client, tenant)
    before = snapshot(session_factory, tenant.id)
    r = request_aftersale(client, other, order["id"], "return_refund", [(la, 1)])
    _refused(r, 404, "not_found", before, snapshot(session_factory, tenant.id))

    asid = request_aftersale(client, shop["headers"], order["id"], "return_refund", [(la, 1)]).json()["id"]
    before = snapshot(session_factory, tenant.id)
    assert client.get(f"{STORE}/aftersales/{asid}", headers=other).json()["code"] == "not_found"
    r = client.post(f"{STORE}/aftersales/{asid}/cancel", headers=other)
    _refused(r, 404, "not_found", before, snapshot(session_factory, tenant.id))
    assert client.get(f"{STORE}/aftersales", headers=other).json()["total"] == 0


def test_foreign_merchant_order_and_aftersale_are_404(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], shop: dict[str, Any]
) -> None:
    order = paid_order(client, tenant, session_factory, shop["headers"], [(shop["a"], 1)], completed=True)
    la = line_id(order, shop["a"])
    asid = request_aftersale(client, shop["headers"], order["id"], "return_refund", [(la, 1)]).json()["id"]

    code = unique("f")
    with unit_of_work(session_factory) as s:
        merchant = tenancy_service.create_merchant(s, code=code, name="Foreign")
        tenancy_service.create_staff(s, merchant.id, username="owner", password="owner-pass-1", role="owner")
        token, _ = tenancy_service.login_staff(
            s, merchant_code=code, username="owner", password="owner-pass-1", ttl=dt.timedelta(hours=1)
        )
        foreign = Tenant(id=merchant.id, code=code, owner_id=0, owner_token=token)
    stranger = customer_login(client, foreign)

    before = snapshot(session_factory, tenant.id)
    r = request_aftersale(client, stranger, order["id"], "return_refund", [(la, 1)])
    _refused(r, 404, "not_found", before, snapshot(session_factory, tenant.id))
    assert snapshot(session_factory, foreign.id)["aftersales"] == []
    r = _admin(client, foreign, "POST", f"/aftersales/{asid}/approve")
    _refused(r, 404, "not_found", before, snapshot(session_factory, tenant.id))
    assert _admin(client, foreign, "GET", f"/aftersales/{asid}").status_code == 404
    assert _admin(client, foreign, "GET", "/aftersales").json()["total"] == 0


def test_unpaid_order_is_not_eligible(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], shop: dict[str, Any]
) -> None:
    order = submit_order(client, shop["headers"], [(shop["a"], 1)])
    before = snapshot(session_factory, tenant.id)
    r = request_aftersale(client, shop["headers"], order["id"], "refund_only", [(order["lines"][0]["id"], 1)])
    _refused(r, 409, "aftersale_order_not_eligible", before, snapshot(session_factory, tenant.id))


def test_window_closed(
    client: TestClient,
    tenant: Tenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
    shop: dict[str, Any],
) -> None:
    h = shop["headers"]
    order = paid_order(client, tenant, session_factory, h, [(shop["a"], 2)], completed=True)
    la = line_id(order, shop["a"])
    days = settings.aftersales_window_days
    set_order_times(
        session_factory, tenant.id, order["id"], completed_at=utcnow() - dt.timedelta(days=days, hours=1)
    )
    before = snapshot(session_factory, tenant.id)
    for kind in ("return_refund", "exchange"):
        r = request_aftersale(client, h, order["id"], kind, [(la, 1)])
        _refused(r, 409, "aftersale_window_closed", before, snapshot(session_factory, tenant.id))

    # A longer window set by the merchant opens it again.
    r = _admin(client, tenant, "PUT", "/aftersale-policy", json={"window_days": days + 3})
    assert r.status_code == 200 and r.json()["window_days"] == days + 3
    assert request_aftersale(client, h, order["id"], "return_refund", [(la, 1)]).status_code == 201


def test_quantity_rules(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], shop: dict[str, Any]
) -> None:
    h = shop["headers"]
    order = paid_order(client, tenant, session_factory, h, [(shop["a"], 2)], completed=True)
    other = paid_order(client, tenant, session_factory, h, [(shop["b"], 1)], completed=True)
    la = line_id(order, shop["a"])
    before = snapshot(session_factory, tenant.id)
    cases = [
        ([(la, 3)], "quantity_out_of_range"),  # above purchased
        ([(la, 0)], "quantity_out_of_range"),
        ([(line_id(other, shop["b"]), 1)], "not_in_order"),  # a line of another order
        ([(la, 1), (la, 1)], "duplicate_line"),
    ]
    for lines, field_code in cases:
        r = request_aftersale(client, h, order["id"], "return_refund", lines)
        _refused(r, 422, "aftersale_quantity_invalid", before, snapshot(session_factory, tenant.id))
        assert r.json()["fields"][0]["code"] == field_code


def test_idempotent_create(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], shop: dict[str, Any]
) -> None:
    h = shop["headers"]
    order = paid_order(client, tenant, session_factory, h, [(shop["a"], 2)], completed=True)
    la = line_id(order, shop["a"])
    body = {
        "kind": "return_refund",
        "reason_code": "damaged",
        "lines": [{"order_line_id": la, "quantity": 1}],
    }
    url = f"{STORE}/orders/{order['id']}/aftersales"
    first = client.post(url, json=body, headers={**h, "Idempotency-Key": "k1"})
    again = client.post(url, json=body, headers={**h, "Idempotency-Key": "k1"})
    assert first.status_code == 201 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
    before = snapshot(session_factory, tenant.id)
    r = client.post(url, json={**body, "reason_code": "other"}, headers={**h, "Idempotency-Key": "k1"})
    _refused(r, 409, "idempotency_key_reused", before, snapshot(session_factory, tenant.id))


def test_admin_list_filters_and_pagination(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], shop: dict[str, Any]
) -> None:
    h = shop["headers"]
    order = paid_order(client, tenant, session_factory, h, [(shop["a"], 1), (shop["b"], 1)], completed=True)
    r1 = request_aftersale(client, h, order["id"], "return_refund", [(line_id(order, shop["a"]), 1)]).json()
    r2 = request_aftersale(client, h, order["id"], "exchange", [(line_id(order, shop["b"]), 1)]).json()
    _admin(client, tenant, "POST", f"/aftersales/{r2['id']}/approve")

    page = _admin(client, tenant, "GET", "/aftersales", params={"page_size": 1}).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0]["id"] == r2["id"]
    assert _admin(client, tenant, "GET", "/aftersales", params={"kind": "exchange"}).json()["total"] == 1
    only = _admin(client, tenant, "GET", "/aftersales", params={"status": "requested"}).json()
    assert [a["id"] for a in only["items"]] == [r1["id"]]
    assert _admin(client, tenant, "GET", "/aftersales", params={"order_id": order["id"]}).json()["total"] == 2
    assert (
        _admin(client, tenant, "GET", "/aftersales", params={"order_id": order["id"] + 10**6}).json()["total"]
        == 0
    )
    r = _admin(client, tenant, "GET", "/aftersales", params={"status": "nope"})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    detail = _admin(client, tenant, "GET", f"/aftersales/{r2['id']}").json()
    assert [e["action"] for e in detail["audit"]] == ["requested", "approved"]
    assert detail["audit"][1]["actor_type"] == "staff" and detail["reviewer_id"] == tenant.owner_id
    assert client.get(f"{STORE}/aftersale-policy", headers=tenant.store_headers).json()["window_days"] >= 0


def test_messages_in_both_languages(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], shop: dict[str, Any]
) -> None:
    order = submit_order(client, shop["headers"], [(shop["a"], 1)])
    lines = [(order["lines"][0]["id"], 1)]
    r = request_aftersale(
        client, {**shop["headers"], "Accept-Language": "en"}, order["id"], "refund_only", lines
    )
    assert r.json()["message"].startswith("This order is not eligible")
    r = request_aftersale(client, shop["headers"], order["id"], "refund_only", lines)
    assert r.json()["message"].startswith("该订单当前不能申请售后")


def test_failed_refund_goes_back_and_can_be_retried(
    client: TestClient,
    tenant: Tenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
    shop: dict[str, Any],
) -> None:
    from siyu.payments import service as payments_service

    h = shop["headers"]
    order = paid_order(client, tenant, session_factory, h, [(shop["b"], 2)])
    lb = line_id(order, shop["b"])
    asid = request_aftersale(client, h, order["id"], "refund_only", [(lb, 1)]).json()["id"]
    refund_id = _admin(client, tenant, "POST", f"/aftersales/{asid}/approve").json()["refund_id"]
    with unit_of_work(session_factory) as s:  # the provider refuses it before the submit job runs
        payments_service.fail_refund_by_id(s, tenant.id, refund_id, reason="NOT_ENOUGH", source="test")
    drain(session_factory, settings, tenant)
    detail = _admin(client, tenant, "GET", f"/aftersales/{asid}").json()
    assert detail["status"] == "approved" and detail["refund_id"] is None
    assert detail["audit"][-1]["action"] == "refund_failed"
    assert admin_order(client, tenant, order["id"])["refunded_amount"] == 0

    r = _admin(client, tenant, "POST", f"/aftersales/{asid}/refund")
    assert r.status_code == 200 and r.json()["status"] == "refunding" and r.json()["refund_attempts"] == 2, (
        r.text
    )
    drain(session_factory, settings, tenant)
    assert _admin(client, tenant, "GET", f"/aftersales/{asid}").json()["status"] == "completed"
    assert admin_order(client, tenant, order["id"])["refunded_amount"] == 5000
    before = snapshot(session_factory, tenant.id)
    r = _admin(client, tenant, "POST", f"/aftersales/{asid}/refund")
    _refused(r, 409, "aftersale_state_invalid", before, snapshot(session_factory, tenant.id))
