"""MiniProgramClient against the fake WeChat server (real HTTP on a local port)."""

from __future__ import annotations

import io
import json
import threading

import httpx
import pytest
from PIL import Image

from siyu.integrations.wechat.errors import WechatApiError
from siyu.integrations.wechat.miniprogram import MiniProgramClient, PhoneInfo, Session
from siyu.testing.fake_wechat import FakeWechat


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _errcode(excinfo: pytest.ExceptionInfo[WechatApiError]) -> int | str:
    return excinfo.value.errcode


# -- code exchange -----------------------------------------------------------------------------


def test_code_to_session_returns_the_identity(fake: FakeWechat, mini_client: MiniProgramClient) -> None:
    fake.register_code("code-ok", openid="o-alice", unionid="u-alice")

    session = mini_client.code_to_session("code-ok")

    assert isinstance(session, Session)
    assert (session.openid, session.unionid) == ("o-alice", "u-alice")
    assert session.session_key


def test_code_to_session_without_unionid(fake: FakeWechat, mini_client: MiniProgramClient) -> None:
    fake.register_code("code-no-union", openid="o-bob")

    assert mini_client.code_to_session("code-no-union").unionid is None


def test_unknown_code_is_40029(mini_client: MiniProgramClient) -> None:
    with pytest.raises(WechatApiError) as excinfo:
        mini_client.code_to_session("never-issued")
    assert _errcode(excinfo) == 40029


def test_a_code_works_once_then_40163(fake: FakeWechat, mini_client: MiniProgramClient) -> None:
    fake.register_code("code-once", openid="o-carol")
    mini_client.code_to_session("code-once")

    with pytest.raises(WechatApiError) as excinfo:
        mini_client.code_to_session("code-once")
    assert _errcode(excinfo) == 40163


def test_a_code_of_another_app_is_invalid(fake: FakeWechat, mini_client: MiniProgramClient) -> None:
    fake.register_code("code-other-app", openid="o-dan", appid="wx-someone-else")

    with pytest.raises(WechatApiError) as excinfo:
        mini_client.code_to_session("code-other-app")
    assert _errcode(excinfo) == 40029


def test_wrong_appid_and_wrong_secret(fake: FakeWechat, app_credentials: tuple[str, str]) -> None:
    appid, _ = app_credentials
    fake.register_code("code-x", openid="o-x")
    with (
        MiniProgramClient("wx-unknown", "whatever", base_url=fake.base_url) as client,
        pytest.raises(WechatApiError) as excinfo,
    ):
        client.code_to_session("code-x")
    assert _errcode(excinfo) == 40013
    with (
        MiniProgramClient(appid, "wrong-secret", base_url=fake.base_url) as client,
        pytest.raises(WechatApiError) as excinfo,
    ):
        client.code_to_session("code-x")
    assert _errcode(excinfo) == 40125


