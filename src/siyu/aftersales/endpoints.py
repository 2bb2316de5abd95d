"""Store API: open, list, read and cancel after-sales, ship goods back, confirm an exchange.

Admin API (area ``aftersales``): list and read (with the audit trail), approve, reject, confirm
the returned goods, ship and complete an exchange, read and set the after-sales policy.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response, status

from siyu.aftersales import repository as repo
from siyu.aftersales import service
from siyu.aftersales.models import AfterSale
from siyu.aftersales.schemas import (
    AfterSaleAdminOut,
    AfterSaleCreate,
    AfterSaleLineOut,
    AfterSaleOut,
    ApproveIn,
    AuditOut,
    Kind,
    PolicyIn,
    PolicyOut,
    ReceiveIn,
    RejectIn,
    ReturnShipmentIn,
    ShipExchangeIn,
    Status,
)
from siyu.api.deps import AppSettings, Customer, DbSession, StaffPrincipal, StoreMerchant, require
from siyu.db.base import Base
from siyu.kit.pagination import Page, PageParams, apply_sort, page_params, paginate

store = APIRouter(tags=["store: after-sales"])
admin = APIRouter(tags=["admin: after-sales"])

SORTS = {"id": AfterSale.id, "created_at": AfterSale.created_at, "updated_at": AfterSale.updated_at}


def _out(session: DbSession, aftersale: AfterSale) -> AfterSaleOut:
    out = AfterSaleOut.model_validate(aftersale)
    out.lines = [AfterSaleLineOut.model_validate(line) for line in service.lines(session, aftersale)]
    return out


def _admin_out(session: DbSession, aftersale: AfterSale) -> AfterSaleAdminOut:
    out = AfterSaleAdminOut.model_validate(aftersale)
    out.lines = [AfterSaleLineOut.model_validate(line) for line in service.lines(session, aftersale)]
    out.audit = [
        AuditOut.model_validate(e) for e in repo.audit_trail(session, aftersale.merchant_id, aftersale.id)
    ]
    return out


def _page(
    session: DbSession, merchant_id: int, rows: list[Base], total: int, params: PageParams
) -> Page[AfterSaleOut]:
    by_id = repo.lines_of_many(session, merchant_id, (r.id for r in rows if isinstance(r, AfterSale)))
    items = []
    for row in rows:
        assert isinstance(row, AfterSale)
        out = AfterSaleOut.model_validate(row)
        out.lines = [AfterSaleLineOut.model_validate(line) for line in by_id[row.id]]
        items.append(out)
    return Page(items=items, total=total, page=params.page, page_size=params.page_size)


def _policy_out(policy: service.Policy) -> PolicyOut:
    return PolicyOut.model_validate(policy)


# -- store -------------------------------------------------------------------------------------


@store.post(
    "/orders/{order_id}/aftersales",
    response_model=AfterSaleOut,
    status_code=status.HTTP_201_CREATED,
    summary="Request a refund, a return or an exchange for lines of an order",
)
def create_aftersale(
    order_id: int,
    body: AfterSaleCreate,
    response: Response,
    customer: Customer,
    session: DbSession,
    settings: AppSettings,
    idempotency_key: Annotated[str | None, Header(max_length=80)] = None,
) -> AfterSaleOut:
    aftersale, created = service.create(
        session,
        customer.merchant_id,
        customer.member_id,
        order_id,
        body,
        settings,
        idempotency_key=idempotency_key,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return _out(session, aftersale)


@store.get("/aftersale-policy", response_model=PolicyOut, summary="The store's after-sales policy")
def store_policy(merchant: StoreMerchant, session: DbSession, settings: AppSettings) -> PolicyOut:
    return _policy_out(service.get_policy(session, merchant.id, settings))


@store.get("/aftersales", response_model=Page[AfterSaleOut], summary="My after-sales")
def list_mine(
    customer: Customer,
    session: DbSession,
    status: Status | None = None,
    order_id: int | None = None,
    params: PageParams = Depends(page_params),
) -> Page[AfterSaleOut]:
    stmt = repo.search(
        session, customer.merchant_id, member_id=customer.member_id, status=status, order_id=order_id
    )
    stmt = apply_sort(stmt, params.sort, SORTS, AfterSale.id.desc())
    rows, total = paginate(session, stmt, params)
    return _page(session, customer.merchant_id, rows, total, params)


@store.get("/aftersales/{aftersale_id}", response_model=AfterSaleOut)
def get_mine(aftersale_id: int, customer: Customer, session: DbSession) -> AfterSaleOut:
    return _out(
        session, service.get_for_member(session, customer.merchant_id, customer.member_id, aftersale_id)
    )


@store.post("/aftersales/{aftersale_id}/cancel", response_model=AfterSaleOut, summary="Withdraw my request")
def cancel_mine(aftersale_id: int, customer: Customer, session: DbSession) -> AfterSaleOut:
    return _out(session, service.cancel(session, customer.merchant_id, customer.member_id, aftersale_id))


@store.post(
    "/aftersales/{aftersale_id}/return-shipment",
    response_model=AfterSaleOut,
    summary="Tell the store how the goods were sent back (carrier and tracking number)",
)
def return_shipment(
    aftersale_id: int, body: ReturnShipmentIn, customer: Customer, session: DbSession
) -> AfterSaleOut:
    aftersale = service.submit_return_shipment(
        session,
        customer.merchant_id,
        customer.member_id,
        aftersale_id,
        carrier=body.carrier,
        tracking_no=body.tracking_no,
    )
    return _out(session, aftersale)


@store.post(
    "/aftersales/{aftersale_id}/confirm-receipt",
    response_model=AfterSaleOut,
    summary="Confirm the exchange replacement arrived",
)
def confirm_receipt(aftersale_id: int, customer: Customer, session: DbSession) -> AfterSaleOut:
    aftersale = service.complete_exchange(
        session, customer.merchant_id, aftersale_id, actor=customer.actor, member_id=customer.member_id
    )
    return _out(session, aftersale)


# -- admin -------------------------------------------------------------------------------------


@admin.get("/aftersale-policy", response_model=PolicyOut)
def get_policy(
    session: DbSession, settings: AppSettings, p: StaffPrincipal = Depends(require("aftersales:read"))
) -> PolicyOut:
    return _policy_out(service.get_policy(session, p.merchant_id, settings))


@admin.put("/aftersale-policy", response_model=PolicyOut)
def put_policy(
    body: PolicyIn,
    session: DbSession,
    settings: AppSettings,
    p: StaffPrincipal = Depends(require("aftersales:write")),
) -> PolicyOut:
    return _policy_out(service.put_policy(session, p.merchant_id, body, settings, actor=p.actor))


@admin.get("/aftersales", response_model=Page[AfterSaleOut])
def list_aftersales(
    session: DbSession,
    status: Status | None = None,
    kind: Kind | None = None,
    order_id: int | None = None,
    member_id: int | None = None,
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("aftersales:read")),
) -> Page[AfterSaleOut]:
    stmt = repo.search(
        session, p.merchant_id, member_id=member_id, status=status, kind=kind, order_id=order_id
    )
    stmt = apply_sort(stmt, params.sort, SORTS, AfterSale.id.desc())
    rows, total = paginate(session, stmt, params)
    return _page(session, p.merchant_id, rows, total, params)


@admin.get(
    "/aftersales/{aftersale_id}", response_model=AfterSaleAdminOut, summary="Detail with the audit trail"
)
def get_aftersale(
    aftersale_id: int, session: DbSession, p: StaffPrincipal = Depends(require("aftersales:read"))
) -> AfterSaleAdminOut:
    return _admin_out(session, service.get(session, p.merchant_id, aftersale_id))


@admin.post(
    "/aftersales/{aftersale_id}/approve",
    response_model=AfterSaleAdminOut,
    summary="Approve (optionally with a lower refund); a refund-only request starts refunding at once",
)
def approve(
    aftersale_id: int,
    session: DbSession,
    body: ApproveIn | None = None,
    p: StaffPrincipal = Depends(require("aftersales:write")),
) -> AfterSaleAdminOut:
    body = body or ApproveIn()
    aftersale = service.approve(
        session, p.merchant_id, aftersale_id, actor=p.actor, refund_amount=body.refund_amount, note=body.note
    )
    return _admin_out(session, aftersale)


@admin.post("/aftersales/{aftersale_id}/reject", response_model=AfterSaleAdminOut)
def reject(
    aftersale_id: int,
    body: RejectIn,
    session: DbSession,
    p: StaffPrincipal = Depends(require("aftersales:write")),
) -> AfterSaleAdminOut:
    return _admin_out(
        session, service.reject(session, p.merchant_id, aftersale_id, reason=body.reason, actor=p.actor)
    )


@admin.post(
    "/aftersales/{aftersale_id}/receive",
    response_model=AfterSaleAdminOut,
    summary="Confirm the returned goods arrived (restock them unless restock=false)",
)
def receive(
    aftersale_id: int,
    session: DbSession,
    body: ReceiveIn | None = None,
    p: StaffPrincipal = Depends(require("aftersales:write")),
) -> AfterSaleAdminOut:
    body = body or ReceiveIn()
    aftersale = service.confirm_received(
        session, p.merchant_id, aftersale_id, restock=body.restock, actor=p.actor
    )
    return _admin_out(session, aftersale)


@admin.post(
    "/aftersales/{aftersale_id}/refund",
    response_model=AfterSaleAdminOut,
    summary="Retry the refund after the payment provider refused it",
)
def retry_refund(
    aftersale_id: int, session: DbSession, p: StaffPrincipal = Depends(require("aftersales:write"))
) -> AfterSaleAdminOut:
    return _admin_out(session, service.retry_refund(session, p.merchant_id, aftersale_id, actor=p.actor))


@admin.post(
    "/aftersales/{aftersale_id}/ship-exchange",
    response_model=AfterSaleAdminOut,
    summary="Ship the replacement of an exchange (takes its units from stock)",
)
def ship_exchange(
    aftersale_id: int,
    body: ShipExchangeIn,
    session: DbSession,
    settings: AppSettings,
    p: StaffPrincipal = Depends(require("aftersales:write")),
) -> AfterSaleAdminOut:
    aftersale = service.ship_exchange(
        session,
        p.merchant_id,
        aftersale_id,
        settings,
        carrier=body.carrier,
        tracking_no=body.tracking_no,
        actor=p.actor,
    )
    return _admin_out(session, aftersale)


@admin.post(
    "/aftersales/{aftersale_id}/complete", response_model=AfterSaleAdminOut, summary="Complete an exchange"
)
def complete(
    aftersale_id: int, session: DbSession, p: StaffPrincipal = Depends(require("aftersales:write"))
) -> AfterSaleAdminOut:
    return _admin_out(session, service.complete_exchange(session, p.merchant_id, aftersale_id, actor=p.actor))
