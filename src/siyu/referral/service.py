"""Referral (老带新) and distribution (分销) logic.

Binding
- Every member gets an invite code (``ensure_profile``) and a share path
  ``<share_path>?inviter=<code>``. ``bind`` attaches a member to the owner of a code by the
  merchant's rule: ``first`` (the first inviter, forever), ``window`` (only within
  ``window_days`` of the member's first visit = registration; the first inviter wins) or
  ``latest`` (a later inviter replaces the earlier one). Under every rule the binding is locked
  at the member's first paid order, and a member who already bought cannot be bound
  (``referral_locked``): referral is for *new* customers.
- Refused: a self-invite (``referral_self_invite``), a loop — the inviter, or anyone up the
  inviter's chain, is the member, a ring of any length, also when parallel binds would close it
  together (``referral_loop``) — a second, different inviter under
  ``first`` / ``window`` (``referral_already_bound``), a late bind under ``window``
  (``referral_window_closed``). Binding the same inviter again is a no-op.

Rewards (old brings new)
- On the invitee's first paid order (``order.paid``; the earliest paid order of the member,
  whichever job runs first) each configured reward for the inviter and for the invitee gets one row, unique per
  (invitee, role, position): idempotent per invitee. Points go through
  ``siyu.loyalty.service.award`` and coupons through ``siyu.coupons.service.issue_to_member``,
  imported lazily; when a module or function is missing (or refuses) the row stays ``pending``
  with the reason and ``retry_pending_rewards`` (job ``referral.retry_rewards``, admin endpoint)
  grants it later, so nothing is lost.
- A full refund of that first order within the after-sales window revokes them (``revoked``;
  the loyalty / coupons reversal is called when those modules offer one).

Commissions
- At ``order.paid``: tier 1 is the buyer's bound inviter if an approved distributor; tier 2 is
  that distributor's own inviter if an approved distributor (and the merchant runs two tiers).
  Nobody earns from their own order. The basis is each order line's ``payable_amount`` (after
  every discount, freight excluded); the rate per line is the most specific enabled
  ``CommissionRule`` (distributor+product > level+product > product > distributor > level >
  catch-all), else the distributor's level. Each line's commission is
  ``percent_of(payable, rate)`` (half up) and kept per line.
- ``pending`` (paid) → ``frozen`` at ``order.completed`` with ``settle_at`` = the end of the
  after-sales window (``aftersales.service.window_deadline``) and a ``referral.settle`` job
  at that time → ``settled`` (available balance; postponed a day while an after-sale is open).
- ``order.refunded`` reverses in proportion, per line: a line's reversed total is
  ``round(commission × refunded / payable)`` of that line's cumulative refunded amount, so
  several partial refunds add up exactly; ``full`` reverses all that is left. A refund without
  lines counts for goods in proportion to what was paid (``goods_share``: freight is no
  commission basis) and is spread over the lines by remaining payable (largest remainder).
  A commission fully reversed, even after settlement, becomes ``reversed``. Money already
  settled is clawed back from ``available``; what ``available`` cannot cover becomes ``debt``
  (never a negative balance), recovered first from later settlements and returned
  withdrawals.

Account and withdrawals
- Buckets ``pending / frozen / available / withdrawing / withdrawn / debt`` move only through
  ``repository.move`` (conditional update + append-only ledger row with a unique key).
- A withdrawal takes ``available`` → ``withdrawing`` by conditional update, so parallel
  requests never overdraw (``withdrawal_exceeds_balance``); finance approves (once:
  ``withdrawal_not_pending``) or rejects (the amount returns), and the payout provider pays —
  ``manual``: finance marks it paid with a reference → ``withdrawn``. A payout that never
  completes (the send failed until the worker gave up, the polls ran out) is closed by finance
  with ``fail_payout``: the provider is asked first, the amount returns once. A payout waiting
  for the payee (WeChat's ``WAIT_USER_CONFIRM``) is withdrawn with ``cancel_payout``: the
  provider cancels it, and its ``CANCELLED`` (poll or notification) fails the withdrawal and
  returns the amount once; a bill the payee leaves unconfirmed is cancelled by WeChat after 24
  hours and the polls return it the same way. A payout whose send job never ran is cancelled
  at once (the job then sends nothing); one sent without an answer is looked up first.
- A bill that comes after the withdrawal failed (a send that outlived its job lease reached
  WeChat after a cancel or fail-payout found no bill) is fenced: the send records its answer
  under the withdrawal's row lock and cancels such a bill at once, and late checks queued with
  the failure look it up by ``out_bill_no`` (``check_late_bill``). A bill paid nevertheless is
  recorded ``paid_after_failure``: withdrawn, the returned amount taken back from ``available``
  and the rest a ``debt`` (recovered first from later settlements and returned withdrawals).
- The applicant's real name and phone, and a payee's name on a withdrawal, are stored encrypted
  and bound to their row (``referral.pii``) with masked copies; in clear only for the payout
  and for finance / owner.

Services never commit; every money movement is audited in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.config import Settings, get_settings
from siyu.kit import audit
from siyu.kit.errors import DomainError, not_found, register_messages
from siyu.kit.events import emit
from siyu.kit.money import allocate, percent_of
from siyu.kit.outbox import JOB_PENDING, JOB_RUNNING, enqueue
from siyu.kit.timeutil import utcnow
from siyu.referral import payout, pii
from siyu.referral import repository as repo
from siyu.referral.models import (
    COMM_FROZEN,
    COMM_PENDING,
    COMM_REVERSED,
    COMM_SETTLED,
    DIST_APPLIED,
    DIST_APPROVED,
    DIST_DISABLED,
    DIST_REJECTED,
    REWARD_GRANTED,
    REWARD_PENDING,
    REWARD_REVOKED,
    RULE_FIRST,
    RULE_LATEST,
    RULE_WINDOW,
    WD_APPROVED,
    WD_FAILED,
    WD_PAID,
    WD_REJECTED,
    WD_REQUESTED,
    Commission,
    CommissionLine,
    CommissionRule,
    Distributor,
    DistributorLevel,
    ReferralBindingLog,
    ReferralProfile,
    ReferralReward,
    ReferralSettings,
    Withdrawal,
)
from siyu.referral.schemas import (
    ApplyIn,
    CouponReward,
    LevelIn,
    LevelUpdate,
    RuleIn,
    RuleUpdate,
    SettingsIn,
)

log = logging.getLogger("siyu.referral")

Actor = tuple[str, int | None]
SYSTEM: Actor = ("system", None)

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
CODE_LENGTH = 8
MAX_CHAIN = 1000  # inviter chains longer than this are treated as a loop (never expected)
MAX_RATE_BP = 10000

register_messages(
    {
        "referral_disabled": (409, "邀请功能未开启", "Referral is not enabled for this store"),
        "invite_code_invalid": (404, "邀请码无效", "Unknown invite code"),
        "referral_self_invite": (422, "不能邀请自己", "You cannot invite yourself"),
        "referral_loop": (
            422, "邀请关系不能形成循环（对方已是你邀请的人）",
            "This binding would create a referral loop (the inviter was invited by you)",
        ),
        "referral_already_bound": (409, "已绑定邀请人，不能更换", "Already bound to an inviter"),
        "referral_window_closed": (
            409, "已超过 {days} 天的绑定期限", "The {days}-day binding window has passed",
        ),
        "referral_locked": (
            409, "已下单的会员不能再绑定邀请人", "A member who has already paid an order cannot be bound",
        ),
        "distributor_already_applied": (409, "已提交过分销员申请（状态：{status}）", "Already applied ({status})"),
        "distributor_not_pending": (409, "该申请不在待审核状态（{status}）", "The application is not pending ({status})"),
        "distributor_not_approved": (403, "你还不是分销员", "You are not an approved distributor"),
        "distributor_level_required": (
            422, "请先创建分销员等级", "Create a distributor level first",
        ),
        "distributor_level_name_taken": (
            409, "已有同名的分销员等级：{name}", "A distributor level is already named {name}",
        ),
        "commission_rate_invalid": (
            422, "佣金比例必须在 0% 到 100% 之间", "Commission rates must be between 0% and 100% (0-10000 bp)",
        ),
        "withdrawal_exceeds_balance": (
            409, "提现金额超过可提现余额", "The withdrawal exceeds the available balance",
        ),
        "withdrawal_below_minimum": (
            422, "提现金额不能低于 {minimum} 分", "The minimum withdrawal is {minimum} fen",
        ),
        "withdrawal_not_pending": (409, "提现申请已处理（{status}）", "The withdrawal was already reviewed ({status})"),
        "withdrawal_not_approved": (
            409, "提现申请未审核通过，不能标记为已打款（{status}）",
            "Only an approved withdrawal can be marked paid ({status})",
        ),
        "withdrawal_real_name_required": (
            422, "提现金额达到 {yuan} 元时需填写收款人真实姓名（与微信实名一致）",
            "A withdrawal of ¥{yuan} or more needs the payee's real name (as verified by WeChat)",
        ),
        "withdrawal_already_paid": (
            409, "该提现已打款成功，不能标记为失败", "This withdrawal was already paid out; it cannot be failed",
        ),
        "withdrawal_not_in_payout": (
            409, "只有已审核通过、正在打款的提现可以标记为打款失败（{status}）",
            "Only an approved withdrawal whose payout is pending can be failed ({status})",
        ),
        "withdrawal_payout_in_flight": (
            409, "打款仍在进行中（{state}），请等待结果或先在支付平台撤销",
            "The payout is still in progress ({state}); wait for its outcome or cancel it with the provider first",
        ),
        "withdrawal_payout_unknown": (
            503, "暂时无法向打款渠道确认结果，请稍后重试", "The payout provider could not be asked about this payout; try again later",
        ),
        "withdrawal_not_cancellable": (
            409, "只有已审核通过、正在打款的提现可以撤销打款（{status}）",
            "Only an approved withdrawal whose payout is pending can be cancelled ({status})",
        ),
        "withdrawal_payout_cancel_too_late": (
            409, "收款人已确认收款，打款已成功，无法撤销",
            "The payee already received this payout; it can no longer be cancelled",
        ),
        "withdrawal_payout_sending": (
            409, "打款正在提交到支付平台，请稍后再撤销",
            "The payout is being sent to the provider right now; try cancelling again in a moment",
        ),
        "withdrawal_payout_cancel_unconfirmed": (
            503, "撤销请求已发出，但未收到支付平台的答复；系统将自动查询结果，也可稍后再次撤销",
            "The cancellation was sent but its answer was lost; the payout's status is checked "
            "automatically (or cancel again later)",
        ),
        "payout_cancel_unsupported": (
            409, "打款方式 {name} 不支持撤销；线下打款请使用“标记打款失败”",
            "Payouts by {name} cannot be cancelled; for a manual payout use fail-payout",
        ),
        "payout_provider_unknown": (422, "未知的打款方式：{name}", "Unknown payout provider: {name}"),
        "payout_provider_not_configured": (
            409, "打款方式 {name} 需要先配置微信支付商户号与密钥",
            "The payout provider {name} needs the merchant's WeChat Pay credentials first",
        ),
    }
)


# -- settings ----------------------------------------------------------------------------------


def config(session: Session, merchant_id: int) -> SettingsIn:
    row = repo.settings(session, merchant_id)
    if row is None:
        return SettingsIn()
    return SettingsIn.model_validate(
        {
            "enabled": row.enabled, "binding_rule": row.binding_rule, "window_days": row.window_days,
            "share_path": row.share_path, "inviter_rewards": row.inviter_rewards,
            "invitee_rewards": row.invitee_rewards, "tiers": row.tiers,
            "auto_approve_distributors": row.auto_approve_distributors, "min_withdrawal": row.min_withdrawal,
            "payout_provider": row.payout_provider,
        }
    )


def _check_coupon_templates(session: Session, merchant_id: int, data: SettingsIn) -> None:
    """A coupon reward must name one of the merchant's templates (checked when the coupons
    module is installed; its issuing rules still apply when the reward is granted)."""
    ids = {r.template_id for r in [*data.inviter_rewards, *data.invitee_rewards] if isinstance(r, CouponReward)}
    if not ids:
        return
    try:
        coupons_repo = importlib.import_module("siyu.coupons.repository")
    except ImportError:
        return
    for template_id in sorted(ids):
        if coupons_repo.template(session, merchant_id, template_id) is None:
            raise not_found("优惠券模板", "Coupon template")


def put_config(session: Session, merchant_id: int, data: SettingsIn, *, actor: Actor) -> SettingsIn:
    chosen = payout.get(data.payout_provider)
    if chosen is None:
        raise DomainError("payout_provider_unknown", name=data.payout_provider)
    configured = getattr(chosen, "configured", None)
    if configured is not None and not configured(session, merchant_id):
        raise DomainError("payout_provider_not_configured", name=data.payout_provider)
    _check_coupon_templates(session, merchant_id, data)
    values = data.model_dump(mode="json")
    row = repo.settings(session, merchant_id)
    if row is None:
        row = ReferralSettings(merchant_id=merchant_id, **values)
        session.add(row)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:  # a concurrent first PUT: update that row
            row = repo.settings(session, merchant_id)
            assert row is not None
            for k, v in values.items():
                setattr(row, k, v)
    else:
        for k, v in values.items():
            setattr(row, k, v)
    session.flush()
    audit.record(session, merchant_id, "referral_settings", row.id, "updated", actor=actor, data=values)
    return config(session, merchant_id)


# -- invite codes and binding ------------------------------------------------------------------


def _new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def ensure_profile(session: Session, merchant_id: int, member_id: int) -> ReferralProfile:
    """The member's referral profile, created with a fresh invite code on first use."""
    found = repo.profile(session, merchant_id, member_id)
    if found is not None:
        return found
    if repo.member(session, merchant_id, member_id) is None:
        raise not_found("会员", "Member")
    for _ in range(8):
        code = _new_code()
        if repo.code_taken(session, merchant_id, code):
            continue
        try:
            with session.begin_nested():
                repo.insert_profile(session, merchant_id, member_id, code)
        except IntegrityError:  # the code was taken in between
            continue
        break
    found = repo.profile(session, merchant_id, member_id)
    if found is None:  # pragma: no cover - 8 collisions in a 32^8 space
        raise DomainError("conflict")
    return found


