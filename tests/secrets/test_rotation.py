"""Rotating ``SIYU_SECRET_KEY`` with real rows of every sealed kind (merchant credentials,
distributors' names and phones, payees' names, idempotent answers), on SQLite and PostgreSQL:
with the old key as a previous one everything opens; ``rotate`` re-seals per merchant or all, in
batches; afterwards the old key can go; a second run changes nothing; without the old key the
values are reported unreadable and left as they were."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.idempotency import service as idempotency
from siyu.kit.crypto import SecretBox, declare_previous_keys
from siyu.kit.errors import DomainError
from siyu.kit.sealed_columns import SEALED_COLUMNS
from siyu.referral import pii
from siyu.referral.models import Distributor, Withdrawal
from siyu.tenancy import service as tenancy
from siyu.tenancy.models import Merchant
from siyu.tenancy.rotation import ColumnCount, rotate
from tests.conftest import unique

Factory = sessionmaker[Session]
ANSWER = b'{"id":42,"name":"\xe9\x87\x91\xe5\x8d\xa1"}'  # {"id":42,"name":"金卡"}
CLEAR: dict[str, Any] = {
    "wechat_app_secret_enc": "app-secret",
    "pay_private_key_enc": "-----BEGIN PRIVATE KEY-----legacy",  # written unbound (v1), as before the binding
    "pay_apiv3_key_enc": "a" * 32,
    "pay_platform_keys_enc": '{"SERIAL1": "PEM1"}',
    "real_name": "欧阳娜娜",
    "phone": "13812345678",
    "payee": "张三丰",
    "answer": ANSWER,
}
SEALED_PER_MERCHANT = 8  # values above, one row each


@dataclass
class Seeded:
    merchant_id: int
    code: str
    distributor_id: int
    withdrawal_id: int
    scope: str
    key: str


def seed(factory: Factory, secret: str) -> Seeded:
    """A merchant with one value in every sealed column, all sealed with ``secret``."""
    box = SecretBox(secret, previous=())
    with unit_of_work(factory) as s:
        m = tenancy.create_merchant(s, code=unique("m"), name="Rotation store")
        s.flush()
        for column in ("wechat_app_secret_enc", "pay_apiv3_key_enc", "pay_platform_keys_enc"):
            tenancy.seal_merchant_secret(box, m, column, CLEAR[column])
        m.pay_private_key_enc = box.encrypt(CLEAR["pay_private_key_enc"])  # legacy v1
        d = Distributor(merchant_id=m.id, member_id=1, status="approved")
        s.add(d)
        s.flush()
        pii.seal_distributor(d, CLEAR["real_name"], CLEAR["phone"], secret)
        w = Withdrawal(merchant_id=m.id, distributor_id=d.id, member_id=1, amount=100, request_key=unique("wd"))
        s.add(w)
        s.flush()
        pii.seal_payee(w, CLEAR["payee"], secret)
        scope, key = "POST /api/admin/v1/loyalty/levels staff:1", uuid.uuid4().hex
        claimed = idempotency.claim(s, m.id, scope, key, "d" * 64, secret_key=secret)
        assert isinstance(claimed, idempotency.Claimed)
        idempotency.complete(s, claimed, 201, ANSWER, secret_key=secret)
        return Seeded(m.id, m.code, d.id, w.id, scope, key)


def read_all(factory: Factory, seeded: Seeded, secret: str) -> dict[str, Any]:
    """Every value through the code that reads it in the app (boxes built from ``secret`` alone)."""
    with factory() as s:
        m = s.get(Merchant, seeded.merchant_id)
        d = s.get(Distributor, seeded.distributor_id)
        w = s.get(Withdrawal, seeded.withdrawal_id)
        assert m is not None and d is not None and w is not None
        box = SecretBox(secret)
        values: dict[str, Any] = {c: tenancy.open_merchant_secret(box, m, c) for c in tenancy.MERCHANT_SECRET_COLUMNS}
        values["real_name"] = pii.real_name_of(d, secret)
        values["phone"] = pii.phone_of(d, secret)
        values["payee"] = pii.payee_name_of(w, secret)
        stored = idempotency.claim(s, seeded.merchant_id, seeded.scope, seeded.key, "d" * 64, secret_key=secret)
        assert isinstance(stored, idempotency.Stored)
        values["answer"] = stored.body
        s.rollback()
    return values


def snapshot(engine: Engine) -> dict[tuple[str, str, int], str]:
    """Every stored ciphertext by place."""
    out: dict[tuple[str, str, int], str] = {}
    with engine.connect() as conn:
        for c in SEALED_COLUMNS:
            t = sa.table(c.table, sa.column("id"), sa.column(c.column))
            for rid, value in conn.execute(sa.select(t.c.id, t.c[c.column]).where(t.c[c.column].is_not(None))):
                out[(c.table, c.column, rid)] = value
    return out


def totals(counts: list[ColumnCount]) -> dict[str, int]:
    return {k: sum(getattr(c, k) for c in counts) for k in ("resealed", "current", "unreadable", "raced")}


def test_rotate_per_merchant_then_all_then_drop_the_old_key(fresh_engine: Engine, fresh_factory: Factory) -> None:
    old, new = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    a, b = seed(fresh_factory, old), seed(fresh_factory, old)
    assert read_all(fresh_factory, a, old) == CLEAR

    # the new key alone, before any rotation: nothing opens; the idempotent answer is a clear 409
    with fresh_factory() as s:
        m = s.get(Merchant, a.merchant_id)
        assert m is not None
        with pytest.raises(DomainError, match="merchant_credentials_unreadable"):
            tenancy.open_merchant_secret(SecretBox(new), m, "pay_apiv3_key_enc")
        with pytest.raises(DomainError) as refused:
            idempotency.claim(s, a.merchant_id, a.scope, a.key, "d" * 64, secret_key=new)
        assert refused.value.code == "idempotency_answer_unavailable"
        s.rollback()
    before = snapshot(fresh_engine)
    lost = rotate(fresh_engine, new, [])
    assert totals(lost.columns) == {"resealed": 0, "current": 0, "unreadable": 16, "raced": 0}
    assert {(u.column, u.merchant_id) for u in lost.unreadable_places} == {
        (c.name, m) for c in SEALED_COLUMNS for m in (a.merchant_id, b.merchant_id)
    }
    assert snapshot(fresh_engine) == before  # nothing unreadable is touched

    # the operator sets the new key and keeps the old one as previous: everything opens at once
    declare_previous_keys(new, ["spare-key", old])
    assert read_all(fresh_factory, a, new) == CLEAR and read_all(fresh_factory, b, new) == CLEAR

    # one merchant first, in batches of 3
    batches: list[int] = []
    first = rotate(fresh_engine, new, ["spare-key", old], merchant_ids=[a.merchant_id], batch_size=3,
                   progress=lambda c: batches.append(c.resealed))
    assert totals(first.columns) == {"resealed": SEALED_PER_MERCHANT, "current": 0, "unreadable": 0, "raced": 0}
    assert [c.resealed for c in first.columns] == [1] * len(SEALED_COLUMNS)
    assert batches  # progress after each committed batch
    after_a = snapshot(fresh_engine)
    for place, value in after_a.items():
        changed = value != before[place]
        assert changed == _belongs(fresh_engine, place, a.merchant_id), place  # merchant b's values untouched
        assert value.startswith("v2:") or not changed

    # then everyone: a's values are already current
    every = rotate(fresh_engine, new, [old], batch_size=2)
    assert totals(every.columns) == {
        "resealed": SEALED_PER_MERCHANT, "current": SEALED_PER_MERCHANT, "unreadable": 0, "raced": 0
    }
    assert all(v.startswith("v2:") for v in snapshot(fresh_engine).values())

    # the old key is removed: everything still opens with the new key alone
    declare_previous_keys(new, [])
    assert read_all(fresh_factory, a, new) == CLEAR and read_all(fresh_factory, b, new) == CLEAR
    with fresh_factory() as s:  # and nothing opens with the old key any more
        m = s.get(Merchant, b.merchant_id)
        assert m is not None
        with pytest.raises(DomainError, match="merchant_credentials_unreadable"):
            tenancy.open_merchant_secret(SecretBox(old), m, "wechat_app_secret_enc")

    # a second run changes nothing
    settled = snapshot(fresh_engine)
    again = rotate(fresh_engine, new, [])
    assert totals(again.columns) == {"resealed": 0, "current": 2 * SEALED_PER_MERCHANT, "unreadable": 0, "raced": 0}
    assert snapshot(fresh_engine) == settled


def test_a_value_written_meanwhile_is_not_overwritten(fresh_engine: Engine, fresh_factory: Factory) -> None:
    """The update is conditional on the value read: a credential changed by the app between the
    read and the write keeps the app's value (counted as raced)."""
    if fresh_engine.dialect.name == "sqlite":
        pytest.skip("SQLite allows one writer: another connection cannot write between the read and the update")
    old, new = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    a = seed(fresh_factory, old)
    column = next(c for c in SEALED_COLUMNS if c.column == "pay_apiv3_key_enc")
    written: list[str] = []

    def write_meanwhile(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE MERCHANTS") and not written:
            written.append("")  # this listener sees the write below too: once only
            with fresh_factory() as s, s.begin():
                m = s.get(Merchant, a.merchant_id)
                assert m is not None
                tenancy.seal_merchant_secret(SecretBox(new, previous=()), m, column.column, "b" * 32)
                s.flush()
                written[0] = m.pay_apiv3_key_enc or ""

    sa.event.listen(fresh_engine, "before_cursor_execute", write_meanwhile)
    try:
        report = rotate(fresh_engine, new, [old], columns=[column])
    finally:
        sa.event.remove(fresh_engine, "before_cursor_execute", write_meanwhile)
    assert totals(report.columns) == {"resealed": 0, "current": 0, "unreadable": 0, "raced": 1}
    declare_previous_keys(new, [])
    with fresh_factory() as s:
        m = s.get(Merchant, a.merchant_id)
        assert m is not None and m.pay_apiv3_key_enc == written[0]
        assert tenancy.open_merchant_secret(SecretBox(new), m, column.column) == "b" * 32


def _belongs(engine: Engine, place: tuple[str, str, int], merchant_id: int) -> bool:
    table, column, rid = place
    entry = next(c for c in SEALED_COLUMNS if (c.table, c.column) == (table, column))
    t = sa.table(table, sa.column("id"), sa.column(entry.merchant_column))
    with engine.connect() as conn:
        return conn.execute(sa.select(t.c[entry.merchant_column]).where(t.c.id == rid)).scalar_one() == merchant_id
