"""Tags over the admin API: groups, tags, a member's tags and log, bulk by CSV (all or nothing)
and by segment, rule tags, month-offset templates; another merchant's ids are 404."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import Sku
from siyu.members.models import MemberTag, MemberTagLog
from tests.conftest import Tenant
from tests.factories.aftersales import make_product, paid_order
from tests.members.api_helpers import ADMIN, count, login, ok, other_tenant, refused, staff


def _group(client: TestClient, tenant: Tenant, name: str = "兴趣") -> int:
    return int(ok(client.post(f"{ADMIN}/tag-groups", json={"name": name}, headers=tenant.admin_headers), 201)["id"])


def _tag(client: TestClient, tenant: Tenant, group_id: int, name: str = "近视", **extra: object) -> int:
    body = {"group_id": group_id, "name": name, **extra}
    return int(ok(client.post(f"{ADMIN}/tags", json=body, headers=tenant.admin_headers), 201)["id"])


def test_manual_tag_and_untag_show_in_the_member_tags_and_the_log(client: TestClient, tenant: Tenant) -> None:
    g = _group(client, tenant)
    t1, t2 = _tag(client, tenant, g, "近视"), _tag(client, tenant, g, "散光")
    member_id, _ = login(client, tenant)
    out = ok(client.post(f"{ADMIN}/members/{member_id}/tags", json={"tag_ids": [t1, t2, t1]}, headers=tenant.admin_headers))
    assert sorted(t["tag_id"] for t in out) == [t1, t2] and {t["source"] for t in out} == {"manual"}
    r = client.delete(f"{ADMIN}/members/{member_id}/tags/{t1}", headers=tenant.admin_headers)
    assert r.status_code == 204
    tags = ok(client.get(f"{ADMIN}/members/{member_id}/tags", headers=tenant.admin_headers))
    assert [t["tag_id"] for t in tags] == [t2]
    log = ok(client.get(f"{ADMIN}/members/{member_id}/tag-log", headers=tenant.admin_headers))
    assert [(e["tag_id"], e["action"]) for e in log] == [(t1, "added"), (t2, "added"), (t1, "removed")]
    assert {e["actor_type"] for e in log} == {"staff"} and {e["actor_id"] for e in log} == {tenant.owner_id}
    listed = ok(client.get(f"{ADMIN}/tags", params={"group_id": g}, headers=tenant.admin_headers))
    assert {t["id"]: t["member_count"] for t in listed} == {t1: 0, t2: 1}


def test_csv_with_a_bad_row_is_refused_whole_and_tags_nobody(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    tag = _tag(client, tenant, _group(client, tenant))
    a, _ = login(client, tenant)
    b, _ = login(client, tenant)
    csv = f"member_id\n{a}\nabc\n{b}\n987654321\n"
    dry = ok(client.post(f"{ADMIN}/tags/{tag}/bulk-csv", json={"csv": csv, "dry_run": True}, headers=tenant.admin_headers))
    assert (dry["rows"], dry["matched"], dry["changed"]) == (4, 2, 2)
    assert [(e["row"], e["code"]) for e in dry["errors"]] == [(3, "member_id_invalid"), (5, "member_not_found")]
    body = refused(client.post(f"{ADMIN}/tags/{tag}/bulk-csv", json={"csv": csv}, headers=tenant.admin_headers),
                   422, "bulk_tag_rows_invalid")
    assert [(f["path"], f["code"]) for f in body["fields"]] == [
        ("csv.rows[3]", "member_id_invalid"), ("csv.rows[5]", "member_not_found"),
    ]
    assert count(session_factory, MemberTag, tenant.id, tag_id=tag) == 0
    assert count(session_factory, MemberTagLog, tenant.id, tag_id=tag) == 0


def test_csv_of_good_rows_tags_each_member_once_and_removes_them_again(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    tag = _tag(client, tenant, _group(client, tenant))
    a, _ = login(client, tenant)
    b, _ = login(client, tenant)
    csv = f"member_id\n{a}\n{b}\n{a}\n"
    out = ok(client.post(f"{ADMIN}/tags/{tag}/bulk-csv", json={"csv": csv}, headers=tenant.admin_headers))
    assert (out["rows"], out["matched"], out["changed"], out["errors"]) == (3, 2, 2, [])
    again = ok(client.post(f"{ADMIN}/tags/{tag}/bulk-csv", json={"csv": csv}, headers=tenant.admin_headers))
    assert again["changed"] == 0
    assert count(session_factory, MemberTag, tenant.id, tag_id=tag, source="csv") == 2
    gone = ok(client.post(f"{ADMIN}/tags/{tag}/bulk-csv", json={"csv": f"member_id\n{a}\n", "action": "remove"},
                          headers=tenant.admin_headers))
    assert gone["changed"] == 1 and count(session_factory, MemberTag, tenant.id, tag_id=tag) == 1


def test_csv_without_a_member_id_or_phone_header_is_a_stable_422(client: TestClient, tenant: Tenant) -> None:
    tag = _tag(client, tenant, _group(client, tenant))
    refused(client.post(f"{ADMIN}/tags/{tag}/bulk-csv", json={"csv": "name\n张三\n"}, headers=tenant.admin_headers),
            422, "bulk_tag_csv_header")


def test_bulk_by_segment_tags_exactly_the_matching_members(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    tag = _tag(client, tenant, _group(client, tenant))
    hz = [login(client, tenant) for _ in range(2)]
    for _, headers in hz:
        ok(client.patch("/api/store/v1/me/profile", json={"city": "杭州市"}, headers=headers))
    login(client, tenant)  # elsewhere
    definition = {"type": "attribute", "field": "city", "op": "eq", "value": "杭州市"}
    dry = ok(client.post(f"{ADMIN}/tags/{tag}/bulk-segment", json={"definition": definition, "dry_run": True},
                         headers=tenant.admin_headers))
    assert (dry["matched"], dry["changed"]) == (2, 2) and count(session_factory, MemberTag, tenant.id) == 0
    out = ok(client.post(f"{ADMIN}/tags/{tag}/bulk-segment", json={"definition": definition}, headers=tenant.admin_headers))
    assert (out["matched"], out["changed"]) == (2, 2)
    with session_factory() as s:
        tagged = set(s.scalars(select(MemberTag.member_id).where(MemberTag.merchant_id == tenant.id)))
    assert tagged == {m for m, _ in hz}
    refused(client.post(f"{ADMIN}/tags/{tag}/bulk-segment", json={"definition": {"type": "teleport"}},
                        headers=tenant.admin_headers), 422, "segment_invalid")


def test_rule_tag_follows_its_rule_and_cannot_be_set_by_hand(client: TestClient, tenant: Tenant) -> None:
    g = _group(client, tenant)
    member_id, headers = login(client, tenant)
    ok(client.patch("/api/store/v1/me/profile", json={"city": "宁波市"}, headers=headers))
    rule = {"type": "attribute", "field": "city", "op": "eq", "value": "宁波市"}
    out = ok(client.post(f"{ADMIN}/tags", json={"group_id": g, "name": "宁波", "rule": rule}, headers=tenant.admin_headers), 201)
    tags = ok(client.get(f"{ADMIN}/members/{member_id}/tags", headers=tenant.admin_headers))
    assert [(t["tag_id"], t["source"]) for t in tags] == [(out["id"], "rule")]
    refused(client.post(f"{ADMIN}/members/{member_id}/tags", json={"tag_ids": [out["id"]]}, headers=tenant.admin_headers),
            409, "tag_is_rule")
    refused(client.delete(f"{ADMIN}/members/{member_id}/tags/{out['id']}", headers=tenant.admin_headers), 409, "tag_is_rule")


def test_template_tags_a_frame_buyer_for_the_month_three_months_after_the_purchase(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    g = _group(client, tenant, "提醒")
    sku = make_product(session_factory, tenant.id, [19900])[0]
    with session_factory() as s:
        product_id = s.scalar(select(Sku.product_id).where(Sku.id == sku))
    member_id, headers = login(client, tenant)
    order = paid_order(client, tenant, session_factory, headers, [(sku, 1)])
    body = {"name": "镜架清洗", "group_id": g, "product_ids": [product_id], "offset_months": 3,
            "tag_name_template": "清洗到期 {month}"}
    tpl = ok(client.post(f"{ADMIN}/tag-templates", json=body, headers=tenant.admin_headers), 201)
    assert ok(client.post(f"{ADMIN}/tag-templates/{tpl['id']}/run", headers=tenant.admin_headers)) == {"added": 1}
    assert ok(client.post(f"{ADMIN}/tag-templates/{tpl['id']}/run", headers=tenant.admin_headers)) == {"added": 0}
    paid = dt.datetime.fromisoformat(order["paid_at"]).astimezone(ZoneInfo("Asia/Shanghai"))
    index = paid.year * 12 + paid.month - 1 + 3
    due = f"{index // 12:04d}-{index % 12 + 1:02d}"
    tags = ok(client.get(f"{ADMIN}/members/{member_id}/tags", headers=tenant.admin_headers))
    assert [(t["name"], t["source"]) for t in tags] == [(f"清洗到期 {due}", f"template:{tpl['id']}")]
    listed = ok(client.get(f"{ADMIN}/tag-templates", headers=tenant.admin_headers))
    assert [t["id"] for t in listed] == [tpl["id"]] and listed[0]["evaluated_at"] is not None
    bad = {**body, "name": "x", "tag_name_template": "清洗到期"}
    assert client.post(f"{ADMIN}/tag-templates", json=bad, headers=tenant.admin_headers).status_code == 422


def test_group_with_tags_cannot_be_deleted_until_empty(client: TestClient, tenant: Tenant) -> None:
    g = _group(client, tenant)
    t = _tag(client, tenant, g)
    refused(client.delete(f"{ADMIN}/tag-groups/{g}", headers=tenant.admin_headers), 409, "tag_group_not_empty")
    refused(client.post(f"{ADMIN}/tags", json={"group_id": g, "name": "近视"}, headers=tenant.admin_headers),
            409, "tag_name_taken")
    assert client.delete(f"{ADMIN}/tags/{t}", headers=tenant.admin_headers).status_code == 204
    assert client.delete(f"{ADMIN}/tag-groups/{g}", headers=tenant.admin_headers).status_code == 204
    assert ok(client.get(f"{ADMIN}/tag-groups", headers=tenant.admin_headers)) == []


def test_another_merchants_tags_and_members_are_404_and_nothing_changes(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    other = other_tenant(session_factory)
    their_tag = _tag(client, other, _group(client, other))
    their_member, _ = login(client, other)
    my_tag = _tag(client, tenant, _group(client, tenant))
    my_member, _ = login(client, tenant)
    h = tenant.admin_headers
    refused(client.get(f"{ADMIN}/tags/{their_tag}", headers=h), 404, "not_found")
    refused(client.post(f"{ADMIN}/members/{my_member}/tags", json={"tag_ids": [my_tag, their_tag]}, headers=h),
            404, "not_found")
    refused(client.post(f"{ADMIN}/members/{their_member}/tags", json={"tag_ids": [my_tag]}, headers=h), 404, "not_found")
    refused(client.get(f"{ADMIN}/members/{their_member}/tag-log", headers=h), 404, "not_found")
    refused(client.post(f"{ADMIN}/tags/{their_tag}/bulk-csv", json={"csv": f"member_id\n{my_member}\n"}, headers=h),
            404, "not_found")
    assert count(session_factory, MemberTag, tenant.id) == 0 and count(session_factory, MemberTag, other.id) == 0


def test_staff_read_tags_but_cannot_write_them(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    g = _group(client, tenant)
    _, headers = staff(session_factory, tenant, "staff")
    assert client.get(f"{ADMIN}/tags", headers=headers).status_code == 200
    refused(client.post(f"{ADMIN}/tags", json={"group_id": g, "name": "x"}, headers=headers), 403, "forbidden")
