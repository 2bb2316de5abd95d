"""Demo data: a referral program (first inviter forever, 100 + 50 points for a referred first
order, two tiers), two levels (分销员 10% / 3%, 社群团长 20% / 5%), a community group leader
invited by a distributor, a handful of invited customers, one pending application, commissions
in every state (pending, frozen, settled, reversed) and withdrawals (paid, requested).

The demo customers already bought before the program existed, so their bindings are written
directly (the bind API refuses members with paid orders); everything else goes through the
service. Called by ``siyu.demo.seed``; does nothing when the program is already configured.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.config import get_settings
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.orders.models import CLOSED, COMPLETED, PAID, SHIPPED, Order
from siyu.referral import pii, service
from siyu.referral import repository as repo
from siyu.referral.models import COMM_FROZEN, DIST_APPLIED, DIST_APPROVED, Distributor
from siyu.referral.schemas import LevelIn, SettingsIn

SYSTEM = ("system", None)


def seed(session: Session, merchant_id: int) -> None:
    if repo.settings(session, merchant_id) is not None:
        return
    settings = get_settings()
    service.put_config(
        session, merchant_id,
        SettingsIn.model_validate({
            "binding_rule": "first", "tiers": 2, "min_withdrawal": 100,
            "inviter_rewards": [{"kind": "points", "points": 100}],
            "invitee_rewards": [{"kind": "points", "points": 50}],
        }),
        actor=SYSTEM,
    )
    normal = service.create_level(
        session, merchant_id, LevelIn(name="分销员", rank=0, tier1_rate_bp=1000, tier2_rate_bp=300, is_default=True),
        actor=SYSTEM,
    )
    leader_level = service.create_level(
        session, merchant_id, LevelIn(name="社群团长", rank=1, tier1_rate_bp=2000, tier2_rate_bp=500), actor=SYSTEM
    )

    orders = list(
        session.scalars(
            select(Order)
            .where(Order.merchant_id == merchant_id, Order.status.in_((PAID, SHIPPED, COMPLETED, CLOSED)))
            .order_by(Order.id)
        )
    )
    buyers: list[int] = []
    for o in orders:
        if o.member_id not in buyers:
            buyers.append(o.member_id)
        if len(buyers) == 8:
            break
    others = [
        m for m in session.scalars(
            select(Member.id).where(Member.merchant_id == merchant_id).order_by(Member.id.desc()).limit(40)
        )
        if m not in buyers
    ]
    if len(others) < 3 or not buyers:
        return
    top_id, leader_id, applicant_id = others[:3]

    def distributor(member_id: int, level_id: int | None, name: str) -> Distributor:
        d = Distributor(merchant_id=merchant_id, member_id=member_id, status=DIST_APPROVED if level_id else DIST_APPLIED,
                        level_id=level_id, applied_at=utcnow(), reviewed_at=utcnow() if level_id else None)
        session.add(d)
        session.flush()
        pii.seal_distributor(d, name, None, settings.secret_key)
        session.flush()
        return d

    distributor(top_id, normal.id, "演示")
    leader = distributor(leader_id, leader_level.id, "演示")
    distributor(applicant_id, None, "申请人")

    now = utcnow()
    for member_id in [top_id, leader_id, applicant_id, *buyers]:
        service.ensure_profile(session, merchant_id, member_id)
    for member_id, inviter in [(leader_id, top_id), *[(b, leader_id) for b in buyers]]:
        prof = repo.profile(session, merchant_id, member_id)
        assert prof is not None
        prof.inviter_member_id, prof.bound_at, prof.bind_source = inviter, now, "demo"
    session.flush()

    cfg = service.config(session, merchant_id)
    for o in orders:
        if o.member_id not in buyers or o.paid_at is None:
            continue
        service.accrue_commissions(session, merchant_id, o.id, cfg=cfg)
        if o.status == CLOSED:  # paid, then fully refunded
            service.reverse_for_refund(session, merchant_id, o.id, 0, amount=o.paid_amount, lines=None, full=True)
        elif o.status == COMPLETED and o.completed_at is not None:
            for c in service.freeze_for_order(session, merchant_id, o.id, settings):
                if c.status == COMM_FROZEN and c.settle_at is not None and c.settle_at <= now:
                    service.settle(session, merchant_id, c.id, now)

    session.refresh(leader)
    if leader.available >= 400:
        paid, _ = service.request_withdrawal(session, merchant_id, leader_id, leader.available // 2,
                                             idempotency_key="demo-1")
        service.approve_withdrawal(session, merchant_id, paid.id, "演示", actor=SYSTEM)
        service.mark_withdrawal_paid(session, merchant_id, paid.id, "DEMO-BANK-0001", actor=SYSTEM)
        session.refresh(leader)
        service.request_withdrawal(session, merchant_id, leader_id, leader.available // 2, idempotency_key="demo-2")
