"""Channel codes over the admin and store APIs: a registration through a staff member's code
binds the member to that staff member and applies the code's tags; scans and registrations are
counted; the QR image is a PNG; another merchant's codes, staff and tags are 404."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.members.models import ChannelCode, ChannelScan
from tests.conftest import Tenant
from tests.members.api_helpers import ADMIN, STORE, count, login, ok, other_tenant, refused, staff

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _tag(client: TestClient, tenant: Tenant, name: str = "门店扫码") -> int:
    g = ok(client.post(f"{ADMIN}/tag-groups", json={"name": "渠道"}, headers=tenant.admin_headers), 201)
    return int(ok(client.post(f"{ADMIN}/tags", json={"group_id": g["id"], "name": name}, headers=tenant.admin_headers),
                  201)["id"])


def _code(client: TestClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    full = {"kind": "staff", "name": "导购小王", "scene": "s-wang", **body}
    return dict(ok(client.post(f"{ADMIN}/channel-codes", json=full, headers=tenant.admin_headers), 201))


def test_registration_through_a_staff_code_binds_the_member_to_that_staff_and_tags_them(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    staff_id, guide = staff(session_factory, tenant)
    tag = _tag(client, tenant)
    code = _code(client, tenant, staff_id=staff_id, tag_ids=[tag])
    # the guide finds their own code and its QR image to share (but cannot create or change codes)
    assert [c["id"] for c in ok(client.get(f"{ADMIN}/channel-codes", headers=guide))] == [code["id"]]
    assert client.get(f"{ADMIN}/channel-codes/{code['id']}/qr.png", headers=guide).content.startswith(b"\x89PNG")
    refused(client.patch(f"{ADMIN}/channel-codes/{code['id']}", json={"name": "x"}, headers=guide), 403, "forbidden")
    member_id, _ = login(client, tenant, channel="s-wang")
    member = ok(client.get(f"{ADMIN}/members/{member_id}", headers=tenant.admin_headers))
    assert (member["staff_id"], member["registration_channel"]) == (staff_id, "s-wang")
    tags = ok(client.get(f"{ADMIN}/members/{member_id}/tags", headers=tenant.admin_headers))
    assert [(t["tag_id"], t["source"]) for t in tags] == [(tag, f"channel_code:{code['id']}")]
    history = ok(client.get(f"{ADMIN}/members/{member_id}/ownership-history", headers=tenant.admin_headers))
    assert [(h["from_staff_id"], h["to_staff_id"], h["reason"]) for h in history] == [(None, staff_id, "channel_code")]
    plain, _ = login(client, tenant)
    assert ok(client.get(f"{ADMIN}/members/{plain}", headers=tenant.admin_headers))["staff_id"] is None


def test_scans_and_registrations_are_counted_per_code(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    code = _code(client, tenant, kind="store_counter", name="收银台", scene="counter-1")
    other = _code(client, tenant, kind="offline_flyer", name="传单", scene="flyer-1")
    for anon in ("a1", "a1", "a2"):
        out = ok(client.post(f"{STORE}/channel-codes/counter-1/scan", json={"anonymous_id": anon},
                             headers=tenant.store_headers), 201)
        assert out == {"scene": "counter-1", "kind": "store_counter", "name": "收银台"}
    login(client, tenant, channel="counter-1")
    stats = {s["channel_code_id"]: s for s in ok(client.get(f"{ADMIN}/channel-codes/stats", headers=tenant.admin_headers))}
    assert {k: stats[code["id"]][k] for k in ("scans", "unique_scanners", "registrations", "first_orders", "gmv")} == {
        "scans": 3, "unique_scanners": 2, "registrations": 1, "first_orders": 0, "gmv": 0,
    }
    assert (stats[other["id"]]["scans"], stats[other["id"]]["registrations"]) == (0, 0)
    refused(client.post(f"{STORE}/channel-codes/no-such-scene/scan", json={}, headers=tenant.store_headers),
            404, "not_found")
    ok(client.patch(f"{ADMIN}/channel-codes/{code['id']}", json={"active": False}, headers=tenant.admin_headers))
    refused(client.post(f"{STORE}/channel-codes/counter-1/scan", json={}, headers=tenant.store_headers), 404, "not_found")
    assert count(session_factory, ChannelScan, tenant.id) == 3


def test_qr_png_is_a_png_image_of_the_landing_url(client: TestClient, tenant: Tenant) -> None:
    code = _code(client, tenant, kind="offline_flyer", name="传单", scene="flyer-2", staff_id=None)
    r = client.get(f"{ADMIN}/channel-codes/{code['id']}/qr.png", headers=tenant.admin_headers)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(PNG_SIGNATURE)
    doc = client.app.openapi()["paths"]["/api/admin/v1/channel-codes/{code_id}/qr.png"]["get"]  # type: ignore[attr-defined]
    assert list(doc["responses"]["200"]["content"]) == ["image/png"]


def test_qr_png_of_a_landing_url_with_a_run_of_zeros_and_of_one_too_long_for_a_qr_code(
    client: TestClient, tenant: Tenant
) -> None:
    """qrcode 8.2 failed (glog(0), a 500) on a run of zeros, which its digit segments turn into a
    block of zero bytes; a URL longer than a QR code holds was a 500 too (both found fuzzing)."""
    for i, landing in enumerate(("0" * 146, "https://shop.example.com/p?id=" + "0" * 400, "{base}/s/{merchant}?scene={scene}")):
        code = _code(client, tenant, kind="offline_flyer", name="传单", scene=f"z{i}000000000000000000000", staff_id=None,
                     landing_url=landing)
        r = client.get(f"{ADMIN}/channel-codes/{code['id']}/qr.png", headers=tenant.admin_headers)
        assert r.status_code == 200 and r.content.startswith(PNG_SIGNATURE), (landing, r.text)
    code = _code(client, tenant, kind="offline_flyer", name="长链接", scene="too-long", staff_id=None, landing_url="中" * 800)
    r = client.get(f"{ADMIN}/channel-codes/{code['id']}/qr.png", headers=tenant.admin_headers)
    refused(r, 422, "channel_qr_too_long")
    assert "2400" in r.json()["message"]


def test_scene_is_unique_per_merchant_and_refs_must_be_the_merchants(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    other = other_tenant(session_factory)
    foreign_staff, _ = staff(session_factory, other)
    foreign_tag = _tag(client, other)
    theirs = _code(client, other, kind="other", name="他们的", scene="same-scene")
    _code(client, tenant, kind="other", name="我们的", scene="same-scene")  # another merchant's scene is no clash
    refused(client.post(f"{ADMIN}/channel-codes", json={"kind": "other", "name": "x", "scene": "same-scene"},
                        headers=tenant.admin_headers), 409, "channel_scene_taken")
    refused(client.post(f"{ADMIN}/channel-codes", json={"kind": "staff", "name": "x", "scene": "x1", "staff_id": foreign_staff},
                        headers=tenant.admin_headers), 404, "not_found")
    refused(client.post(f"{ADMIN}/channel-codes", json={"kind": "other", "name": "x", "scene": "x2", "tag_ids": [foreign_tag]},
                        headers=tenant.admin_headers), 404, "not_found")
    refused(client.get(f"{ADMIN}/channel-codes/{theirs['id']}", headers=tenant.admin_headers), 404, "not_found")
    refused(client.get(f"{ADMIN}/channel-codes/{theirs['id']}/qr.png", headers=tenant.admin_headers), 404, "not_found")
    refused(client.patch(f"{ADMIN}/channel-codes/{theirs['id']}", json={"name": "改"}, headers=tenant.admin_headers),
            404, "not_found")
    body = client.post(f"{ADMIN}/channel-codes", json={"kind": "other", "name": "x", "scene": "has space"},
                       headers=tenant.admin_headers)
    assert body.status_code == 422 and body.json()["fields"][0]["path"] == "body.scene"
    assert count(session_factory, ChannelCode, tenant.id) == 1
    assert [c["scene"] for c in ok(client.get(f"{ADMIN}/channel-codes", headers=tenant.admin_headers))] == ["same-scene"]


def test_wxacode_of_a_sandbox_merchant_is_409_wechat_not_configured(client: TestClient, tenant: Tenant) -> None:
    code = _code(client, tenant, kind="other", name="x", scene="wx-1")
    refused(client.get(f"{ADMIN}/channel-codes/{code['id']}/wxacode.png", headers=tenant.admin_headers),
            409, "wechat_not_configured")


def test_wxacode_of_a_configured_merchant_is_the_png_from_wechat(
    app: Any, settings: Any, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    import secrets

    from siyu.app import create_app
    from siyu.testing.fake_wechat import FakeWechat

    with FakeWechat() as fake:
        appid, secret = f"wx{secrets.token_hex(8)}", secrets.token_hex(16)
        fake.register_app(appid, secret)
        wx_app = create_app(settings.model_copy(update={"wechat_api_base": fake.base_url}))
        with TestClient(wx_app) as wx:
            ok(wx.patch(f"{ADMIN}/merchant", json={"wechat_appid": appid, "wechat_app_secret": secret},
                        headers=tenant.admin_headers))
            code = _code(wx, tenant, kind="other", name="x", scene="wx-2", page="pages/index/index")
            r = wx.get(f"{ADMIN}/channel-codes/{code['id']}/wxacode.png", headers=tenant.admin_headers)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/png" and r.content.startswith(PNG_SIGNATURE)


WECHAT_SCENE_CHARS = "!#$&'()*+,/:;=?@-._~"


def test_a_scene_with_a_slash_or_any_character_wechat_allows_is_reachable_by_the_scan_route(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """WeChat's scene may hold ``/``: the scan route takes it (as is or as ``%2F``), and every other
    character WeChat allows when percent-encoded; the scans and the registration are counted."""
    from urllib.parse import quote

    scenes = ["store/1", "a/b/scan", "Zz09" + WECHAT_SCENE_CHARS, "x" * 32]
    codes = {s: _code(client, tenant, kind="other", name=f"码{i}", scene=s, staff_id=None) for i, s in enumerate(scenes)}
    for scene in scenes:
        out = ok(client.post(f"{STORE}/channel-codes/{quote(scene, safe='')}/scan", json={"anonymous_id": "a1"},
                             headers=tenant.store_headers), 201)
        assert out == {"scene": scene, "kind": "other", "name": codes[scene]["name"]}
        login(client, tenant, channel=scene)
    for raw in ("store/1", "a/b/scan"):  # a slash sent as is
        assert ok(client.post(f"{STORE}/channel-codes/{raw}/scan", json={"anonymous_id": "a2"},
                              headers=tenant.store_headers), 201)["scene"] == raw
    stats = {s["scene"]: s for s in ok(client.get(f"{ADMIN}/channel-codes/stats", headers=tenant.admin_headers))}
    assert {s: (stats[s]["scans"], stats[s]["unique_scanners"], stats[s]["registrations"]) for s in scenes} == {
        "store/1": (2, 2, 1), "a/b/scan": (2, 2, 1), "Zz09" + WECHAT_SCENE_CHARS: (1, 1, 1), "x" * 32: (1, 1, 1),
    }
    refused(client.post(f"{STORE}/channel-codes/store/2/scan", json={}, headers=tenant.store_headers), 404, "not_found")
    refused(client.post(f"{STORE}/channel-codes/store%2F1%2Fscan/scan", json={}, headers=tenant.store_headers),
            404, "not_found")
    assert count(session_factory, ChannelScan, tenant.id) == 6


def test_a_scene_outside_wechat_rules_is_422_at_create_in_both_languages_and_saves_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    pattern = r"^[A-Za-z0-9!#$&'()*+,/:;=?@\-._~]+$"
    for scene, code, en, zh in (
        ("has space", "string_pattern_mismatch", f"Must match {pattern}", f"格式不正确，应符合 {pattern}"),
        ("渠道1", "string_pattern_mismatch", f"Must match {pattern}", f"格式不正确，应符合 {pattern}"),
        ("50%off", "string_pattern_mismatch", f"Must match {pattern}", f"格式不正确，应符合 {pattern}"),
        ("a\\b", "string_pattern_mismatch", f"Must match {pattern}", f"格式不正确，应符合 {pattern}"),
        ("x" * 33, "string_too_long", "At most 32 characters", "最多 32 个字符"),
        ("", "string_too_short", "At least 1 characters", "至少 1 个字符"),
    ):
        for lang, message in (("en", en), ("zh-CN", zh)):
            body = refused(client.post(f"{ADMIN}/channel-codes", json={"kind": "other", "name": "x", "scene": scene},
                                       headers={**tenant.admin_headers, "Accept-Language": lang}),
                           422, "validation_error")
            assert [(f["path"], f["code"], f["message"]) for f in body["fields"]] == [("body.scene", code, message)]
    assert count(session_factory, ChannelCode, tenant.id) == 0


def test_the_landing_url_percent_encodes_the_scene() -> None:
    from siyu.members.channel_codes import landing_url

    code = ChannelCode(scene="a/b&c=d#e+f?g", landing_url=None)
    assert landing_url(code, "shop1", "https://siyu.example/") == (
        "https://siyu.example/s/shop1?scene=a%2Fb%26c%3Dd%23e%2Bf%3Fg"
    )
    code = ChannelCode(scene="flyer-2._~", landing_url="https://m.example/{merchant}/go/{scene}")
    assert landing_url(code, "shop1", "https://siyu.example") == "https://m.example/shop1/go/flyer-2._~"
