"""Fixtures: one fake WeChat server on a real local port for the session; a fresh app and
merchant (unique ids) per test, so tests never share state."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from siyu.integrations.wechat.miniprogram import MiniProgramClient
from siyu.integrations.wechat.pay_v3 import WechatPayClient
from siyu.testing.fake_wechat import FakeMerchant, FakeWechat

NOTIFY_URL = "https://shop.example.com/api/pay/wechat/notify/demo"


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeWechat]:
    with FakeWechat() as server:
        yield server


@pytest.fixture
def app_credentials(fake: FakeWechat) -> tuple[str, str]:
    appid, secret = f"wx{secrets.token_hex(8)}", secrets.token_hex(16)
    fake.register_app(appid, secret)
    return appid, secret


@pytest.fixture
def mini_client(fake: FakeWechat, app_credentials: tuple[str, str]) -> Iterator[MiniProgramClient]:
    appid, secret = app_credentials
    with MiniProgramClient(appid, secret, base_url=fake.base_url) as client:
        yield client


@pytest.fixture
def merchant(fake: FakeWechat) -> FakeMerchant:
    return fake.make_merchant(f"19{secrets.randbelow(10**8):08d}", f"wx{secrets.token_hex(8)}")


@pytest.fixture
def pay_client(fake: FakeWechat, merchant: FakeMerchant) -> Iterator[WechatPayClient]:
    with WechatPayClient(fake.pay_config(merchant, notify_url=NOTIFY_URL)) as client:
        yield client
