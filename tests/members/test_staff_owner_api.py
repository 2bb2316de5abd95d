"""Staff ownership over the admin API: assignment, handover (all or some, history kept, every
check before any write), and "my customers": a staff login sees only its own customers."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.members.models import Member, OwnershipLog
from tests.conftest import Tenant
from tests.factories.aftersales import make_product, paid_order
from tests.members.api_helpers import ADMIN, count, login, ok, other_tenant, refused, staff


def _owners(factory: sessionmaker[Session], merchant_id: int, ids: list[int]) -> dict[int, int | None]:
    with factory() as s:
        rows = s.execute(select(Member.id, Member.staff_id).where(Member.merchant_id == merchant_id, Member.id.in_(ids)))
        return {int(i): sid for i, sid in rows}


def _assign(client: TestClient, tenant: Tenant, member_id: int, staff_id: int | None) -> None:
    ok(client.put(f"{ADMIN}/members/{member_id}/owner", json={"staff_id": staff_id}, headers=tenant.admin_headers))


def test_handover_of_some_customers_moves_only_those_and_keeps_the_history(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    leaving, _ = staff(session_factory, tenant)
    successor, _ = staff(session_factory, tenant)
    members = [login(client, tenant)[0] for _ in range(3)]
    for m in members:
        _assign(client, tenant, m, leaving)
    out = ok(client.post(f"{ADMIN}/staff/{leaving}/handover", json={"to_staff_id": successor, "member_ids": members[:2]},
                         headers=tenant.admin_headers))
    assert out == {"from_staff_id": leaving, "to_staff_id": successor, "moved": 2}
    assert _owners(session_factory, tenant.id, members) == {members[0]: successor, members[1]: successor,
                                                           members[2]: leaving}
    history = ok(client.get(f"{ADMIN}/members/{members[0]}/ownership-history", headers=tenant.admin_headers))
    assert [(h["from_staff_id"], h["to_staff_id"], h["reason"]) for h in history] == [
        (None, leaving, "operator"), (leaving, successor, "handover"),
    ]
    rest = ok(client.post(f"{ADMIN}/staff/{leaving}/handover", json={"to_staff_id": successor}, headers=tenant.admin_headers))
    assert rest["moved"] == 1 and set(_owners(session_factory, tenant.id, members).values()) == {successor}


def test_handover_to_staff_of_another_merchant_is_404_and_changes_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    other = other_tenant(session_factory)
    foreign, _ = staff(session_factory, other)
    leaving, _ = staff(session_factory, tenant)
    members = [login(client, tenant)[0] for _ in range(2)]
    for m in members:
        _assign(client, tenant, m, leaving)
    logs = count(session_factory, OwnershipLog, tenant.id)
    refused(client.post(f"{ADMIN}/staff/{leaving}/handover", json={"to_staff_id": foreign}, headers=tenant.admin_headers),
            404, "not_found")
    refused(client.post(f"{ADMIN}/staff/{foreign}/handover", json={"to_staff_id": leaving}, headers=tenant.admin_headers),
            404, "not_found")
    refused(client.put(f"{ADMIN}/members/{members[0]}/owner", json={"staff_id": foreign}, headers=tenant.admin_headers),
            404, "not_found")
    assert _owners(session_factory, tenant.id, members) == {m: leaving for m in members}
    assert count(session_factory, OwnershipLog, tenant.id) == logs == 2


def test_handover_naming_a_member_the_staff_does_not_own_is_422_and_moves_nobody(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    leaving, _ = staff(session_factory, tenant)
    successor, _ = staff(session_factory, tenant)
    mine, _ = login(client, tenant)
    stranger, _ = login(client, tenant)
    _assign(client, tenant, mine, leaving)
    body = refused(client.post(f"{ADMIN}/staff/{leaving}/handover",
                               json={"to_staff_id": successor, "member_ids": [mine, stranger]},
                               headers=tenant.admin_headers), 422, "validation_error")
    assert [(f["path"], f["code"]) for f in body["fields"]] == [("body.member_ids.1", "not_owned")]
    refused(client.post(f"{ADMIN}/staff/{leaving}/handover", json={"to_staff_id": leaving}, headers=tenant.admin_headers),
            422, "handover_same_staff")
    assert _owners(session_factory, tenant.id, [mine, stranger]) == {mine: leaving, stranger: None}


def test_a_staff_login_sees_only_its_own_customers_and_their_orders(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    a_id, a = staff(session_factory, tenant)
    b_id, b = staff(session_factory, tenant)
    sku = make_product(session_factory, tenant.id, [5000])[0]
    mine, mine_headers = login(client, tenant)
    theirs, theirs_headers = login(client, tenant)
    _assign(client, tenant, mine, a_id)
    _assign(client, tenant, theirs, b_id)
    paid_order(client, tenant, session_factory, mine_headers, [(sku, 1)])
    paid_order(client, tenant, session_factory, theirs_headers, [(sku, 1)])
    page = ok(client.get(f"{ADMIN}/my-customers", headers=a))
    assert page["total"] == 1 and [c["id"] for c in page["items"]] == [mine]
    assert ok(client.get(f"{ADMIN}/my-customers/{mine}", headers=a))["staff_id"] == a_id
    orders = ok(client.get(f"{ADMIN}/my-customers/{mine}/orders", headers=a))
    assert orders["total"] == 1 and orders["items"][0]["member_id"] == mine and orders["items"][0]["paid_amount"] == 5000
    refused(client.get(f"{ADMIN}/my-customers/{theirs}", headers=a), 404, "not_found")
    refused(client.get(f"{ADMIN}/my-customers/{theirs}/orders", headers=a), 404, "not_found")
    assert [c["id"] for c in ok(client.get(f"{ADMIN}/my-customers", headers=b))["items"]] == [theirs]
    refused(client.put(f"{ADMIN}/members/{theirs}/owner", json={"staff_id": a_id}, headers=a), 403, "forbidden")
    refused(client.post(f"{ADMIN}/staff/{b_id}/handover", json={"to_staff_id": a_id}, headers=a), 403, "forbidden")
    assert _owners(session_factory, tenant.id, [mine, theirs]) == {mine: a_id, theirs: b_id}


def test_finance_cannot_use_my_customers(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    _, finance = staff(session_factory, tenant, "finance")
    refused(client.get(f"{ADMIN}/my-customers", headers=finance), 403, "forbidden")


def test_an_api_key_has_no_customers_of_its_own(client: TestClient, tenant: Tenant) -> None:
    r = client.post(f"{ADMIN}/api-keys", json={"name": "erp", "role": "operator"}, headers=tenant.admin_headers)
    key = {"Authorization": f"Bearer {ok(r, 201)['key']}"}
    refused(client.get(f"{ADMIN}/my-customers", headers=key), 403, "staff_only")


def test_handover_to_a_disabled_successor_is_409_and_moves_nobody(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    leaving, _ = staff(session_factory, tenant)
    gone, _ = staff(session_factory, tenant)
    member, _ = login(client, tenant)
    _assign(client, tenant, member, leaving)
    ok(client.patch(f"{ADMIN}/staff/{gone}", json={"active": False}, headers=tenant.admin_headers))
    refused(client.post(f"{ADMIN}/staff/{leaving}/handover", json={"to_staff_id": gone}, headers=tenant.admin_headers),
            409, "staff_owner_inactive")
    refused(client.put(f"{ADMIN}/members/{member}/owner", json={"staff_id": gone}, headers=tenant.admin_headers),
            409, "staff_owner_inactive")
    assert _owners(session_factory, tenant.id, [member]) == {member: leaving}


def test_my_customers_lists_a_merged_pair_once(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    staff_id, headers = staff(session_factory, tenant)
    older, older_headers = login(client, tenant)
    newer, newer_headers = login(client, tenant)
    for m in (older, newer):
        _assign(client, tenant, m, staff_id)
    for h in (older_headers, newer_headers):  # the same phone: the newer member is merged into the older
        ok(client.post("/api/store/v1/me/phone", json={"code": "sandbox-13900001111"}, headers=h))
    assert ok(client.get(f"{ADMIN}/members/{newer}", headers=tenant.admin_headers))["status"] == "merged"
    page = ok(client.get(f"{ADMIN}/my-customers", headers=headers))
    assert (page["total"], [c["id"] for c in page["items"]]) == (1, [older])
    merges = ok(client.get(f"{ADMIN}/members/{older}/merges", headers=tenant.admin_headers))
    assert [(m["kept_member_id"], m["merged_member_id"], m["reason"]) for m in merges] == [(older, newer, "phone")]


def test_a_shopping_guide_reads_and_records_only_their_own_customers_records(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """The eyewear example: the guide sees the prescription when their customer writes in and
    records a new one; the member list, another guide's customer and the 360 stay closed."""
    from siyu.members.models import MemberRecord
    from tests.members.test_records_api import PRESCRIPTION

    a_id, a = staff(session_factory, tenant)
    b_id, _ = staff(session_factory, tenant)
    mine, _ = login(client, tenant)
    theirs, _ = login(client, tenant)
    _assign(client, tenant, mine, a_id)
    _assign(client, tenant, theirs, b_id)
    rtype = ok(client.post(f"{ADMIN}/record-types", json=PRESCRIPTION, headers=tenant.admin_headers), 201)
    ok(client.post(f"{ADMIN}/members/{mine}/records/{rtype['id']}", json={"data": {"exam_date": "2026-01-05", "pd": 62}},
                   headers=tenant.admin_headers), 201)

    assert [t["id"] for t in ok(client.get(f"{ADMIN}/record-types", headers=a))] == [rtype["id"]]
    latest = ok(client.get(f"{ADMIN}/my-customers/{mine}/records", headers=a))
    assert [(r["record_type_key"], r["version"]) for r in latest] == [("prescription", 1)]
    v2 = ok(client.post(f"{ADMIN}/my-customers/{mine}/records/{rtype['id']}",
                        json={"data": {"exam_date": "2026-11-30", "pd": 63}}, headers=a), 201)
    assert (v2["version"], v2["actor_id"]) == (2, a_id)
    assert [r["version"] for r in ok(client.get(f"{ADMIN}/my-customers/{mine}/records/{rtype['id']}", headers=a))] == [2, 1]

    before = count(session_factory, MemberRecord, tenant.id)
    refused(client.post(f"{ADMIN}/my-customers/{theirs}/records/{rtype['id']}",
                        json={"data": {"exam_date": "2026-11-30"}}, headers=a), 404, "not_found")
    refused(client.get(f"{ADMIN}/my-customers/{theirs}/records", headers=a), 404, "not_found")
    assert count(session_factory, MemberRecord, tenant.id) == before
    refused(client.get(f"{ADMIN}/members", headers=a), 403, "forbidden")
    refused(client.get(f"{ADMIN}/members/{mine}/360", headers=a), 403, "forbidden")
    refused(client.get(f"{ADMIN}/members/{theirs}/records", headers=a), 403, "forbidden")


def test_a_merge_does_not_hand_the_kept_member_to_a_staff_member_who_left(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """The newer entry was owned by a guide who has left (disabled); the older one has no owner:
    after the merge the kept member stays unowned (to be handed over by an operator), while an
    active guide's customer is taken over as before."""
    gone, _ = staff(session_factory, tenant)
    here, _ = staff(session_factory, tenant)
    pairs = []
    for owner, phone in ((gone, "sandbox-13900002222"), (here, "sandbox-13900003333")):
        older, older_headers = login(client, tenant)
        newer, newer_headers = login(client, tenant)
        _assign(client, tenant, newer, owner)
        pairs.append((older, older_headers, newer_headers, phone))
    ok(client.patch(f"{ADMIN}/staff/{gone}", json={"active": False}, headers=tenant.admin_headers))
    for _, older_headers, newer_headers, phone in pairs:
        for h in (newer_headers, older_headers):
            ok(client.post("/api/store/v1/me/phone", json={"code": phone}, headers=h))
    kept = [older for older, _, _, _ in pairs]
    assert _owners(session_factory, tenant.id, kept) == {kept[0]: None, kept[1]: here}
