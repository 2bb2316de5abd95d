"""CSV import: dry run reports every bad row, a real run is all or nothing, re-runs skip."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import repository as audience_repo
from siyu.db.session import unit_of_work
from siyu.imports import service
from siyu.kit.errors import DomainError
from siyu.members.models import Member
from siyu.orders.models import Order
from tests.conftest import Tenant

MEMBERS = """external_id,nickname,phone,gender,province,city,registered_at,registration_channel
c1,王芳,13800000001,female,浙江省,杭州市,2025-01-02 10:00:00,store_counter
c2,李强,13800000002,male,上海市,上海市,2025-03-04T09:00:00+08:00,
"""
ORDERS = """external_order_id,member_external_id,paid_at,amount_fen,sku_code,quantity
o1,c1,2025-02-01 12:00:00,29900,,
o2,c1,2025-06-01 12:00:00,49900,,1
o3,c2,2025-04-01 12:00:00,9900,,
"""
BAD_ORDERS = """external_order_id,member_external_id,paid_at,amount_fen,sku_code,quantity
o1,c1,2025-02-01 12:00:00,29900,,
o2,nobody,2025-06-01 12:00:00,49900,,
o3,c2,not-a-date,9900,,
o4,c2,2025-04-01 12:00:00,-5,,
o1,c1,2025-02-01 12:00:00,29900,,
o5,c2,2025-04-01 12:00:00,100,NO-SUCH-SKU,
"""


def counts(factory: sessionmaker[Session], merchant_id: int) -> tuple[int, int]:
    with factory() as s:
        members = s.scalar(select(func.count()).select_from(Member).where(Member.merchant_id == merchant_id))
        orders = s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == merchant_id))
        return int(members or 0), int(orders or 0)


def test_import_creates_members_orders_and_stats(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    with unit_of_work(session_factory) as s:
        report = service.run_import(s, tenant.id, members_csv=MEMBERS, orders_csv=ORDERS, dry_run=False)
    assert (report.members_created, report.orders_created, report.errors, report.committed) == (2, 3, [], True)
    assert counts(session_factory, tenant.id) == (2, 3)
    with session_factory() as s:
        member = s.scalar(select(Member).where(Member.merchant_id == tenant.id, Member.nickname == "王芳"))
        assert member is not None and member.city == "杭州市"
        stats = audience_repo.stats_row(s, tenant.id, member.id)
        assert stats is not None
        assert (stats.paid_orders, stats.paid_total) == (2, 29900 + 49900)
        assert stats.first_order_at is not None and stats.first_order_at.isoformat().startswith("2025-02-01T04:00")
        assert stats.second_order_at is not None and stats.second_order_at.isoformat().startswith("2025-06-01T04:00")


def test_rerun_skips_what_was_imported(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    for _ in range(2):
        with unit_of_work(session_factory) as s:
            report = service.run_import(s, tenant.id, members_csv=MEMBERS, orders_csv=ORDERS, dry_run=False)
    assert (report.members_created, report.members_skipped, report.orders_created, report.orders_skipped) == (0, 2, 0, 3)
    assert counts(session_factory, tenant.id) == (2, 3)


def test_dry_run_reports_every_bad_row_and_writes_nothing(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    with unit_of_work(session_factory) as s:
        report = service.run_import(s, tenant.id, members_csv=MEMBERS, orders_csv=BAD_ORDERS, dry_run=True)
    found = {(e.row, e.code) for e in report.errors}
    assert (3, "member_unknown") in found
    assert any(row == 4 and field == "paid_at" for row, field in ((e.row, e.field) for e in report.errors))
    assert any(e.row == 5 and e.field == "amount_fen" for e in report.errors)
    assert (6, "duplicate") in found and (7, "sku_unknown") in found
    assert not report.committed
    assert counts(session_factory, tenant.id) == (0, 0)


def test_real_run_with_bad_rows_imports_nothing(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    with pytest.raises(DomainError) as err, unit_of_work(session_factory) as s:
        service.run_import(s, tenant.id, members_csv=MEMBERS, orders_csv=BAD_ORDERS, dry_run=False)
    assert err.value.code == "import_has_errors"
    assert any(f.path.startswith("orders.csv:3") for f in err.value.fields)
    assert counts(session_factory, tenant.id) == (0, 0)


def test_missing_columns(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    with unit_of_work(session_factory) as s:
        report = service.run_import(s, tenant.id, members_csv="name,phone\nx,1\n", orders_csv=None, dry_run=True)
    assert report.errors[0].code == "missing_columns"


def test_http_import(client: TestClient, tenant: Tenant) -> None:
    r = client.post("/api/admin/v1/imports", json={"members_csv": MEMBERS, "orders_csv": BAD_ORDERS, "dry_run": False},
                    headers={**tenant.admin_headers, "Accept-Language": "en"})
    assert r.status_code == 422 and r.json()["code"] == "import_has_errors"
    assert "nothing was imported" in r.json()["message"]
    r = client.post("/api/admin/v1/imports", json={"members_csv": MEMBERS, "orders_csv": ORDERS, "dry_run": False},
                    headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["orders_created"] == 3


def test_imported_orders_count_for_product_purchase_segments(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """Imported lines carry the member and purchase time that segments' product conditions read."""
    from siyu.audience import segments
    from siyu.catalog.models import Sku
    from siyu.kit.timeutil import utcnow
    from tests.factories.orders import make_sku

    sku_id = make_sku(session_factory, tenant.id)
    with session_factory() as s:
        sku = s.get(Sku, sku_id)
        assert sku is not None
        code, product_id = sku.sku_code, sku.product_id
    orders = f"external_order_id,member_external_id,paid_at,amount_fen,sku_code,quantity\no1,c1,2025-02-01 12:00:00,29900,{code},1\n"
    with unit_of_work(session_factory) as s:
        service.run_import(s, tenant.id, members_csv=MEMBERS, orders_csv=orders, dry_run=False)
    definition = segments.parse_definition({"type": "purchase", "product_ids": [product_id]})
    with session_factory() as s:
        buyer = s.scalar(select(Member.id).where(Member.merchant_id == tenant.id, Member.nickname == "王芳"))
        result = segments.preview(s, tenant.id, definition, sample=10, now=utcnow())
    assert {int(r["member_id"]) for r in result.sample} == {buyer}
