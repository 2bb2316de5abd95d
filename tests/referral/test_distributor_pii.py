"""Distributors' real names and phones: encrypted at rest bound to their row, masked in lists,
in clear only for finance / owner and in the member's own export; deletion anonymises; the
migration data step encrypts old plaintext rows."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings, get_settings
from siyu.db.session import unit_of_work
from siyu.kit.crypto import SecretBox, bind
from siyu.members import privacy
from siyu.referral import pii, service
from siyu.referral import repository as repo
from siyu.referral.models import WD_PAID, Distributor, Withdrawal
from siyu.referral.schemas import ApplyIn
from tests.conftest import Tenant, staff_headers
from tests.referral import helpers as h

NAME, PHONE = "欧阳娜娜", "13812345678"


def test_the_application_is_stored_encrypted_and_shown_masked_or_in_clear_by_role(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    h.configure(client, tenant)
    member_id, m = h.login(client, tenant)
    r = client.post(f"{h.STORE}/distributor/apply", json={"real_name": f" {NAME} ", "phone": PHONE}, headers=m)
    assert r.status_code == 201, r.text
    mine = r.json()
    assert (mine["real_name"], mine["phone"]) == (None, None)
    assert (mine["real_name_masked"], mine["phone_masked"]) == ("欧**娜", "138****5678")
    dist_id = mine["id"]
    with session_factory() as s:
        row = s.get(Distributor, dist_id)
        assert row is not None and row.real_name_enc and row.phone_enc
        assert row.real_name_enc.startswith("v2:") and NAME not in row.real_name_enc
        assert PHONE not in row.phone_enc
        assert service.distributor_contact(row, settings) == (NAME, PHONE)
    listed = client.get(f"{h.ADMIN}/distributors", headers=tenant.admin_headers).json()["items"]
    assert [(d["real_name"], d["real_name_masked"], d["phone"]) for d in listed] == [(None, "欧**娜", None)]
    # owner and finance see the detail in clear; an operator (promotions:read) sees it masked
    for headers, expected in (
        (tenant.admin_headers, (NAME, PHONE)),
        (staff_headers(session_factory, tenant, "finance"), (NAME, PHONE)),  # finance:read, no promotions:read
        (staff_headers(session_factory, tenant, "operator"), (None, None)),
    ):
        r = client.get(f"{h.ADMIN}/distributors/{dist_id}", headers=headers)
        assert r.status_code == 200, r.text
        assert (r.json()["real_name"], r.json()["phone"]) == expected
        assert r.json()["real_name_masked"] == "欧**娜"
    # finance lists them too (masked, like everyone), a shop assistant has neither permission
    listed_by_finance = client.get(f"{h.ADMIN}/distributors", headers=staff_headers(session_factory, tenant, "finance"))
    assert [d["real_name"] for d in listed_by_finance.json()["items"]] == [None]
    r = client.get(f"{h.ADMIN}/distributors/{dist_id}", headers=staff_headers(session_factory, tenant, "staff"))
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    assert NAME not in client.get(f"{h.STORE}/distributor", headers=m).text
    assert member_id == mine["member_id"]


def test_a_ciphertext_moved_to_another_distributor_does_not_decrypt(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    h.configure(client, tenant)
    ids = []
    for name in ("张三", "李四"):
        _, m = h.login(client, tenant)
        r = client.post(f"{h.STORE}/distributor/apply", json={"real_name": name}, headers=m)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    with unit_of_work(session_factory) as s:
        a, b = s.get(Distributor, ids[0]), s.get(Distributor, ids[1])
        assert a is not None and b is not None
        b.real_name_enc = a.real_name_enc  # an attacker with database access swaps names
        b.phone_enc = a.real_name_enc  # or moves a value into another column
    with session_factory() as s:
        b = s.get(Distributor, ids[1])
        assert b is not None
        with pytest.raises(InvalidTag):
            pii.real_name_of(b, settings.secret_key)
        with pytest.raises(InvalidTag):
            pii.phone_of(b, settings.secret_key)


def test_export_shows_the_members_own_data_and_deletion_anonymises_it(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """Through the services with the process settings' key (as the export uses)."""
    h.configure(client, tenant, auto_approve_distributors=True)
    h.create_level(client, tenant)
    member_id, _ = h.login(client, tenant)
    key = get_settings().secret_key
    with unit_of_work(session_factory) as s:
        dist = service.apply(s, tenant.id, member_id, ApplyIn(real_name=NAME, phone=PHONE, note="朋友推荐"))
        dist_id = dist.id
        repo.move(s, tenant.id, dist_id, key=f"test:{uuid.uuid4().hex}", entry="settled", amount=5000,
                  deltas={"available": 5000})
    done, open_ = [], []
    for bucket in (done, open_):
        with unit_of_work(session_factory) as s:
            w, _ = service.request_withdrawal(s, tenant.id, member_id, 1000, idempotency_key=uuid.uuid4().hex)
            pii.seal_payee(w, NAME, key)  # as a named (WeChat, from 2,000 yuan) withdrawal stores it
            bucket.append(w.id)
    with unit_of_work(session_factory) as s:
        service.approve_withdrawal(s, tenant.id, done[0], None, actor=("staff", None))
        service.mark_withdrawal_paid(s, tenant.id, done[0], "BANK-1", actor=("staff", None))
    with session_factory() as s:
        doc = privacy.export(s, tenant.id, member_id)["referral"]
    assert (doc["distributor"]["real_name"], doc["distributor"]["phone"]) == (NAME, PHONE)
    assert doc["distributor"]["account"]["available"] == 3000
    assert [(w["id"], w["payee_name"]) for w in doc["withdrawals"]] == [(done[0], NAME), (open_[0], NAME)]
    with unit_of_work(session_factory) as s:
        _, summary = privacy.delete_member_data(s, tenant.id, member_id)
    assert summary["referral"] == {"distributor_anonymised": 1, "payee_names_removed": 1, "withdrawals_in_flight": 1}
    with session_factory() as s:
        d = s.get(Distributor, dist_id)
        assert d is not None
        assert (d.real_name_enc, d.real_name_masked, d.phone_enc, d.phone_masked, d.note) == (None,) * 5
        assert (d.available, d.withdrawing, d.withdrawn) == (3000, 1000, 1000)  # money records stay
        paid, pending = s.get(Withdrawal, done[0]), s.get(Withdrawal, open_[0])
        assert paid is not None and pending is not None
        assert (paid.status, paid.payee_name_enc, paid.payee_name_masked) == (WD_PAID, None, None)
        assert pending.payee_name_enc is not None  # still to be paid: kept until it ends
        doc = privacy.export(s, tenant.id, member_id)["referral"]
    assert (doc["distributor"]["real_name"], doc["distributor"]["phone"]) == (None, None)


