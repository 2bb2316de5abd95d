"""Tags given by taking part in an activity: the admin list per activity (checked whole, nothing
changed on a refusal), and the tagging on the events the activities already emit — a paid order
of a flash sale / group buy / spend-and-save promotion, a coupon received, a bargain started —
once per member, with source ``activity:<kind>:<id>``; unpaid or cancelled orders never tag."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.outbox import JOB_DONE
from siyu.members import activity_tags
from siyu.members.models import ActivityTagRule, MemberTag, MemberTagLog
from siyu.worker.registry import JobContext
from siyu.worker.runner import Worker
from tests.bargains import helpers as bargains
from tests.conftest import Tenant
from tests.coupons.helpers import give, make_template
from tests.factories.orders import make_sku
from tests.factories.payments import jobs
from tests.factories.promotions import create_promotion
from tests.factories.promotions import submit as submit_items
from tests.flash_sales.helpers import create_sale, login
from tests.flash_sales.helpers import submit as submit_flash
from tests.group_buys import helpers as group_buys
from tests.members.api_helpers import ADMIN, STORE, ok, other_tenant, refused

PAID_JOB = "members.activity_tags_on_order_paid"


# -- helpers ----------------------------------------------------------------------------------------------------


def _tag(client: TestClient, tenant: Tenant, name: str, **extra: Any) -> int:
    groups = ok(client.get(f"{ADMIN}/tag-groups", headers=tenant.admin_headers))
    group = next((g["id"] for g in groups if g["name"] == "活动"), None)
    if group is None:
        group = ok(client.post(f"{ADMIN}/tag-groups", json={"name": "活动"}, headers=tenant.admin_headers), 201)["id"]
    body = {"group_id": group, "name": name, **extra}
    return int(ok(client.post(f"{ADMIN}/tags", json=body, headers=tenant.admin_headers), 201)["id"])


def _put(client: TestClient, tenant: Tenant, kind: str, activity_id: int, tags: list[dict[str, Any]],
         **headers: str) -> Any:
    return client.put(f"{ADMIN}/activity-tags/{kind}/{activity_id}", json={"tags": tags},
                      headers={**tenant.admin_headers, **headers})


def _drain(factory: sessionmaker[Session], settings: Settings, tenant: Tenant) -> None:
    Worker(factory, settings, merchant_id=tenant.id).drain()


def _pay(client: TestClient, headers: dict[str, str], order_id: int) -> None:
    r = client.post(f"{STORE}/orders/{order_id}/pay", headers=headers)
    assert r.status_code == 200, r.text
    r = client.post(r.json()["params"]["complete_url"], headers=headers)
    assert r.status_code == 200, r.text


def _member_tags(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> dict[int, str]:
    with factory() as s:
        rows = s.scalars(select(MemberTag).where(MemberTag.merchant_id == merchant_id, MemberTag.member_id == member_id))
        return {mt.tag_id: mt.source for mt in rows}


def _log(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> list[tuple[int, str, str]]:
    with factory() as s:
        rows = s.scalars(select(MemberTagLog).where(MemberTagLog.merchant_id == merchant_id,
                                                    MemberTagLog.member_id == member_id).order_by(MemberTagLog.id))
        return [(x.tag_id, x.action, x.source) for x in rows]


def _rules(factory: sessionmaker[Session], merchant_id: int) -> list[tuple[str, int, int, str]]:
    with factory() as s:
        rows = s.scalars(select(ActivityTagRule).where(ActivityTagRule.merchant_id == merchant_id)
                         .order_by(ActivityTagRule.id))
        return [(r.activity_kind, r.activity_id, r.tag_id, r.moment) for r in rows]


def _rerun_paid_job(factory: sessionmaker[Session], settings: Settings, tenant: Tenant, order_id: int) -> None:
    """The ``order.paid`` job of the order runs again, as after a crash before its commit."""
    (job,) = jobs(factory, tenant.id, PAID_JOB, order_id=order_id)
    assert job.status == JOB_DONE
    with unit_of_work(factory) as s:
        activity_tags.on_order_paid(JobContext(session=s, merchant_id=tenant.id, payload=job.payload,
                                               settings=settings, job_id=job.id, attempt=2))


def _flash_sale(client: TestClient, tenant: Tenant, factory: sessionmaker[Session]) -> tuple[int, int, int]:
    sku = make_sku(factory, tenant.id, price=10000, stock=50)
    sale = create_sale(client, tenant, [{"sku_id": sku, "flash_price": 5000, "activity_stock": 10}],
                       per_member_limit=5)
    return sku, int(sale["id"]), int(sale["items"][0]["id"])


# -- tagging ----------------------------------------------------------------------------------------------------


def test_a_paid_flash_sale_order_tags_the_buyer_once_and_an_unpaid_or_cancelled_one_not(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sku, sale_id, item = _flash_sale(client, tenant, session_factory)
    fan, vip = _tag(client, tenant, "秒杀粉"), _tag(client, tenant, "秒杀 VIP")
    out = ok(_put(client, tenant, "flash_sale", sale_id, [{"tag_id": fan}, {"tag_id": vip, "on": "paid"}]))
    assert [(t["tag_id"], t["on"]) for t in out["tags"]] == [(fan, "paid"), (vip, "paid")]

    buyer_headers, buyer = login(client, tenant)
    first = submit_flash(client, buyer_headers, sku, item)
    assert first.status_code == 201, first.text
    unpaid_headers, unpaid = login(client, tenant)
    assert submit_flash(client, unpaid_headers, sku, item).status_code == 201
    cancel_headers, cancelled = login(client, tenant)
    gone = submit_flash(client, cancel_headers, sku, item)
    assert gone.status_code == 201, gone.text
    assert client.post(f"{STORE}/orders/{gone.json()['id']}/cancel", headers=cancel_headers).status_code == 200
    _drain(session_factory, settings, tenant)
    assert _member_tags(session_factory, tenant.id, buyer) == {}  # submitted is not taking part

    _pay(client, buyer_headers, first.json()["id"])
    _drain(session_factory, settings, tenant)
    source = f"activity:flash_sale:{sale_id}"
    assert _member_tags(session_factory, tenant.id, buyer) == {fan: source, vip: source}
    assert _log(session_factory, tenant.id, buyer) == [(fan, "added", source), (vip, "added", source)]
    assert _member_tags(session_factory, tenant.id, unpaid) == {}
    assert _member_tags(session_factory, tenant.id, cancelled) == {}

    # the job run again, and a second paid order of the same sale: no new tag, no new log line
    _rerun_paid_job(session_factory, settings, tenant, first.json()["id"])
    second = submit_flash(client, buyer_headers, sku, item)
    assert second.status_code == 201, second.text
    _pay(client, buyer_headers, second.json()["id"])
    _drain(session_factory, settings, tenant)
    assert _log(session_factory, tenant.id, buyer) == [(fan, "added", source), (vip, "added", source)]


def test_a_group_buy_member_is_tagged_on_paying_and_a_joiner_who_never_pays_is_not(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    gb = group_buys.make_group_buy(session_factory, tenant.id, sku)
    tag = _tag(client, tenant, "拼团达人")
    ok(_put(client, tenant, "group_buy", gb, [{"tag_id": tag}]))
    leader_headers, leader = login(client, tenant)
    _, team = group_buys.lead(client, session_factory, settings, tenant.id, (leader, leader_headers), sku, gb)
    joiner_headers, joiner = login(client, tenant)
    joined = group_buys.submit(session_factory, tenant.id, joiner, sku, gb, team)
    _drain(session_factory, settings, tenant)
    assert _member_tags(session_factory, tenant.id, leader) == {tag: f"activity:group_buy:{gb}"}
    assert _member_tags(session_factory, tenant.id, joiner) == {}
    _pay(client, joiner_headers, joined)
    _drain(session_factory, settings, tenant)
    assert _member_tags(session_factory, tenant.id, joiner) == {tag: f"activity:group_buy:{gb}"}


def test_a_coupon_template_tags_on_receiving_by_default_and_a_bargain_on_start_when_asked(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    template = make_template(session_factory, tenant.id, per_member_limit=2)
    coupon_tag, bargain_tag = _tag(client, tenant, "领券用户"), _tag(client, tenant, "砍价参与")
    out = ok(_put(client, tenant, "coupon", template, [{"tag_id": coupon_tag}]))
    assert [(t["tag_id"], t["on"]) for t in out["tags"]] == [(coupon_tag, "joined")]
    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    activity = bargains.make_activity(session_factory, tenant.id, sku)
    ok(_put(client, tenant, "bargain", activity, [{"tag_id": bargain_tag, "on": "joined"}]))

    _, member = login(client, tenant)
    give(session_factory, tenant.id, template, member)
    bargains.start(session_factory, tenant.id, member, activity)
    _drain(session_factory, settings, tenant)
    assert _member_tags(session_factory, tenant.id, member) == {
        coupon_tag: f"activity:coupon:{template}", bargain_tag: f"activity:bargain:{activity}",
    }
    give(session_factory, tenant.id, template, member)  # a second coupon of the template
    _drain(session_factory, settings, tenant)
    assert [e[0] for e in _log(session_factory, tenant.id, member)].count(coupon_tag) == 1


def test_a_coupon_template_set_to_paid_tags_when_a_coupon_of_it_is_spent_on_a_paid_order(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    template = make_template(session_factory, tenant.id)
    tag = _tag(client, tenant, "用券下单")
    ok(_put(client, tenant, "coupon", template, [{"tag_id": tag, "on": "paid"}]))
    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    headers, member = login(client, tenant)
    coupon = give(session_factory, tenant.id, template, member)
    _drain(session_factory, settings, tenant)
    assert _member_tags(session_factory, tenant.id, member) == {}  # received only: this rule waits for payment
    order = submit_items(client, headers, [(sku, 1)], coupon_ids=[coupon])
    assert order.status_code == 201, order.text
    _pay(client, headers, order.json()["id"])
    _drain(session_factory, settings, tenant)
    assert _member_tags(session_factory, tenant.id, member) == {tag: f"activity:coupon:{template}"}


def test_a_paid_order_that_took_a_spend_and_save_discount_tags_its_buyer(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    promo = create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 15000, "discount": 2000}]})
    tag = _tag(client, tenant, "满减用户")
    ok(_put(client, tenant, "promotion", promo["id"], [{"tag_id": tag}]))
    sku = make_sku(session_factory, tenant.id, price=10000, stock=50)
    headers, member = login(client, tenant)
    small_headers, small = login(client, tenant)
    order = submit_items(client, headers, [(sku, 2)])
    assert order.status_code == 201, order.text
    assert any(row["code"] == f"spend_save:{promo['id']}" for row in order.json()["pricing"]), order.text
    below = submit_items(client, small_headers, [(sku, 1)])  # under the threshold: not taking part
    assert below.status_code == 201, below.text
    _pay(client, headers, order.json()["id"])
    _pay(client, small_headers, below.json()["id"])
    _drain(session_factory, settings, tenant)
    assert _member_tags(session_factory, tenant.id, member) == {tag: f"activity:promotion:{promo['id']}"}
    assert _member_tags(session_factory, tenant.id, small) == {}


def test_a_tag_deleted_after_the_rule_is_skipped_and_the_job_still_succeeds(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sku, sale_id, item = _flash_sale(client, tenant, session_factory)
    kept, dropped = _tag(client, tenant, "保留"), _tag(client, tenant, "删除")
    ok(_put(client, tenant, "flash_sale", sale_id, [{"tag_id": kept}, {"tag_id": dropped}]))
    assert client.delete(f"{ADMIN}/tags/{dropped}", headers=tenant.admin_headers).status_code == 204
    listed = ok(client.get(f"{ADMIN}/activity-tags/flash_sale/{sale_id}", headers=tenant.admin_headers))
    assert [t["tag_id"] for t in listed["tags"]] == [kept]
    headers, member = login(client, tenant)
    order = submit_flash(client, headers, sku, item)
    assert order.status_code == 201, order.text
    _pay(client, headers, order.json()["id"])
    _drain(session_factory, settings, tenant)
    assert [j.status for j in jobs(session_factory, tenant.id, PAID_JOB, order_id=order.json()["id"])] == [JOB_DONE]
    assert _member_tags(session_factory, tenant.id, member) == {kept: f"activity:flash_sale:{sale_id}"}


# -- configuration refusals ---------------------------------------------------------------------------------


def test_a_bad_entry_refuses_the_whole_list_and_changes_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    _, sale_id, _ = _flash_sale(client, tenant, session_factory)
    mine = _tag(client, tenant, "我的")
    rule = _tag(client, tenant, "规则", rule={"type": "attribute", "field": "city", "op": "eq", "value": "宁波市"})
    other = other_tenant(session_factory)
    theirs = _tag(client, other, "别家")
    ok(_put(client, tenant, "flash_sale", sale_id, [{"tag_id": mine}]))
    before = _rules(session_factory, tenant.id)

    body = refused(_put(client, tenant, "flash_sale", sale_id,
                        [{"tag_id": mine}, {"tag_id": theirs}, {"tag_id": rule}, {"tag_id": mine, "on": "joined"},
                         {"tag_id": 9_000_000_000}], **{"Accept-Language": "en"}),
                   422, "activity_tags_invalid")
    assert [(f["path"], f["code"]) for f in body["fields"]] == [
        ("tags.1.tag_id", "tag_not_found"), ("tags.2.tag_id", "tag_is_rule"),
        ("tags.3.on", "activity_tag_moment_unsupported"), ("tags.4.tag_id", "tag_not_found"),
    ]
    zh = refused(_put(client, tenant, "flash_sale", sale_id, [{"tag_id": theirs}], **{"Accept-Language": "zh-CN"}),
                 422, "activity_tags_invalid")
    assert zh["message"] == "有 1 个标签设置无效，未做任何更改"
    assert zh["fields"][0]["message"] == f"标签 {theirs} 不存在"
    assert body["message"] == "4 tag setting(s) are invalid; nothing was changed"
    assert body["fields"][0]["message"] == f"no tag {theirs}"
    assert _rules(session_factory, tenant.id) == before


def test_an_unknown_kind_or_another_merchants_activity_is_404_and_changes_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    mine = _tag(client, tenant, "我的")
    other = other_tenant(session_factory)
    _, their_sale, _ = _flash_sale(client, other, session_factory)
    refused(_put(client, tenant, "flash_sale", their_sale, [{"tag_id": mine}]), 404, "not_found")
    refused(client.get(f"{ADMIN}/activity-tags/flash_sale/{their_sale}", headers=tenant.admin_headers), 404, "not_found")
    refused(_put(client, tenant, "lottery", 1, [{"tag_id": mine}]), 404, "activity_kind_unknown")
    assert _rules(session_factory, tenant.id) == [] and _rules(session_factory, other.id) == []


def test_put_replaces_the_list_and_keeps_rules_of_other_activities(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    _, sale_a, _ = _flash_sale(client, tenant, session_factory)
    _, sale_b, _ = _flash_sale(client, tenant, session_factory)
    t1, t2 = _tag(client, tenant, "一"), _tag(client, tenant, "二")
    ok(_put(client, tenant, "flash_sale", sale_a, [{"tag_id": t1}, {"tag_id": t2}]))
    ok(_put(client, tenant, "flash_sale", sale_b, [{"tag_id": t1}]))
    out = ok(_put(client, tenant, "flash_sale", sale_a, [{"tag_id": t2}, {"tag_id": t2}]))
    assert [t["tag_id"] for t in out["tags"]] == [t2]
    ok(_put(client, tenant, "flash_sale", sale_b, []))
    assert _rules(session_factory, tenant.id) == [("flash_sale", sale_a, t2, "paid")]