def share_path(cfg: SettingsIn, code: str) -> str:
    sep = "&" if "?" in cfg.share_path else "?"
    return f"{cfg.share_path}{sep}inviter={code}"


def my_referral(session: Session, merchant_id: int, member_id: int) -> dict[str, Any]:
    cfg = config(session, merchant_id)
    prof = ensure_profile(session, merchant_id, member_id)
    count = repo.count_invitees(session, merchant_id, member_id)
    return {
        "member_id": member_id, "code": prof.code, "share_path": share_path(cfg, prof.code),
        "inviter_member_id": prof.inviter_member_id, "bound_at": prof.bound_at,
        "locked": prof.locked_at is not None, "invitee_count": int(count),
    }


def _chain(session: Session, merchant_id: int, start_id: int) -> tuple[list[int], bool]:
    """``start_id`` and its inviters up to the root, read fresh in one query; (chain, cyclic).
    A chain longer than ``MAX_CHAIN`` counts as cyclic (a ring repeats members)."""
    chain = repo.inviter_chain(session, merchant_id, start_id, MAX_CHAIN)
    if len(set(chain)) < len(chain):
        first_repeat = next(i for i, m in enumerate(chain) if m in chain[:i])
        return chain[:first_repeat], True
    return chain, len(chain) > MAX_CHAIN


def _lock_chain_and_check_loop(session: Session, merchant_id: int, member_id: int, inviter_id: int) -> bool:
    """Lock the profiles of the member, the inviter and the inviter's whole chain; True when
    binding ``member_id`` to ``inviter_id`` would close a ring of any length.

    Concurrency: the ring test reads ``inviter_id``'s chain, and an inviter only changes while
    its own profile row is locked (``bind`` locks the member it binds), so the whole chain is
    locked, then read again. If it grew meanwhile (a parallel bind committed), the rows locked
    so far are **released** (the savepoint they were taken in is rolled back: PostgreSQL drops
    row locks of a rolled-back subtransaction) and the larger set is locked again in one
    statement in id order. Locking the new members while holding the first ones would take
    locks out of order: A→B holding {A, B} and waiting for C while C→D holds {C, D} and waits
    for A is a deadlock (``tests/referral/test_binding_deadlock.py``). So a bind never waits for
    a row while holding one out of order; each retry locks a strictly larger set, at most
    ``MAX_CHAIN`` long. Two binds that would each close half of a ring then share a locked
    member: the second waits for the first and sees its binding.
    """
    wanted = {member_id, inviter_id, *_chain(session, merchant_id, inviter_id)[0]}
    while True:
        savepoint = session.begin_nested()
        repo.lock_profiles(session, merchant_id, wanted)
        chain, cyclic = _chain(session, merchant_id, inviter_id)
        missing = set(chain) - wanted
        if cyclic or member_id in chain or not missing:
            savepoint.commit()  # keep the locks to the end of the transaction
            return cyclic or member_id in chain
        savepoint.rollback()
        wanted |= missing


def bind(
    session: Session, merchant_id: int, member_id: int, code: str, *, source: str = "bind",
    now: dt.datetime | None = None,
) -> tuple[ReferralProfile, bool]:
    """Bind ``member_id`` to the owner of ``code``; returns (profile, changed)."""
    now = now or utcnow()
    cfg = config(session, merchant_id)
    if not cfg.enabled:
        raise DomainError("referral_disabled")
    inviter_profile = repo.profile_by_code(session, merchant_id, code.strip().upper())
    if inviter_profile is None:
        raise DomainError("invite_code_invalid")
    # a code of a member merged into another invites for the kept member
    inviter_id = repo.merged_into(session, merchant_id, inviter_profile.member_id)
    if inviter_id == member_id:
        raise DomainError("referral_self_invite")
    ensure_profile(session, merchant_id, member_id)
    # Lock the member, the inviter and the inviter's whole chain, in id order in one statement
    # (parallel binds then wait on each other instead of deadlocking); the ring test is decided
    # under these locks and refused below, after the other checks.
    loop = _lock_chain_and_check_loop(session, merchant_id, member_id, inviter_id)
    prof = repo.profile(session, merchant_id, member_id, lock=True)
    assert prof is not None
    if prof.inviter_member_id == inviter_id:
        return prof, False
    if prof.locked_at is not None or repo.has_paid_order(session, merchant_id, member_id):
        raise DomainError("referral_locked")
    if cfg.binding_rule in (RULE_FIRST, RULE_WINDOW) and prof.inviter_member_id is not None:
        raise DomainError("referral_already_bound")
    if cfg.binding_rule == RULE_WINDOW:
        member = repo.member(session, merchant_id, member_id)
        assert member is not None
        if now > member.registered_at + dt.timedelta(days=cfg.window_days):
            raise DomainError("referral_window_closed", days=cfg.window_days)
    if loop:
        raise DomainError("referral_loop")
    assert cfg.binding_rule in (RULE_FIRST, RULE_WINDOW, RULE_LATEST)
    previous = prof.inviter_member_id
    prof.inviter_member_id = inviter_id
    prof.bound_at = now
    prof.bind_source = source
    entry = ReferralBindingLog(
        merchant_id=merchant_id, member_id=member_id, inviter_member_id=inviter_id, previous_inviter_id=previous,
        source=source, at=now,
    )
    session.add(entry)
    session.flush()
    audit.record(
        session, merchant_id, "referral_binding", member_id, "bound", actor=("customer", member_id),
        data={"inviter_member_id": inviter_id, "previous_inviter_id": previous, "source": source},
    )
    emit(
        session, merchant_id, "referral.bound",
        {"member_id": member_id, "inviter_member_id": inviter_id, "previous_inviter_id": previous, "source": source},
        key=f"binding:{entry.id}",
    )
    return prof, True


def bind_on_login(session: Session, merchant_id: int, member_id: int, code: str | None) -> bool:
    """Called by the WeChat login with the inviter code it was given. Never fails the login:
    a refused binding (own code, loop, already bound ...) is logged and ignored."""
    if not code:
        return False
    try:
        with session.begin_nested():
            _, changed = bind(session, merchant_id, member_id, code, source="register")
        return changed
    except DomainError as exc:
        log.info("inviter code %r not bound for member %s: %s", code, member_id, exc.code)
        return False


