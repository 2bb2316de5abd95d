"""A retried help (same helper, same bargain) answers 200 with the first help's result and changes
nothing; helping one's own bargain stays refused, however often it is repeated."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.kit.events import subscribe
from siyu.worker.registry import JobContext
from tests.bargains import helpers as h
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import make_sku

STORE = "/api/store/v1"


@subscribe("bargain.helped", "test.bargains.help_retry.helped")
def _on_helped(ctx: JobContext) -> None:
    pass


def test_a_retried_help_returns_the_first_result_and_changes_nothing(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=5)
    act = h.make_activity(session_factory, tenant.id, sku, helpers_needed=2, floor_price=1000)
    initiator, initiator_h = f.paying_customer(session_factory, tenant.id)
    (_, first_h), (_, second_h) = (f.paying_customer(session_factory, tenant.id) for _ in range(2))
    bargain_id = h.start(session_factory, tenant.id, initiator, act)
    url = f"{STORE}/bargains/{bargain_id}/help"

    def state() -> tuple[int, int, str, int, int]:
        b = h.bargain(session_factory, bargain_id)
        helped = len(f.jobs(session_factory, tenant.id, "test.bargains.help_retry.helped", bargain_id=bargain_id))
        return b.helped_count, b.cut_total, b.status, len(h.helps(session_factory, bargain_id)), helped

    first = client.post(url, headers=first_h)
    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    after_first = state()
    retry = client.post(url, headers=first_h)
    assert retry.status_code == 200, retry.text
    assert retry.json() == first.json() and retry.headers["Idempotent-Replayed"] == "true"
    assert state() == after_first

    # The last help reaches the floor; a retry of the first help still answers with its own result.
    last = client.post(url, headers=second_h)
    assert last.status_code == 200 and last.json()["floor_reached"] and last.json()["seq"] == 2
    after_last = state()
    assert after_last[:3] == (2, 9000, "floor_reached")
    assert client.post(url, headers=first_h).json() == first.json()
    assert client.post(url, headers=second_h).json() == last.json()
    assert state() == after_last

    # One's own bargain: refused with its code, every time, changing nothing.
    for _ in range(2):
        own = client.post(url, headers=initiator_h)
        assert own.status_code == 409 and own.json()["code"] == "bargain_help_own"
    assert state() == after_last
