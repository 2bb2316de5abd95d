"""Seeds the demo merchant: an eyewear chain (the source documents' example).

About 50 products with SKUs, 300 customers with addresses, staff for every role and a year of
orders in every state, generated deterministically (``random.Random(20261123)``) so every
endpoint answers with something real. Historical orders are written directly (they are history,
not new checkouts), each paid one with its succeeded sandbox payment so it can be refunded; new
orders in the demo go through the real checkout.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog import repository as catalog_repo
from siyu.catalog.models import PRODUCT_ON_SALE, Category, Product, Sku
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.demo import catalog_data as data
from siyu.kit import audit
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.orders import models as om
from siyu.payments import service as payments_service
from siyu.tenancy import repository as tenancy_repo
from siyu.tenancy import service as tenancy_service
from siyu.tenancy.models import Merchant

DEMO_CODE = "demo-optical"
STAFF = [
    ("owner", "店主 王明", "owner", "demo-owner-123"),
    ("operator", "运营 李娜", "operator", "demo-operator-123"),
    ("finance", "财务 张伟", "finance", "demo-finance-123"),
    ("guide1", "导购 陈静", "staff", "demo-staff-123"),
    ("guide2", "导购 刘洋", "staff", "demo-staff-123"),
]
DEMO_LOGINS = [
    f"Merchant code : {DEMO_CODE}   (admin login body: {{\"merchant\": \"{DEMO_CODE}\", \"username\": ..., \"password\": ...}})",
    *[f"Staff login   : {u} / {p}  ({r})" for u, _, r, p in STAFF],
    f"Customer login: POST /api/store/v1/auth/wechat-login  header X-Siyu-Merchant: {DEMO_CODE}"
    "  body {\"code\": \"sandbox-alice\"}  (sandbox WeChat login; any sandbox-<name> works)",
]

CITIES = [
    ("浙江省", "杭州市", 30),
    ("浙江省", "宁波市", 8),
    ("上海市", "上海市", 18),
    ("江苏省", "南京市", 8),
    ("江苏省", "苏州市", 8),
    ("广东省", "广州市", 8),
    ("广东省", "深圳市", 10),
    ("北京市", "北京市", 10),
]
CHANNELS = ["store_counter", "offline_flyer", "community_group", "official_account", "staff_qr", "search"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN = ["静", "伟", "芳", "敏", "强", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛", "明", "超", "秀英", "晨", "悦"]


@dataclass
class SeedSummary:
    products: int
    skus: int
    members: int
    orders: int

    def __str__(self) -> str:
        return (
            f"demo merchant '{DEMO_CODE}': {self.products} products, {self.skus} SKUs, "
            f"{self.members} customers, {self.orders} orders"
        )


def seed_demo(factory: sessionmaker[Session], settings: Settings, *, customers: int = 300) -> str:
    with unit_of_work(factory) as session:
        if tenancy_repo.merchant_by_code(session, DEMO_CODE):
            return f"demo merchant '{DEMO_CODE}' already present (use --reset to start over)"
        rng = random.Random(20261123)
        merchant = tenancy_service.create_merchant(session, code=DEMO_CODE, name="明眸眼镜连锁 (demo)")
        staff_ids = []
        for username, name, role, password in STAFF:
            staff = tenancy_service.create_staff(
                session, merchant.id, username=username, password=password, role=role, display_name=name
            )
            if role == "staff":
                staff_ids.append(staff.id)
        skus = _seed_catalog(session, merchant.id, rng)
        _seed_freight(session, merchant.id)
        members = _seed_members(session, merchant.id, rng, customers, staff_ids)
        orders = _seed_orders(session, merchant, rng, members, skus)
        catalog_repo.recount_sales(session, merchant.id)
        summary = SeedSummary(
            products=len({s.product_id for s, _ in skus}), skus=len(skus), members=len(members), orders=orders
        )
    _run_extensions(factory, settings)
    return str(summary)


def _run_extensions(factory: sessionmaker[Session], settings: Settings) -> None:
    """Later capabilities add their demo data in ``siyu.<domain>.demo_data:seed(session, merchant_id)``."""
    import importlib
    import pkgutil

    import siyu

    with unit_of_work(factory) as session:
        merchant = tenancy_repo.merchant_by_code(session, DEMO_CODE)
        assert merchant is not None
        for info in pkgutil.iter_modules(siyu.__path__):
            if info.ispkg and importlib.util.find_spec(f"siyu.{info.name}.demo_data") is not None:
                module = importlib.import_module(f"siyu.{info.name}.demo_data")
                module.seed(session, merchant.id)


def _product(
    session: Session,
    merchant_id: int,
    category: Category,
    title: str,
    subtitle: str,
    spec_names: list[str],
    variants: list[tuple[dict[str, str], int]],
    rng: random.Random,
    *,
    free_shipping: bool,
    bonus_points: int = 0,
    coupons_allowed: bool = True,
) -> list[tuple[Sku, Product]]:
    product = Product(
        merchant_id=merchant_id,
        category_id=category.id,
        title=title,
        subtitle=subtitle,
        description=f"{title}。{subtitle}。门店可免费验光、调校。",
        images=[f"https://img.demo.siyu.dev/p/{abs(hash(title)) % 10_000}.jpg"],
        spec_names=spec_names,
        status=PRODUCT_ON_SALE,
        free_shipping=free_shipping,
        bonus_points=bonus_points,
        coupons_allowed=coupons_allowed,
        sort=rng.randint(0, 100),
    )
    session.add(product)
    session.flush()
    out = []
    for i, (specs, price) in enumerate(variants):
        list_price = price + price * rng.choice([15, 20, 25, 30]) // 100
        sku = Sku(
            merchant_id=merchant_id,
            product_id=product.id,
            sku_code=f"P{product.id:04d}-{i + 1:02d}",
            specs=specs,
            list_price=list_price,
            sale_price=price,
            cost_price=price * rng.choice([35, 40, 45]) // 100,
            weight_g=rng.choice([30, 50, 80, 120, 300]),
            stock=rng.randint(20, 400),
        )
        session.add(sku)
        out.append((sku, product))
    session.flush()
    return out


def _seed_catalog(session: Session, merchant_id: int, rng: random.Random) -> list[tuple[Sku, Product]]:
    cats = {}
    for i, name in enumerate(data.CATEGORIES):
        cat = Category(merchant_id=merchant_id, name=name, sort=i)
        session.add(cat)
        cats[name] = cat
    session.flush()
    skus: list[tuple[Sku, Product]] = []
    for title, subtitle in data.FRAMES:
        price = rng.choice([29900, 39900, 49900, 59900, 79900, 99900])
        colours = rng.sample(data.FRAME_COLOURS, 3)
        skus += _product(
            session, merchant_id, cats["镜架"], title, subtitle, ["镜框颜色"],
            [({"镜框颜色": c}, price) for c in colours], rng, free_shipping=True, bonus_points=100,
        )
    for title, price in data.LENSES:
        variants = [({"折射率": idx}, price + data.LENS_INDEX_MARKUP[idx]) for idx in data.LENS_INDEX]
        skus += _product(
            session, merchant_id, cats["镜片"], title, "含验光 一副两片", ["折射率"], variants, rng,
            free_shipping=True, bonus_points=200,
        )
    for title, price in data.SUNGLASSES:
        colours = rng.sample(["黑灰", "茶色", "G15 绿"], 2)
        skus += _product(
            session, merchant_id, cats["太阳镜"], title, "UV400", ["镜片颜色"],
            [({"镜片颜色": c}, price) for c in colours], rng, free_shipping=True,
        )
    for title, price in data.CONTACTS:
        skus += _product(
            session, merchant_id, cats["隐形眼镜"], title, "正品保障", ["度数"],
            [({"度数": d}, price) for d in data.DEGREES], rng, free_shipping=False, bonus_points=20,
        )
    for title, price in data.KIDS:
        colours = rng.sample(["天空蓝", "樱花粉", "薄荷绿", "星空黑"], 2)
        skus += _product(
            session, merchant_id, cats["儿童眼镜"], title, "儿童专用", ["镜框颜色"],
            [({"镜框颜色": c}, price) for c in colours], rng, free_shipping=True,
        )
    for title, price in data.CARE:
        skus += _product(
            session, merchant_id, cats["护理与配件"], title, "", [], [({}, price)], rng, free_shipping=False,
        )
    return skus


def _seed_freight(session: Session, merchant_id: int) -> None:
    session.add(
        om.FreightTemplate(
            merchant_id=merchant_id,
            name="默认运费（满99包邮）",
            mode="count",
            rules=[
                {"regions": ["新疆维吾尔自治区", "西藏自治区"], "first_units": 1, "first_fee": 2000,
                 "extra_units": 1, "extra_fee": 1000},
                {"regions": ["*"], "first_units": 1, "first_fee": 800, "extra_units": 1, "extra_fee": 200},
            ],
            free_threshold=9900,
            unreachable_regions=[],
            is_default=True,
        )
    )


def _seed_members(
    session: Session, merchant_id: int, rng: random.Random, count: int, staff_ids: list[int]
) -> list[tuple[Member, om.Address]]:
    now = utcnow()
    weights = [w for _, _, w in CITIES]
    out = []
    for i in range(count):
        province, city, _ = rng.choices(CITIES, weights=weights)[0]
        name = rng.choice(SURNAMES) + rng.choice(GIVEN)
        registered = now - dt.timedelta(days=rng.randint(1, 540), minutes=rng.randint(0, 1440))
        member = Member(
            merchant_id=merchant_id,
            openid=f"sandbox-demo{i:04d}",
            nickname=name,
            phone=f"13{rng.randint(0, 9)}{rng.randint(10_000_000, 99_999_999)}",
            gender=rng.choice(["female", "female", "male", "male", "unknown"]),
            province=province,
            city=city,
            registered_at=registered,
            registration_channel=rng.choice(CHANNELS),
            staff_id=rng.choice(staff_ids) if staff_ids and rng.random() < 0.6 else None,
        )
        session.add(member)
        session.flush()
        address = om.Address(
            merchant_id=merchant_id,
            member_id=member.id,
            name=name,
            phone=member.phone or "",
            province=province,
            city=city,
            district="",
            detail=f"{rng.choice(['文三路', '南京路', '中山路', '解放路', '人民路'])}{rng.randint(1, 999)}号",
            is_default=True,
        )
        session.add(address)
        out.append((member, address))
    session.flush()
    return out


def _seed_orders(
    session: Session,
    merchant: Merchant,
    rng: random.Random,
    members: list[tuple[Member, om.Address]],
    skus: list[tuple[Sku, Product]],
) -> int:
    now = utcnow()
    count = 0
    for member, address in members:
        # Purchase occasions from a BG/NBD-like process (the model the predictions fit): while a
        # customer is "alive" she buys at her own rate (Gamma-distributed across customers, about
        # every 50 days on average); after each purchase she drops out with her own probability
        # (Beta-distributed). A quarter never buy. Some customers are therefore still buying,
        # others bought a few times and went quiet, as in a real store.
        if rng.random() < 0.25:
            continue
        per_day = rng.gammavariate(0.9, 1 / 45.0)
        dropout = rng.betavariate(1.2, 3.0)
        created = member.registered_at + dt.timedelta(days=rng.expovariate(per_day))
        for _ in range(12):
            if created >= now:
                break
            _one_order(session, merchant, rng, member, address, skus, created, count)
            count += 1
            if rng.random() < dropout:
                break
            created += dt.timedelta(days=rng.expovariate(per_day))
    return count


def _one_order(
    session: Session,
    merchant: Merchant,
    rng: random.Random,
    member: Member,
    address: om.Address,
    skus: list[tuple[Sku, Product]],
    created: dt.datetime,
    seq: int,
) -> None:
    """One historical order. A paid one gets its succeeded sandbox payment (as the sandbox path
    writes it), so the merchant can refund it in the demo; a closed one also its succeeded full
    refund (the goods and the freight: closed before shipment)."""
    merchant_id = merchant.id
    now = utcnow()
    age = now - created
    if age < dt.timedelta(minutes=30):
        status = om.PENDING_PAYMENT
    elif age < dt.timedelta(days=2):
        status = rng.choice([om.PAID, om.SHIPPED, om.CANCELLED])
    elif age < dt.timedelta(days=8):
        status = rng.choice([om.SHIPPED, om.COMPLETED, om.COMPLETED, om.CANCELLED])
    else:
        status = rng.choices([om.COMPLETED, om.CANCELLED, om.CLOSED], weights=[85, 10, 5])[0]
    picks = rng.sample(skus, rng.choice([1, 1, 2, 3]))
    lines = []
    for sku, product in picks:
        qty = 1 if product.category_id and rng.random() < 0.8 else rng.randint(1, 3)
        lines.append((sku, product, qty))
    goods = sum(s.sale_price * q for s, _, q in lines)
    freight = 0 if goods >= 9900 or all(p.free_shipping for _, p, _ in lines) else 800
    payable = goods + freight
    order = om.Order(
        merchant_id=merchant_id,
        order_no=created.strftime("%Y%m%d%H%M") + f"{seq:06d}",
        member_id=member.id,
        status=status,
        refund_status=om.REFUND_FULL if status == om.CLOSED else om.REFUND_NONE,
        idempotency_key=f"demo-{seq}",
        request_hash="demo",
        goods_amount=goods,
        discount_amount=0,
        freight_amount=freight,
        payable_amount=payable,
        paid_amount=payable if status not in (om.PENDING_PAYMENT, om.CANCELLED) else 0,
        refunded_amount=payable if status == om.CLOSED else 0,
        pricing=[
            {"stage": "base_price", "code": "goods", "label": "商品金额", "amount": goods, "details": {}},
            {"stage": "freight", "code": "freight", "label": "运费", "amount": freight, "details": {}},
            {"stage": "payable", "code": "payable", "label": "应付金额", "amount": payable, "details": {}},
        ],
        address={
            "name": address.name, "phone": address.phone, "province": address.province, "city": address.city,
            "district": address.district, "detail": address.detail,
        },
        pay_deadline=created + dt.timedelta(minutes=30),
        created_at=created,
        updated_at=created,
    )
    if order.paid_amount:
        order.paid_at = created + dt.timedelta(minutes=rng.randint(1, 20))
    if status in (om.SHIPPED, om.COMPLETED):
        order.shipped_at = (order.paid_at or created) + dt.timedelta(hours=rng.randint(2, 40))
    if status == om.COMPLETED:
        order.completed_at = (order.shipped_at or created) + dt.timedelta(days=rng.randint(2, 7))
    if status == om.CANCELLED:
        order.cancelled_at = created + dt.timedelta(minutes=30)
        order.cancel_reason = "payment_timeout"
    if status == om.CLOSED:
        order.closed_at = (order.paid_at or created) + dt.timedelta(days=1)
    session.add(order)
    session.flush()
    order_lines = []
    for sku, product, qty in lines:
        amount = sku.sale_price * qty
        order_lines.append(
            om.OrderLine(
                merchant_id=merchant_id,
                order_id=order.id,
                product_id=product.id,
                sku_id=sku.id,
                title=product.title,
                spec_text=" ".join(f"{v}" for v in sku.specs.values()),
                quantity=qty,
                list_price=sku.list_price,
                sale_price=sku.sale_price,
                cost_price=sku.cost_price,
                goods_amount=amount,
                discounts={},
                discount_amount=0,
                payable_amount=amount,
                bonus_points=product.bonus_points * qty,
                refunded_quantity=qty if status == om.CLOSED else 0,
                refunded_amount=amount if status == om.CLOSED else 0,
            )
        )
    session.add_all(order_lines)
    if order.paid_amount:
        session.flush()
        payment = payments_service.record_historical_payment(
            session, merchant, order, out_trade_no=f"P{order.order_no}", source="demo_seed"
        )
        if status == om.CLOSED:
            payments_service.record_historical_refund(
                session, payment, amount=order.refunded_amount, reason="demo", source="demo_seed",
                lines=[(ln.id, ln.refunded_quantity, ln.refunded_amount) for ln in order_lines],
                succeeded_at=order.closed_at or now,
            )
    if order.shipped_at:
        session.add(
            om.Shipment(
                merchant_id=merchant_id, order_id=order.id, carrier=rng.choice(["SF", "ZTO", "YTO", "JD"]),
                tracking_no=f"SF{rng.randint(10**11, 10**12 - 1)}", shipped_at=order.shipped_at, lines=[],
            )
        )
    audit.record(session, merchant_id, "order", order.id, "seeded", to_state=status, data={"demo": True})