@pytest.mark.parametrize("errcode", [45011, 40226, -1])
def test_other_errcodes_raise(errcode: int) -> None:
    """WeChat answers errors with HTTP 200 (and, for jscode2session, a text/plain JSON body)."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.dumps({"errcode": errcode, "errmsg": "nope, rid: 1"}).encode()
        return httpx.Response(200, content=body, headers={"Content-Type": "text/plain"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        client = MiniProgramClient("wx1", "s1", base_url="https://wechat.invalid", http=http)
        with pytest.raises(WechatApiError) as excinfo:
            client.code_to_session("c")
    assert excinfo.value.errcode == errcode
    assert excinfo.value.errmsg.startswith("nope")


def test_http_failure_is_an_api_error() -> None:
    with httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(502, text="bad gateway"))
    ) as http:
        client = MiniProgramClient("wx1", "s1", base_url="https://wechat.invalid", http=http)
        with pytest.raises(WechatApiError) as excinfo:
            client.code_to_session("c")
    assert excinfo.value.http_status == 502


def test_requests_carry_the_documented_parameters(fake: FakeWechat, mini_client: MiniProgramClient) -> None:
    fake.register_code("code-params", openid="o-p")
    mini_client.code_to_session("code-params")

    recorded = [r for r in fake.requests if r.path == "/sns/jscode2session" and "code-params" in r.query][-1]
    query = dict(httpx.QueryParams(recorded.query))
    assert query == {
        "appid": mini_client.appid,
        "secret": query["secret"],
        "js_code": "code-params",
        "grant_type": "authorization_code",
    }


# -- access token ------------------------------------------------------------------------------


def test_access_token_is_cached_until_five_minutes_before_expiry(
    fake: FakeWechat, app_credentials: tuple[str, str]
) -> None:
    appid, secret = app_credentials
    clock = FakeClock()
    with MiniProgramClient(appid, secret, base_url=fake.base_url, clock=clock) as client:
        before = fake.count_requests("/cgi-bin/token")
        first = client.get_access_token()
        clock.now += 7200 - 300 - 1
        assert client.get_access_token() == first
        assert fake.count_requests("/cgi-bin/token") == before + 1

        clock.now += 2  # now inside the 5-minute margin
        second = client.get_access_token()
    assert second != first
    assert fake.count_requests("/cgi-bin/token") == before + 2


def test_concurrent_callers_fetch_the_token_once(fake: FakeWechat, mini_client: MiniProgramClient) -> None:
    before = fake.count_requests("/cgi-bin/token")
    tokens: list[str] = []
    threads = [
        threading.Thread(target=lambda: tokens.append(mini_client.get_access_token())) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(tokens)) == 1 and len(tokens) == 8
    assert fake.count_requests("/cgi-bin/token") == before + 1


@pytest.mark.parametrize("invalidate", ["revoke_access_tokens", "expire_access_tokens"])
def test_token_rejected_40001_or_42001_is_refreshed_once(
    fake: FakeWechat, mini_client: MiniProgramClient, invalidate: str
) -> None:
    stale = mini_client.get_access_token()
    getattr(fake, invalidate)()
    fake.register_phone_code("phone-after-refresh", "13800138000")
    before = fake.count_requests("/cgi-bin/token")

    info = mini_client.get_phone_number("phone-after-refresh")

    assert info.pure_phone_number == "13800138000"
    assert fake.count_requests("/cgi-bin/token") == before + 1
    assert mini_client.get_access_token() != stale


def test_a_token_that_stays_rejected_is_not_retried_forever() -> None:
    calls = {"token": 0, "phone": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/cgi-bin/token":
            calls["token"] += 1
            return httpx.Response(200, json={"access_token": f"t{calls['token']}", "expires_in": 7200})
        calls["phone"] += 1
        return httpx.Response(200, json={"errcode": 40001, "errmsg": "invalid credential"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        client = MiniProgramClient("wx1", "s1", base_url="https://wechat.invalid", http=http)
        with pytest.raises(WechatApiError) as excinfo:
            client.get_phone_number("c")
    assert excinfo.value.errcode == 40001
    assert calls == {"token": 2, "phone": 2}


# -- phone number and QR code ------------------------------------------------------------------


def test_get_phone_number(fake: FakeWechat, mini_client: MiniProgramClient) -> None:
    fake.register_phone_code("phone-1", "13912345678")

    info = mini_client.get_phone_number("phone-1")

    assert info == PhoneInfo(phone_number="13912345678", pure_phone_number="13912345678", country_code="86")
    posted = [r for r in fake.requests if r.path == "/wxa/business/getuserphonenumber"][-1]
    assert json.loads(posted.body) == {"code": "phone-1"}
    assert "access_token=" in posted.query


def test_foreign_phone_number_keeps_the_country_code(
    fake: FakeWechat, mini_client: MiniProgramClient
) -> None:
    fake.register_phone_code("phone-hk", "91234567", country_code="852")

    info = mini_client.get_phone_number("phone-hk")

    assert (info.phone_number, info.pure_phone_number, info.country_code) == (
        "+85291234567",
        "91234567",
        "852",
    )


def test_phone_code_unknown_or_reused(fake: FakeWechat, mini_client: MiniProgramClient) -> None:
    with pytest.raises(WechatApiError) as excinfo:
        mini_client.get_phone_number("phone-unknown")
    assert _errcode(excinfo) == 40029

    fake.register_phone_code("phone-once", "13700000000")
    mini_client.get_phone_number("phone-once")
    with pytest.raises(WechatApiError) as excinfo:
        mini_client.get_phone_number("phone-once")
    assert _errcode(excinfo) == 40163


def test_unlimited_qrcode_is_an_image(mini_client: MiniProgramClient) -> None:
    data = mini_client.get_unlimited_qrcode("m=7&c=abc", page="pages/index/index", width=430)

    image = Image.open(io.BytesIO(data))
    image.verify()
    assert image.format == "PNG"


def test_unlimited_qrcode_json_answer_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/cgi-bin/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 7200})
        return httpx.Response(200, json={"errcode": 41030, "errmsg": "invalid page"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        client = MiniProgramClient("wx1", "s1", base_url="https://wechat.invalid", http=http)
        with pytest.raises(WechatApiError) as excinfo:
            client.get_unlimited_qrcode("s", page="pages/missing")
    assert excinfo.value.errcode == 41030


def test_unlimited_qrcode_scene_length_is_checked_locally(mini_client: MiniProgramClient) -> None:
    with pytest.raises(ValueError):
        mini_client.get_unlimited_qrcode("x" * 33)
