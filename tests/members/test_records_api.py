"""Custom profile fields, member records (the eyewear prescription) and the member 360 view over
the admin API: values are checked by type (422 with the field path, nothing changed), records
are versioned, another merchant's ids are 404."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.members.models import MemberRecord
from tests.conftest import Tenant
from tests.members.api_helpers import ADMIN, count, login, ok, other_tenant, refused

PRESCRIPTION: dict[str, Any] = {
    "key": "prescription", "label": "配镜数据",
    "fields": [
        {"key": "exam_date", "label": "验光日期", "type": "date", "required": True},
        {"key": "od_sphere", "label": "右眼球镜", "type": "number", "min": -30, "max": 30},
        {"key": "pd", "label": "瞳距", "type": "number", "min": 40, "max": 80},
        {"key": "frame", "label": "所购镜架", "type": "text"},
    ],
}


def _field(client: TestClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    return dict(ok(client.post(f"{ADMIN}/member-fields", json=body, headers=tenant.admin_headers), 201))


def test_custom_field_value_of_the_wrong_type_is_a_422_at_its_path_and_changes_nothing(
    client: TestClient, tenant: Tenant
) -> None:
    _field(client, tenant, key="shoe_size", label="鞋码", type="number", min=30, max=50)
    _field(client, tenant, key="lens", label="镜片偏好", type="choice", options=["防蓝光", "变色"])
    member_id, _ = login(client, tenant)
    url = f"{ADMIN}/members/{member_id}/profile"
    ok(client.patch(url, json={"custom_fields": {"shoe_size": 42}}, headers=tenant.admin_headers))
    before = ok(client.get(url, headers=tenant.admin_headers))
    body = refused(client.patch(url, json={"nickname": "新名字", "custom_fields": {"shoe_size": "big", "lens": "金色"}},
                                headers=tenant.admin_headers), 422, "custom_field_invalid")
    assert sorted((f["path"], f["code"]) for f in body["fields"]) == [
        ("custom_fields.lens", "choice_expected"), ("custom_fields.shoe_size", "number_expected"),
    ]
    assert ok(client.get(url, headers=tenant.admin_headers)) == before
    assert before["custom_fields"] == {"shoe_size": 42}


def test_custom_field_definitions_crud_and_the_key_is_immutable(client: TestClient, tenant: Tenant) -> None:
    f = _field(client, tenant, key="hobby", label="爱好", type="text", max_length=20)
    assert f["max_length"] == 20 and f["required"] is False
    refused(client.post(f"{ADMIN}/member-fields", json={"key": "hobby", "label": "x", "type": "text"},
                        headers=tenant.admin_headers), 409, "custom_field_key_taken")
    changed = ok(client.put(f"{ADMIN}/member-fields/{f['id']}", json={"key": "hobby", "label": "兴趣", "type": "text"},
                            headers=tenant.admin_headers))
    assert changed["label"] == "兴趣"
    body = refused(client.put(f"{ADMIN}/member-fields/{f['id']}", json={"key": "other", "label": "x", "type": "text"},
                              headers=tenant.admin_headers), 422, "validation_error")
    assert body["fields"][0]["path"] == "body.key"
    assert client.delete(f"{ADMIN}/member-fields/{f['id']}", headers=tenant.admin_headers).status_code == 204
    assert ok(client.get(f"{ADMIN}/member-fields", headers=tenant.admin_headers)) == []


def test_records_are_versions_and_latest_is_the_newest(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    rtype = ok(client.post(f"{ADMIN}/record-types", json=PRESCRIPTION, headers=tenant.admin_headers), 201)
    member_id, _ = login(client, tenant)
    url = f"{ADMIN}/members/{member_id}/records/{rtype['id']}"
    v1 = ok(client.post(url, json={"data": {"exam_date": "2026-01-05", "od_sphere": -2.5, "pd": 62}},
                        headers=tenant.admin_headers), 201)
    v2 = ok(client.post(url, json={"data": {"exam_date": "2026-06-01", "od_sphere": -2.75, "pd": 62, "frame": "T-01"},
                                   "note": "复查"}, headers=tenant.admin_headers), 201)
    assert (v1["version"], v2["version"]) == (1, 2) and v2["actor_id"] == tenant.owner_id
    history = ok(client.get(url, headers=tenant.admin_headers))
    assert [r["version"] for r in history] == [2, 1]
    latest = ok(client.get(f"{ADMIN}/members/{member_id}/records", headers=tenant.admin_headers))
    assert [(r["record_type_key"], r["version"], r["data"]["od_sphere"]) for r in latest] == [("prescription", 2, -2.75)]
    refused(client.delete(f"{ADMIN}/record-types/{rtype['id']}", headers=tenant.admin_headers), 409, "record_type_in_use")
    assert count(session_factory, MemberRecord, tenant.id) == 2


def test_a_record_out_of_range_or_missing_a_required_field_is_refused_and_adds_no_version(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    rtype = ok(client.post(f"{ADMIN}/record-types", json=PRESCRIPTION, headers=tenant.admin_headers), 201)
    member_id, _ = login(client, tenant)
    url = f"{ADMIN}/members/{member_id}/records/{rtype['id']}"
    body = refused(client.post(url, json={"data": {"od_sphere": -99, "pd": "62", "colour": "red"}},
                               headers=tenant.admin_headers), 422, "record_invalid")
    assert sorted((f["path"], f["code"]) for f in body["fields"]) == [
        ("data.colour", "unknown_field"), ("data.exam_date", "required"), ("data.od_sphere", "out_of_range"),
        ("data.pd", "number_expected"),
    ]
    assert count(session_factory, MemberRecord, tenant.id) == 0
    ok(client.patch(f"{ADMIN}/record-types/{rtype['id']}", json={"active": False}, headers=tenant.admin_headers))
    refused(client.post(url, json={"data": {"exam_date": "2026-01-05"}}, headers=tenant.admin_headers),
            409, "record_type_inactive")


def test_member_360_collects_profile_tags_owner_records_and_consent(client: TestClient, tenant: Tenant) -> None:
    rtype = ok(client.post(f"{ADMIN}/record-types", json=PRESCRIPTION, headers=tenant.admin_headers), 201)
    member_id, headers = login(client, tenant)
    ok(client.post(f"{ADMIN}/members/{member_id}/records/{rtype['id']}", json={"data": {"exam_date": "2026-01-05"}},
                   headers=tenant.admin_headers), 201)
    ok(client.put(f"{ADMIN}/members/{member_id}/owner", json={"staff_id": tenant.owner_id}, headers=tenant.admin_headers))
    ok(client.put("/api/store/v1/me/consents", json={"consents": {"sms": True}}, headers=headers))
    out = ok(client.get(f"{ADMIN}/members/{member_id}/360", headers=tenant.admin_headers))
    assert out["profile"]["id"] == member_id
    assert [r["record_type_key"] for r in out["records"]] == ["prescription"]
    assert out["staff_owner"]["staff_id"] == tenant.owner_id
    assert [c["channel"] for c in out["consent"] if c["granted"]] == ["sms"]
    assert out["recent_orders"] == [] and out["tags"] == [] and out["merges"] == []
    assert ok(client.get(f"{ADMIN}/members/{member_id}/merges", headers=tenant.admin_headers)) == []


def test_another_merchants_record_types_fields_and_members_are_404(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    other = other_tenant(session_factory)
    theirs = ok(client.post(f"{ADMIN}/record-types", json=PRESCRIPTION, headers=other.admin_headers), 201)
    their_field = _field(client, other, key="hobby", label="爱好", type="text")
    their_member, _ = login(client, other)
    my_member, _ = login(client, tenant)
    h = tenant.admin_headers
    refused(client.get(f"{ADMIN}/record-types/{theirs['id']}", headers=h), 404, "not_found")
    refused(client.post(f"{ADMIN}/members/{my_member}/records/{theirs['id']}", json={"data": {"exam_date": "2026-01-05"}},
                        headers=h), 404, "not_found")
    refused(client.get(f"{ADMIN}/members/{their_member}/360", headers=h), 404, "not_found")
    refused(client.get(f"{ADMIN}/members/{their_member}/records", headers=h), 404, "not_found")
    refused(client.delete(f"{ADMIN}/member-fields/{their_field['id']}", headers=h), 404, "not_found")
    assert count(session_factory, MemberRecord, other.id) == 0 and count(session_factory, MemberRecord, tenant.id) == 0


def test_a_retried_record_version_with_the_same_idempotency_key_adds_one_version(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    rtype = ok(client.post(f"{ADMIN}/record-types", json=PRESCRIPTION, headers=tenant.admin_headers), 201)
    member_id, _ = login(client, tenant)
    url = f"{ADMIN}/members/{member_id}/records/{rtype['id']}"
    headers = {**tenant.admin_headers, "Idempotency-Key": "rx-2026-01-05"}
    first = client.post(url, json={"data": {"exam_date": "2026-01-05"}}, headers=headers)
    again = client.post(url, json={"data": {"exam_date": "2026-01-05"}}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()
    refused(client.post(url, json={"data": {"exam_date": "2026-02-01"}}, headers=headers), 409, "idempotency_key_reused")
    assert count(session_factory, MemberRecord, tenant.id, member_id=member_id) == 1
