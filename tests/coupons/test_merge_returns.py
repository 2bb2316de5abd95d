"""A coupon returned after a member merge goes to the kept member: a coupon spent on an order paid
before the merge (the merge leaves used coupons under the merged member as history) and given
back by a full refund after it lands in the kept member's wallet, not the emptied merged one's;
a member who was never merged keeps their returned coupon."""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.coupons import service as coupons
from siyu.coupons.models import MemberCoupon
from siyu.db.session import unit_of_work
from siyu.kit.audit import AuditEvent
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.orders import checkout
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.coupons.helpers import make_product_sku, make_template
from tests.factories.orders import make_address
from tests.members.api_helpers import STORE, login


def _merge(client: TestClient, keep: dict[str, str], drop: dict[str, str]) -> None:
    """The same phone through both doors: the newer member is merged into the older one."""
    code = f"sandbox-{uuid.uuid4().int % 10**8}"
    assert client.post(f"{STORE}/me/phone", json={"code": code}, headers=drop).status_code == 200
    assert client.post(f"{STORE}/me/phone", json={"code": code}, headers=keep).status_code == 200


def _paid_order_with_coupon(factory: sessionmaker[Session], m: int, member: int, template: int, sku: int) -> tuple[int, int]:
    """``(coupon id, order id)``: the coupon spent on a paid order of ``member``."""
    make_address(factory, m, member)
    with unit_of_work(factory) as s:
        cid = coupons.issue_to_member(s, m, template, member, source="api", idempotency_key=f"c-{member}").id
    with unit_of_work(factory) as s:
        body = CheckoutIn.model_validate({"items": [{"sku_id": sku, "quantity": 1}], "coupon_ids": [cid]})
        order, _ = checkout.submit(s, m, member, body, idempotency_key=f"o-{member}",
                                   payment_timeout=dt.timedelta(minutes=30))
        assert coupons.on_order_paid(s, m, order.id, order.payable_amount, utcnow()) == [cid]
        return cid, order.id


def _coupon(factory: sessionmaker[Session], m: int, cid: int) -> tuple[int, str, int | None]:
    with factory() as s:
        c = s.scalars(select(MemberCoupon).where(MemberCoupon.merchant_id == m, MemberCoupon.id == cid)).one()
        return c.member_id, c.status, c.order_id


def test_a_coupon_refunded_after_a_merge_returns_to_the_kept_member(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    m = tenant.id
    keep_id, keep = login(client, tenant)  # older: kept
    drop_id, drop = login(client, tenant)
    other_id, _ = login(client, tenant)
    tpl = make_template(session_factory, m, "fixed", amount=300, per_member_limit=1)
    sku, _, _ = make_product_sku(session_factory, m, price=3000)
    dropped_coupon, dropped_order = _paid_order_with_coupon(session_factory, m, drop_id, tpl, sku)
    own_coupon, own_order = _paid_order_with_coupon(session_factory, m, other_id, tpl, sku)

    _merge(client, keep, drop)
    with session_factory() as s:
        dropped = s.scalars(select(Member).where(Member.merchant_id == m, Member.id == drop_id)).one()
        assert (dropped.status, dropped.merged_into) == ("merged", keep_id)
    assert _coupon(session_factory, m, dropped_coupon) == (drop_id, "used", dropped_order)  # history stays

    with unit_of_work(session_factory) as s:
        assert coupons.on_order_refunded(s, m, dropped_order, utcnow()) == [(dropped_coupon, "unused")]
        assert coupons.on_order_refunded(s, m, own_order, utcnow()) == [(own_coupon, "unused")]
    assert _coupon(session_factory, m, dropped_coupon) == (keep_id, "unused", None)
    assert _coupon(session_factory, m, own_coupon) == (other_id, "unused", None)  # never merged: stays
    with session_factory() as s:
        wallets = {mid: [c.id for c in s.scalars(select(MemberCoupon).where(
            MemberCoupon.merchant_id == m, MemberCoupon.member_id == mid))] for mid in (keep_id, drop_id)}
        audit = s.scalars(select(AuditEvent).where(
            AuditEvent.merchant_id == m, AuditEvent.subject_type == "member_coupon",
            AuditEvent.subject_id == dropped_coupon, AuditEvent.action == "returned")).one()
    assert wallets == {keep_id: [dropped_coupon], drop_id: []}
    assert audit.data["moved_from_merged_member"] == drop_id

    # a second delivery of the refund finds nothing to return and moves nothing
    with unit_of_work(session_factory) as s:
        assert coupons.on_order_refunded(s, m, dropped_order, utcnow()) == []
    assert _coupon(session_factory, m, dropped_coupon) == (keep_id, "unused", None)
