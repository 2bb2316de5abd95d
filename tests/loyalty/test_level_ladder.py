"""The level ladder stays in order: for each criterion (paid spend, points earned, growth, paid
orders) the thresholds of the levels that set it rise strictly with rank. A create, an update, a
move to another rank that breaks this is refused with ``level_thresholds_not_ascending`` (409,
naming both levels) and changes nothing; deleting a level keeps a valid ladder valid and is
refused while the level is in use. The demo's ladder passes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.loyalty import demo_data, service
from siyu.loyalty.schemas import CardPlanIn, LevelIn
from tests.conftest import Tenant
from tests.factories.orders import make_member, make_sku
from tests.loyalty import helpers as h

LEVELS = "/api/admin/v1/loyalty/levels"


def _post(client: TestClient, tenant: Tenant, **body: Any) -> Any:
    return client.post(LEVELS, json=body, headers=tenant.admin_headers)


def _ladder(client: TestClient, tenant: Tenant) -> list[tuple[int, str, int | None, int | None]]:
    got = client.get(LEVELS, headers=tenant.admin_headers).json()
    return [(lv["rank"], lv["name"], lv["min_spend"], lv["min_points"]) for lv in got]


def _base(client: TestClient, tenant: Tenant) -> dict[str, int]:
    """普通 (entry) · 正式 ¥300 spend · 中级 2,000 points (no spend) · 高级 ¥2,000 spend + 10,000 points."""
    ids = {}
    for body in (
        {"rank": 0, "name": "普通会员"},
        {"rank": 1, "name": "正式会员", "min_spend": 30000},
        {"rank": 2, "name": "中级会员", "min_points": 2000},
        {"rank": 3, "name": "高级会员", "min_spend": 200000, "min_points": 10000},
    ):
        r = _post(client, tenant, **body)
        assert r.status_code == 201, r.text
        ids[body["name"]] = r.json()["id"]
    return ids


def _refused(r: Any, lower: str, higher: str) -> dict[str, Any]:
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["code"] == "level_thresholds_not_ascending", body
    assert f"「{lower}」" in body["message"] and f"「{higher}」" in body["message"], body["message"]
    return dict(body)


def test_the_issue_example_is_refused_on_create_and_nothing_is_added(client: TestClient, tenant: Tenant) -> None:
    """Level 2 at ¥2,000 of spend, then level 3 at ¥300: refused, in zh-CN and in English, with
    the field that breaks the order; equal thresholds are refused too (the lower level would be
    skipped)."""
    assert _post(client, tenant, rank=2, name="二级", min_spend=200000).status_code == 201
    before = _ladder(client, tenant)
    body = _refused(_post(client, tenant, rank=3, name="三级", min_spend=30000), "二级", "三级")
    assert "累计消费" in body["message"] and "¥300.00" in body["message"] and "¥2000.00" in body["message"]
    assert [(f["path"], f["code"]) for f in body["fields"]] == [("min_spend", "level_thresholds_not_ascending")]
    en = client.post(LEVELS, json={"rank": 3, "name": "三级", "min_spend": 30000},
                     headers={**tenant.admin_headers, "Accept-Language": "en"}).json()
    assert en["message"] == (
        'Level thresholds must rise up the ladder: cumulative paid spend of "三级" (rank 3) is ¥300.00, '
        'not above "二级" (rank 2) at ¥2000.00'
    )
    _refused(_post(client, tenant, rank=3, name="三级", min_spend=200000), "二级", "三级")
    # below it, a higher threshold is refused the same way
    _refused(_post(client, tenant, rank=1, name="一级", min_spend=300000), "一级", "二级")
    assert _ladder(client, tenant) == before
    assert _post(client, tenant, rank=3, name="三级", min_spend=200001).status_code == 201
    assert _post(client, tenant, rank=1, name="一级", min_spend=199999).status_code == 201


def test_each_criterion_is_checked_across_levels_that_leave_it_unset(client: TestClient, tenant: Tenant) -> None:
    _base(client, tenant)
    before = _ladder(client, tenant)
    # 中级 sets no spend: rank 4 is compared with 高级 (¥2,000) and 正式 (¥300) all the same
    _refused(_post(client, tenant, rank=4, name="钻石", min_spend=100000), "高级会员", "钻石")
    _refused(_post(client, tenant, rank=4, name="钻石", min_points=5000), "高级会员", "钻石")
    for column in ("min_growth", "min_orders"):  # the other two criteria
        assert _post(client, tenant, rank=10, name="顶级", **{column: 10}).status_code == 201
        r = _post(client, tenant, rank=11, name="顶级+", **{column: 9})
        _refused(r, "顶级", "顶级+")
        assert r.json()["fields"][0]["path"] == column
        assert client.delete(f"{LEVELS}/{client.get(LEVELS, headers=tenant.admin_headers).json()[-1]['id']}",
                             headers=tenant.admin_headers).status_code == 204
    assert _ladder(client, tenant) == before


def test_an_update_that_breaks_the_order_is_refused_and_changes_nothing(client: TestClient, tenant: Tenant) -> None:
    ids = _base(client, tenant)
    before = _ladder(client, tenant)
    r = client.put(f"{LEVELS}/{ids['正式会员']}", json={"rank": 1, "name": "正式会员", "min_spend": 250000},
                   headers=tenant.admin_headers)
    _refused(r, "正式会员", "高级会员")
    r = client.put(f"{LEVELS}/{ids['高级会员']}", json={"rank": 3, "name": "高级会员", "min_spend": 30000},
                   headers=tenant.admin_headers)
    _refused(r, "正式会员", "高级会员")
    assert _ladder(client, tenant) == before
    # a change that keeps the order is taken
    r = client.put(f"{LEVELS}/{ids['正式会员']}", json={"rank": 1, "name": "正式会员", "min_spend": 199999},
                   headers=tenant.admin_headers)
    assert r.status_code == 200, r.text


def test_moving_a_level_to_another_rank_is_checked_at_its_new_place(client: TestClient, tenant: Tenant) -> None:
    ids = _base(client, tenant)
    before = _ladder(client, tenant)
    # a rank another level has is refused first; 正式 moved above 高级 with its ¥300: out of order
    r = client.put(f"{LEVELS}/{ids['高级会员']}",
                   json={"rank": 0, "name": "高级会员", "min_spend": 200000, "min_points": 10000},
                   headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "level_rank_taken"  # rank 0 is 普通's
    r = client.put(f"{LEVELS}/{ids['正式会员']}", json={"rank": 5, "name": "正式会员", "min_spend": 30000},
                   headers=tenant.admin_headers)
    _refused(r, "高级会员", "正式会员")
    assert _ladder(client, tenant) == before
    # moved to the top with a threshold that fits there: taken, the ladder reads in order
    r = client.put(f"{LEVELS}/{ids['正式会员']}", json={"rank": 5, "name": "正式会员", "min_spend": 500000},
                   headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    assert _ladder(client, tenant) == [
        (0, "普通会员", None, None), (2, "中级会员", None, 2000), (3, "高级会员", 200000, 10000),
        (5, "正式会员", 500000, None),
    ]


def test_deleting_a_level_keeps_the_ladder_valid_and_a_level_in_use_stays(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    ids = _base(client, tenant)
    # a middle level nobody holds: gone, the rest still rises, and it can come back in its place
    assert client.delete(f"{LEVELS}/{ids['中级会员']}", headers=tenant.admin_headers).status_code == 204
    assert [name for _, name, _, _ in _ladder(client, tenant)] == ["普通会员", "正式会员", "高级会员"]
    _refused(_post(client, tenant, rank=2, name="中级会员", min_points=20000), "中级会员", "高级会员")
    r = _post(client, tenant, rank=2, name="中级会员", min_points=2000)
    assert r.status_code == 201, r.text
    ids["中级会员"] = r.json()["id"]
    assert client.delete(f"{LEVELS}/{ids['中级会员']}", headers=tenant.admin_headers).status_code == 204
    assert client.delete(f"{LEVELS}/{ids['中级会员']}", headers=tenant.admin_headers).status_code == 404

    # a member stands on 高级 (10,000 points earned): refused, nothing changed
    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 10000, key="ladder-delete")
    assert h.level_of(session_factory, tenant.id, member) == "高级会员"
    before = _ladder(client, tenant)
    r = client.delete(f"{LEVELS}/{ids['高级会员']}", headers={**tenant.admin_headers, "Accept-Language": "en"})
    assert r.status_code == 409 and r.json()["code"] == "level_in_use", r.text
    assert r.json()["message"] == (
        'Level "高级会员" is in use: 1 member(s) hold it by the rules, 0 through a card, 0 card plan(s) grant it, '
        "and 0 draft or active coupon template(s) are exclusive to it (-)"
    )
    assert _ladder(client, tenant) == before

    # a card plan grants 正式会员: refused as well
    sku = make_sku(session_factory, tenant.id, price=9900, free_shipping=True, title="年卡")
    with unit_of_work(session_factory) as s:
        from siyu.catalog.models import Sku

        product_id = s.get(Sku, sku).product_id  # type: ignore[union-attr]
        service.save_card_plan(s, tenant.id, CardPlanIn(name="年卡", product_id=product_id, level_id=ids["正式会员"]),
                               plan_id=None, actor=h.SYSTEM)
    r = client.delete(f"{LEVELS}/{ids['正式会员']}", headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "level_in_use", r.text
    assert _ladder(client, tenant) == before


def test_another_merchants_level_is_a_404_to_delete(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    from siyu.tenancy import service as tenancy_service
    from tests.conftest import unique

    with unit_of_work(session_factory) as s:
        other = tenancy_service.create_merchant(s, code=unique("m"), name="other").id
    foreign = h.add_level(session_factory, other, 1, "外店等级", min_spend=100)
    r = client.delete(f"{LEVELS}/{foreign}", headers=tenant.admin_headers)
    assert r.status_code == 404, r.text
    with session_factory() as s:
        assert [lv.name for lv in service.list_levels(s, other)] == ["外店等级"]


@pytest.mark.parametrize("rank", [lv.rank for lv in demo_data.LADDER])
def test_the_demo_ladder_is_in_order(rank: int) -> None:
    """Each demo level, saved against the three others, passes the ladder check."""
    from siyu.loyalty.models import Level

    others = [Level(**lv.model_dump()) for lv in demo_data.LADDER if lv.rank != rank]
    data = next(lv for lv in demo_data.LADDER if lv.rank == rank)
    service._check_ladder(others, data)


def test_the_check_names_the_nearest_offending_level() -> None:
    from siyu.loyalty.models import Level

    others = [Level(rank=1, name="一", min_orders=5), Level(rank=2, name="二", min_orders=8)]
    with pytest.raises(DomainError) as got:
        service._check_ladder(others, LevelIn(rank=3, name="三", min_orders=4))
    assert (got.value.params["lower"], got.value.params["higher"]) == ("二", "三")
    assert got.value.params["lower_value"] == "8" and got.value.params["higher_value"] == "4"
