"""Store API: cart, addresses, checkout, my orders. Admin API: freight templates and orders."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Depends, Header, Query, Response, status

from siyu.api.deps import AppSettings, Customer, DbSession, StaffPrincipal, require
from siyu.api.idempotency import idempotent
from siyu.kit.pagination import Page, PageParams, apply_sort, page_params, paginate
from siyu.orders import checkout, service
from siyu.orders import repository as repo
from siyu.orders.models import ORDER_STATUSES, Order
from siyu.orders.schemas import (
    AddressIn,
    AddressOut,
    AddressUpdate,
    AuditOut,
    CancelIn,
    CartAddIn,
    CartItemUpdate,
    CartOut,
    CartSelectIn,
    CheckoutIn,
    CheckoutOut,
    FreightTemplateIn,
    FreightTemplateOut,
    FreightTemplateUpdate,
    OrderAdminDetailOut,
    OrderDetailOut,
    OrderOut,
    ShipIn,
)

store = APIRouter(tags=["store: cart & orders"])
admin = APIRouter(tags=["admin: orders & freight"])

StatusFilter = Literal["pending_payment", "paid", "shipped", "completed", "cancelled", "closed"]
assert set(get_args(StatusFilter)) == set(ORDER_STATUSES)


def _detail(session: DbSession, order: Order, *, new: bool = False) -> OrderDetailOut:
    """The order with its lines and shipments (an order created by this request has none to read)."""
    shipments = [] if new else repo.shipments(session, order.merchant_id, order.id)
    lines = checkout.new_order_lines(session, order) if new else repo.order_lines(session, order.merchant_id, order.id)
    # One validation: the order's fields read off the instance, lines and shipments validated from
    # their attributes as nested models (``from_attributes``), no intermediate OrderOut and dump.
    return OrderDetailOut.model_validate(
        {**{name: getattr(order, name) for name in _ORDER_FIELDS}, "lines": lines, "shipments": shipments}
    )


_ORDER_FIELDS = tuple(OrderOut.model_fields)


# -- store: cart -----------------------------------------------------------------------------------


@store.get("/cart", response_model=CartOut, summary="The cart with current prices and availability")
def get_cart(customer: Customer, session: DbSession) -> CartOut:
    return service.cart(session, customer.merchant_id, customer.member_id)


@store.post("/cart/items", response_model=CartOut, summary="Add a SKU (merged with an existing line)")
def add_cart_item(body: CartAddIn, customer: Customer, session: DbSession) -> CartOut:
    service.add_to_cart(session, customer.merchant_id, customer.member_id, body.sku_id, body.quantity)
    return service.cart(session, customer.merchant_id, customer.member_id)


@store.patch("/cart/items/{item_id}", response_model=CartOut, summary="Set the quantity or selection of a line")
def update_cart_item(item_id: int, body: CartItemUpdate, customer: Customer, session: DbSession) -> CartOut:
    service.update_cart_item(
        session, customer.merchant_id, customer.member_id, item_id, quantity=body.quantity, selected=body.selected
    )
    return service.cart(session, customer.merchant_id, customer.member_id)


@store.post("/cart/select", response_model=CartOut, summary="Select or unselect lines (all when no ids)")
def select_cart_items(body: CartSelectIn, customer: Customer, session: DbSession) -> CartOut:
    service.select_cart_items(session, customer.merchant_id, customer.member_id, body.item_ids, body.selected)
    return service.cart(session, customer.merchant_id, customer.member_id)


@store.delete("/cart/items/{item_id}", response_model=CartOut)
def remove_cart_item(item_id: int, customer: Customer, session: DbSession) -> CartOut:
    service.remove_cart_item(session, customer.merchant_id, customer.member_id, item_id)
    return service.cart(session, customer.merchant_id, customer.member_id)


# -- store: addresses ------------------------------------------------------------------------------


@store.get("/addresses", response_model=list[AddressOut])
def list_addresses(customer: Customer, session: DbSession) -> list[AddressOut]:
    return [
        AddressOut.model_validate(a) for a in service.list_addresses(session, customer.merchant_id, customer.member_id)
    ]


@store.post("/addresses", response_model=AddressOut, status_code=status.HTTP_201_CREATED)
def create_address(body: AddressIn, customer: Customer, session: DbSession) -> AddressOut:
    return AddressOut.model_validate(service.create_address(session, customer.merchant_id, customer.member_id, body))


@store.get("/addresses/{address_id}", response_model=AddressOut)
def get_address(address_id: int, customer: Customer, session: DbSession) -> AddressOut:
    return AddressOut.model_validate(
        service.get_address(session, customer.merchant_id, customer.member_id, address_id)
    )


@store.patch("/addresses/{address_id}", response_model=AddressOut)
def update_address(address_id: int, body: AddressUpdate, customer: Customer, session: DbSession) -> AddressOut:
    return AddressOut.model_validate(
        service.update_address(session, customer.merchant_id, customer.member_id, address_id, body)
    )


@store.post("/addresses/{address_id}/default", response_model=AddressOut, summary="Make it the default address")
def set_default_address(address_id: int, customer: Customer, session: DbSession) -> AddressOut:
    return AddressOut.model_validate(
        service.set_default_address(session, customer.merchant_id, customer.member_id, address_id)
    )


@store.delete("/addresses/{address_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_address(address_id: int, customer: Customer, session: DbSession) -> None:
    service.delete_address(session, customer.merchant_id, customer.member_id, address_id)


# -- store: checkout -------------------------------------------------------------------------------


@store.post("/checkout/preview", response_model=CheckoutOut, summary="Price the cart selection or explicit items")
def checkout_preview(body: CheckoutIn, customer: Customer, session: DbSession) -> CheckoutOut:
    return checkout.preview(session, customer.merchant_id, customer.member_id, body)


@store.post(
    "/checkout/submit",
    response_model=OrderDetailOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create the order (Idempotency-Key required; a retry returns the same order with 200)",
)
def checkout_submit(
    body: CheckoutIn,
    customer: Customer,
    session: DbSession,
    settings: AppSettings,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    order, created = checkout.submit(
        session, customer.merchant_id, customer.member_id, body, idempotency_key=idempotency_key,
        payment_timeout=dt.timedelta(minutes=settings.order_payment_timeout_minutes),
    )
    detail = _detail(session, order, new=created)
    # Serialised once, here: a returned Response spares FastAPI validating the model it was just
    # built as (and a threadpool hop); ``response_model`` still documents it.
    response = Response(
        content=detail.model_dump_json(), media_type="application/json",
        status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


# -- store: my orders ------------------------------------------------------------------------------


@store.get("/orders", response_model=Page[OrderOut])
def my_orders(
    customer: Customer,
    session: DbSession,
    order_status: StatusFilter | None = Query(None, alias="status"),
    params: PageParams = Depends(page_params),
) -> Page[OrderOut]:
    stmt = repo.search_orders(customer.merchant_id, member_id=customer.member_id, status=order_status)
    stmt = apply_sort(stmt, params.sort, {"created_at": Order.created_at}, Order.id.desc())
    rows, total = paginate(session, stmt, params)
    return Page(
        items=[OrderOut.model_validate(o) for o in rows], total=total, page=params.page, page_size=params.page_size
    )


@store.get("/orders/{order_id}", response_model=OrderDetailOut)
def my_order(order_id: int, customer: Customer, session: DbSession) -> OrderDetailOut:
    order = service.get_member_order(session, customer.merchant_id, customer.member_id, order_id)
    return _detail(session, order)


@store.post("/orders/{order_id}/cancel", response_model=OrderDetailOut, summary="Cancel my unpaid order")
def cancel_my_order(order_id: int, customer: Customer, session: DbSession) -> OrderDetailOut:
    service.get_member_order(session, customer.merchant_id, customer.member_id, order_id)
    order = service.cancel(session, customer.merchant_id, order_id, reason="customer", actor=customer.actor)
    return _detail(session, order)


@store.post("/orders/{order_id}/confirm-receipt", response_model=OrderDetailOut, summary="Confirm receipt")
def confirm_receipt(order_id: int, customer: Customer, session: DbSession) -> OrderDetailOut:
    service.get_member_order(session, customer.merchant_id, customer.member_id, order_id)
    order = service.complete(session, customer.merchant_id, order_id, actor=customer.actor)
    return _detail(session, order)


# -- admin: freight templates ----------------------------------------------------------------------


@admin.get("/freight-templates", response_model=list[FreightTemplateOut])
def list_freight_templates(
    session: DbSession, p: StaffPrincipal = Depends(require("orders:read"))
) -> list[FreightTemplateOut]:
    return [FreightTemplateOut.model_validate(t) for t in service.list_freight_templates(session, p.merchant_id)]


@admin.post("/freight-templates", response_model=FreightTemplateOut, status_code=status.HTTP_201_CREATED)
@idempotent
def create_freight_template(
    body: FreightTemplateIn, session: DbSession, p: StaffPrincipal = Depends(require("orders:write"))
) -> FreightTemplateOut:
    return FreightTemplateOut.model_validate(service.create_freight_template(session, p.merchant_id, body))


@admin.get("/freight-templates/{template_id}", response_model=FreightTemplateOut)
def get_freight_template(
    template_id: int, session: DbSession, p: StaffPrincipal = Depends(require("orders:read"))
) -> FreightTemplateOut:
    return FreightTemplateOut.model_validate(service.get_freight_template(session, p.merchant_id, template_id))


@admin.patch("/freight-templates/{template_id}", response_model=FreightTemplateOut)
def update_freight_template(
    template_id: int,
    body: FreightTemplateUpdate,
    session: DbSession,
    p: StaffPrincipal = Depends(require("orders:write")),
) -> FreightTemplateOut:
    return FreightTemplateOut.model_validate(
        service.update_freight_template(session, p.merchant_id, template_id, body)
    )


@admin.delete("/freight-templates/{template_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_freight_template(
    template_id: int, session: DbSession, p: StaffPrincipal = Depends(require("orders:write"))
) -> None:
    service.delete_freight_template(session, p.merchant_id, template_id)


# -- admin: orders ---------------------------------------------------------------------------------


@admin.get("/orders", response_model=Page[OrderOut])
def list_orders(
    session: DbSession,
    order_status: StatusFilter | None = Query(None, alias="status"),
    member_id: int | None = None,
    order_no: str | None = Query(None, max_length=32),
    created_from: dt.datetime | None = Query(None, description="inclusive, ISO 8601 with offset"),
    created_to: dt.datetime | None = Query(None, description="exclusive, ISO 8601 with offset"),
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("orders:read")),
) -> Page[OrderOut]:
    stmt = repo.search_orders(
        p.merchant_id, member_id=member_id, status=order_status, order_no=order_no,
        created_from=_aware(created_from), created_to=_aware(created_to),
    )
    sortable = {
        "id": Order.id, "created_at": Order.created_at, "payable_amount": Order.payable_amount,
        "paid_at": Order.paid_at, "status": Order.status,
    }
    stmt = apply_sort(stmt, params.sort, sortable, Order.id.desc())
    rows, total = paginate(session, stmt, params)
    return Page(
        items=[OrderOut.model_validate(o) for o in rows], total=total, page=params.page, page_size=params.page_size
    )


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _admin_detail(session: DbSession, order: Order) -> OrderAdminDetailOut:
    return OrderAdminDetailOut(
        **_detail(session, order).model_dump(),
        audit=[AuditOut.model_validate(a) for a in repo.order_audit(session, order.merchant_id, order.id)],
    )


@admin.get("/orders/{order_id}", response_model=OrderAdminDetailOut, summary="Order with lines, shipments, audit")
def get_order(
    order_id: int, session: DbSession, p: StaffPrincipal = Depends(require("orders:read"))
) -> OrderAdminDetailOut:
    return _admin_detail(session, service.get_order(session, p.merchant_id, order_id))


@admin.post("/orders/{order_id}/ship", response_model=OrderAdminDetailOut)
def ship_order(
    order_id: int,
    body: ShipIn,
    session: DbSession,
    settings: AppSettings,
    p: StaffPrincipal = Depends(require("orders:write")),
) -> OrderAdminDetailOut:
    order = service.ship(
        session, p.merchant_id, order_id, carrier=body.carrier, tracking_no=body.tracking_no, actor=p.actor,
        auto_complete_days=settings.order_auto_complete_days,
    )
    return _admin_detail(session, order)


@admin.post("/orders/{order_id}/cancel", response_model=OrderAdminDetailOut)
def cancel_order(
    order_id: int,
    session: DbSession,
    body: CancelIn | None = None,
    p: StaffPrincipal = Depends(require("orders:write")),
) -> OrderAdminDetailOut:
    reason = (body.reason if body and body.reason else None) or "operator"
    order = service.cancel(session, p.merchant_id, order_id, reason=reason, actor=p.actor)
    return _admin_detail(session, order)


@admin.post("/orders/{order_id}/complete", response_model=OrderAdminDetailOut)
def complete_order(
    order_id: int, session: DbSession, p: StaffPrincipal = Depends(require("orders:write"))
) -> OrderAdminDetailOut:
    return _admin_detail(session, service.complete(session, p.merchant_id, order_id, actor=p.actor))
