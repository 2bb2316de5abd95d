"""Compiles a segment definition to one SQL boolean expression over members.

The query is ``members LEFT JOIN member_stats``; behaviour, purchase and sequence conditions
become semi-joins (``members.id IN (SELECT member_id ... GROUP BY member_id HAVING ...)``) that
use the ``(merchant_id, member_id, name, occurred_at)`` index of events and, for purchases, the
covering paid-orders index ``ix_orders_paid_member`` (declared in ``orders.models``); product and
category purchases read only the order lines' ``ix_order_lines_bought`` (see
``audience.purchase_facts``). The same expression counts a preview, fills a saved segment and
re-evaluates one member.
JSON property filters use SQLAlchemy's portable JSON accessors, so the compiler itself has no
dialect branches; the one piece of date arithmetic lives in ``db.dialect.plus_seconds``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, and_, bindparam, exists, func, not_, or_, select, true, union_all
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from siyu.audience import repository as repo
from siyu.audience.definitions import (
    MEMBER_FIELDS,
    AndNode,
    AttributeNode,
    BehaviorNode,
    ConsentNode,
    CustomFieldNode,
    LevelNode,
    Node,
    NotNode,
    OrNode,
    PropertyFilter,
    PurchaseNode,
    RandomBucketNode,
    RecordNode,
    RepurchaseOverdueNode,
    SequenceNode,
    StageNode,
    SuperUserNode,
    TagNode,
)
from siyu.audience.models import STAGE_NEVER, MemberStats
from siyu.audience.schemas import LifecycleConfig
from siyu.catalog.models import Product
from siyu.db.dialect import epoch_seconds, plus_seconds
from siyu.events.models import Event
from siyu.members.models import Member, MemberConsent, MemberRecord, MemberTag, RecordType
from siyu.orders import models as om


class Compiler:
    def __init__(self, session: Session, merchant_id: int, now: dt.datetime) -> None:
        self.session = session
        self.merchant_id = merchant_id
        self.now = now
        self._config: LifecycleConfig | None = None

    @property
    def config(self) -> LifecycleConfig:
        """The merchant's audience settings (read once, for the conditions that use them)."""
        if self._config is None:
            self._config = repo.lifecycle_config(self.session, self.merchant_id)
        return self._config

    def base(self) -> Select[Any]:
        return (
            select(Member.id)
            .select_from(Member)
            .outerjoin(MemberStats, and_(MemberStats.merchant_id == Member.merchant_id, MemberStats.member_id == Member.id))
            .where(Member.merchant_id == self.merchant_id)
        )

    def members(self, node: Node) -> Select[Any]:
        return self.base().where(self.compile(node))

    def compile(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, AndNode):
            return and_(*(self.compile(n) for n in node.nodes))
        if isinstance(node, OrNode):
            return or_(*(self.compile(n) for n in node.nodes))
        if isinstance(node, NotNode):
            return not_(self.compile(node.node))
        if isinstance(node, AttributeNode):
            return self._attribute(node)
        if isinstance(node, StageNode):
            return func.coalesce(MemberStats.lifecycle_stage, STAGE_NEVER).in_(node.in_)
        if isinstance(node, BehaviorNode):
            return self._behavior(node)
        if isinstance(node, PurchaseNode):
            return self._purchase(node)
        if isinstance(node, SequenceNode):
            return self._sequence(node)
        if isinstance(node, TagNode):
            tagged = select(MemberTag.member_id).where(
                MemberTag.merchant_id == self.merchant_id, MemberTag.tag_id.in_(node.tag_ids)
            )
            return Member.id.in_(tagged) if node.op == "has" else not_(Member.id.in_(tagged))
        if isinstance(node, RandomBucketNode):
            return ((Member.id * 2654435761 + node.salt) % 1000003) % 100 < node.percent
        if isinstance(node, SuperUserNode):
            top = func.coalesce(MemberStats.super_score, -1.0) >= 100.0 - self.config.super_user_top_percent
            return top if node.is_ else not_(top)
        if isinstance(node, RepurchaseOverdueNode):
            return self._repurchase_overdue(node)
        if isinstance(node, CustomFieldNode):
            return self._custom_field(node)
        if isinstance(node, RecordNode):
            return self._record(node)
        if isinstance(node, LevelNode):
            return self._level(node)
        if isinstance(node, ConsentNode):
            granted = select(MemberConsent.member_id).where(
                MemberConsent.merchant_id == self.merchant_id, MemberConsent.channel == node.channel,
                MemberConsent.granted.is_(True),
            )
            return Member.id.in_(granted) if node.granted else not_(Member.id.in_(granted))
        raise TypeError(f"unknown node {type(node).__name__}")

    # -- leaves ------------------------------------------------------------------------------
    def _repurchase_overdue(self, node: RepurchaseOverdueNode) -> ColumnElement[bool]:
        s = MemberStats
        by_threshold = s.last_order_at < self.now - dt.timedelta(days=self.config.repurchase_overdue_days)
        last, first = epoch_seconds(self.session, s.last_order_at), epoch_seconds(self.session, s.first_order_at)
        # now - last > (last - first) / (n - 1), multiplied out (no division)
        by_own = and_(s.paid_orders >= 2, (int(self.now.timestamp()) - last) * (s.paid_orders - 1) > last - first)
        bought = s.paid_orders >= 1
        if node.basis == "threshold":
            return and_(bought, by_threshold)
        if node.basis == "own_interval":
            return by_own
        return and_(bought, or_(by_threshold, by_own))

    def _custom_field(self, node: CustomFieldNode) -> ColumnElement[bool]:
        element = Member.custom_fields[node.key]
        if node.op in ("is_set", "is_not_set"):
            present = _typed(element, "").is_not(None)
            return present if node.op == "is_set" else not_(present)
        compared = _compare(element, node.op, node.value)
        # "ne" also holds for a member without the field (as an attribute's does)
        return or_(compared, _typed(element, "").is_(None)) if node.op == "ne" else compared

    def _level(self, node: LevelNode) -> ColumnElement[bool]:
        """The effective level's rank per member: the highest of the rules level
        (``member_loyalty``) and the levels of active cards (``member_cards``); ranks are unique
        per merchant, so comparing ranks compares levels."""
        from siyu.loyalty.models import CARD_ACTIVE, Level, MemberCard, MemberLoyalty

        held = union_all(
            select(MemberLoyalty.member_id.label("member_id"), MemberLoyalty.level_id.label("level_id")).where(
                MemberLoyalty.merchant_id == self.merchant_id, MemberLoyalty.level_id.is_not(None)),
            select(MemberCard.member_id, MemberCard.level_id).where(
                MemberCard.merchant_id == self.merchant_id, MemberCard.level_id.is_not(None),
                MemberCard.status == CARD_ACTIVE, MemberCard.starts_at <= self.now, MemberCard.ends_at > self.now),
        ).subquery()
        best = (
            select(held.c.member_id, func.max(Level.rank).label("rank"))
            .join(Level, and_(Level.merchant_id == self.merchant_id, Level.id == held.c.level_id))
            .group_by(held.c.member_id)
            .subquery()
        )
        if node.op == "none":
            return not_(Member.id.in_(select(best.c.member_id)))
        named = select(Level.rank).where(Level.merchant_id == self.merchant_id, Level.id.in_(node.level_ids))
        if node.op == "in":
            return Member.id.in_(select(best.c.member_id).where(best.c.rank.in_(named)))
        lowest = select(func.min(Level.rank)).where(
            Level.merchant_id == self.merchant_id, Level.id.in_(node.level_ids)).scalar_subquery()
        return Member.id.in_(select(best.c.member_id).where(best.c.rank >= lowest))

    def _record(self, node: RecordNode) -> ColumnElement[bool]:
        """Members whose latest record of the type matches (the index on member, type serves
        the latest-version probe)."""
        r, newer = aliased(MemberRecord), aliased(MemberRecord)
        type_id = select(RecordType.id).where(
            RecordType.merchant_id == self.merchant_id, RecordType.key == node.record_type
        ).scalar_subquery()
        latest = ~exists().where(
            newer.merchant_id == r.merchant_id, newer.member_id == r.member_id,
            newer.record_type_id == r.record_type_id, newer.version > r.version,
        )
        having = select(r.member_id).where(
            r.merchant_id == self.merchant_id, r.record_type_id == type_id, latest,
            *(_compare(r.data[f.property], f.op, f.value) for f in node.where),
        )
        return Member.id.in_(having) if node.has else not_(Member.id.in_(having))

    def _attribute(self, node: AttributeNode) -> ColumnElement[bool]:
        column = getattr(Member if node.field in MEMBER_FIELDS else MemberStats, node.field)
        op, value = node.op, node.value
        if op == "is_set":
            return column.is_not(None)
        if op == "is_not_set":
            return column.is_(None)
        if op == "within_last_days":
            return column >= self.now - dt.timedelta(days=int(value))
        if op == "before_days_ago":
            return column < self.now - dt.timedelta(days=int(value))
        value = _coerce(value)
        if op == "eq":
            return column == value
        if op == "ne":
            return or_(column != value, column.is_(None))
        if op == "in":
            return column.in_(value)
        if op == "not_in":
            return or_(column.not_in(value), column.is_(None))
        if op == "contains":
            return column.contains(str(value), autoescape=True)
        if op == "gt":
            return column > value
        if op == "gte":
            return column >= value
        if op == "lt":
            return column < value
        if op == "lte":
            return column <= value
        if op == "between":
            return column.between(value[0], value[1])
        raise ValueError(op)

    def _window(self, column: Any, within_days: int | None, since: dt.datetime | None, until: dt.datetime | None) -> list[Any]:
        conds = []
        if within_days is not None:
            conds.append(column >= self.now - dt.timedelta(days=within_days))
        if since is not None:
            conds.append(column >= since)
        if until is not None:
            conds.append(column < until)
        return conds

    def _behavior(self, node: BehaviorNode) -> ColumnElement[bool]:
        conds = [
            Event.merchant_id == self.merchant_id,
            Event.member_id.is_not(None),
            Event.name == node.event,
            *self._window(Event.occurred_at, node.within_days, node.since, node.until),
            *(_property(f) for f in node.where),
        ]
        n = node.count
        # "at least once" / "never" are (NOT) EXISTS on the member's own events: PostgreSQL plans
        # them as a semi/anti join and picks a hash join or per-member index probes
        # (merchant_id, member_id, name, occurred_at) by the estimates, so a selective segment
        # does not aggregate every event of the window.
        if (node.op == "gte" and n == 1) or (node.op in ("eq", "lte") and n == 0):
            mine = exists().where(*conds, Event.member_id == Member.id)
            return mine if node.op == "gte" else not_(mine)
        grouped = select(Event.member_id).where(*conds).group_by(Event.member_id)
        if node.op == "gte":
            return true() if n == 0 else Member.id.in_(grouped.having(func.count() >= n))
        if node.op == "lte":
            return not_(Member.id.in_(grouped.having(func.count() > n)))
        return Member.id.in_(grouped.having(func.count() == n))

    def _purchase(self, node: PurchaseNode) -> ColumnElement[bool]:
        if node.product_ids or node.category_ids:
            return self._product_purchase(node)
        o = om.Order
        conds = [
            o.merchant_id == self.merchant_id,
            # literals, not bind parameters: the predicate of the partial covering index
            # ix_orders_paid_member is then provable in prepared (generic) plans too
            o.status.in_(bindparam("paid_states", list(om.PAID_STATUSES), expanding=True, literal_execute=True, unique=True)),
            *self._window(o.paid_at, node.within_days, node.since, node.until),
        ]
        stmt = select(o.member_id).select_from(o)
        if node.min_orders <= 1 and node.min_amount is None:
            # "bought at least once": EXISTS on the member's orders (see _behavior)
            return stmt.where(*conds, o.member_id == Member.id).exists()
        having = [func.count() >= node.min_orders]
        if node.min_amount is not None:
            having.append(func.sum(o.paid_amount - o.refunded_amount) >= node.min_amount)
        return Member.id.in_(stmt.where(*conds).group_by(o.member_id).having(and_(*having)))

    def _product_purchase(self, node: PurchaseNode) -> ColumnElement[bool]:
        """Bought these products / categories: read from the order lines alone.

        ``OrderLine.bought_at`` is the order's ``paid_at`` while the order counts as bought (status
        in PAID_STATUSES) and NULL otherwise, ``OrderLine.member_id`` the order's member (kept by
        ``audience.purchase_facts``), so the partial index ``ix_order_lines_bought`` (merchant,
        product, bought_at, member, order, amounts) answers the condition without the orders: the
        work grows with the lines of the named products in the window, not with all paid orders.
        """
        line = om.OrderLine
        conds = [
            line.merchant_id == self.merchant_id,
            line.product_id.in_(self._product_ids(node)),
            line.bought_at.is_not(None),  # the index's predicate (also implied by a window bound)
            *self._window(line.bought_at, node.within_days, node.since, node.until),
        ]
        members = select(line.member_id).where(*conds)
        if node.min_orders <= 1 and node.min_amount is None:
            # (NOT) EXISTS, planned as a hash semi/anti join over the member ids the index yields
            return members.where(line.member_id == Member.id).exists()
        having = [func.count(func.distinct(line.order_id)) >= node.min_orders]
        if node.min_amount is not None:
            having.append(func.sum(line.payable_amount - line.refunded_amount) >= node.min_amount)
        return Member.id.in_(members.group_by(line.member_id).having(and_(*having)))

    def _product_ids(self, node: PurchaseNode) -> list[int]:
        """The products a purchase condition names: its products, of its categories if it has
        any. Resolved here (a few dozen ids) rather than joined, so the order lines are filtered
        by product with the planner's per-product statistics and without a join to products."""
        if not node.category_ids:
            return sorted(set(node.product_ids))
        stmt = select(Product.id).where(Product.merchant_id == self.merchant_id, Product.category_id.in_(node.category_ids))
        if node.product_ids:
            stmt = stmt.where(Product.id.in_(node.product_ids))
        return sorted(int(i) for i in self.session.scalars(stmt))

    def _sequence(self, node: SequenceNode) -> ColumnElement[bool]:
        a, b = aliased(Event), aliased(Event)
        followed = exists().where(
            b.merchant_id == self.merchant_id,
            b.member_id == a.member_id,
            b.name == node.then_not,
            b.occurred_at >= a.occurred_at,
            b.occurred_at <= plus_seconds(self.session, a.occurred_at, node.within_hours * 3600),
        )
        candidates = select(a.member_id).where(
            a.merchant_id == self.merchant_id,
            a.member_id.is_not(None),
            a.name == node.first,
            a.occurred_at >= self.now - dt.timedelta(days=node.window_days),
            # only occurrences old enough for the follow-up window to have passed
            a.occurred_at <= self.now - dt.timedelta(hours=node.within_hours),
            ~followed,
        )
        return Member.id.in_(candidates)


def _coerce(value: Any) -> Any:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if isinstance(value, list):
        return [_coerce(v) for v in value]
    return value


def _typed(element: Any, sample: Any) -> Any:
    """A JSON value read as the type of ``sample`` (portable accessors, no dialect branch)."""
    if isinstance(sample, bool):
        return element.as_boolean()
    if isinstance(sample, int):
        return element.as_integer()
    if isinstance(sample, float):
        return element.as_float()
    return element.as_string()


def _compare(element: Any, op: str, value: Any) -> ColumnElement[bool]:
    """``element`` (a JSON path) ``op`` ``value``, read as the value's type."""
    accessor = _typed(element, value[0] if isinstance(value, list) and value else value)
    ops = {
        "eq": lambda: accessor == value,
        "ne": lambda: accessor != value,
        "in": lambda: accessor.in_(value if isinstance(value, list) else [value]),
        "gt": lambda: accessor > value,
        "gte": lambda: accessor >= value,
        "lt": lambda: accessor < value,
        "lte": lambda: accessor <= value,
    }
    result: ColumnElement[bool] = ops[op]()
    return result


def _property(f: PropertyFilter) -> ColumnElement[bool]:
    return _compare(Event.properties[f.property], f.op, f.value)
