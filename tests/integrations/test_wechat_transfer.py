"""The transfer-bills client (商家转账) against the local fake WeChat Pay: signed requests,
verified answers, idempotency by out_bill_no, query, cancel and the finished notification."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from siyu.integrations.wechat.errors import WechatApiError
from siyu.integrations.wechat.pay_v3 import verify_notification
from siyu.integrations.wechat.transfer import NOTIFICATION_EVENT, WechatTransferClient, bill_from_resource
from siyu.testing.fake_wechat import FakeMerchant, FakeWechat

INFOS = [("岗位类型", "分销员"), ("报酬说明", "分销佣金提现")]


@pytest.fixture
def transfer_client(fake: FakeWechat, merchant: FakeMerchant) -> Iterator[WechatTransferClient]:
    with WechatTransferClient(fake.pay_config(merchant)) as client:
        yield client


def _send(client: WechatTransferClient, no: str, amount: int = 1200, **kw: object) -> object:
    return client.create_transfer_bill(
        no,
        "o-user-1",
        amount,
        "佣金提现",
        scene_id="1005",
        report_infos=INFOS,
        notify_url="https://shop.example.com/api/pay/wechat/transfer-notify/demo",
        **kw,  # type: ignore[arg-type]
    )


def test_create_is_idempotent_by_out_bill_no(fake: FakeWechat, transfer_client: WechatTransferClient) -> None:
    no = f"WD{secrets.randbelow(10**9)}"
    first = _send(transfer_client, no)
    again = _send(transfer_client, no)
    assert first == again  # the same bill: a retried send never pays twice
    assert first.state == "WAIT_USER_CONFIRM" and first.package_info  # type: ignore[attr-defined]
    assert fake.count_requests("/v3/fund-app/mch-transfer/transfer-bills") >= 2
    assert fake.transfer(no)["transfer_amount"] == 1200
    with pytest.raises(WechatApiError) as err:
        _send(transfer_client, no, amount=1300)
    assert err.value.errcode == "INVALID_REQUEST"


def test_bad_input_is_refused_before_sending(transfer_client: WechatTransferClient) -> None:
    with pytest.raises(ValueError):
        _send(transfer_client, "WD-1")  # not letters and digits only
    with pytest.raises(ValueError):
        _send(transfer_client, "WD2", amount=0)
    with pytest.raises(ValueError):
        _send(transfer_client, "WD3", amount=200_000)  # needs the encrypted real name


def test_query_and_finished_notification(
    fake: FakeWechat, merchant: FakeMerchant, transfer_client: WechatTransferClient
) -> None:
    no = f"WD{secrets.randbelow(10**9)}"
    created = _send(transfer_client, no)
    assert transfer_client.query_transfer_bill(no).state == "WAIT_USER_CONFIRM"
    headers, body = fake.finish_transfer(no, state="SUCCESS")
    note = verify_notification(fake.pay_config(merchant), headers, body)
    assert note.event_type == NOTIFICATION_EVENT
    bill = bill_from_resource(note.resource)
    assert (bill.out_bill_no, bill.state, bill.transfer_amount, bill.mch_id) == (
        no,
        "SUCCESS",
        1200,
        merchant.mchid,
    )
    assert bill.transfer_bill_no == created.transfer_bill_no  # type: ignore[attr-defined]
    queried = transfer_client.query_transfer_bill(no)
    assert (queried.state, queried.final, queried.openid) == ("SUCCESS", True, "o-user-1")
    with pytest.raises(WechatApiError) as err:
        transfer_client.query_transfer_bill("WDNOSUCHBILL")
    assert (err.value.errcode, err.value.http_status) == ("NOT_FOUND", 404)


def test_cancel_before_confirmation(fake: FakeWechat, transfer_client: WechatTransferClient) -> None:
    no = f"WD{secrets.randbelow(10**9)}"
    _send(transfer_client, no)
    assert transfer_client.cancel_transfer_bill(no).state == "CANCELING"
    assert transfer_client.query_transfer_bill(no).state == "CANCELLED"
    with pytest.raises(WechatApiError):
        transfer_client.cancel_transfer_bill(no)
