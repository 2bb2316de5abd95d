"""Admin API: referral settings, rewards, distributor levels and applications, commission rules,
commissions, withdrawals (finance). Store API: my invite code, bind, my invitees, apply as a
distributor, my account and statement, withdrawals.

Permissions: configuration and distributors need ``promotions:read`` / ``promotions:write``;
commissions and withdrawals need ``finance:read``; reviewing and paying withdrawals needs
``finance:write`` (roles ``finance`` and ``owner``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker

from siyu.api.deps import AppSettings, Customer, DbSession, StaffPrincipal, require
from siyu.api.idempotency import idempotent
from siyu.db.session import unit_of_work
from siyu.kit.crypto import SecretBox
from siyu.kit.errors import DomainError, not_found
from siyu.kit.pagination import Page, PageParams, apply_sort, page_params, paginate
from siyu.referral import repository as repo
from siyu.referral import service
from siyu.referral.models import Commission, CommissionLedger, Distributor, ReferralReward, Withdrawal
from siyu.referral.schemas import (
    AccountOut,
    ApplyIn,
    ApproveDistributorIn,
    BindIn,
    BindOut,
    CommissionDetailOut,
    CommissionLineOut,
    CommissionOut,
    DistributorOut,
    DistributorUpdate,
    InviteeOut,
    LedgerOut,
    LevelIn,
    LevelOut,
    LevelUpdate,
    MarkPaidIn,
    MemberReferralOut,
    MyReferralOut,
    RetryOut,
    ReviewIn,
    RewardOut,
    RuleIn,
    RuleOut,
    RuleUpdate,
    SettingsIn,
    SettingsOut,
    StatsOut,
    WithdrawalIn,
    WithdrawalOut,
)
from siyu.tenancy.permissions import role_allows

admin = APIRouter(prefix="/referral", tags=["admin: referral and distribution"])
store = APIRouter(prefix="/referral", tags=["store: referral and distribution"])

CommissionStatus = Literal["pending", "frozen", "settled", "reversed"]
WithdrawalStatus = Literal["requested", "approved", "rejected", "paid", "failed"]
DistributorStatus = Literal["applied", "approved", "rejected", "disabled"]


def _account(d: Distributor) -> AccountOut:
    return AccountOut(pending=d.pending, frozen=d.frozen, available=d.available, withdrawing=d.withdrawing,
                      withdrawn=d.withdrawn, debt=d.debt)


def _invitee_page(session: DbSession, merchant_id: int, inviter_id: int, params: PageParams) -> Page[InviteeOut]:
    from siyu.referral.models import ReferralProfile

    stmt = repo.invitees_stmt(merchant_id, inviter_id).order_by(ReferralProfile.bound_at.desc(), ReferralProfile.id)
    total = repo.count_invitees(session, merchant_id, inviter_id)
    rows = session.execute(stmt.limit(params.page_size).offset((params.page - 1) * params.page_size)).all()
    items = service.invitees(session, merchant_id, inviter_id, [tuple(r) for r in rows])
    return Page(items=[InviteeOut(**i) for i in items], total=total, page=params.page, page_size=params.page_size)


def _ledger_page(session: DbSession, merchant_id: int, distributor_id: int, params: PageParams) -> Page[LedgerOut]:
    stmt = repo.ledger_stmt(merchant_id, distributor_id).order_by(CommissionLedger.id.desc())
    rows, total = paginate(session, stmt, params)
    return Page(items=[LedgerOut.model_validate(r) for r in rows], total=total, page=params.page,
                page_size=params.page_size)


def _commission_page(session: DbSession, stmt: Any, params: PageParams) -> Page[CommissionOut]:
    sortable: dict[str, Any] = {"id": Commission.id, "amount": Commission.amount, "created_at": Commission.created_at}
    rows, total = paginate(session, apply_sort(stmt, params.sort, sortable, Commission.id.desc()), params)
    return Page(items=[CommissionOut.model_validate(r) for r in rows], total=total, page=params.page,
                page_size=params.page_size)


def _withdrawal_page(session: DbSession, stmt: Any, params: PageParams) -> Page[WithdrawalOut]:
    sortable: dict[str, Any] = {"id": Withdrawal.id, "amount": Withdrawal.amount}
    rows, total = paginate(session, apply_sort(stmt, params.sort, sortable, Withdrawal.id.desc()), params)
    return Page(items=[WithdrawalOut.model_validate(r) for r in rows], total=total, page=params.page,
                page_size=params.page_size)


# -- admin: settings and rewards ---------------------------------------------------------------


@admin.get("/settings", response_model=SettingsOut)
def get_settings(session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))) -> SettingsOut:
    return SettingsOut.model_validate(service.config(session, p.merchant_id).model_dump())


@admin.put("/settings", response_model=SettingsOut, summary="Binding rule, rewards (data), tiers, payouts")
def put_settings(
    body: SettingsIn, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> SettingsOut:
    return SettingsOut.model_validate(service.put_config(session, p.merchant_id, body, actor=p.actor).model_dump())


@admin.get("/stats", response_model=StatsOut, summary="Bindings, conversions, rewards, commissions, withdrawals")
def stats(session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))) -> StatsOut:
    return StatsOut.model_validate(repo.stats(session, p.merchant_id))


@admin.get("/rewards", response_model=Page[RewardOut])
def list_rewards(
    session: DbSession,
    reward_status: Literal["granted", "pending", "revoked"] | None = Query(None, alias="status"),
    member_id: int | None = None,
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("promotions:read")),
) -> Page[RewardOut]:
    stmt = repo.search_rewards(p.merchant_id, reward_status, member_id)
    rows, total = paginate(session, apply_sort(stmt, params.sort, {"id": ReferralReward.id}, ReferralReward.id.desc()),
                           params)
    return Page(items=[RewardOut.model_validate(r) for r in rows], total=total, page=params.page,
                page_size=params.page_size)


@admin.post("/rewards/retry", response_model=RetryOut, summary="Grant the rewards still pending")
def retry_rewards(session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))) -> RetryOut:
    granted, pending = service.retry_pending_rewards(session, p.merchant_id)
    return RetryOut(granted=granted, still_pending=pending)


@admin.get("/members/{member_id}", response_model=MemberReferralOut, summary="A member's code, inviter and lock")
def member_referral(
    member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))
) -> MemberReferralOut:
    prof = service.ensure_profile(session, p.merchant_id, member_id)
    dist = repo.distributor_of_member(session, p.merchant_id, member_id)
    return MemberReferralOut(
        member_id=member_id, code=prof.code, inviter_member_id=prof.inviter_member_id, bound_at=prof.bound_at,
        bind_source=prof.bind_source, first_paid_order_id=prof.first_paid_order_id, locked_at=prof.locked_at,
        invitee_count=repo.count_invitees(session, p.merchant_id, member_id),
        distributor_id=dist.id if dist else None, distributor_status=dist.status if dist else None,
    )


@admin.get("/members/{member_id}/invitees", response_model=Page[InviteeOut], summary="Who a member invited, who bought")
def member_invitees(
    member_id: int,
    session: DbSession,
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("promotions:read")),
) -> Page[InviteeOut]:
    if repo.member(session, p.merchant_id, member_id) is None:
        raise not_found("会员", "Member")
    return _invitee_page(session, p.merchant_id, member_id, params)


# -- admin: levels, distributors, rules --------------------------------------------------------


@admin.get("/levels", response_model=list[LevelOut])
def list_levels(session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))) -> list[LevelOut]:
    return [LevelOut.model_validate(x) for x in repo.levels(session, p.merchant_id)]


@admin.post("/levels", response_model=LevelOut, status_code=status.HTTP_201_CREATED)
@idempotent
def create_level(body: LevelIn, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))) -> LevelOut:
    return LevelOut.model_validate(service.create_level(session, p.merchant_id, body, actor=p.actor))


@admin.patch("/levels/{level_id}", response_model=LevelOut)
def update_level(
    level_id: int, body: LevelUpdate, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> LevelOut:
    return LevelOut.model_validate(service.update_level(session, p.merchant_id, level_id, body, actor=p.actor))


@admin.get("/distributors", response_model=Page[DistributorOut], summary="Applications and distributors")
def list_distributors(
    session: DbSession,
    dist_status: DistributorStatus | None = Query(None, alias="status"),
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("promotions:read", "finance:read")),  # finance pays them
) -> Page[DistributorOut]:
    stmt = repo.search_distributors(p.merchant_id, dist_status)
    sortable: dict[str, Any] = {"id": Distributor.id, "applied_at": Distributor.applied_at}
    rows, total = paginate(session, apply_sort(stmt, params.sort, sortable, Distributor.id.desc()), params)
    return Page(items=[DistributorOut.model_validate(r) for r in rows], total=total, page=params.page,
                page_size=params.page_size)


@admin.get("/distributors/{distributor_id}", response_model=DistributorOut,
           summary="One distributor; the real name and phone in clear for finance:read (finance, owner)")
def get_distributor(
    distributor_id: int, session: DbSession, settings: AppSettings,
    p: StaffPrincipal = Depends(require("promotions:read", "finance:read")),  # finance reviews their payouts
) -> DistributorOut:
    d = service.get_distributor(session, p.merchant_id, distributor_id)
    out = DistributorOut.model_validate(d)
    if role_allows(p.role, "finance:read"):
        out.real_name, out.phone = service.distributor_contact(d, settings)
    return out


@admin.post("/distributors/{distributor_id}/approve", response_model=DistributorOut)
def approve_distributor(
    distributor_id: int,
    body: ApproveDistributorIn,
    session: DbSession,
    p: StaffPrincipal = Depends(require("promotions:write")),
) -> DistributorOut:
    return DistributorOut.model_validate(
        service.approve_distributor(session, p.merchant_id, distributor_id, body.level_id, body.note, actor=p.actor)
    )


@admin.post("/distributors/{distributor_id}/reject", response_model=DistributorOut)
def reject_distributor(
    distributor_id: int, body: ReviewIn, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> DistributorOut:
    return DistributorOut.model_validate(
        service.reject_distributor(session, p.merchant_id, distributor_id, body.note, actor=p.actor)
    )


@admin.patch("/distributors/{distributor_id}", response_model=DistributorOut, summary="Change level, disable / enable")
def update_distributor(
    distributor_id: int,
    body: DistributorUpdate,
    session: DbSession,
    p: StaffPrincipal = Depends(require("promotions:write")),
) -> DistributorOut:
    return DistributorOut.model_validate(
        service.update_distributor(session, p.merchant_id, distributor_id, body.level_id, body.status, actor=p.actor)
    )


@admin.get("/distributors/{distributor_id}/statement", response_model=Page[LedgerOut])
def distributor_statement(
    distributor_id: int,
    session: DbSession,
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("finance:read")),
) -> Page[LedgerOut]:
    service.get_distributor(session, p.merchant_id, distributor_id)
    return _ledger_page(session, p.merchant_id, distributor_id, params)


@admin.get("/commission-rules", response_model=list[RuleOut])
def list_rules(session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))) -> list[RuleOut]:
    from siyu.referral.models import CommissionRule

    rows = session.scalars(repo.search_rules(p.merchant_id).order_by(CommissionRule.id))
    return [RuleOut.model_validate(r) for r in rows]


@admin.post("/commission-rules", response_model=RuleOut, status_code=status.HTTP_201_CREATED,
            summary="A rate override per product / level / distributor")
@idempotent
def create_rule(body: RuleIn, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))) -> RuleOut:
    return RuleOut.model_validate(service.create_rule(session, p.merchant_id, body, actor=p.actor))


@admin.patch("/commission-rules/{rule_id}", response_model=RuleOut)
def update_rule(
    rule_id: int, body: RuleUpdate, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> RuleOut:
    return RuleOut.model_validate(service.update_rule(session, p.merchant_id, rule_id, body, actor=p.actor))


@admin.delete("/commission-rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_rule(rule_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))) -> None:
    service.delete_rule(session, p.merchant_id, rule_id, actor=p.actor)


# -- admin: commissions and withdrawals --------------------------------------------------------


@admin.get("/commissions", response_model=Page[CommissionOut])
def list_commissions(
    session: DbSession,
    distributor_id: int | None = None,
    order_id: int | None = None,
    commission_status: CommissionStatus | None = Query(None, alias="status"),
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("finance:read")),
) -> Page[CommissionOut]:
    stmt = repo.search_commissions(p.merchant_id, distributor_id=distributor_id, status=commission_status,
                                   order_id=order_id)
    return _commission_page(session, stmt, params)


@admin.get("/commissions/{commission_id}", response_model=CommissionDetailOut)
def get_commission(
    commission_id: int, session: DbSession, p: StaffPrincipal = Depends(require("finance:read"))
) -> CommissionDetailOut:
    c, lines = service.commission_detail(session, p.merchant_id, commission_id)
    return CommissionDetailOut(
        **CommissionOut.model_validate(c).model_dump(), lines=[CommissionLineOut.model_validate(x) for x in lines]
    )


@admin.get("/withdrawals", response_model=Page[WithdrawalOut])
def list_withdrawals(
    session: DbSession,
    wd_status: WithdrawalStatus | None = Query(None, alias="status"),
    distributor_id: int | None = None,
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("finance:read")),
) -> Page[WithdrawalOut]:
    return _withdrawal_page(
        session, repo.search_withdrawals(p.merchant_id, status=wd_status, distributor_id=distributor_id), params
    )


@admin.post("/withdrawals/{withdrawal_id}/approve", response_model=WithdrawalOut)
def approve_withdrawal(
    withdrawal_id: int, body: ReviewIn, session: DbSession, p: StaffPrincipal = Depends(require("finance:write"))
) -> WithdrawalOut:
    return WithdrawalOut.model_validate(
        service.approve_withdrawal(session, p.merchant_id, withdrawal_id, body.note, actor=p.actor)
    )


@admin.post("/withdrawals/{withdrawal_id}/reject", response_model=WithdrawalOut, summary="The amount returns to available")
def reject_withdrawal(
    withdrawal_id: int, body: ReviewIn, session: DbSession, p: StaffPrincipal = Depends(require("finance:write"))
) -> WithdrawalOut:
    return WithdrawalOut.model_validate(
        service.reject_withdrawal(session, p.merchant_id, withdrawal_id, body.note, actor=p.actor)
    )


@admin.post("/withdrawals/{withdrawal_id}/fail-payout", response_model=WithdrawalOut,
             summary="Close a payout that never completes: failed, the amount returns to available (once)")
def fail_payout(
    withdrawal_id: int, body: ReviewIn, session: DbSession, settings: AppSettings,
    p: StaffPrincipal = Depends(require("finance:write")),
) -> WithdrawalOut:
    return WithdrawalOut.model_validate(
        service.fail_payout(session, p.merchant_id, withdrawal_id, body.note, actor=p.actor, settings=settings)
    )


@admin.post("/withdrawals/{withdrawal_id}/cancel-payout", response_model=WithdrawalOut,
             summary="Cancel an automatic payout the payee has not confirmed; once the provider reports it "
                     "cancelled the withdrawal fails and the amount returns to available (once)")
def cancel_payout(
    withdrawal_id: int, body: ReviewIn, session: DbSession, settings: AppSettings,
    p: StaffPrincipal = Depends(require("finance:write")),
) -> WithdrawalOut:
    """``approved`` with ``provider_state`` ``CANCELING`` while WeChat Pay cancels the bill (the
    status polls then fail it), or ``failed`` when it is already cancelled (or never created).
    Refused ``withdrawal_payout_cancel_too_late`` when the payee already received the money."""
    return WithdrawalOut.model_validate(
        service.cancel_payout(session, p.merchant_id, withdrawal_id, body.note, actor=p.actor, settings=settings)
    )


@admin.post("/withdrawals/{withdrawal_id}/mark-paid", response_model=WithdrawalOut,
            summary="Manual payout: record the transfer reference")
def mark_withdrawal_paid(
    withdrawal_id: int, body: MarkPaidIn, session: DbSession, p: StaffPrincipal = Depends(require("finance:write"))
) -> WithdrawalOut:
    return WithdrawalOut.model_validate(
        service.mark_withdrawal_paid(session, p.merchant_id, withdrawal_id, body.reference, actor=p.actor)
    )


# -- store -------------------------------------------------------------------------------------


@store.get("/me", response_model=MyReferralOut, summary="My invite code and share path")
def my_referral(customer: Customer, session: DbSession) -> MyReferralOut:
    return MyReferralOut(**service.my_referral(session, customer.merchant_id, customer.member_id))


@store.post("/bind", response_model=BindOut, summary="Bind me to the owner of an invite code (call after login)")
def bind(body: BindIn, customer: Customer, session: DbSession) -> BindOut:
    prof, changed = service.bind(session, customer.merchant_id, customer.member_id, body.code)
    assert prof.inviter_member_id is not None and prof.bound_at is not None
    return BindOut(member_id=prof.member_id, inviter_member_id=prof.inviter_member_id, bound_at=prof.bound_at,
                   changed=changed)


@store.get("/rewards", response_model=Page[RewardOut], summary="My referral rewards (as inviter or invitee)")
def my_rewards(customer: Customer, session: DbSession, params: PageParams = Depends(page_params)) -> Page[RewardOut]:
    stmt = repo.search_rewards(customer.merchant_id, None, customer.member_id).order_by(ReferralReward.id.desc())
    rows, total = paginate(session, stmt, params)
    return Page(items=[RewardOut.model_validate(r) for r in rows], total=total, page=params.page,
                page_size=params.page_size)


@store.get("/invitees", response_model=Page[InviteeOut], summary="Who I invited, and who bought")
def my_invitees(customer: Customer, session: DbSession, params: PageParams = Depends(page_params)) -> Page[InviteeOut]:
    return _invitee_page(session, customer.merchant_id, customer.member_id, params)


@store.post("/distributor/apply", response_model=DistributorOut, status_code=status.HTTP_201_CREATED)
def apply(body: ApplyIn, customer: Customer, session: DbSession, settings: AppSettings) -> DistributorOut:
    return DistributorOut.model_validate(
        service.apply(session, customer.merchant_id, customer.member_id, body, settings=settings)
    )


@store.get("/distributor", response_model=DistributorOut, summary="My distributor status and account")
def my_distributor(customer: Customer, session: DbSession) -> DistributorOut:
    return DistributorOut.model_validate(service.my_distributor(session, customer.merchant_id, customer.member_id))


@store.get("/distributor/account", response_model=AccountOut)
def my_account(customer: Customer, session: DbSession) -> AccountOut:
    return _account(service.my_distributor(session, customer.merchant_id, customer.member_id))


@store.get("/distributor/statement", response_model=Page[LedgerOut], summary="My commission statement (ledger)")
def my_statement(customer: Customer, session: DbSession, params: PageParams = Depends(page_params)) -> Page[LedgerOut]:
    dist = service.my_distributor(session, customer.merchant_id, customer.member_id)
    return _ledger_page(session, customer.merchant_id, dist.id, params)


@store.get("/distributor/commissions", response_model=Page[CommissionOut])
def my_commissions(
    customer: Customer,
    session: DbSession,
    commission_status: CommissionStatus | None = Query(None, alias="status"),
    params: PageParams = Depends(page_params),
) -> Page[CommissionOut]:
    dist = service.my_distributor(session, customer.merchant_id, customer.member_id)
    stmt = repo.search_commissions(customer.merchant_id, distributor_id=dist.id, status=commission_status)
    return _commission_page(session, stmt, params)


@store.post("/withdrawals", response_model=WithdrawalOut, status_code=status.HTTP_201_CREATED,
            summary="Withdraw from the available balance (Idempotency-Key required; a retry returns 200)")
def request_withdrawal(
    body: WithdrawalIn,
    customer: Customer,
    session: DbSession,
    response: Response,
    settings: AppSettings,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> WithdrawalOut:
    w, created = service.request_withdrawal(
        session, customer.merchant_id, customer.member_id, body.amount, idempotency_key=idempotency_key,
        real_name=body.real_name, settings=settings,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return WithdrawalOut.model_validate(w)


@store.get("/withdrawals", response_model=Page[WithdrawalOut])
def my_withdrawals(customer: Customer, session: DbSession, params: PageParams = Depends(page_params)) -> Page[WithdrawalOut]:
    dist = service.my_distributor(session, customer.merchant_id, customer.member_id)
    return _withdrawal_page(session, repo.search_withdrawals(customer.merchant_id, distributor_id=dist.id), params)


# -- provider callback: WeChat Pay transfer bills ----------------------------------------------

provider = APIRouter(tags=["provider callbacks"])

_SIGNATURE_REASONS = ("bad_signature", "unknown_serial", "stale_timestamp", "missing_headers")


def process_transfer_notification(
    session_factory: sessionmaker[Session], box: SecretBox, merchant_code: str, headers: dict[str, str], body: bytes
) -> tuple[int, str | None]:
    """Verify a ``MCHTRANSFER.BILL.FINISHED`` notification and move its withdrawal; (status,
    failure reason or None). Credentials are read in a short transaction, the signature and
    decryption checked with none open, then the withdrawal moved in its own unit of work
    (idempotent: a repeated delivery finds it already paid or failed)."""
    from siyu.integrations.wechat.errors import WechatApiError
    from siyu.integrations.wechat.transfer import NOTIFICATION_EVENT, bill_from_resource
    from siyu.payments import providers
    from siyu.referral import payout
    from siyu.tenancy import repository as tenancy_repo

    with session_factory() as s:
        merchant = tenancy_repo.merchant_by_code(s, merchant_code)
        if merchant is None:
            return 404, "unknown_merchant"
        merchant_id = merchant.id
        try:
            creds = providers.wechatpay_credentials(merchant, box)
        except DomainError:
            return 404, "not_configured"
        s.rollback()
    try:
        verified = providers.verify_wechat_notification(creds, headers, body)
    except providers.NotificationRejected as exc:
        return (401 if exc.reason in _SIGNATURE_REASONS else 400), exc.reason
    if verified.event_type != NOTIFICATION_EVENT:
        return 400, "unexpected_event_type"
    try:
        bill = bill_from_resource(verified.resource)
    except WechatApiError:
        return 400, "malformed_resource"
    if bill.mch_id != creds.mchid:
        return 400, "mchid_mismatch"
    withdrawal_id = payout.withdrawal_id_of(bill.out_bill_no)
    with unit_of_work(session_factory) as s:
        w = repo.withdrawal(s, merchant_id, withdrawal_id) if withdrawal_id is not None else None
        if w is None or w.provider != payout.WechatTransferProvider.name:
            return 404, "unknown_out_bill_no"
        if bill.transfer_amount is not None and bill.transfer_amount != w.amount:
            return 400, "amount_mismatch"
        service.apply_payout_result(s, merchant_id, w.id, payout.result_of(bill), source="notification")
    return 204, None


@provider.post(
    "/wechat/transfer-notify/{merchant_code}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
    summary="WeChat Pay transfer-bill notification (MCHTRANSFER.BILL.FINISHED)",
)
async def wechat_transfer_notify(merchant_code: str, request: Request) -> Response:
    body = await request.body()
    app = request.app
    code, reason = await run_in_threadpool(
        process_transfer_notification, app.state.session_factory, app.state.secret_box, merchant_code,
        dict(request.headers), body,
    )
    if reason is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return JSONResponse({"code": "FAIL", "message": f"rejected: {reason}"}, status_code=code)
