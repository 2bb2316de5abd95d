"""Group buys (拼团): activities, teams, seats, pricing, success and failure.

A customer opens a team (leader) or joins one through the checkout::

    CheckoutIn.options = {"group_buy": {"activity_id": 7, "team_id": 42}}   # team_id omitted: open a team

A team opens (开团) only once its leader's order is paid, as on Pinduoduo or Youzan: until then it
is ``pending``, listed nowhere, and a join is 409 ``group_team_not_open``; its share page answers
with ``status = "pending"``. The team's validity (``valid_hours``) counts from the leader's
payment. A leader's order cancelled or timed out unpaid cancels the team (``cancelled``: it never
opened, so no ``group_buy.failed`` and nothing to refund).

1. The ITEM_PROMOTIONS stage (``apply_to_pricing``) checks the activity is running
   (``group_buy_not_started`` / ``group_buy_ended``), the team can be joined
   (``group_team_already_joined`` / ``group_team_not_open`` / ``group_team_full`` /
   ``group_team_expired``) and the member's
   limit (``group_buy_limit_reached``); it prices the line at the group (or leader) price and
   flags it (``activity``; ``no_coupon`` / ``no_points`` / ``no_order_promotions`` from the
   stacking rules; ``free_shipping`` when the activity ships free). The line takes
   normal SKU stock (reserved by the checkout); because it carries ``activity``, an order
   cancellation leaves its stock to this module, which gives it back with the seat.
2. The submit hook (``take_seat``) repeats the checks where they bind: the member's units by a
   conditional update of ``GroupBuyMemberCounter``; a new team is inserted ``pending`` with the
   leader's seat (``filled = 1``) and a job at the leader's payment deadline (capped at the
   activity's end); a seat in an existing team is taken by
   ``UPDATE group_teams SET filled = filled + 1 WHERE id = ? AND status = 'open' AND
   filled < size AND expires_at > now`` (the last seat cannot be taken twice; a pending team is
   refused) and the seat row's ``UNIQUE (team_id, holder_member_id)`` refuses a member twice. Any
   refusal aborts the submit.
3. ``order.paid`` → the seat becomes paid (``pending → paid``). The leader's payment opens the
   team (``UPDATE ... SET status = 'open' WHERE status = 'pending'``, with ``paid_count = 1`` and
   ``expires_at = team_deadline(paid_at, valid_hours, activity end)``), schedules its deadline job
   and emits ``group_buy.team_opened``; a joiner racing it either waits for that row and gets in,
   or read it pending and is refused. A joiner's payment grows ``paid_count``; when every seat is
   paid the team succeeds (``group_buy.succeeded``): its orders stay paid and may ship. Before
   that, ``orders.service.ship`` refuses a group-buy order with 409 ``group_buy_not_succeeded``
   (a ship guard).
4. ``order.cancelled`` → the pending seat is released: ``filled - 1``, the member's units and the
   SKU stock back, exactly once. The leader's order of a pending team: the team is cancelled.
5. At a pending team's deadline, an unpaid leader's order is cancelled and the team with it (a
   paid one whose ``order.paid`` job has not run yet opens the team instead).
   At an open team's deadline (``group_buys.expire_team``, ``run_at = expires_at``): unpaid orders are
   cancelled; a team with at least ``virtual_min_paid`` paid seats succeeds (virtual success);
   otherwise it fails (``group_buy.failed``) and every paid member gets a full refund through the
   payment provider: one ``group_buys.refund_seat`` job per seat calls
   ``payments.service.request_refund`` with the system actor and the idempotency key
   ``group_buy:seat:<id>`` (the seat moves ``paid → refunded`` in the same transaction).

Services never commit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.activities import service as activities
from siyu.activities.repository import members
from siyu.catalog import stock
from siyu.catalog.models import KIND_VIRTUAL, Sku
from siyu.group_buys import repository as repo
from siyu.group_buys.models import (
    ACTIVE,
    CANCELLED,
    DISABLED,
    FAILED,
    OPEN,
    PAID,
    PENDING,
    REFUNDED,
    RELEASED,
    SUCCESS,
    TEAM_PENDING,
    GroupBuy,
    GroupSeat,
    GroupTeam,
)
from siyu.group_buys.schemas import (
    GroupBuyAdminOut,
    GroupBuyIn,
    GroupBuyOrderIn,
    GroupBuyOut,
    GroupBuyStatsOut,
    GroupBuyUpdate,
    SeatOut,
    StoreGroupBuyOut,
    StoreSeatOut,
    StoreTeamCard,
    StoreTeamOut,
    TeamAdminOut,
    TeamOut,
)
from siyu.kit import audit
from siyu.kit.errors import DomainError, invalid, not_found
from siyu.kit.events import emit
from siyu.kit.outbox import enqueue
from siyu.kit.timeutil import utcnow
from siyu.orders import repository as orders_repo
from siyu.orders import service as orders_service
from siyu.orders.freight import VIRTUAL
from siyu.orders.models import PENDING_PAYMENT, Order
from siyu.orders.pricing import ITEM_PROMOTIONS, PricingContext
from siyu.payments import service as payments_service
from siyu.promotions.service import virtual_product_refused
from siyu.tenancy import service as tenancy_service
from siyu.worker.runner import add_schedule

_MESSAGES = {
    "group_buy_limit_reached": (
        409,
        "该拼团商品每人限购 {limit} 件",
        "The group-buy item is limited to {limit} per member",
    ),
    "group_team_full": (409, "该团已满员，请开新团或加入其他团", "This team is full; open a new one or join another"),
    "group_team_expired": (409, "该团已结束，请开新团", "This team has ended; open a new one"),
    "group_team_already_joined": (409, "您已在该团中", "You are already in this team"),
    "group_team_not_open": (
        409,
        "该团尚未开团（团长还未支付），暂不能参团",
        "This team is not open yet (its leader has not paid); it cannot be joined yet",
    ),
    "group_buy_not_succeeded": (
        409,
        "拼团尚未成团，暂不能发货",
        "The group buy has not succeeded yet; the order cannot ship",
    ),
}
KIND = activities.ActivityKind(
    code="group_buy", entity="group_buy", zh="拼团活动", en="group buy", in_use="has_teams", tables=repo.TABLES
)
KIND.register(_MESSAGES)

OPTION = "group_buy"
ID_MAX = 2**63 - 1  # BIGINT
RESERVATION = "group_buy"
SYSTEM: tuple[str, int | None] = ("system", None)
REFUND_REASON = "拼团失败自动退款"


def _team_not_found() -> DomainError:
    return not_found("拼团", "Group-buy team")


# -- admin -------------------------------------------------------------------------------------------


get_group_buy = KIND.get


def _check_rules(
    sku: Sku, *, group_price: int, leader_price: int | None, team_size: int, virtual_min_paid: int | None,
    starts_at: dt.datetime, ends_at: dt.datetime,
) -> None:
    if ends_at <= starts_at:
        raise invalid("ends_at", "window_invalid", "ends_at must be after starts_at", "结束时间须晚于开始时间")
    if group_price >= sku.sale_price:
        raise invalid("group_price", "price_not_below_sale_price", f"must be below the sale price {sku.sale_price}",
                      f"须低于售价 {sku.sale_price}")
    if leader_price is not None and leader_price > group_price:
        raise invalid("leader_price", "leader_price_above_group_price", "the leader price cannot exceed the group price",
                      "团长价不能高于拼团价")
    if virtual_min_paid is not None and virtual_min_paid >= team_size:
        raise invalid("virtual_min_paid", "virtual_min_too_large", "must be below the team size", "须小于成团人数")


def create_group_buy(session: Session, merchant_id: int, data: GroupBuyIn, *, actor: activities.Actor) -> GroupBuy:
    starts_at, ends_at = activities.aware(data.starts_at, "starts_at"), activities.aware(data.ends_at, "ends_at")
    sku, product = activities.sku_and_product(session, merchant_id, data.sku_id)
    if product.kind == KIND_VIRTUAL:  # a membership card is sold at its plan's price only
        raise virtual_product_refused(sku.id, "sku_id")
    _check_rules(
        sku, group_price=data.group_price, leader_price=data.leader_price, team_size=data.team_size,
        virtual_min_paid=data.virtual_min_paid, starts_at=starts_at, ends_at=ends_at,
    )
    gb = GroupBuy(
        merchant_id=merchant_id, name=data.name.strip(), status=ACTIVE, product_id=product.id, sku_id=sku.id,
        team_size=data.team_size, valid_hours=data.valid_hours, group_price=data.group_price,
        leader_price=data.leader_price, per_member_limit=data.per_member_limit, allows_coupons=data.allows_coupons,
        allows_points=data.allows_points, allows_order_promotions=data.allows_order_promotions,
        free_shipping=data.free_shipping, virtual_min_paid=data.virtual_min_paid,
        starts_at=starts_at, ends_at=ends_at,
    )
    session.add(gb)
    session.flush()
    add_schedule(
        session, merchant_id, "group_buys.reconcile", "group_buys.reconcile", "*/5 * * * *",
        tenancy_service.get_merchant(session, merchant_id).timezone,
    )
    audit.record(session, merchant_id, "group_buy", gb.id, "created", to_state=ACTIVE, actor=actor)
    return gb


PRICE_FIELDS = (
    "group_price", "leader_price", "virtual_min_paid", "allows_coupons", "allows_points", "allows_order_promotions",
    "free_shipping",
)
# Fixed once the activity starts: the prices and stacking rules, the limit, the validity, the start.
LOCKED_AT_START = (*PRICE_FIELDS, "per_member_limit", "valid_hours", "starts_at")


def update_group_buy(
    session: Session, merchant_id: int, group_buy_id: int, data: GroupBuyUpdate, *, actor: activities.Actor,
    now: dt.datetime | None = None,
) -> GroupBuy:
    """The name and the end can change any time; every other rule (prices, stacking, the
    per-member limit, the team's validity, the start) only before the start: what a customer
    was told when joining holds (409 ``group_buy_state_invalid`` with the status otherwise). An
    end moved before an open team's deadline brings that deadline to the new end (a team never
    outlives its activity), with a deadline job at that time."""
    now = now or utcnow()
    gb = get_group_buy(session, merchant_id, group_buy_id, lock=True)
    state = activities.effective_status(gb, now)
    if state in (DISABLED, "ended"):
        raise DomainError("group_buy_state_invalid", status=state)
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key not in ("leader_price", "virtual_min_paid"):
            raise invalid(key, "required", f"{key} cannot be null", f"{key} 不能为 null")
    if state == ACTIVE and any(k in changes for k in LOCKED_AT_START):
        raise DomainError("group_buy_state_invalid", status=state)
    starts_at = activities.aware(data.starts_at, "starts_at") if data.starts_at is not None else gb.starts_at
    ends_at = activities.aware(data.ends_at, "ends_at") if data.ends_at is not None else gb.ends_at
    sku, _ = activities.sku_and_product(session, merchant_id, gb.sku_id)
    merged = {k: changes.get(k, getattr(gb, k)) for k in PRICE_FIELDS}
    _check_rules(
        sku, group_price=merged["group_price"], leader_price=merged["leader_price"], team_size=gb.team_size,
        virtual_min_paid=merged["virtual_min_paid"], starts_at=starts_at, ends_at=ends_at,
    )
    for key in (*PRICE_FIELDS, "valid_hours", "per_member_limit"):
        if key in changes:
            setattr(gb, key, changes[key])
    if data.name is not None:
        gb.name = data.name.strip()
    gb.starts_at, gb.ends_at = starts_at, ends_at
    session.flush()
    for team_id in repo.cap_open_teams(session, merchant_id, gb.id, ends_at, now):  # an earlier end: teams end with it
        enqueue(
            session, merchant_id, "group_buys.expire_team", {"team_id": team_id}, run_at=ends_at,
            dedupe_key=f"group_team:{team_id}:expire:{ends_at.isoformat()}",
        )
    audit.record(session, merchant_id, "group_buy", gb.id, "updated", actor=actor, data={"fields": sorted(changes)})
    return gb


# Stop the activity now: no new teams or joins; open teams run to their deadline.
disable = KIND.disable
# Remove an activity nobody joined (one with teams is disabled instead: its history stays).
delete_group_buy = KIND.delete


def admin_out(session: Session, merchant_id: int, gb: GroupBuy, now: dt.datetime | None = None) -> GroupBuyAdminOut:
    counts = repo.team_counts(session, merchant_id, gb.id)
    return GroupBuyAdminOut(
        **GroupBuyOut.model_validate(gb).model_dump(), effective_status=activities.effective_status(gb, now or utcnow()),
        teams_open=counts.get(OPEN, 0), teams_succeeded=counts.get(SUCCESS, 0), teams_failed=counts.get(FAILED, 0),
    )


def teams_with_seats(session: Session, merchant_id: int, teams: list[GroupTeam]) -> list[TeamAdminOut]:
    by_team: dict[int, list[SeatOut]] = {}
    for seat in repo.seats(session, merchant_id, [t.id for t in teams]):
        by_team.setdefault(seat.team_id, []).append(SeatOut.model_validate(seat))
    return [
        TeamAdminOut(**TeamOut.model_validate(t).model_dump(), seats=by_team.get(t.id, [])) for t in teams
    ]


def get_team(session: Session, merchant_id: int, team_id: int) -> GroupTeam:
    found = repo.team(session, merchant_id, team_id)
    if found is None:
        raise _team_not_found()
    return found


# -- pricing stage and submit hook -------------------------------------------------------------------


def _positive_int(raw: Any) -> int | None:
    """An id: a positive integer a BIGINT column holds (a larger one would fail in the query: a 500)."""
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 < raw <= ID_MAX:
        return raw
    return None


def _options(options: dict[str, Any]) -> tuple[int, int | None]:
    raw = options.get(OPTION)
    if not isinstance(raw, dict):
        raise invalid("options.group_buy", "required", "give the group buy's activity_id (and team_id to join)",
                      "请提供拼团活动 activity_id（参团时还需 team_id）")
    activity_id = _positive_int(raw.get("activity_id"))
    if activity_id is None:
        raise invalid("options.group_buy.activity_id", "required", "give the group buy's activity id",
                      "请提供拼团活动 ID（activity_id）")
    team_id = raw.get("team_id")
    if team_id is not None and _positive_int(team_id) is None:
        raise invalid("options.group_buy.team_id", "invalid", "a team id is a positive integer", "团 ID 须为正整数")
    return activity_id, team_id


check_running = KIND.check_running


def _team_refusal(team: GroupTeam | None, now: dt.datetime) -> DomainError:
    if team is None:
        return _team_not_found()
    if team.status == TEAM_PENDING:
        return DomainError("group_team_not_open")
    if team.status in (FAILED, CANCELLED) or (team.status == OPEN and team.expires_at <= now):
        return DomainError("group_team_expired")
    return DomainError("group_team_full")


def check_joinable(session: Session, team: GroupTeam, member_id: int | None, now: dt.datetime) -> None:
    """Advisory (the submit hook's conditional update binds): own seat, then not open yet, full, expired."""
    if member_id is not None and repo.held_seat(session, team.merchant_id, team.id, member_id) is not None:
        raise DomainError("group_team_already_joined")
    if team.status != OPEN or team.expires_at <= now or team.filled >= team.size:
        raise _team_refusal(team, now)


def apply_to_pricing(ctx: PricingContext) -> None:
    """The ITEM_PROMOTIONS stage: price the group-buy line at the group (or leader) price."""
    if OPTION not in ctx.options:
        return
    activity_id, team_id = _options(ctx.options)
    gb = get_group_buy(ctx.session, ctx.merchant_id, activity_id)
    check_running(gb, ctx.now)
    idx = activities.activity_line(
        ctx, gb.sku_id, "options.group_buy.activity_id", "the group-buy SKU is not in this order", "拼团商品不在此订单中"
    )
    line = ctx.lines[idx]
    activities.check_no_other_activity(line, OPTION)
    if line.flags.get(VIRTUAL):  # made virtual (a card plan sells it) after the group buy was set up
        raise virtual_product_refused(line.sku_id, "options.group_buy.activity_id")
    if team_id is not None:
        team = repo.team(ctx.session, ctx.merchant_id, team_id)
        if team is None or team.group_buy_id != gb.id:
            raise _team_not_found()
        check_joinable(ctx.session, team, ctx.member_id, ctx.now)
    held = repo.member_units(ctx.session, ctx.merchant_id, gb.id, ctx.member_id) if ctx.member_id else 0
    if held + line.quantity > gb.per_member_limit:
        raise DomainError("group_buy_limit_reached", limit=gb.per_member_limit)
    leader = team_id is None
    unit_price = gb.leader_price if leader and gb.leader_price is not None else gb.group_price
    amount = max(0, line.amount - unit_price * line.quantity)
    ctx.discount(
        ITEM_PROMOTIONS, f"group_buy:{gb.id}", "团长价" if leader and gb.leader_price is not None else "拼团价",
        amount, [idx], details={"group_buy_id": gb.id, "team_id": team_id, "unit_price": unit_price, "leader": leader},
    )
    activities.flag_activity_line(line, gb, f"group_buy:{gb.id}", {"group_buy_id": gb.id})
    ctx.reservations[RESERVATION] = {
        "group_buy_id": gb.id, "team_id": team_id, "line_index": idx, "quantity": line.quantity,
        "limit": gb.per_member_limit, "sku_id": gb.sku_id, "size": gb.team_size, "valid_hours": gb.valid_hours,
        "ends_at": gb.ends_at.isoformat(),
    }


def team_deadline(opened_at: dt.datetime, valid_hours: int, activity_ends_at: dt.datetime | str) -> dt.datetime:
    """A team's deadline: ``valid_hours`` after it opens (its leader's payment), but never after the
    activity's end (a team opened near the end expires with the activity, and the timeout flow
    refunds its members)."""
    ends_at = dt.datetime.fromisoformat(activity_ends_at) if isinstance(activity_ends_at, str) else activity_ends_at
    return min(opened_at + dt.timedelta(hours=valid_hours), ends_at)


def take_seat(ctx: PricingContext, order_id: int) -> None:
    """The submit hook: the member's units, then the seat (a new team's first, or the next one)."""
    res = ctx.reservations.get(RESERVATION)
    if not res:
        return
    session, merchant_id, member_id, now = ctx.session, ctx.merchant_id, ctx.member_id, ctx.now
    assert member_id is not None
    gb_id, qty, limit = int(res["group_buy_id"]), int(res["quantity"]), int(res["limit"])
    if not repo.take_units(session, merchant_id, gb_id, member_id, qty, limit):
        raise DomainError("group_buy_limit_reached", limit=limit)
    team_id = res["team_id"]
    if team_id is None:
        # Not open until the leader pays: it lasts as long as the leader's order can be paid
        # (never past the activity's end), then the deadline job cancels it if still unpaid.
        order = session.get(Order, order_id)  # written by this submit: in the session already
        ends_at = dt.datetime.fromisoformat(res["ends_at"])
        pay_by = order.pay_deadline if order is not None and order.pay_deadline is not None else None
        deadline = min(pay_by, ends_at) if pay_by is not None else team_deadline(now, int(res["valid_hours"]), ends_at)
        team = GroupTeam(
            merchant_id=merchant_id, group_buy_id=gb_id, leader_member_id=member_id, size=int(res["size"]), filled=1,
            paid_count=0, status=TEAM_PENDING, expires_at=deadline, virtual=False,
        )
        session.add(team)
        session.flush()
        team_id, seat_no = team.id, 1
        enqueue(
            session, merchant_id, "group_buys.expire_team", {"team_id": team.id}, run_at=team.expires_at,
            dedupe_key=f"group_team:{team.id}:unpaid",
        )
    else:
        taken = repo.take_seat(session, merchant_id, int(team_id), now)
        if taken is None:
            raise _team_refusal(repo.team(session, merchant_id, int(team_id)), now)
        seat_no = taken
    seat = GroupSeat(
        merchant_id=merchant_id, group_buy_id=gb_id, team_id=int(team_id), member_id=member_id,
        holder_member_id=member_id, order_id=order_id, sku_id=int(res["sku_id"]), seat_no=seat_no,
        is_leader=seat_no == 1 and res["team_id"] is None, quantity=qty,
        amount=ctx.lines[int(res["line_index"])].amount, status=PENDING,
    )
    try:
        with session.begin_nested():
            session.add(seat)
            session.flush()
    except IntegrityError:
        raise DomainError("group_team_already_joined") from None
    audit.record(
        session, merchant_id, "group_team", int(team_id), "seat_taken", actor=("customer", member_id),
        data={"order_id": order_id, "seat_no": seat_no, "quantity": qty},
    )


# -- ship guard ----------------------------------------------------------------------------------------


def check_shippable(session: Session, order: Order) -> None:
    seat = repo.seat_of_order(session, order.merchant_id, order.id)
    if seat is None:
        return
    team = repo.team(session, order.merchant_id, seat.team_id)
    if team is None or team.status != SUCCESS or seat.status != PAID:
        raise DomainError("group_buy_not_succeeded")


# -- lifecycle -----------------------------------------------------------------------------------------


def _succeed(session: Session, team: GroupTeam, now: dt.datetime, *, virtual: bool) -> bool:
    m = team.merchant_id
    if not repo.finish_team(session, m, team.id, SUCCESS, now, virtual=virtual):
        return False
    paid = [s for s in repo.seats(session, m, [team.id]) if s.status == PAID]
    audit.record(session, m, "group_team", team.id, "succeeded", from_state=OPEN, to_state=SUCCESS,
                 data={"virtual": virtual, "paid": len(paid)})
    emit(
        session, m, "group_buy.succeeded",
        {"team_id": team.id, "group_buy_id": team.group_buy_id, "virtual": virtual,
         "order_ids": [s.order_id for s in paid], "member_ids": [s.member_id for s in paid]},
        key=f"group_team:{team.id}",
    )
    return True


def _release_seat(session: Session, seat: GroupSeat, now: dt.datetime) -> bool:
    """pending → released: the seat, the member's units and the SKU stock back, once."""
    m = seat.merchant_id
    if not repo.move_seat(session, m, seat.id, PENDING, RELEASED, now):
        return False
    repo.give_back_seat(session, m, seat.team_id, now)
    repo.give_back_units(session, m, seat.group_buy_id, seat.member_id, seat.quantity)
    stock.release(session, m, {seat.sku_id: seat.quantity})
    return True


def _open_team(session: Session, team: GroupTeam, seat: GroupSeat, now: dt.datetime) -> bool:
    """The leader paid (their seat just moved to paid): ``pending → open`` with the leader's seat
    counted, the validity counted from the payment, the deadline job and ``group_buy.team_opened``."""
    m = team.merchant_id
    gb = repo.group_buy(session, m, team.group_buy_id)
    assert gb is not None
    order = orders_repo.order(session, m, seat.order_id)
    paid_at = order.paid_at if order is not None and order.paid_at is not None else now
    expires_at = team_deadline(paid_at, gb.valid_hours, gb.ends_at)
    if not repo.open_team(session, m, team.id, expires_at, now):
        return False
    enqueue(
        session, m, "group_buys.expire_team", {"team_id": team.id}, run_at=expires_at,
        dedupe_key=f"group_team:{team.id}:expire",
    )
    audit.record(session, m, "group_team", team.id, "opened", from_state=TEAM_PENDING, to_state=OPEN,
                 data={"order_id": seat.order_id, "expires_at": expires_at.isoformat()})
    emit(
        session, m, "group_buy.team_opened",
        {"team_id": team.id, "group_buy_id": team.group_buy_id, "member_id": seat.member_id,
         "order_id": seat.order_id, "expires_at": expires_at.isoformat()},
        key=f"group_team:{team.id}",
    )
    return True


def _cancel_team(session: Session, team: GroupTeam, now: dt.datetime, *, reason: str) -> bool:
    """pending → cancelled: the leader's order went unpaid; the team never opened (no failure event,
    nothing to refund: the seat, units and stock went back with the order)."""
    if not repo.cancel_team(session, team.merchant_id, team.id, now):
        return False
    audit.record(session, team.merchant_id, "group_team", team.id, "cancelled", from_state=TEAM_PENDING,
                 to_state=CANCELLED, data={"reason": reason})
    return True


def on_order_paid(session: Session, merchant_id: int, order_id: int, *, now: dt.datetime | None = None) -> None:
    now = now or utcnow()
    seat = repo.seat_of_order(session, merchant_id, order_id)
    if seat is None:
        return
    team = repo.team(session, merchant_id, seat.team_id, lock=True)
    assert team is not None
    if not repo.move_seat(session, merchant_id, seat.id, PENDING, PAID, now):
        return
    if team.status == TEAM_PENDING:  # the leader paid: 开团
        _open_team(session, team, seat, now)
    elif team.status == OPEN:
        counted = repo.count_paid_seat(session, merchant_id, team.id, now)
        if counted is not None and counted[0] >= counted[1]:
            _succeed(session, team, now, virtual=False)
    elif team.status == FAILED:  # paid after the team failed: refund it like the others
        _enqueue_refund(session, seat)


def on_order_cancelled(session: Session, merchant_id: int, order_id: int, *, now: dt.datetime | None = None) -> None:
    now = now or utcnow()
    seat = repo.seat_of_order(session, merchant_id, order_id)
    if seat is None:
        return
    team = repo.team(session, merchant_id, seat.team_id, lock=True)
    assert team is not None
    if not _release_seat(session, seat, now):
        return
    team = repo.team(session, merchant_id, seat.team_id)
    if team is not None and team.status == TEAM_PENDING:  # the leader's unpaid order: it never opened
        _cancel_team(session, team, now, reason="leader_order_cancelled")
    elif team is not None and team.status == OPEN and team.filled == 0:  # nobody left: the team is over
        _fail(session, team, now, reason="empty")


def _free_units(session: Session, seat: GroupSeat, qty: int) -> None:
    """Give ``qty`` of the seat's units back to the member's limit, never more than it holds."""
    qty = min(qty, seat.quantity - seat.units_freed)
    if qty > 0 and repo.free_seat_units(session, seat.merchant_id, seat.id, qty):
        repo.give_back_units(session, seat.merchant_id, seat.group_buy_id, seat.member_id, qty)


def on_order_refunded(session: Session, merchant_id: int, payload: dict[str, Any], *, now: dt.datetime | None = None) -> None:
    """A paid member refunded (after-sales). In an open team, a full refund gives the seat up, so
    the team cannot succeed with a member who no longer pays. In any team not failed (a failed
    team's refunds are ``refund_seat``'s), the refunded units go back to the member's limit: all
    of them on a full refund, else the refunded quantity of the group-buy line."""
    now = now or utcnow()
    seat = repo.seat_of_order(session, merchant_id, int(payload["order_id"]))
    if seat is None or seat.status != PAID:
        return
    team = repo.team(session, merchant_id, seat.team_id, lock=True)
    if team is None or team.status == FAILED:
        return
    if payload.get("full") and team.status == OPEN:
        if repo.move_seat(session, merchant_id, seat.id, PAID, REFUNDED, now, refund_id=payload.get("refund_id")):
            repo.uncount_paid_seat(session, merchant_id, team.id, now)
            repo.give_back_seat(session, merchant_id, team.id, now)
            _free_units(session, seat, seat.quantity)
        return
    if payload.get("full"):
        _free_units(session, seat, seat.quantity)
        return
    lines = {ln.id for ln in orders_repo.order_lines(session, merchant_id, seat.order_id) if ln.sku_id == seat.sku_id}
    refunded = sum(int(r.get("quantity") or 0) for r in payload.get("lines") or [] if int(r["order_line_id"]) in lines)
    _free_units(session, seat, refunded)


def _enqueue_refund(session: Session, seat: GroupSeat) -> None:
    enqueue(
        session, seat.merchant_id, "group_buys.refund_seat", {"seat_id": seat.id},
        dedupe_key=f"group_seat:{seat.id}:refund", max_attempts=12,
    )


def _fail(session: Session, team: GroupTeam, now: dt.datetime, *, reason: str) -> bool:
    m = team.merchant_id
    if not repo.finish_team(session, m, team.id, FAILED, now):
        return False
    paid = [s for s in repo.seats(session, m, [team.id]) if s.status == PAID]
    for seat in paid:
        _enqueue_refund(session, seat)
    audit.record(session, m, "group_team", team.id, "failed", from_state=OPEN, to_state=FAILED,
                 data={"reason": reason, "refunds": len(paid)})
    emit(
        session, m, "group_buy.failed",
        {"team_id": team.id, "group_buy_id": team.group_buy_id, "reason": reason,
         "refunded_order_ids": [s.order_id for s in paid], "member_ids": [s.member_id for s in paid]},
        key=f"group_team:{team.id}",
    )
    return True


def expire_team(session: Session, merchant_id: int, team_id: int, now: dt.datetime) -> str | None:
    """At the deadline: cancel unpaid orders, then succeed (every seat paid, or virtual success)
    or fail (refund every paid member). Returns the outcome, None when nothing was due."""
    team = repo.team(session, merchant_id, team_id, lock=True)
    if team is None or team.status not in (OPEN, TEAM_PENDING) or now < team.expires_at:
        return None
    if team.status == TEAM_PENDING:
        return _expire_unopened(session, team, now)
    gb = repo.group_buy(session, merchant_id, team.group_buy_id)
    assert gb is not None
    for seat in repo.seats(session, merchant_id, [team.id]):
        if seat.status != PENDING:
            continue
        order = orders_repo.order(session, merchant_id, seat.order_id, lock=True)
        if order is not None and order.status == PENDING_PAYMENT:
            orders_service.cancel(session, merchant_id, order.id, reason="group_buy_timeout", actor=SYSTEM)
            _release_seat(session, seat, now)
        elif (  # paid; its order.paid job has not run yet
            order is not None and order.paid_at is not None
            and repo.move_seat(session, merchant_id, seat.id, PENDING, PAID, now)
        ):
            repo.count_paid_seat(session, merchant_id, team.id, now)
    team = repo.team(session, merchant_id, team_id)
    assert team is not None
    if team.paid_count >= team.size:
        _succeed(session, team, now, virtual=False)
        return SUCCESS
    if gb.virtual_min_paid is not None and team.paid_count >= gb.virtual_min_paid:
        _succeed(session, team, now, virtual=True)
        return SUCCESS
    _fail(session, team, now, reason="timeout")
    return FAILED


def _expire_unopened(session: Session, team: GroupTeam, now: dt.datetime) -> str | None:
    """A pending team at its deadline (the leader's payment deadline, or the activity's end): an
    unpaid leader's order is cancelled and the team with it; a paid one (its ``order.paid`` job
    has not run yet) opens the team instead. ``cancelled`` / ``open``, or None."""
    m = team.merchant_id
    for seat in repo.seats(session, m, [team.id]):
        if seat.status != PENDING:
            continue
        order = orders_repo.order(session, m, seat.order_id, lock=True)
        if order is not None and order.paid_at is not None:
            if repo.move_seat(session, m, seat.id, PENDING, PAID, now) and _open_team(session, team, seat, now):
                return OPEN
            return None
        if order is not None and order.status == PENDING_PAYMENT:
            orders_service.cancel(session, m, order.id, reason="group_buy_timeout", actor=SYSTEM)
        _release_seat(session, seat, now)
    return CANCELLED if _cancel_team(session, team, now, reason="leader_unpaid") else None


def expire_due(session: Session, merchant_id: int, now: dt.datetime) -> int:
    """Catch up teams whose deadline job was missed."""
    return sum(1 for team_id in repo.due_teams(session, merchant_id, now) if expire_team(session, merchant_id, team_id, now))


def refund_seat(session: Session, merchant_id: int, seat_id: int, *, now: dt.datetime | None = None) -> int | None:
    """Refund a failed team's paid member in full through the payment provider, once.

    The seat moves ``paid → refunded`` in the same transaction as the refund request, whose
    idempotency key (``group_buy:seat:<id>``, unique per merchant) backs the once. The units go
    back to the SKU (the goods never shipped) and to the member's limit."""
    now = now or utcnow()
    seat = repo.seat(session, merchant_id, seat_id, lock=True)
    if seat is None or seat.status != PAID:
        return None
    team = repo.team(session, merchant_id, seat.team_id)
    if team is None or team.status != FAILED:
        return None
    order = orders_repo.order(session, merchant_id, seat.order_id)
    assert order is not None
    refund_id: int | None = None
    refundable = order.paid_amount - order.refunded_amount
    if refundable > 0:
        refund = payments_service.request_refund(
            session, merchant_id, order.id, lines=None, amount=refundable, reason=REFUND_REASON,
            idempotency_key=f"group_buy:seat:{seat.id}", actor=SYSTEM,
        )
        refund_id = refund.id
    if repo.move_seat(session, merchant_id, seat.id, PAID, REFUNDED, now, refund_id=refund_id):
        _free_units(session, seat, seat.quantity)
        stock.release(session, merchant_id, {seat.sku_id: seat.quantity})
    audit.record(session, merchant_id, "group_team", team.id, "member_refunded",
                 data={"seat_id": seat.id, "order_id": order.id, "amount": refundable, "refund_id": refund_id})
    return refund_id


# -- store -------------------------------------------------------------------------------------------------


def store_detail(session: Session, merchant_id: int, group_buy_id: int, *, now: dt.datetime | None = None) -> StoreGroupBuyOut:
    now = now or utcnow()
    gb = KIND.visible(session, merchant_id, group_buy_id)
    sku, product = activities.sku_and_product(session, merchant_id, gb.sku_id)
    teams = repo.joinable_teams(session, merchant_id, gb.id, now) if activities.effective_status(gb, now) == ACTIVE else []
    leaders = members(session, merchant_id, [t.leader_member_id for t in teams])
    return StoreGroupBuyOut(
        id=gb.id, name=gb.name, status=activities.effective_status(gb, now), product_id=product.id, sku_id=sku.id,
        title=product.title, spec_text=orders_service.spec_text(product, sku),
        image_url=activities.image_url(sku, product), list_price=sku.list_price,
        sale_price=sku.sale_price, group_price=gb.group_price, leader_price=gb.leader_price, team_size=gb.team_size,
        valid_hours=gb.valid_hours, per_member_limit=gb.per_member_limit, free_shipping=gb.free_shipping,
        allows_coupons=gb.allows_coupons, allows_points=gb.allows_points,
        allows_order_promotions=gb.allows_order_promotions, starts_at=gb.starts_at, ends_at=gb.ends_at,
        open_teams=[
            StoreTeamCard(
                team_id=t.id,
                leader_nickname=activities.mask_nickname(leaders[t.leader_member_id].nickname if t.leader_member_id in leaders else None),
                remaining_seats=t.size - t.filled, expires_at=t.expires_at,
            )
            for t in teams
        ],
    )


def store_team(session: Session, merchant_id: int, team_id: int) -> StoreTeamOut:
    team = get_team(session, merchant_id, team_id)
    gb = get_group_buy(session, merchant_id, team.group_buy_id)
    sku, product = activities.sku_and_product(session, merchant_id, gb.sku_id)
    held = [s for s in repo.seats(session, merchant_id, [team.id]) if s.status in (PENDING, PAID, REFUNDED)]
    if team.status != FAILED:
        held = [s for s in held if s.status != REFUNDED]
    if team.status in (TEAM_PENDING, CANCELLED):  # not open (yet): nobody to show, no seat to take
        held = []
    people = members(session, merchant_id, [s.member_id for s in held])
    return StoreTeamOut(
        team_id=team.id, group_buy_id=gb.id, name=gb.name, title=product.title,
        image_url=activities.image_url(sku, product), group_price=gb.group_price,
        sale_price=sku.sale_price, status=team.status, size=team.size, filled=team.filled,
        remaining_seats=max(0, team.size - team.filled) if team.status == OPEN else 0, expires_at=team.expires_at,
        seats=[
            StoreSeatOut(
                seat_no=s.seat_no,
                nickname=activities.mask_nickname(people[s.member_id].nickname if s.member_id in people else None),
                avatar_url=people[s.member_id].avatar_url if s.member_id in people else None,
                is_leader=s.is_leader, paid=s.status in (PAID, REFUNDED),
            )
            for s in held
        ],
    )


def order(
    session: Session,
    merchant_id: int,
    member_id: int,
    group_buy_id: int,
    team_id: int | None,
    body: GroupBuyOrderIn,
    *,
    idempotency_key: str | None,
    payment_timeout: dt.timedelta,
    now: dt.datetime | None = None,
) -> tuple[Order, bool]:
    """Open a team (``team_id`` None) or join one: the checkout submit with the group-buy option."""
    gb = KIND.visible(session, merchant_id, group_buy_id)
    option: dict[str, Any] = {"activity_id": gb.id}
    if team_id is not None:
        option["team_id"] = team_id
    return activities.submit_order(
        session, merchant_id, member_id, sku_id=gb.sku_id, quantity=body.quantity, address_id=body.address_id,
        remark=body.remark, option=OPTION, value=option, idempotency_key=idempotency_key,
        payment_timeout=payment_timeout, now=now, coupon_ids=body.coupon_ids,
    )


# Kept importable from here (tests, callers).
effective_status = activities.effective_status
mask_nickname = activities.mask_nickname
__all__ = ["REFUNDED", "RELEASED"]


# -- usage (ROI) ---------------------------------------------------------------------------------------


def stats(session: Session, merchant_id: int, group_buy_id: int) -> GroupBuyStatsOut:
    """Teams by outcome, seats by state, and the money of the paid ones (404 for another merchant's)."""
    gb = get_group_buy(session, merchant_id, group_buy_id)
    teams = repo.team_counts(session, merchant_id, gb.id)
    seats = repo.seat_figures(session, merchant_id, gb.id)

    def seat(status: str) -> tuple[int, int, int]:
        return seats.get(status, (0, 0, 0))

    return GroupBuyStatsOut(
        group_buy_id=gb.id, teams_opened=sum(teams.get(s, 0) for s in (OPEN, SUCCESS, FAILED)),
        teams_pending=teams.get(TEAM_PENDING, 0), teams_cancelled=teams.get(CANCELLED, 0), teams_open=teams.get(OPEN, 0),
        teams_succeeded=teams.get(SUCCESS, 0), teams_virtual=repo.virtual_successes(session, merchant_id, gb.id),
        teams_failed=teams.get(FAILED, 0),
        paid_seats=seat(PAID)[0], paid_units=seat(PAID)[1], gmv=seat(PAID)[2],
        discount_given=repo.paid_seat_discount(session, merchant_id, gb.id),
        refunded_seats=seat(REFUNDED)[0], refunded_amount=seat(REFUNDED)[2],
        pending_seats=seat(PENDING)[0], released_seats=seat(RELEASED)[0],
    )