def test_the_migration_data_step_encrypts_plaintext_rows_once() -> None:
    """``pii.encrypt_plaintext_columns`` on the old schema (plaintext columns next to the new ones)."""
    eng = sa.create_engine("sqlite://")
    key = "migration-key"
    with eng.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE distributors (id INTEGER PRIMARY KEY, merchant_id INTEGER, real_name TEXT, phone TEXT,"
            " real_name_enc TEXT, real_name_masked TEXT, phone_enc TEXT, phone_masked TEXT)"
        ))
        conn.execute(sa.text("CREATE TABLE withdrawals (id INTEGER PRIMARY KEY, merchant_id INTEGER, payee_name_enc TEXT)"))
        conn.execute(sa.text(
            "INSERT INTO distributors (id, merchant_id, real_name, phone) VALUES"
            " (1, 7, '张三丰', '13812345678'), (2, 7, NULL, '  '), (3, 8, NULL, NULL)"
        ))
        legacy = pii.payee_box(key).encrypt("张三丰")  # a v1 value as written before the binding
        conn.execute(sa.text("INSERT INTO withdrawals VALUES (5, 7, :v), (6, 7, NULL)"), {"v": legacy})
        assert pii.encrypt_plaintext_columns(conn, key, batch=1) == 2
        assert pii.encrypt_plaintext_columns(conn, key) == 0  # idempotent
        rows = conn.execute(sa.text("SELECT * FROM distributors ORDER BY id")).mappings().all()
        resealed = conn.execute(sa.text("SELECT payee_name_enc FROM withdrawals WHERE id = 5")).scalar_one()
    box = pii.distributor_box(key)
    first = rows[0]
    assert (first["real_name"], first["phone"], first["real_name_masked"], first["phone_masked"]) == (
        None, None, "张**丰", "138****5678")
    assert box.decrypt(first["real_name_enc"], aad=bind("distributors", "real_name_enc", 7, 1)) == "张三丰"
    assert box.decrypt(first["phone_enc"], aad=bind("distributors", "phone_enc", 7, 1)) == "13812345678"
    assert [tuple(r[c] for c in ("real_name", "phone", "real_name_enc", "phone_enc")) for r in rows[1:]] == [
        (None, None, None, None), (None, None, None, None)]
    assert resealed.startswith("v2:")
    assert SecretBox(key, pii.PAYEE_NAME_PURPOSE).decrypt(resealed, aad=bind("withdrawals", "payee_name_enc", 7, 5)) == "张三丰"