def invitees(session: Session, merchant_id: int, inviter_member_id: int, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Shape a page of (profile, member) rows with each invitee's purchases."""
    totals = repo.paid_totals(session, merchant_id, [m.id for _, m in rows])
    out = []
    for prof, member in rows:
        count, amount = totals.get(member.id, (0, 0))
        out.append(
            {
                "member_id": member.id, "nickname": member.nickname, "bound_at": prof.bound_at,
                "registered_at": member.registered_at, "has_bought": count > 0, "paid_orders": count,
                "paid_amount": amount,
            }
        )
    return out


# -- first paid order: rewards -----------------------------------------------------------------


def on_order_paid(session: Session, merchant_id: int, order_id: int, settings: Settings | None = None) -> None:
    """``order.paid``: lock the binding, reward a referred first order, accrue commissions.

    An order already completed by the time this runs (the job was retried late) is frozen at
    once, so its commission does not wait for an ``order.completed`` that already passed."""
    order = repo.order(session, merchant_id, order_id)
    if order is None or order.paid_at is None:
        return
    cfg = config(session, merchant_id)
    ensure_profile(session, merchant_id, order.member_id)
    # The member's first paid order is the earliest by ``paid_at`` (whichever job runs first);
    # the reward rows' unique key makes granting it once safe under retries and races.
    first = not repo.has_paid_order(
        session, merchant_id, order.member_id, other_than=order.id, before=order.paid_at
    )
    repo.lock_binding(session, merchant_id, order.member_id, order.id if first else None)
    prof = repo.profile(session, merchant_id, order.member_id, lock=True)
    assert prof is not None
    if first and cfg.enabled and prof.inviter_member_id is not None:
        _create_rewards(session, merchant_id, cfg, order.member_id, prof.inviter_member_id, order.id)
    if cfg.enabled:
        accrue_commissions(session, merchant_id, order_id, cfg=cfg)
        if order.completed_at is not None and settings is not None:
            freeze_for_order(session, merchant_id, order_id, settings)


def _create_rewards(
    session: Session, merchant_id: int, cfg: SettingsIn, invitee_id: int, inviter_id: int, order_id: int
) -> None:
    created = False
    for role, beneficiary, rewards in (
        ("inviter", inviter_id, cfg.inviter_rewards), ("invitee", invitee_id, cfg.invitee_rewards),
    ):
        for index, spec in enumerate(rewards):
            values = {
                "merchant_id": merchant_id, "invitee_member_id": invitee_id, "beneficiary_member_id": beneficiary,
                "role": role, "reward_index": index, "kind": spec.kind,
                "points": getattr(spec, "points", 0), "coupon_template_id": getattr(spec, "template_id", None),
                "order_id": order_id, "status": REWARD_PENDING,
            }
            created = repo.insert_reward(session, values) or created
    if not created:
        return
    granted = []
    for reward in repo.rewards_of_invitee(session, merchant_id, invitee_id):
        if reward.status == REWARD_PENDING:
            _try_grant(session, reward)
        granted.append({"id": reward.id, "role": reward.role, "kind": reward.kind, "status": reward.status})
    emit(
        session, merchant_id, "referral.rewarded",
        {"invitee_member_id": invitee_id, "inviter_member_id": inviter_id, "order_id": order_id, "rewards": granted},
        key=f"invitee:{invitee_id}",
    )


def reward_key(reward: ReferralReward) -> str:
    return f"referral:{reward.invitee_member_id}:{reward.role}:{reward.reward_index}"


def _try_grant(session: Session, reward: ReferralReward) -> bool:
    """Grant through loyalty / coupons (lazily imported) in a savepoint; leave it pending with the
    reason when the module is missing or refuses."""
    try:
        with session.begin_nested():
            if reward.kind == "points":
                module = importlib.import_module("siyu.loyalty.service")
                module.award(
                    session, merchant_id=reward.merchant_id, member_id=reward.beneficiary_member_id,
                    points=reward.points, reason="referral", ref=f"order:{reward.order_id}",
                    idempotency_key=reward_key(reward),
                )
            else:
                module = importlib.import_module("siyu.coupons.service")
                module.issue_to_member(
                    session, merchant_id=reward.merchant_id, member_id=reward.beneficiary_member_id,
                    template_id=reward.coupon_template_id, source="referral", idempotency_key=reward_key(reward),
                )
    except (ImportError, AttributeError) as exc:
        reward.detail = f"module unavailable: {exc}"[:200]
        return False
    except TypeError as exc:
        reward.detail = f"call not accepted: {exc}"[:200]
        return False
    except DomainError as exc:
        reward.detail = f"refused: {exc.code}"[:200]
        return False
    reward.status = REWARD_GRANTED
    reward.granted_at = utcnow()
    reward.detail = None
    session.flush()
    audit.record(session, reward.merchant_id, "referral_reward", reward.id, "granted", to_state=REWARD_GRANTED)
    return True


def retry_pending_rewards(session: Session, merchant_id: int) -> tuple[int, int]:
    """Try the pending rewards again; returns (granted now, still pending)."""
    granted = pending = 0
    for reward in repo.pending_rewards(session, merchant_id):
        if _try_grant(session, reward):
            granted += 1
        else:
            pending += 1
    return granted, pending


def revoke_rewards_for_refund(
    session: Session, merchant_id: int, order_id: int, settings: Settings, *, now: dt.datetime | None = None
) -> int:
    """A fully refunded first order within the after-sales window revokes its rewards."""
    from siyu.aftersales import service as aftersales

    now = now or utcnow()
    rewards = [r for r in repo.rewards_of_order(session, merchant_id, order_id) if r.status != REWARD_REVOKED]
    if not rewards:
        return 0
    order = repo.order(session, merchant_id, order_id)
    assert order is not None
    deadline = aftersales.window_deadline(order, aftersales.get_policy(session, merchant_id, settings), settings)
    if deadline is not None and now > deadline:
        return 0
    for reward in rewards:
        was = reward.status
        if was == REWARD_GRANTED:
            reward.detail = _try_reverse(session, reward)
        reward.status = REWARD_REVOKED
        reward.revoked_at = now
        session.flush()
        audit.record(session, merchant_id, "referral_reward", reward.id, "revoked", from_state=was,
                     to_state=REWARD_REVOKED, data={"order_id": order_id})
    return len(rewards)


def _try_reverse(session: Session, reward: ReferralReward) -> str | None:
    """Take back granted points (``loyalty.service.reverse`` by the award's key) or void the
    issued coupon (``coupons.service.void``). A reversal the module refuses (a coupon already
    used, points already spent are the loyalty module's business) is noted on the reward."""
    key = reward_key(reward)
    try:
        with session.begin_nested():
            if reward.kind == "points":
                loyalty = importlib.import_module("siyu.loyalty.service")
                loyalty.reverse(session, reward.merchant_id, key, reason="referral_revoked",
                                ref=f"order:{reward.order_id}", idempotency_key=f"{key}:revoke")
            else:
                coupons_repo = importlib.import_module("siyu.coupons.repository")
                coupons = importlib.import_module("siyu.coupons.service")
                coupon = coupons_repo.coupon_by_key(session, reward.merchant_id, key)
                if coupon is not None:
                    coupons.void(session, reward.merchant_id, coupon.id, actor=SYSTEM)
    except (ImportError, AttributeError, TypeError, DomainError) as exc:
        code = exc.code if isinstance(exc, DomainError) else type(exc).__name__
        return f"reversal not applied ({code}): reverse by hand"[:200]
    return None


# -- levels, distributors, rules ---------------------------------------------------------------


def _check_rate(*rates: int | None) -> None:
    for rate in rates:
        if rate is not None and not 0 <= rate <= MAX_RATE_BP:
            raise DomainError("commission_rate_invalid")


def _flush_level(session: Session, name: str) -> None:
    """Write the level; a name another level of the merchant holds (checked by the unique key,
    so two parallel writes cannot both pass) is ``distributor_level_name_taken``."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise DomainError("distributor_level_name_taken", name=name) from exc


def create_level(session: Session, merchant_id: int, data: LevelIn, *, actor: Actor) -> DistributorLevel:
    _check_rate(data.tier1_rate_bp, data.tier2_rate_bp)
    row = DistributorLevel(merchant_id=merchant_id, **data.model_dump())
    session.add(row)
    _flush_level(session, data.name)
    audit.record(session, merchant_id, "distributor_level", row.id, "created", actor=actor, data=data.model_dump())
    return row


def update_level(session: Session, merchant_id: int, level_id: int, data: LevelUpdate, *, actor: Actor) -> DistributorLevel:
    _check_rate(data.tier1_rate_bp, data.tier2_rate_bp)
    row = repo.level(session, merchant_id, level_id)
    if row is None:
        raise not_found("分销员等级", "Distributor level")
    changes = data.model_dump(exclude_unset=True)
    for k, v in changes.items():
        if v is not None:
            setattr(row, k, v)
    _flush_level(session, row.name)
    audit.record(session, merchant_id, "distributor_level", row.id, "updated", actor=actor, data=changes)
    return row


def apply(
    session: Session, merchant_id: int, member_id: int, data: ApplyIn, settings: Settings | None = None
) -> Distributor:
    """Apply as a distributor (again after a rejection). The real name and phone are stored
    encrypted, bound to the distributor row, with masked copies (``referral.pii``)."""
    cfg = config(session, merchant_id)
    if not cfg.enabled:
        raise DomainError("referral_disabled")
    existing = repo.distributor_of_member(session, merchant_id, member_id, lock=True)
    if existing is not None and existing.status != DIST_REJECTED:
        raise DomainError("distributor_already_applied", status=existing.status)
    now = utcnow()
    if existing is None:
        existing = Distributor(merchant_id=merchant_id, member_id=member_id, applied_at=now)
        session.add(existing)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError as exc:  # a parallel application
            raise DomainError("distributor_already_applied", status=DIST_APPLIED) from exc
    existing.status = DIST_APPLIED
    pii.seal_distributor(existing, data.real_name, data.phone, (settings or get_settings()).secret_key)
    existing.note = data.note
    existing.applied_at = now
    existing.reviewed_at = None
    session.flush()
    audit.record(session, merchant_id, "distributor", existing.id, "applied", to_state=DIST_APPLIED,
                 actor=("customer", member_id))
    if cfg.auto_approve_distributors:
        return approve_distributor(session, merchant_id, existing.id, None, None, actor=SYSTEM)
    return existing


def get_distributor(session: Session, merchant_id: int, distributor_id: int) -> Distributor:
    row = repo.distributor(session, merchant_id, distributor_id)
    if row is None:
        raise not_found("分销员", "Distributor")
    return row


def distributor_contact(dist: Distributor, settings: Settings | None = None) -> tuple[str | None, str | None]:
    """The distributor's real name and phone in clear (for finance staff only; never logged)."""
    key = (settings or get_settings()).secret_key
    return pii.real_name_of(dist, key), pii.phone_of(dist, key)


def approve_distributor(
    session: Session, merchant_id: int, distributor_id: int, level_id: int | None, note: str | None, *, actor: Actor
) -> Distributor:
    row = repo.distributor(session, merchant_id, distributor_id, lock=True)
    if row is None:
        raise not_found("分销员", "Distributor")
    if row.status != DIST_APPLIED:
        raise DomainError("distributor_not_pending", status=row.status)
    lvl = repo.level(session, merchant_id, level_id) if level_id is not None else repo.default_level(session, merchant_id)
    if level_id is not None and lvl is None:
        raise not_found("分销员等级", "Distributor level")
    if lvl is None:
        raise DomainError("distributor_level_required")
    row.status, row.level_id, row.review_note, row.reviewed_at = DIST_APPROVED, lvl.id, note, utcnow()
    session.flush()
    audit.record(session, merchant_id, "distributor", row.id, "approved", from_state=DIST_APPLIED,
                 to_state=DIST_APPROVED, actor=actor, data={"level_id": lvl.id})
    return row


def reject_distributor(
    session: Session, merchant_id: int, distributor_id: int, note: str | None, *, actor: Actor
) -> Distributor:
    row = repo.distributor(session, merchant_id, distributor_id, lock=True)
    if row is None:
        raise not_found("分销员", "Distributor")
    if row.status != DIST_APPLIED:
        raise DomainError("distributor_not_pending", status=row.status)
    row.status, row.review_note, row.reviewed_at = DIST_REJECTED, note, utcnow()
    session.flush()
    audit.record(session, merchant_id, "distributor", row.id, "rejected", from_state=DIST_APPLIED,
                 to_state=DIST_REJECTED, actor=actor, data={"note": note})
    return row


def update_distributor(
    session: Session, merchant_id: int, distributor_id: int, level_id: int | None, status: str | None, *, actor: Actor
) -> Distributor:
    row = repo.distributor(session, merchant_id, distributor_id, lock=True)
    if row is None:
        raise not_found("分销员", "Distributor")
    if level_id is not None:
        if repo.level(session, merchant_id, level_id) is None:
            raise not_found("分销员等级", "Distributor level")
        row.level_id = level_id
    if status is not None and status != row.status:
        if row.status not in (DIST_APPROVED, DIST_DISABLED):
            raise DomainError("distributor_not_pending", status=row.status)
        row.status = status
    session.flush()
    audit.record(session, merchant_id, "distributor", row.id, "updated", actor=actor,
                 data={"level_id": level_id, "status": status})
    return row


def create_rule(session: Session, merchant_id: int, data: RuleIn, *, actor: Actor) -> CommissionRule:
    _check_rate(data.tier1_rate_bp, data.tier2_rate_bp)
    if data.level_id is not None and repo.level(session, merchant_id, data.level_id) is None:
        raise not_found("分销员等级", "Distributor level")
    if data.distributor_id is not None and repo.distributor(session, merchant_id, data.distributor_id) is None:
        raise not_found("分销员", "Distributor")
    if data.product_id is not None:
        from siyu.catalog.models import Product

        found = session.get(Product, data.product_id)
        if found is None or found.merchant_id != merchant_id:
            raise not_found("商品", "Product")
    row = CommissionRule(merchant_id=merchant_id, **data.model_dump())
    session.add(row)
    session.flush()
    audit.record(session, merchant_id, "commission_rule", row.id, "created", actor=actor, data=data.model_dump())
    return row


def update_rule(session: Session, merchant_id: int, rule_id: int, data: RuleUpdate, *, actor: Actor) -> CommissionRule:
    _check_rate(data.tier1_rate_bp, data.tier2_rate_bp)
    row = repo.rule(session, merchant_id, rule_id)
    if row is None:
        raise not_found("佣金规则", "Commission rule")
    changes = data.model_dump(exclude_unset=True)
    for k, v in changes.items():
        if v is not None or k == "tier2_rate_bp":
            setattr(row, k, v)
    session.flush()
    audit.record(session, merchant_id, "commission_rule", row.id, "updated", actor=actor, data=changes)
    return row


def delete_rule(session: Session, merchant_id: int, rule_id: int, *, actor: Actor) -> None:
    row = repo.rule(session, merchant_id, rule_id)
    if row is None:
        raise not_found("佣金规则", "Commission rule")
    session.delete(row)
    session.flush()
    audit.record(session, merchant_id, "commission_rule", rule_id, "deleted", actor=actor)


# -- commissions -------------------------------------------------------------------------------


def resolve_rate(
    rules: Sequence[CommissionRule], product_id: int, dist: Distributor, level: DistributorLevel | None, tier: int
) -> int:
    """The rate (bp) for one line: the most specific matching rule, else the level's."""
    best: tuple[tuple[int, int, int, int], CommissionRule] | None = None
    for r in rules:
        if r.product_id not in (None, product_id) or r.distributor_id not in (None, dist.id):
            continue
        if r.level_id is not None and r.level_id != dist.level_id:
            continue
        score = (int(r.product_id is not None), int(r.distributor_id is not None), int(r.level_id is not None), r.id)
        if best is None or score > best[0]:
            best = (score, r)
    if best is not None:
        rule = best[1]
        if tier == 1:
            return rule.tier1_rate_bp
        if rule.tier2_rate_bp is not None:
            return rule.tier2_rate_bp
    if level is None:
        return 0
    return level.tier1_rate_bp if tier == 1 else level.tier2_rate_bp


def beneficiaries(session: Session, merchant_id: int, buyer_id: int, tiers: int) -> list[Distributor]:
    """[tier-1 distributor, tier-2 distributor] for a buyer (shorter when a tier is missing)."""
    out: list[Distributor] = []
    inviter = repo.inviter_of(session, merchant_id, buyer_id)
    if inviter is None or inviter == buyer_id:
        return out
    d1 = repo.approved_distributor_of_member(session, merchant_id, inviter)
    if d1 is None:
        return out
    out.append(d1)
    if tiers < 2:
        return out
    inviter2 = repo.inviter_of(session, merchant_id, d1.member_id)
    if inviter2 is None or inviter2 in (buyer_id, d1.member_id):
        return out
    d2 = repo.approved_distributor_of_member(session, merchant_id, inviter2)
    if d2 is not None:
        out.append(d2)
    return out


def accrue_commissions(
    session: Session, merchant_id: int, order_id: int, *, cfg: SettingsIn | None = None
) -> list[Commission]:
    """Create the order's commissions (once per order and tier) and add them to ``pending``."""
    cfg = cfg or config(session, merchant_id)
    order = repo.order(session, merchant_id, order_id)
    if order is None or order.paid_at is None:
        return []
    lines = repo.order_lines(session, merchant_id, order_id)
    rules = repo.rules_for(session, merchant_id, {ln.product_id for ln in lines})
    made = []
    for tier, dist in enumerate(beneficiaries(session, merchant_id, order.member_id, cfg.tiers), start=1):
        level = repo.level(session, merchant_id, dist.level_id) if dist.level_id is not None else None
        parts = []
        for ln in lines:
            rate = resolve_rate(rules, ln.product_id, dist, level, tier)
            parts.append((ln, rate, percent_of(ln.payable_amount, rate)))
        total = sum(p[2] for p in parts)
        if total <= 0:
            continue
        commission_id = repo.insert_commission(
            session,
            {"merchant_id": merchant_id, "order_id": order_id, "buyer_member_id": order.member_id,
             "distributor_id": dist.id, "tier": tier, "base_amount": sum(ln.payable_amount for ln in lines),
             "amount": total, "reversed_amount": 0, "status": COMM_PENDING},
        )
        if commission_id is None:
            continue  # a retried job: already accrued
        for ln, rate, amount in parts:
            session.add(
                CommissionLine(
                    merchant_id=merchant_id, commission_id=commission_id, order_line_id=ln.id,
                    product_id=ln.product_id, base_amount=ln.payable_amount, rate_bp=rate, amount=amount,
                )
            )
        session.flush()
        repo.move(
            session, merchant_id, dist.id, key=f"commission:{commission_id}:accrued", entry="accrued", amount=total,
            deltas={"pending": total}, commission_id=commission_id, order_id=order_id,
        )
        audit.record(session, merchant_id, "commission", commission_id, "accrued", to_state=COMM_PENDING,
                     data={"order_id": order_id, "tier": tier, "amount": total})
        found = repo.commission(session, merchant_id, commission_id)
        assert found is not None
        made.append(found)
    return made


def freeze_for_order(
    session: Session, merchant_id: int, order_id: int, settings: Settings
) -> list[Commission]:
    """``order.completed``: pending → frozen until the after-sales window closes; schedules settlement."""
    from siyu.aftersales import service as aftersales

    order = repo.order(session, merchant_id, order_id)
    if order is None or order.completed_at is None:
        return []
    deadline = aftersales.window_deadline(order, aftersales.get_policy(session, merchant_id, settings), settings)
    assert deadline is not None
    out = []
    for c in repo.commissions_of_order(session, merchant_id, order_id, lock=True):
        if c.status != COMM_PENDING:
            continue
        net = c.amount - c.reversed_amount
        repo.move(
            session, merchant_id, c.distributor_id, key=f"commission:{c.id}:frozen", entry="frozen", amount=net,
            deltas={"pending": -net, "frozen": net}, commission_id=c.id, order_id=order_id,
        )
        c.status, c.frozen_at, c.settle_at = COMM_FROZEN, utcnow(), deadline
        session.flush()
        audit.record(session, merchant_id, "commission", c.id, "frozen", from_state=COMM_PENDING, to_state=COMM_FROZEN,
                     data={"settle_at": deadline.isoformat()})
        enqueue(session, merchant_id, "referral.settle", {"commission_id": c.id}, run_at=deadline,
                dedupe_key=f"referral:commission:{c.id}:settle")
        out.append(c)
    return out


def _credit_available(
    session: Session, merchant_id: int, distributor_id: int, amount: int, *, key: str, entry: str,
    extra: dict[str, int], **refs: Any,
) -> None:
    """Credit ``available``, paying any ``debt`` first (the row is locked while we read it)."""
    dist = repo.distributor(session, merchant_id, distributor_id, lock=True)
    assert dist is not None
    pay_debt = min(dist.debt, amount)
    repo.move(
        session, merchant_id, distributor_id, key=key, entry=entry, amount=amount,
        deltas={**extra, "available": amount - pay_debt, "debt": -pay_debt}, **refs,
    )


def settle(session: Session, merchant_id: int, commission_id: int, now: dt.datetime) -> Commission | None:
    """frozen → settled once ``settle_at`` has passed; postponed a day while an after-sale is open."""
    c = repo.commission(session, merchant_id, commission_id, lock=True)
    if c is None or c.status != COMM_FROZEN or c.settle_at is None:
        return None
    if now < c.settle_at:
        return None
    if repo.has_open_aftersale(session, merchant_id, c.order_id):
        later = now + dt.timedelta(days=1)
        enqueue(session, merchant_id, "referral.settle", {"commission_id": c.id}, run_at=later,
                dedupe_key=f"referral:commission:{c.id}:settle:{later.date().isoformat()}")
        return None
    net = c.amount - c.reversed_amount
    _credit_available(
        session, merchant_id, c.distributor_id, net, key=f"commission:{c.id}:settled", entry="settled",
        extra={"frozen": -net}, commission_id=c.id, order_id=c.order_id,
    )
    c.status, c.settled_at = COMM_SETTLED, now
    session.flush()
    audit.record(session, merchant_id, "commission", c.id, "settled", from_state=COMM_FROZEN, to_state=COMM_SETTLED,
                 data={"amount": net})
    emit(
        session, merchant_id, "commission.settled",
        {"commission_id": c.id, "distributor_id": c.distributor_id, "order_id": c.order_id, "amount": net},
        key=f"commission:{c.id}",
    )
    return c


def reversal_target(amount: int, base: int, refunded: int) -> int:
    """A line's reversed total after ``refunded`` of its ``base`` came back: half-up proportion,
    monotonic in ``refunded`` and exactly ``amount`` when everything is refunded."""
    if base <= 0 or refunded <= 0:
        return 0
    refunded = min(refunded, base)
    return (2 * amount * refunded + base) // (2 * base)


def goods_share(amount: int, goods: int, paid: int) -> int:
    """The part of a refund ``amount`` (given without lines) that refunds goods rather than
    freight: ``amount × goods / paid``, rounded down (never more than the goods)."""
    if paid <= 0:
        return min(amount, goods)
    return min(goods, amount * goods // paid)


def reverse_for_refund(
    session: Session, merchant_id: int, order_id: int, refund_id: int, *, amount: int,
    lines: Sequence[dict[str, Any]] | None, full: bool,
) -> int:
    """``order.refunded``: reverse commission in proportion (per line), once per refund. Returns the total reversed."""
    order = repo.order(session, merchant_id, order_id)
    paid_amount = order.paid_amount if order is not None else 0
    by_line: dict[int, int] = defaultdict(int)
    for ln in lines or []:
        by_line[int(ln["order_line_id"])] += int(ln.get("amount", 0))
    total_reversed = 0
    for c in repo.commissions_of_order(session, merchant_id, order_id, lock=True):
        if c.reversed_amount >= c.amount:
            continue
        clines = repo.commission_lines(session, merchant_id, c.id)
        new_refunded = [cl.refunded_base for cl in clines]
        if full:
            new_refunded = [cl.base_amount for cl in clines]
        elif by_line:
            new_refunded = [min(cl.base_amount, cl.refunded_base + by_line.get(cl.order_line_id, 0)) for cl in clines]
        else:  # an amount without lines: the goods' share of it, in proportion to what was paid
            remaining = [cl.base_amount - cl.refunded_base for cl in clines]
            goods = goods_share(amount, c.base_amount, paid_amount)
            spread = allocate(min(goods, sum(remaining)), remaining) if sum(remaining) else [0] * len(clines)
            new_refunded = [cl.refunded_base + s for cl, s in zip(clines, spread, strict=True)]
        targets = [
            cl.amount if full else reversal_target(cl.amount, cl.base_amount, r)
            for cl, r in zip(clines, new_refunded, strict=True)
        ]
        deltas = [max(0, t - cl.reversed_amount) for cl, t in zip(clines, targets, strict=True)]
        r = sum(deltas)
        if not repo.mark_refund_applied(session, merchant_id, c.id, refund_id, r):
            continue  # this refund was applied already
        for cl, nr, d in zip(clines, new_refunded, deltas, strict=True):
            cl.refunded_base = nr
            cl.reversed_amount += d
        session.flush()
        if r == 0:
            continue
        key = f"commission:{c.id}:refund:{refund_id}"
        refs: dict[str, Any] = {"commission_id": c.id, "order_id": order_id}
        if c.status == COMM_PENDING:
            repo.move(session, merchant_id, c.distributor_id, key=key, entry="reversed", amount=r,
                      deltas={"pending": -r}, **refs)
        elif c.status == COMM_FROZEN:
            repo.move(session, merchant_id, c.distributor_id, key=key, entry="reversed", amount=r,
                      deltas={"frozen": -r}, **refs)
        else:  # settled: claw back from available, the rest becomes debt
            dist = repo.distributor(session, merchant_id, c.distributor_id, lock=True)
            assert dist is not None
            take = min(dist.available, r)
            repo.move(session, merchant_id, c.distributor_id, key=key, entry="clawback", amount=r,
                      deltas={"available": -take, "debt": r - take}, **refs)
        was = c.status
        c.reversed_amount += r
        if c.reversed_amount >= c.amount:
            c.status = COMM_REVERSED
        session.flush()
        audit.record(session, merchant_id, "commission", c.id, "reversed", from_state=was, to_state=c.status,
                     data={"refund_id": refund_id, "amount": r, "full": full})
        total_reversed += r
    return total_reversed


def commission_detail(session: Session, merchant_id: int, commission_id: int) -> tuple[Commission, list[CommissionLine]]:
    c = repo.commission(session, merchant_id, commission_id)
    if c is None:
        raise not_found("佣金", "Commission")
    return c, repo.commission_lines(session, merchant_id, c.id)


# -- withdrawals -------------------------------------------------------------------------------


def _stored_real_name(dist: Distributor, secret_key: str) -> str | None:
    """The name given when applying; None when there is none or it cannot be decrypted (the
    secret key changed): the distributor is then asked for it."""
    try:
        return (pii.real_name_of(dist, secret_key) or "").strip() or None
    except (InvalidTag, ValueError):
        log.warning("distributor %s: stored real name unreadable", dist.id)
        return None


def my_distributor(session: Session, merchant_id: int, member_id: int) -> Distributor:
    dist = repo.distributor_of_member(session, merchant_id, member_id)
    if dist is None:
        raise not_found("分销员", "Distributor")
    return dist


def request_withdrawal(
    session: Session, merchant_id: int, member_id: int, amount: int, *, idempotency_key: str | None,
    real_name: str | None = None, settings: Settings | None = None,
) -> tuple[Withdrawal, bool]:
    """available → withdrawing by conditional update. Returns (withdrawal, created).

    When the payout provider needs the payee's real name for this amount (WeChat transfers from
    2,000 yuan), it is ``real_name`` or else the name given when applying as a distributor; none
    is ``withdrawal_real_name_required`` before anything changes. It is stored encrypted
    (``payout.payee_box``) with a masked copy; the name is never logged nor audited."""
    if not idempotency_key:
        raise DomainError("idempotency_key_required")
    dist = repo.approved_distributor_of_member(session, merchant_id, member_id)
    if dist is None:
        raise DomainError("distributor_not_approved")
    existing = repo.withdrawal_by_key(session, merchant_id, dist.id, idempotency_key)
    if existing is not None:
        if existing.amount != amount:
            raise DomainError("idempotency_key_reused")
        return existing, False
    cfg = config(session, merchant_id)
    if amount < cfg.min_withdrawal:
        raise DomainError("withdrawal_below_minimum", minimum=cfg.min_withdrawal)
    name: str | None = None
    secret_key = (settings or get_settings()).secret_key
    if payout.needs_real_name(cfg.payout_provider, amount):
        name = (real_name or "").strip() or _stored_real_name(dist, secret_key)
        if not name:
            threshold = payout.name_threshold(cfg.payout_provider) or 0
            raise DomainError("withdrawal_real_name_required", yuan=f"{threshold // 100:,}")
    w = Withdrawal(
        merchant_id=merchant_id, distributor_id=dist.id, member_id=member_id, amount=amount, status=WD_REQUESTED,
        request_key=idempotency_key, provider=cfg.payout_provider,
    )
    session.add(w)
    try:
        with session.begin_nested():
            session.flush()
            if name:  # bound to the withdrawal's id: sealed once the row has it
                pii.seal_payee(w, name, secret_key)
                session.flush()
    except IntegrityError:  # the same key raced in: return the other request's result
        found = repo.withdrawal_by_key(session, merchant_id, dist.id, idempotency_key)
        if found is None:
            raise
        if found.amount != amount:
            raise DomainError("idempotency_key_reused") from None
        return found, False
    try:
        repo.move(
            session, merchant_id, dist.id, key=f"withdrawal:{w.id}:requested", entry="withdrawal_requested",
            amount=amount, deltas={"available": -amount, "withdrawing": amount}, withdrawal_id=w.id,
        )
    except repo.InsufficientBalance as exc:
        raise DomainError("withdrawal_exceeds_balance") from exc
    audit.record(session, merchant_id, "withdrawal", w.id, "requested", to_state=WD_REQUESTED,
                 actor=("customer", member_id), data={"amount": amount})
    return w, True


def _transition(
    session: Session, merchant_id: int, withdrawal_id: int, from_states: tuple[str, ...], to: str,
    values: dict[str, Any], error: str,
) -> Withdrawal:
    w = repo.withdrawal(session, merchant_id, withdrawal_id)
    if w is None:
        raise not_found("提现申请", "Withdrawal")
    if not repo.set_withdrawal_status(session, merchant_id, withdrawal_id, from_states, {"status": to, **values}):
        session.refresh(w)
        raise DomainError(error, status=w.status)
    session.refresh(w)
    return w


def approve_withdrawal(session: Session, merchant_id: int, withdrawal_id: int, note: str | None, *, actor: Actor) -> Withdrawal:
    w = _transition(
        session, merchant_id, withdrawal_id, (WD_REQUESTED,), WD_APPROVED,
        {"review_note": note, "reviewed_by": actor[1], "reviewed_at": utcnow()}, "withdrawal_not_pending",
    )
    audit.record(session, merchant_id, "withdrawal", w.id, "approved", from_state=WD_REQUESTED, to_state=WD_APPROVED,
                 actor=actor)
    provider = payout.get(w.provider)
    if provider is not None and provider.automatic:
        enqueue(session, merchant_id, "referral.payout", {"withdrawal_id": w.id}, dedupe_key=f"withdrawal:{w.id}:payout")
    return w


def reject_withdrawal(session: Session, merchant_id: int, withdrawal_id: int, note: str | None, *, actor: Actor) -> Withdrawal:
    found = repo.withdrawal(session, merchant_id, withdrawal_id)
    provider = payout.get(found.provider) if found is not None else None
    # an approved automatic payout may already be on its way: only its provider can fail it
    from_states = (WD_REQUESTED,) if provider is not None and provider.automatic else (WD_REQUESTED, WD_APPROVED)
    w = _transition(
        session, merchant_id, withdrawal_id, from_states, WD_REJECTED,
        {"review_note": note, "reviewed_by": actor[1], "reviewed_at": utcnow()}, "withdrawal_not_pending",
    )
    _credit_available(
        session, merchant_id, w.distributor_id, w.amount, key=f"withdrawal:{w.id}:rejected",
        entry="withdrawal_returned", extra={"withdrawing": -w.amount}, withdrawal_id=w.id,
    )
    audit.record(session, merchant_id, "withdrawal", w.id, "rejected", to_state=WD_REJECTED, actor=actor,
                 data={"note": note})
    return w


def mark_withdrawal_paid(
    session: Session, merchant_id: int, withdrawal_id: int, reference: str, *, actor: Actor
) -> Withdrawal:
    now = utcnow()
    w = _transition(
        session, merchant_id, withdrawal_id, (WD_APPROVED,), WD_PAID,
        {"provider_reference": reference, "paid_at": now}, "withdrawal_not_approved",
    )
    repo.move(
        session, merchant_id, w.distributor_id, key=f"withdrawal:{w.id}:paid", entry="withdrawal_paid",
        amount=w.amount, deltas={"withdrawing": -w.amount, "withdrawn": w.amount}, withdrawal_id=w.id,
    )
    audit.record(session, merchant_id, "withdrawal", w.id, "paid", from_state=WD_APPROVED, to_state=WD_PAID,
                 actor=actor, data={"reference": reference})
    emit(
        session, merchant_id, "withdrawal.paid",
        {"withdrawal_id": w.id, "distributor_id": w.distributor_id, "member_id": w.member_id, "amount": w.amount,
         "reference": reference},
        key=f"withdrawal:{w.id}",
    )
    return w


@dataclass(frozen=True)
class PayoutSubmission:
    provider: Any
    request: payout.PayoutRequest


def payout_submission(
    session: Session, merchant_id: int, withdrawal_id: int, settings: Settings | None, *, send: bool = False,
    after_failure: bool = False,
) -> PayoutSubmission | None:
    """What the ``referral.payout`` / ``referral.payout_query`` jobs send: None when the
    withdrawal is no longer approved or its provider is not automatic. Reads credentials through
    the provider's ``prepare`` (in the job's transaction; the job commits before sending).

    ``send``: for the send itself. The withdrawal is read under its row lock — the lock
    ``cancel_payout`` decides under, so a send either starts before a cancellation looks (which
    then sees its job running) or finds the withdrawal failed — and a withdrawal whose bill
    finance is cancelling (``CANCELING``) is not sent again.

    ``after_failure``: for the late checks of a *failed* withdrawal (``check_late_bill``): the
    submission to look its bill up and cancel it with (None unless it is failed; no payee name,
    neither needs one)."""
    w = repo.withdrawal(session, merchant_id, withdrawal_id, lock=send)
    if w is None or w.status != (WD_FAILED if after_failure else WD_APPROVED):
        return None
    if send and w.provider_state == CANCELING:
        return None
    provider = payout.get(w.provider)
    if provider is None or not provider.automatic:
        return None
    prepare = getattr(provider, "prepare", None)
    context = prepare(session, merchant_id, settings, w.member_id) if prepare is not None else None
    payee_name: str | None = None
    try:
        if not after_failure:
            payee_name = pii.payee_name_of(w, (settings or get_settings()).secret_key)
    except (InvalidTag, ValueError) as exc:  # SIYU_SECRET_KEY changed: ask the distributor again
            raise payout.PayoutError("PAYEE_NAME_UNREADABLE", "the stored payee name cannot be decrypted",
                                     retryable=False) from exc
    return PayoutSubmission(
        provider=provider,
        request=payout.PayoutRequest(
            merchant_id=merchant_id, withdrawal_id=w.id, member_id=w.member_id, amount=w.amount,
            idempotency_key=f"withdrawal-{w.id}", context=context, payee_name=payee_name,
        ),
    )


def run_payout(
    session: Session, merchant_id: int, withdrawal_id: int, settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> None:
    """``referral.payout`` job: an automatic provider pays an approved withdrawal.

    Nothing is sent with a transaction open: the job's reads commit first. A send whose outcome
    is unknown (network, 5xx) raises, and the worker retries with the same idempotency key
    (WeChat's ``out_bill_no``), which returns the same transfer instead of paying twice. A
    withdrawal finance cancelled before it was sent is failed already: nothing is sent.

    The fence for a send that outlived its lease (the worker froze after reading, another
    attempt failed meanwhile, finance cancelled or failed the withdrawal and the amount
    returned; then this send reached the provider): the answer is recorded under the
    withdrawal's row lock (``apply_payout_result``). A withdrawal found failed by then with a
    bill that is not final gets a follow-up check queued (``withdrawal:<id>:late:f0``, committed
    with the answer), and the bill is cancelled at once (``_cancel_late_bill``) — the check then
    sees it ``CANCELLED``, or cancels it again, or records it paid (``paid_after_failure``). A
    send without an answer for a withdrawal failed meanwhile queues the same follow-up and ends
    (no retry would send again)."""
    try:
        sub = payout_submission(session, merchant_id, withdrawal_id, settings, send=True)
    except payout.PayoutError as exc:  # e.g. the merchant's keys became unreadable
        if exc.retryable:
            raise
        failed = payout.PayoutResult(status="failed", detail=f"{exc.code}: {exc.message}"[:200])
        apply_payout_result(session, merchant_id, withdrawal_id, failed, source="send")
        return
    if sub is None:
        return
    session.commit()
    try:
        result = sub.provider.send(sub.request)
    except payout.PayoutError as exc:
        if exc.retryable:
            if _unanswered_send_after_failure(session, merchant_id, withdrawal_id, exc, settings, now=now):
                return
            raise
        result = payout.PayoutResult(status="failed", detail=f"{exc.code}: {exc.message}"[:200])
    w = apply_payout_result(session, merchant_id, withdrawal_id, result, source="send", now=now)
    if w is not None and w.status == WD_FAILED and result.status == "processing":
        session.commit()  # the answer and its follow-up check are kept before the provider is asked again
        _cancel_late_bill(session, merchant_id, withdrawal_id, sub, result, source="send", settings=settings, now=now)


def _unanswered_send_after_failure(
    session: Session, merchant_id: int, withdrawal_id: int, exc: payout.PayoutError, settings: Settings | None,
    *, now: dt.datetime | None,
) -> bool:
    """A send without an answer: if the withdrawal failed meanwhile (finance cancelled or failed
    it while this send was on its way), a bill may have been created although the amount
    returned. The follow-up checks look it up (``withdrawal:<id>:late:f<n>``) and the send ends:
    its retry would find the withdrawal failed and send nothing. False: still approved (retry)."""
    w = repo.withdrawal(session, merchant_id, withdrawal_id, lock=True)
    if w is None or w.status != WD_FAILED:
        return False
    log.warning("withdrawal %s: a send without answer (%s) after the withdrawal failed: checking later",
                withdrawal_id, exc.code)
    audit.record(session, merchant_id, "withdrawal", w.id, "late_send_unanswered", from_state=WD_FAILED,
                 to_state=WD_FAILED, actor=SYSTEM, data={"error": exc.code})
    _enqueue_late_check(session, merchant_id, w.id, "f", 0, settings, now=now)
    return True


def query_payout(
    session: Session, merchant_id: int, withdrawal_id: int, poll: int, settings: Settings | None, chain: str = "",
    now: dt.datetime | None = None,
) -> None:
    """``referral.payout_query`` job: ask the provider about a payout still in flight. ``chain``
    names the series of polls (``""``: after the send; ``"c"``: after a cancellation)."""
    sub = payout_submission(session, merchant_id, withdrawal_id, settings)
    if sub is None or getattr(sub.provider, "query", None) is None:
        return
    session.commit()
    result = sub.provider.query(sub.request)  # PayoutError: the worker retries
    apply_payout_result(session, merchant_id, withdrawal_id, result, source="query", poll=poll, chain=chain, now=now)


def _enqueue_poll(
    session: Session, merchant_id: int, withdrawal_id: int, poll: int, chain: str, minutes: int,
    now: dt.datetime | None = None,
) -> None:
    """A ``referral.payout_query`` job ``minutes`` after ``now`` (the job's clock: the polls of a
    chain add up); its dedupe key ``withdrawal:<id>:query:<chain><poll>`` makes each poll of a
    chain once (and ``repo.payout_job_live`` sees it)."""
    payload: dict[str, Any] = {"withdrawal_id": withdrawal_id, "poll": poll}
    if chain:
        payload["chain"] = chain
    enqueue(
        session, merchant_id, "referral.payout_query", payload,
        run_at=max(now or utcnow(), utcnow()) + dt.timedelta(minutes=minutes),
        dedupe_key=f"withdrawal:{withdrawal_id}:query:{chain}{poll}",
    )


# minutes between status polls: 46 hours in all, past WeChat's 24-hour confirmation window (an
# unconfirmed bill is then CANCELLED and its amount returns); then finance follows up by hand
PAYOUT_POLL_MINUTES = (5, 15, 60, 180, 360, 720, 720, 720)
CANCEL_POLL_MINUTES = 1  # the first poll after WeChat accepted a cancellation (CANCELING)
CANCELING = "CANCELING"  # provider_state while the provider cancels the payout (WeChat's state)


def apply_payout_result(
    session: Session, merchant_id: int, withdrawal_id: int, result: payout.PayoutResult, *, source: str,
    poll: int = -1, chain: str = "", now: dt.datetime | None = None,
) -> Withdrawal | None:
    """Move a withdrawal by a provider's answer (send, query or notification). Idempotent: a
    withdrawal already paid or failed stays as it is; each move happens once (conditional
    transition + ledger keys). A cancellation finance asked for (``CANCELING``) is not undone
    by an older in-flight answer (e.g. a poll that left before it).

    Decided under the withdrawal's row lock (the lock ``cancel_payout`` and ``fail_payout`` fail
    it under), so an answer never lands on a state it did not see. A withdrawal that failed
    meanwhile (its amount returned) while the provider has a bill after all: ``paid`` is
    recorded as paid after failure (``_record_paid_after_failure``: withdrawn, the returned
    amount taken back, a debt for what is no longer available); a bill that is not final gets
    the follow-up checks (``withdrawal:<id>:late:f0``) that cancel it; the send job cancels it at
    once as well (``run_payout``)."""
    w = repo.withdrawal(session, merchant_id, withdrawal_id, lock=True)
    if w is None:
        return None
    if w.status == WD_FAILED and result.status == "paid":
        return _record_paid_after_failure(session, merchant_id, w.id, result, source=source)
    if w.status == WD_FAILED and result.status == "processing":
        log.error("withdrawal %s: the provider has a bill (%s, %s) after the withdrawal failed",
                  w.id, result.state, source)
        _enqueue_late_check(session, merchant_id, w.id, "f", 0, None, now=now)
        return w
    if w.status != WD_APPROVED:
        return w
    if result.status == "paid":
        w = mark_withdrawal_paid(session, merchant_id, w.id, result.reference or "", actor=SYSTEM)
        repo.set_withdrawal_status(session, merchant_id, w.id, (WD_PAID,), {"provider_state": result.state})
        return w
    if result.status == "failed":
        if (w.provider_state == CANCELING or chain.startswith("c")) and not result.detail:
            result = replace(result, detail=w.review_note)  # finance cancelled: its note stays the reason
        return fail_withdrawal(session, merchant_id, w.id, result, source=source)
    if w.provider_state != CANCELING or result.state == CANCELING:
        # an answer without data (WeChat's query has no package_info) keeps what the last answer
        # of the same state gave: the payee still confirms with the package the send returned
        data = result.data or (w.provider_data if result.state == w.provider_state else None) or None
        values: dict[str, Any] = {"provider_state": result.state, "provider_data": data}
        if result.reference:
            values["provider_reference"] = result.reference
        repo.set_withdrawal_status(session, merchant_id, w.id, (WD_APPROVED,), values)
        session.refresh(w)
    provider = payout.get(w.provider)
    nxt = poll + 1
    if provider is not None and getattr(provider, "query", None) is not None and nxt < len(PAYOUT_POLL_MINUTES):
        _enqueue_poll(session, merchant_id, w.id, nxt, chain, PAYOUT_POLL_MINUTES[nxt], now)
    elif provider is not None and getattr(provider, "query", None) is None and source == "send":
        raise RuntimeError("payout still processing")  # a provider without query: the worker asks again
    return w


def fail_withdrawal(
    session: Session, merchant_id: int, withdrawal_id: int, result: payout.PayoutResult, *, source: str
) -> Withdrawal:
    """approved → failed: the amount returns to available (once, by its ledger key)."""
    w = _transition(
        session, merchant_id, withdrawal_id, (WD_APPROVED,), WD_FAILED,
        {"provider_state": result.state, "provider_data": result.data or None, "failed_at": utcnow(),
         "review_note": (result.detail or "payout failed")[:200],
         **({"provider_reference": result.reference} if result.reference else {})},
        "withdrawal_not_approved",
    )
    _credit_available(
        session, merchant_id, w.distributor_id, w.amount, key=f"withdrawal:{w.id}:failed",
        entry="withdrawal_returned", extra={"withdrawing": -w.amount}, withdrawal_id=w.id,
    )
    audit.record(session, merchant_id, "withdrawal", w.id, "failed", from_state=WD_APPROVED, to_state=WD_FAILED,
                 actor=SYSTEM, data={"detail": result.detail, "state": result.state, "source": source})
    emit(
        session, merchant_id, "withdrawal.failed",
        {"withdrawal_id": w.id, "distributor_id": w.distributor_id, "member_id": w.member_id, "amount": w.amount,
         "detail": result.detail},
        key=f"withdrawal:{w.id}:failed",
    )
    return w


# -- a bill that comes after the withdrawal failed -----------------------------------------------

# follow-up checks of a bill that exists (or may: a send without answer) for a failed withdrawal,
# minutes after the previous one: 34 hours in all, past WeChat's 24-hour confirmation window
LATE_FOLLOW_UP_MINUTES = (1, 5, 15, 60, 180, 360, 720, 720)
LATE_CHECK_MARGIN = dt.timedelta(seconds=60)  # added to a send's lease and HTTP time
LATE_CHECK_AGAIN = dt.timedelta(minutes=15)
LATE_CHECK_JOB = "referral.payout_late_check"


def late_check_delays(series: str, settings: Settings | None, provider: Any) -> tuple[dt.timedelta, ...]:
    """The delays of a series of late checks (``check_late_bill``), each after the previous one.

    ``n`` — a cancel or fail-payout found no bill (``NOT_FOUND``) although a send had been
    attempted: after the send job's lease + the provider's longest send (``send_seconds``) + a
    margin (a send that froze within its lease has reached the provider or given up by then), 15
    minutes later, and once more past the provider's confirmation window (``confirm_window``) +
    1 hour (a bill made before the second check is final by then: paid, or cancelled by WeChat).
    ``f`` — a bill exists (or a send without answer may have made one): ``LATE_FOLLOW_UP_MINUTES``."""
    if series == "f":
        return tuple(dt.timedelta(minutes=m) for m in LATE_FOLLOW_UP_MINUTES)
    lease = dt.timedelta(seconds=(settings or get_settings()).worker_lease_seconds)
    http = dt.timedelta(seconds=float(getattr(provider, "send_seconds", 30.0)))
    window: dt.timedelta = getattr(provider, "confirm_window", dt.timedelta(hours=24))
    return lease + http + LATE_CHECK_MARGIN, LATE_CHECK_AGAIN, window + dt.timedelta(hours=1)


def _enqueue_late_check(
    session: Session, merchant_id: int, withdrawal_id: int, series: str, step: int, settings: Settings | None,
    *, provider: Any = None, now: dt.datetime | None = None,
) -> bool:
    """The late check ``step`` of ``series`` (``referral.payout_late_check``), once: dedupe key
    ``withdrawal:<id>:late:<series><step>``, on the job's clock like the polls. False when the
    series has no such step (it ran out)."""
    delays = late_check_delays(series, settings, provider)
    if step >= len(delays):
        return False
    enqueue(
        session, merchant_id, LATE_CHECK_JOB, {"withdrawal_id": withdrawal_id, "series": series, "step": step},
        run_at=max(now or utcnow(), utcnow()) + delays[step],
        dedupe_key=f"withdrawal:{withdrawal_id}:late:{series}{step}",
    )
    return True


def _record_paid_after_failure(
    session: Session, merchant_id: int, withdrawal_id: int, result: payout.PayoutResult, *, source: str
) -> Withdrawal:
    """The provider paid (``SUCCESS``) a bill of a withdrawal that had failed and returned its
    amount (a send that reached WeChat after finance cancelled or failed the withdrawal, and the
    payee confirmed it before it was cancelled): the payee has the money, so no fen may stay
    returned as well.

    Once (conditional ``failed`` → ``paid``, ledger key ``withdrawal:<id>:paid_after_failure``):
    the withdrawal is ``paid`` (``failed_at`` and the note kept, ``paid_at`` now), ``withdrawn``
    grows by the amount and the amount is taken back from ``available`` as far as it goes; the
    rest becomes ``debt`` (never a negative balance), recovered first from later settlements and
    returned withdrawals (``_credit_available``). Audited ``paid_after_failure`` (how much came
    from ``available``, how much is debt) and emitted ``withdrawal.paid_after_failure``."""
    w = repo.withdrawal(session, merchant_id, withdrawal_id, lock=True)
    assert w is not None
    if w.status != WD_FAILED:
        return w
    dist = repo.distributor(session, merchant_id, w.distributor_id, lock=True)
    assert dist is not None
    take = min(dist.available, w.amount)
    debt = w.amount - take
    values: dict[str, Any] = {"status": WD_PAID, "paid_at": utcnow(), "provider_state": result.state,
                              "provider_data": None}
    if result.reference:
        values["provider_reference"] = result.reference
    if not repo.set_withdrawal_status(session, merchant_id, w.id, (WD_FAILED,), values):  # pragma: no cover - locked
        session.refresh(w)
        return w
    repo.move(
        session, merchant_id, w.distributor_id, key=f"withdrawal:{w.id}:paid_after_failure",
        entry="withdrawal_paid_late", amount=w.amount,
        deltas={"available": -take, "debt": debt, "withdrawn": w.amount}, withdrawal_id=w.id,
    )
    session.refresh(w)
    log.error("withdrawal %s: paid by the provider after it failed (%s): %s fen taken back, %s fen debt",
              w.id, source, take, debt)
    audit.record(session, merchant_id, "withdrawal", w.id, "paid_after_failure", from_state=WD_FAILED,
                 to_state=WD_PAID, actor=SYSTEM,
                 data={"reference": result.reference, "state": result.state, "source": source, "amount": w.amount,
                       "from_available": take, "debt": debt})
    emit(
        session, merchant_id, "withdrawal.paid_after_failure",
        {"withdrawal_id": w.id, "distributor_id": w.distributor_id, "member_id": w.member_id, "amount": w.amount,
         "reference": result.reference, "from_available": take, "debt": debt},
        key=f"withdrawal:{w.id}:paid_after_failure",
    )
    return w


def _cancel_late_bill(
    session: Session, merchant_id: int, withdrawal_id: int, sub: PayoutSubmission, seen: payout.PayoutResult,
    *, source: str, settings: Settings | None, now: dt.datetime | None, follow_up: int | None = None,
) -> None:
    """Ask the provider to cancel a bill that is not final (``seen``) of a failed withdrawal; the
    caller committed (no transaction is open while the provider answers). Audited
    ``late_bill_cancel`` (the bill's state, the answer or error code). ``follow_up``: the step of
    the ``f`` checks to queue unless the answer is final (``CANCELLED``); the send's fence queued
    its check before asking. A refusal (the bill turned final, e.g. the payee confirmed) or a lost
    answer is settled by that check: ``SUCCESS`` is recorded paid after failure."""
    cancelled: payout.PayoutResult | None = None
    try:
        cancelled = sub.provider.cancel(sub.request)
        answer = cancelled.state or cancelled.status
    except payout.PayoutError as exc:
        answer = exc.code
    w = repo.withdrawal(session, merchant_id, withdrawal_id, lock=True)
    if w is None or w.status != WD_FAILED:  # recorded paid meanwhile (e.g. the notification)
        return
    log.warning("withdrawal %s: cancelled a bill (%s) made after it failed: %s", w.id, seen.state, answer)
    audit.record(session, merchant_id, "withdrawal", w.id, "late_bill_cancel", from_state=WD_FAILED,
                 to_state=WD_FAILED, actor=SYSTEM,
                 data={"bill_state": seen.state, "reference": seen.reference, "answer": answer, "source": source})
    if follow_up is not None and (cancelled is None or cancelled.status != "failed"):
        _enqueue_late_check(session, merchant_id, w.id, "f", follow_up, settings, now=now)


def check_late_bill(
    session: Session, merchant_id: int, withdrawal_id: int, series: str, step: int, settings: Settings | None,
    now: dt.datetime | None = None,
) -> None:
    """``referral.payout_late_check`` job: is there a bill for this *failed* withdrawal after all?
    Looked up by ``out_bill_no`` with no transaction open (the reads commit first).

    - ``NOT_FOUND``: nothing (yet); the next check of the series, if any.
    - Not final (e.g. ``WAIT_USER_CONFIRM``): cancelled at the provider (``_cancel_late_bill``),
      then followed up by the ``f`` checks until it is final; ``CANCELING``: followed up only.
    - ``SUCCESS``: recorded paid after failure (``_record_paid_after_failure``).
    - ``FAIL`` / ``CANCELLED``: nothing to do (audited ``late_bill_closed`` when the bill was
      known: the ``f`` checks).
    - No answer: the next check of the series; after the last one the job fails and is retried.

    A withdrawal no longer failed (recorded paid after failure) or not paid automatically: nothing."""
    sub = payout_submission(session, merchant_id, withdrawal_id, settings, after_failure=True)
    if sub is None or getattr(sub.provider, "query", None) is None or getattr(sub.provider, "cancel", None) is None:
        return
    session.commit()
    try:
        result: payout.PayoutResult = sub.provider.query(sub.request)
    except payout.PayoutError as exc:
        if exc.code == "NOT_FOUND":
            _enqueue_late_check(session, merchant_id, withdrawal_id, series, step + 1, settings,
                                provider=sub.provider, now=now)
            return
        if not _enqueue_late_check(session, merchant_id, withdrawal_id, series, step + 1, settings,
                                   provider=sub.provider, now=now):
            raise
        log.warning("withdrawal %s: late check %s%s got no answer (%s)", withdrawal_id, series, step, exc.code)
        return
    if result.status == "paid":
        apply_payout_result(session, merchant_id, withdrawal_id, result, source="late_check", now=now)
        return
    follow_up = step + 1 if series == "f" else 0
    if result.status == "failed":
        w = repo.withdrawal(session, merchant_id, withdrawal_id, lock=True)
        if series == "f" and w is not None and w.status == WD_FAILED:
            audit.record(session, merchant_id, "withdrawal", w.id, "late_bill_closed", from_state=WD_FAILED,
                         to_state=WD_FAILED, actor=SYSTEM, data={"state": result.state, "reference": result.reference})
        return
    if result.state == CANCELING:  # asked already: see it end
        _enqueue_late_check(session, merchant_id, withdrawal_id, "f", follow_up, settings, now=now)
        return
    _cancel_late_bill(session, merchant_id, withdrawal_id, sub, result, source="late_check", settings=settings,
                      now=now, follow_up=follow_up)


def fail_payout(
    session: Session, merchant_id: int, withdrawal_id: int, note: str | None, *, actor: Actor,
    settings: Settings | None = None,
) -> Withdrawal:
    """Finance's way out for an approved payout that never completes (its send kept failing
    until the worker gave up, or its polls ran out): ``approved`` → ``failed`` and the amount
    returns to ``available`` — exactly once, by the same ledger key as a provider's failure
    (``withdrawal:<id>:failed``).

    - A retry (the withdrawal already ``failed``) returns it unchanged.
    - ``withdrawal_already_paid``: it was paid. ``withdrawal_not_in_payout``: never approved
      (``requested``: reject it instead; ``rejected``).
    - ``withdrawal_payout_in_flight``: a send or poll job of it is still queued or running, or
      the provider reports the transfer still in progress (e.g. ``WAIT_USER_CONFIRM``).
    - For a provider with ``query`` the provider is asked first, with no transaction open (the
      reads so far are committed; nothing was written): no such transfer (``NOT_FOUND``: no
      job sends it again, the withdrawal is no longer approved when one looks) → failed here;
      when a send had been attempted, a send that outlived its lease may still reach the
      provider, so the late checks are queued with the failure (``withdrawal:<id>:late:n0``,
      ``check_late_bill``: such a bill is cancelled, or recorded paid after failure with a
      debt, and the send's own fence does the same when its answer comes); already failed or
      cancelled → failed by the provider's answer; paid → the withdrawal is recorded paid (committed) and the call
      refused ``withdrawal_already_paid``; no answer → ``withdrawal_payout_unknown``, nothing
      changed.
    """
    w = _payout_to_fail(session, merchant_id, withdrawal_id)
    if w.status == WD_FAILED:
        return w
    provider = payout.get(w.provider)
    found: str | None = None
    if provider is not None and provider.automatic and getattr(provider, "query", None) is not None:
        try:
            sub = payout_submission(session, merchant_id, withdrawal_id, settings)
        except payout.PayoutError as exc:
            raise DomainError("withdrawal_payout_unknown") from exc
        session.commit()  # nothing written: no transaction stays open while the provider answers
        if sub is not None:
            try:
                result = sub.provider.query(sub.request)
            except payout.PayoutError as exc:
                if exc.code != "NOT_FOUND":
                    raise DomainError("withdrawal_payout_unknown") from exc
                found = "NOT_FOUND"
            else:
                found = result.state or result.status
                if result.status in ("paid", "failed"):
                    apply_payout_result(session, merchant_id, withdrawal_id, result, source="admin_query")
                    if result.status == "paid":
                        session.commit()  # the provider's truth is kept although this call is refused
                        raise DomainError("withdrawal_already_paid")
                    return _payout_to_fail(session, merchant_id, withdrawal_id)
                raise DomainError("withdrawal_payout_in_flight", state=found)
        w = _payout_to_fail(session, merchant_id, withdrawal_id)  # again, under the row lock
        if w.status == WD_FAILED:
            return w
    now = utcnow()
    values: dict[str, Any] = {"failed_at": now, "review_note": (note or "payout failed: closed by finance")[:200],
                              "reviewed_by": actor[1]}
    if found == "NOT_FOUND":
        values["provider_state"] = None
    w = _transition(session, merchant_id, withdrawal_id, (WD_APPROVED,), WD_FAILED, values, "withdrawal_not_in_payout")
    _credit_available(
        session, merchant_id, w.distributor_id, w.amount, key=f"withdrawal:{w.id}:failed",
        entry="withdrawal_returned", extra={"withdrawing": -w.amount}, withdrawal_id=w.id,
    )
    audit.record(session, merchant_id, "withdrawal", w.id, "failed", from_state=WD_APPROVED, to_state=WD_FAILED,
                 actor=actor, data={"note": note, "source": "admin", "provider_answer": found})
    send = repo.payout_send_job(session, merchant_id, w.id) if found == "NOT_FOUND" else None
    if send is not None and send.attempts > 0:  # a send that outlived its lease may still come: look later
        _enqueue_late_check(session, merchant_id, w.id, "n", 0, settings, provider=provider)
    emit(
        session, merchant_id, "withdrawal.failed",
        {"withdrawal_id": w.id, "distributor_id": w.distributor_id, "member_id": w.member_id, "amount": w.amount,
         "detail": "closed by finance"},
        key=f"withdrawal:{w.id}:failed",
    )
    return w


def cancel_payout(
    session: Session, merchant_id: int, withdrawal_id: int, note: str | None, *, actor: Actor,
    settings: Settings | None = None,
) -> Withdrawal:
    """Finance withdraws an automatic payout the payee has not taken yet: before it was sent, or
    (WeChat) a bill in ``WAIT_USER_CONFIRM`` or another state that is not final.

    Decided under the withdrawal's row lock, which the send job also takes before it sends
    (``payout_submission(send=True)``), with the send job as committed (a worker's claim counts
    an attempt before its handler runs):

    - Never sent (the send job is queued and no worker ever claimed it): no bill can exist. The
      withdrawal fails here and the amount returns to ``available`` (once, ledger key
      ``withdrawal:<id>:failed``); the job, when it runs, finds it failed and sends nothing.
    - A send attempt is running right now: ``withdrawal_payout_sending`` (a bill may be being
      created; its answer comes within seconds — try again).
    - Sent, but no send was ever answered (each attempt timed out or failed retryably, the job
      waits to retry or gave up): the bill is looked up by ``out_bill_no`` first. No such bill
      (``NOT_FOUND``) → failed here, provided no send attempt started meanwhile (the send job is
      still as it was before the question; else ``withdrawal_payout_sending``); a final bill is
      taken as below; a bill that is not final is cancelled.
    - A send attempt that outlived its job lease (the worker froze after it read the withdrawal,
      longer than the lease; another attempt failed meanwhile) may still reach WeChat after this
      ``NOT_FOUND``. Two guards: the late checks queued with the failure
      (``withdrawal:<id>:late:n0``, after the lease + the send's HTTP time + a margin, again 15
      minutes later and past WeChat's 24-hour window; ``check_late_bill``), and the send's own
      fence (``run_payout``: its answer is recorded under the row lock, finds the withdrawal
      failed and cancels the bill at once). A bill the payee confirmed before it was cancelled is
      recorded paid after failure: withdrawn, the returned amount taken back, the rest a debt.

    Then the provider is called with no transaction open (the reads so far are committed; nothing
    written):

    - ``CANCELING`` (accepted): the withdrawal stays ``approved`` with ``provider_state``
      ``CANCELING`` (its ``package_info`` dropped, the note kept as ``review_note``), the
      request is audited once (``cancel_requested``) and a series of status polls starts
      (``withdrawal:<id>:query:c<n>``; a retry once every poll ran out starts another,
      ``query:c<timestamp>-<n>``). Their ``CANCELLED`` — or the provider's notification —
      fails the withdrawal and returns the amount, once.
    - ``CANCELLED`` (already): failed now, the same way.
    - The bill is final (refused): it is asked for; ``SUCCESS`` is recorded paid (committed, the
      payee has the money) and the call refused ``withdrawal_payout_cancel_too_late``; ``FAIL``
      fails the withdrawal by that answer (the amount returns).
    - ``NOT_FOUND``: no bill was ever created: failed here (with the same check of the send job
      and the same late checks).
    - The cancel was sent and its answer lost (network, timeout, 5xx): WeChat may have accepted
      it. The same status polls start (committed, with the request's audit and note) and the call
      is refused ``withdrawal_payout_cancel_unconfirmed``: the polls settle it by themselves
      (``CANCELLED`` fails it and returns the amount once, ``SUCCESS`` pays it, a bill still
      waiting is shown so), or finance repeats the cancel.
    - The lookup got no answer: ``withdrawal_payout_unknown``, nothing changed (nothing was
      cancelled).

    A retry, or a parallel call, is harmless: WeChat answers the same, the transition and the
    ledger entry are conditional, and only the first call audits. Refused before anything is
    sent: ``withdrawal_payout_cancel_too_late`` (already paid), ``withdrawal_not_cancellable``
    (not approved), ``payout_cancel_unsupported`` (a provider without ``cancel``, e.g. manual:
    use ``fail_payout``). A withdrawal already failed is returned unchanged.
    """
    w = _payout_to_cancel(session, merchant_id, withdrawal_id)
    if w.status == WD_FAILED:
        return w
    provider = payout.get(w.provider)
    if provider is None or not provider.automatic or getattr(provider, "cancel", None) is None:
        raise DomainError("payout_cancel_unsupported", name=w.provider)
    send = repo.payout_send_job(session, merchant_id, w.id)
    if send is not None and send.status == JOB_RUNNING:
        raise DomainError("withdrawal_payout_sending")
    if send is not None and send.status == JOB_PENDING and send.attempts == 0 and w.provider_state is None:
        return _cancel_unsent(session, merchant_id, w.id, note, "NOT_SENT", send, actor=actor)
    unanswered = w.provider_state is None  # sent, never answered: the bill may or may not exist
    try:
        sub = payout_submission(session, merchant_id, withdrawal_id, settings)
    except payout.PayoutError as exc:
        raise DomainError("withdrawal_payout_unknown") from exc
    session.commit()  # nothing written: no transaction stays open while the provider answers
    if sub is None:  # it moved meanwhile (paid or failed): say so
        return _payout_to_cancel(session, merchant_id, withdrawal_id)
    result: payout.PayoutResult | None = None
    if unanswered:  # do not guess: ask for the bill first
        try:
            result = sub.provider.query(sub.request)
        except payout.PayoutError as exc:
            if exc.code == "NOT_FOUND":
                return _cancel_unsent(session, merchant_id, withdrawal_id, note, "NOT_FOUND", send, actor=actor,
                                      settings=settings)
            raise DomainError("withdrawal_payout_unknown") from exc
        if result.status == "processing":  # the bill exists and is not final: cancel it
            result = None
    if result is None:
        try:
            result = sub.provider.cancel(sub.request)
        except payout.PayoutError as exc:
            if exc.code == "NOT_FOUND":
                return _cancel_unsent(session, merchant_id, withdrawal_id, note, "NOT_FOUND", send, actor=actor,
                                      settings=settings)
            if exc.retryable:
                return _cancel_unanswered(session, merchant_id, withdrawal_id, note, actor=actor)
            result = _final_answer(sub)  # refused: the bill is final (or the refusal says why not)
            if result.status not in ("paid", "failed"):
                log.warning("withdrawal %s: cancel refused (%s) while %s", withdrawal_id, exc.code, result.state)
                raise DomainError("withdrawal_payout_in_flight", state=result.state or "?") from exc
    if result.status == "paid":
        apply_payout_result(session, merchant_id, withdrawal_id, result, source="admin_cancel")
        session.commit()  # the provider's truth is kept although this call is refused
        raise DomainError("withdrawal_payout_cancel_too_late")
    w = _payout_to_cancel(session, merchant_id, withdrawal_id)  # again, under the row lock
    if w.status == WD_FAILED:
        return w
    reason = _cancel_reason(note)
    if w.provider_state != CANCELING:  # the first call of parallel or retried ones
        _audit_cancel_request(session, merchant_id, w, note, result.state, actor=actor)
    if result.status == "failed":
        if not result.detail:
            result = replace(result, detail=reason)
        return fail_withdrawal(session, merchant_id, w.id, result, source="admin_cancel")
    values: dict[str, Any] = {"provider_state": CANCELING, "provider_data": None, "review_note": reason,
                              "reviewed_by": actor[1]}
    if result.reference:
        values["provider_reference"] = result.reference
    repo.set_withdrawal_status(session, merchant_id, w.id, (WD_APPROVED,), values)
    _start_cancel_polls(session, merchant_id, w.id)
    session.refresh(w)
    return w


def _start_cancel_polls(session: Session, merchant_id: int, withdrawal_id: int) -> None:
    """The status polls of a cancellation (``query:c<n>``), once; a retry once they all ran out
    starts another series (``query:c<timestamp>-<n>``)."""
    if not repo.job_exists(session, merchant_id, f"withdrawal:{withdrawal_id}:query:c0"):
        _enqueue_poll(session, merchant_id, withdrawal_id, 0, "c", CANCEL_POLL_MINUTES)
    elif not repo.payout_job_live(session, merchant_id, withdrawal_id):
        _enqueue_poll(session, merchant_id, withdrawal_id, 0, f"c{utcnow():%Y%m%d%H%M%S}-", CANCEL_POLL_MINUTES)


def _final_answer(sub: PayoutSubmission) -> payout.PayoutResult:
    try:
        result: payout.PayoutResult = sub.provider.query(sub.request)
    except payout.PayoutError as exc:
        raise DomainError("withdrawal_payout_unknown") from exc
    return result


def _cancel_unsent(
    session: Session, merchant_id: int, withdrawal_id: int, note: str | None, answer: str,
    send: repo.SendJob | None, *, actor: Actor, settings: Settings | None = None,
) -> Withdrawal:
    """No bill exists (``answer``: ``NOT_SENT``, or the provider's ``NOT_FOUND``): failed here,
    the amount returns once. Under the row lock the send job must still be as ``send`` (seen
    before the decision): an attempt started since may be creating the bill
    (``withdrawal_payout_sending``); one starting after this commit finds the withdrawal failed.
    ``NOT_FOUND`` after a send attempt (``send.attempts > 0``): an attempt that outlived its
    lease may still reach the provider, so the late checks are queued in the same transaction
    (``withdrawal:<id>:late:n0``; ``check_late_bill`` cancels such a bill, or records it paid)."""
    w = _payout_to_cancel(session, merchant_id, withdrawal_id)
    if w.status == WD_FAILED:
        return w
    if repo.payout_send_job(session, merchant_id, w.id) != send:
        raise DomainError("withdrawal_payout_sending")
    _audit_cancel_request(session, merchant_id, w, note, answer, actor=actor)
    result = payout.PayoutResult(status="failed", detail=_cancel_reason(note))
    w = fail_withdrawal(session, merchant_id, w.id, result, source="admin_cancel")
    if answer == "NOT_FOUND" and send is not None and send.attempts > 0:
        # a send that outlived its lease may still reach the provider: look for its bill later
        _enqueue_late_check(session, merchant_id, w.id, "n", 0, settings, provider=payout.get(w.provider))
    return w


def _cancel_unanswered(
    session: Session, merchant_id: int, withdrawal_id: int, note: str | None, *, actor: Actor
) -> Withdrawal:
    """The cancel was sent and its answer lost: the request is audited, finance's note kept and
    the cancellation's status polls started — committed, although the call is then refused
    ``withdrawal_payout_cancel_unconfirmed`` (the outcome is not known yet)."""
    w = _payout_to_cancel(session, merchant_id, withdrawal_id)
    if w.status == WD_FAILED:
        return w
    _audit_cancel_request(session, merchant_id, w, note, "NO_ANSWER", actor=actor)
    repo.set_withdrawal_status(session, merchant_id, w.id, (WD_APPROVED,),
                               {"review_note": _cancel_reason(note), "reviewed_by": actor[1]})
    _start_cancel_polls(session, merchant_id, w.id)
    session.commit()
    raise DomainError("withdrawal_payout_cancel_unconfirmed")


def _cancel_reason(note: str | None) -> str:
    return (note or "打款已撤销 / payout cancelled by finance")[:200]


def _audit_cancel_request(
    session: Session, merchant_id: int, w: Withdrawal, note: str | None, answer: str | None, *, actor: Actor
) -> None:
    audit.record(session, merchant_id, "withdrawal", w.id, "cancel_requested", from_state=WD_APPROVED,
                 to_state=WD_APPROVED, actor=actor,
                 data={"note": note, "provider_state": w.provider_state, "answer": answer})


def _payout_locked(session: Session, merchant_id: int, withdrawal_id: int, *, paid: str, not_in_payout: str) -> Withdrawal:
    """The withdrawal, locked, if its payout is approved or failed already; ``paid`` and
    ``not_in_payout`` are the codes the caller refuses the other states with."""
    w = repo.withdrawal(session, merchant_id, withdrawal_id, lock=True)
    if w is None:
        raise not_found("提现申请", "Withdrawal")
    if w.status == WD_PAID:
        raise DomainError(paid)
    if w.status not in (WD_APPROVED, WD_FAILED):
        raise DomainError(not_in_payout, status=w.status)
    return w


def _payout_to_cancel(session: Session, merchant_id: int, withdrawal_id: int) -> Withdrawal:
    """The withdrawal, locked, if finance may cancel its payout (or it is failed already)."""
    return _payout_locked(session, merchant_id, withdrawal_id, paid="withdrawal_payout_cancel_too_late",
                          not_in_payout="withdrawal_not_cancellable")


def _payout_to_fail(session: Session, merchant_id: int, withdrawal_id: int) -> Withdrawal:
    """The withdrawal, locked, if finance may fail it now (or it is failed already)."""
    w = _payout_locked(session, merchant_id, withdrawal_id, paid="withdrawal_already_paid",
                       not_in_payout="withdrawal_not_in_payout")
    if w.status == WD_APPROVED and repo.payout_job_live(session, merchant_id, w.id):
        raise DomainError("withdrawal_payout_in_flight", state=w.provider_state or "queued")
    return w


# -- member merge ------------------------------------------------------------------------------


def _binding_rank(cfg: SettingsIn, prof: ReferralProfile) -> tuple[int, float]:
    """Sort key of a candidate binding (smallest wins): a locked binding (its first paid order
    already rewarded and paid commissions to that inviter) before an open one, the earlier
    lock first; then the merchant's rule — ``latest``: the later binding, else the earlier."""
    if prof.locked_at is not None:
        return 0, prof.locked_at.timestamp()
    bound = prof.bound_at.timestamp() if prof.bound_at is not None else 0.0
    return 1, -bound if cfg.binding_rule == RULE_LATEST else bound


def merge_members(session: Session, merchant_id: int, drop_id: int, keep_id: int) -> dict[str, int]:
    """Fold the referral side of member ``drop_id`` into ``keep_id`` (``members.service.merge_members``).

    - Members invited by the dropped member are invited by the kept one; the binding log follows.
    - The kept member's own binding: of the two members' bindings, a locked one wins (the
      earlier lock), else the merchant's rule decides (``latest``: the later binding; ``first``
      / ``window``: the earlier). A candidate that is one of the two members or would close a
      ring is dropped. A change is logged with source ``merge``. One profile remains bound.
    - The invite code: when only the dropped member had a profile, it becomes the kept
      member's; when both had one, the dropped member's row stays as an alias of its code (its
      binding cleared) and ``bind`` follows the merge to the kept member, so shared links work.
    - Rewards (as beneficiary, and as invitee unless both were rewarded invitees), withdrawals.
    - Distributor: a dropped member's distributor becomes the kept member's; when both were
      distributors, ledger, commissions, withdrawals and rate rules move to the kept one and the
      buckets are added (each bucket still equals its ledger sum); the emptied one is
      ``disabled``, and the kept one takes the approval (and level) if only the dropped had it.
    """
    cfg = config(session, merchant_id)
    session.flush()
    moved: dict[str, int] = {}
    repo.lock_profiles(session, merchant_id, [keep_id, drop_id])
    kp = repo.profile(session, merchant_id, keep_id, lock=True)
    dp = repo.profile(session, merchant_id, drop_id, lock=True)
    moved["referral_invitees"] = repo.repoint_invitees(session, merchant_id, drop_id, keep_id)
    moved["referral_binding_log"] = repo.repoint_binding_log(session, merchant_id, drop_id, keep_id)
    if kp is not None or dp is not None:
        candidates = [
            p for p in (kp, dp)
            if p is not None and p.inviter_member_id is not None
            and p.inviter_member_id not in (keep_id, drop_id)
        ]
        candidates = [
            p for p in candidates
            if keep_id not in _chain(session, merchant_id, int(p.inviter_member_id or 0))[0]
        ]
        chosen = min(candidates, key=lambda p: _binding_rank(cfg, p)) if candidates else None
        before = kp.inviter_member_id if kp is not None else None
        inviter, bound_at, source = (
            (chosen.inviter_member_id, chosen.bound_at, chosen.bind_source) if chosen else (None, None, None)
        )
        locks = [p for p in (kp, dp) if p is not None and p.locked_at is not None]
        first_locked = min(locks, key=lambda p: p.locked_at or utcnow()) if locks else None
        if kp is None:
            assert dp is not None
            dp.inviter_member_id = None
            session.flush()
            dp.member_id = keep_id
            prof = dp
            moved["referral_code"] = 1
        else:
            prof = kp
            if dp is not None:
                dp.inviter_member_id = None
                dp.updated_at = utcnow()
        prof.inviter_member_id, prof.bound_at, prof.bind_source = inviter, bound_at, source
        if first_locked is not None:
            prof.locked_at = first_locked.locked_at
            prof.first_paid_order_id = first_locked.first_paid_order_id
        session.flush()
        if inviter is not None and inviter != before:
            session.add(
                ReferralBindingLog(
                    merchant_id=merchant_id, member_id=keep_id, inviter_member_id=inviter,
                    previous_inviter_id=before, source="merge", at=utcnow(),
                )
            )
            session.flush()
    moved["referral_rewards"], moved["referral_rewards_left"] = repo.repoint_rewards(
        session, merchant_id, drop_id, keep_id
    )
    dists = {d.member_id: d for d in repo.lock_distributors(session, merchant_id, [keep_id, drop_id])}
    kd, dd = dists.get(keep_id), dists.get(drop_id)
    if dd is not None and kd is None:
        dd.member_id = keep_id
        moved["distributor"] = 1
    elif dd is not None and kd is not None:
        if kd.status != DIST_APPROVED and dd.status == DIST_APPROVED:
            kd.status, kd.level_id, kd.reviewed_at = dd.status, dd.level_id, dd.reviewed_at
        dd.status = DIST_DISABLED
        dd.note = f"merged into distributor {kd.id}"
        session.flush()
        for name, n in repo.fold_distributor(session, merchant_id, dd, kd).items():
            moved[f"distributor_{name}"] = n
        moved["distributor"] = 1
    moved["withdrawals"] = repo.repoint_withdrawal_member(session, merchant_id, drop_id, keep_id)
    session.flush()
    return {k: v for k, v in moved.items() if v}
