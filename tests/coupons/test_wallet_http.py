"""The wallet end to end through HTTP: claim → preview picks it → submit locks it → sandbox
pay marks it used → full refund returns it; cancel returns it; redeem codes; wallet by state."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.coupons.helpers import ADMIN, STORE, coupon, make_product_sku, template_body
from tests.factories import payments as f


def _drain(factory: sessionmaker[Session], settings: Settings, tenant: Tenant) -> None:
    Worker(factory, settings, merchant_id=tenant.id).drain()


def _create(client: TestClient, tenant: Tenant, kind: str = "threshold", **fields: object) -> dict:
    r = client.post(f"{ADMIN}/coupon-templates", json=template_body(kind, **fields), headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _pay(client: TestClient, order_id: int, headers: dict[str, str]) -> None:
    r = client.post(f"{STORE}/orders/{order_id}/pay", headers=headers)
    assert r.status_code == 200, r.text
    r = client.post(r.json()["params"]["complete_url"], headers=headers)
    assert r.status_code == 200, r.text


def test_claim_preview_submit_pay_refund_returns_coupon(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    member_id, headers = f.paying_customer(session_factory, tenant.id)
    sku, _, _ = make_product_sku(session_factory, tenant.id, price=6000)
    tpl = _create(client, tenant, "threshold", amount=1500, threshold=10000, total_quantity=5)

    listed = client.get(f"{STORE}/coupons/claimable", headers=headers).json()
    assert [x["template"]["id"] for x in listed] == [tpl["id"]] and listed[0]["can_claim"] is True
    r = client.post(f"{STORE}/coupons/templates/{tpl['id']}/claim", headers=headers)
    assert r.status_code == 201, r.text
    mine = r.json()
    assert mine["status"] == "unused" and mine["amount"] == 1500 and mine["member_id"] == member_id

    items = {"items": [{"sku_id": sku, "quantity": 2}]}
    preview = client.post(f"{STORE}/checkout/preview", json=items, headers=headers).json()
    assert preview["goods_amount"] == 12000
    coupon_rows = [b for b in preview["breakdown"] if b["stage"] == "coupons"]
    assert coupon_rows == [{"stage": "coupons", "code": f"coupon:{mine['id']}", "label": coupon_rows[0]["label"],
                            "amount": -1500, "details": coupon_rows[0]["details"]}]
    assert sum(line["discounts"].get("coupons", 0) for line in preview["lines"]) == 1500

    r = client.post(f"{STORE}/checkout/submit", json=items, headers={**headers, "Idempotency-Key": "k1"})
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["payable_amount"] == preview["payable_amount"]
    locked = coupon(session_factory, tenant.id, mine["id"])
    assert locked.status == "locked" and locked.order_id == order["id"] and locked.discount_amount == 1500
    # Locked coupons are not in the unused wallet; a second preview does not see it as usable.
    assert client.get(f"{STORE}/coupons/mine?status=unused", headers=headers).json()["total"] == 0
    again = client.post(f"{STORE}/checkout/preview", json=items, headers=headers).json()
    assert not [b for b in again["breakdown"] if b["stage"] == "coupons"]
    assert [n["code"] for n in again["notes"]["coupons"]] == ["locked"]

    _pay(client, order["id"], headers)
    _drain(session_factory, settings, tenant)
    used = coupon(session_factory, tenant.id, mine["id"])
    assert used.status == "used" and used.order_amount == order["payable_amount"]
    stats = client.get(f"{ADMIN}/coupon-templates/{tpl['id']}/stats", headers=tenant.admin_headers).json()
    assert (stats["issued"], stats["claimed"], stats["used"]) == (1, 1, 1)
    assert stats["discount_given"] == 1500 and stats["gmv"] == order["payable_amount"]

    r = client.post(f"{ADMIN}/orders/{order['id']}/refunds", json={"amount": order["payable_amount"]},
                    headers={**tenant.admin_headers, "Idempotency-Key": "refund-all"})
    assert r.status_code == 201, r.text
    _drain(session_factory, settings, tenant)
    back = coupon(session_factory, tenant.id, mine["id"])
    assert back.status == "unused" and back.order_id is None and back.returned_at is not None
    assert client.get(f"{STORE}/coupons/mine?status=unused", headers=headers).json()["total"] == 1
    stats = client.get(f"{ADMIN}/coupon-templates/{tpl['id']}/stats", headers=tenant.admin_headers).json()
    assert stats["used"] == 0 and stats["discount_given"] == 0


def test_cancelled_order_returns_coupon_and_partial_refund_keeps_it_used(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    _, headers = f.paying_customer(session_factory, tenant.id)
    sku, _, _ = make_product_sku(session_factory, tenant.id, price=5000)
    tpl = _create(client, tenant, "fixed", amount=700, per_member_limit=2)
    first = client.post(f"{STORE}/coupons/templates/{tpl['id']}/claim", headers=headers).json()
    items = {"items": [{"sku_id": sku, "quantity": 1}]}
    order = client.post(f"{STORE}/checkout/submit", json=items, headers={**headers, "Idempotency-Key": "a"}).json()
    assert coupon(session_factory, tenant.id, first["id"]).status == "locked"
    r = client.post(f"{STORE}/orders/{order['id']}/cancel", headers=headers)
    assert r.status_code == 200, r.text
    _drain(session_factory, settings, tenant)
    assert coupon(session_factory, tenant.id, first["id"]).status == "unused"

    order = client.post(f"{STORE}/checkout/submit", json=items, headers={**headers, "Idempotency-Key": "b"}).json()
    assert coupon(session_factory, tenant.id, first["id"]).order_id == order["id"]
    _pay(client, order["id"], headers)
    _drain(session_factory, settings, tenant)
    r = client.post(f"{ADMIN}/orders/{order['id']}/refunds", json={"amount": 100},
                    headers={**tenant.admin_headers, "Idempotency-Key": "part"})
    assert r.status_code == 201, r.text
    _drain(session_factory, settings, tenant)
    assert coupon(session_factory, tenant.id, first["id"]).status == "used"


def test_redeem_code_once_and_wallet_by_state(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    _, headers = f.paying_customer(session_factory, tenant.id)
    _, other = f.paying_customer(session_factory, tenant.id)
    tpl = _create(client, tenant, "percent", percent_off=10, max_discount=2000, channels=["code"])
    r = client.post(f"{ADMIN}/coupon-templates/{tpl['id']}/codes", json={"count": 3}, headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    codes = r.json()["codes"]
    assert len(set(codes)) == 3

    r = client.post(f"{STORE}/coupons/redeem", json={"code": codes[0].lower()}, headers=headers)
    assert r.status_code == 201, r.text
    got = r.json()
    again = client.post(f"{STORE}/coupons/redeem", json={"code": codes[0]}, headers=headers)
    assert again.status_code == 200 and again.json() == got  # a retry: same coupon
    assert again.headers["Idempotent-Replayed"] == "true"
    r = client.post(f"{STORE}/coupons/redeem", json={"code": codes[0]}, headers=other)
    assert r.status_code == 409 and r.json()["code"] == "coupon_code_used"
    r = client.post(f"{STORE}/coupons/redeem", json={"code": "NOPE-NOPE"}, headers=other)
    assert r.status_code == 404 and r.json()["code"] == "coupon_code_invalid"
    # Claiming is not a channel of this template.
    r = client.post(f"{STORE}/coupons/templates/{tpl['id']}/claim", headers=other)
    assert r.status_code == 409 and r.json()["code"] == "coupon_channel_closed"

    wallet = client.get(f"{STORE}/coupons/mine", headers=headers).json()
    assert wallet["total"] == 1 and wallet["items"][0]["percent_off_bp"] == 1000
    assert client.get(f"{STORE}/coupons/mine?status=used", headers=headers).json()["total"] == 0
    assert client.get(f"{STORE}/coupons/mine", headers=other).json()["total"] == 0
    stats = client.get(f"{ADMIN}/coupon-templates/{tpl['id']}/stats", headers=tenant.admin_headers).json()
    assert (stats["codes_total"], stats["codes_redeemed"], stats["issued"]) == (3, 1, 1)


def test_a_keyed_claim_replays_like_checkout_even_after_the_template_closed_claims(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """A retry with the same Idempotency-Key answers 200, ``Idempotent-Replayed: true`` and the
    first coupon, as the checkout submit does; the key is looked up before the template's current
    state, so an operator stopping the template or closing its claim channel since does not turn
    the client's retry into a refusal (a new key is refused)."""
    _, headers = f.paying_customer(session_factory, tenant.id)
    tpl = _create(client, tenant, "fixed", amount=800, per_member_limit=1)
    url = f"{STORE}/coupons/templates/{tpl['id']}/claim"
    first = client.post(url, headers={**headers, "Idempotency-Key": "claim-k1"})
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers, first.text
    again = client.post(url, headers={**headers, "Idempotency-Key": "claim-k1"})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    # the member's limit is reached: a new key is refused, the old one still replays
    r = client.post(url, headers={**headers, "Idempotency-Key": "claim-k2"})
    assert r.status_code == 409 and r.json()["code"] == "coupon_limit_reached", r.text

    for change in ({"channels": ["operator"]}, {"status": "stopped"}):
        r = client.patch(f"{ADMIN}/coupon-templates/{tpl['id']}", json=change, headers=tenant.admin_headers)
        assert r.status_code == 200, r.text
        again = client.post(url, headers={**headers, "Idempotency-Key": "claim-k1"})
        assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true", (change, again.text)
        assert again.json() == first.json()
    r = client.post(url, headers={**headers, "Idempotency-Key": "claim-k3"})
    assert r.status_code == 409 and r.json()["code"] == "coupon_channel_closed", r.text
    wallet = client.get(f"{STORE}/coupons/mine", headers=headers).json()
    assert [c["id"] for c in wallet["items"]] == [first.json()["id"]]
