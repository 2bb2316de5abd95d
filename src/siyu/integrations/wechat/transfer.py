"""WeChat Pay merchant transfer to a user's balance (商家转账, API v3 "transfer bills").

The same signing and answer verification as ``pay_v3.WechatPayClient`` (this client extends
it); only the transfer endpoints are added:

- ``POST /v3/fund-app/mch-transfer/transfer-bills`` — create a transfer bill. Body: ``appid``,
  ``out_bill_no`` (merchant number: letters and digits, at most 32), ``transfer_scene_id`` (a
  scene the merchant has opened, e.g. ``1005`` 佣金报酬), ``openid`` (of ``appid``),
  ``transfer_amount`` (fen), ``transfer_remark`` (at most 32 characters, shown to the user),
  optional ``notify_url``, ``user_recv_perception`` (what the user sees, per scene) and
  ``transfer_scene_report_infos`` (``[{info_type, info_content}]``, required per scene), and
  ``user_name`` (the payee's real name, required from 2,000 yuan = ``NAME_REQUIRED_FROM`` fen,
  optional from 0.3 yuan: WeChat Pay then checks it against the openid's real-name record and the
  bill fails on a mismatch). ``user_name`` is RSAES-OAEP (SHA-1) encrypted with the platform
  public key (``pay_v3.encrypt_sensitive``) and the request's ``Wechatpay-Serial`` header names
  that key (a ``PUB_KEY_ID_...`` or a platform-certificate serial); a wrong serial or key is
  refused ``400 PARAM_ERROR``. Answer: ``out_bill_no``, ``transfer_bill_no``, ``create_time``,
  ``state``, and ``package_info`` while the user must confirm (``WAIT_USER_CONFIRM``: the
  mini-program passes it to ``wx.requestMerchantTransfer``) or ``fail_reason``.
  **Idempotent by out_bill_no**: sending the same ``out_bill_no`` again returns the same bill
  (it never pays twice); a retry after a network error must reuse it.
- ``GET /v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}`` — the bill:
  ``mch_id``, ``out_bill_no``, ``transfer_bill_no``, ``appid``, ``state``, ``transfer_amount``,
  ``transfer_remark``, ``fail_reason``, ``openid``, ``create_time``, ``update_time``. 404
  ``NOT_FOUND`` when WeChat Pay has no such bill.
- ``POST /v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}/cancel`` — cancel
  before the user confirmed (any state that is not final); answer ``out_bill_no``,
  ``transfer_bill_no``, ``state`` (``CANCELING``: accepted, the bill becomes ``CANCELLED``
  asynchronously — query it; a repeated cancel answers ``CANCELING`` or ``CANCELLED``),
  ``update_time``. A ``SUCCESS`` or ``FAIL`` bill cannot be cancelled: ``400 INVALID_REQUEST``
  (query the bill for its state); an unknown bill is ``404 NOT_FOUND``.
- A bill the user leaves in ``WAIT_USER_CONFIRM`` for ``CONFIRM_WINDOW`` (24 hours) is closed by
  WeChat Pay: ``CANCELLED`` (the funds return to the merchant).
- Notification ``MCHTRANSFER.BILL.FINISHED`` (signed and AES-GCM encrypted like payment
  notifications, ``pay_v3.verify_notification``); its resource carries the bill's final state.

States: ``ACCEPTED``, ``PROCESSING``, ``WAIT_USER_CONFIRM``, ``TRANSFERING`` (not final),
``SUCCESS``, ``FAIL``, ``CANCELLED`` (final), ``CANCELING`` (becomes ``CANCELLED``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from siyu.integrations.wechat.errors import WechatApiError
from siyu.integrations.wechat.pay_v3 import WechatPayClient, _require_fen, _segment, encrypt_sensitive

__all__ = [
    "CONFIRM_WINDOW",
    "FINAL_STATES",
    "NAME_REQUIRED_FROM",
    "NOTIFICATION_EVENT",
    "TransferBill",
    "WechatTransferClient",
    "bill_from_resource",
]

TRANSFER_PATH: Final = "/v3/fund-app/mch-transfer/transfer-bills"
NOTIFICATION_EVENT: Final = "MCHTRANSFER.BILL.FINISHED"
OUT_BILL_NO_RE: Final = re.compile(r"^[0-9A-Za-z]{1,32}$")
MAX_REMARK: Final = 32
NAME_REQUIRED_FROM: Final = 200_000  # fen; from 2,000 yuan WeChat Pay needs the encrypted user_name
MAX_WITHOUT_NAME: Final = NAME_REQUIRED_FROM - 1
NAME_CHECK_FROM: Final = 30  # fen; WeChat Pay checks a name only from 0.3 yuan
MAX_NAME: Final = 32  # characters; a real name, encrypted before sending

CONFIRM_WINDOW: Final = dt.timedelta(hours=24)  # an unconfirmed bill is CANCELLED by WeChat Pay after this

SUCCESS: Final = "SUCCESS"
FAIL: Final = "FAIL"
CANCELLED: Final = "CANCELLED"
FINAL_STATES: Final = frozenset({SUCCESS, FAIL, CANCELLED})
PENDING_STATES: Final = frozenset({"ACCEPTED", "PROCESSING", "WAIT_USER_CONFIRM", "TRANSFERING", "CANCELING"})


@dataclass(frozen=True)
class TransferBill:
    out_bill_no: str
    transfer_bill_no: str | None
    state: str
    transfer_amount: int | None = None
    openid: str | None = None
    mch_id: str | None = None
    fail_reason: str | None = None
    package_info: str | None = None
    create_time: str | None = None
    update_time: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def bill_from_resource(data: Mapping[str, Any]) -> TransferBill:
    """A bill from an answer or a decrypted notification resource."""
    state = data.get("state")
    out_bill_no = data.get("out_bill_no")
    if not isinstance(state, str) or state not in FINAL_STATES | PENDING_STATES:
        raise WechatApiError("INVALID_ANSWER", f"unknown transfer state {state!r}")
    if not isinstance(out_bill_no, str) or not out_bill_no:
        raise WechatApiError("INVALID_ANSWER", "the transfer bill has no out_bill_no")
    amount = data.get("transfer_amount")

    def text(name: str) -> str | None:
        value = data.get(name)
        return None if value in (None, "") else str(value)

    return TransferBill(
        out_bill_no=out_bill_no,
        transfer_bill_no=text("transfer_bill_no"),
        state=state,
        transfer_amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
        openid=text("openid"),
        mch_id=text("mch_id") or text("mchid"),
        fail_reason=text("fail_reason"),
        package_info=text("package_info"),
        create_time=text("create_time"),
        update_time=text("update_time"),
    )


class WechatTransferClient(WechatPayClient):
    """Transfer bills for one direct merchant (see the module docs)."""

    def create_transfer_bill(
        self,
        out_bill_no: str,
        openid: str,
        amount_fen: int,
        remark: str,
        *,
        scene_id: str,
        report_infos: Sequence[tuple[str, str]],
        notify_url: str | None = None,
        user_recv_perception: str | None = None,
        user_name: str | None = None,
    ) -> TransferBill:
        """Create (or, for a known ``out_bill_no``, fetch again) a transfer bill. ``user_name`` is the
        payee's real name in clear: required from ``NAME_REQUIRED_FROM`` fen, encrypted here and
        never logged; a retry must pass the same name (WeChat compares the decrypted value)."""
        if not OUT_BILL_NO_RE.match(out_bill_no):
            raise ValueError("out_bill_no must be 1-32 letters or digits")
        _require_fen(amount_fen, "amount_fen")
        name = (user_name or "").strip()
        if amount_fen >= NAME_REQUIRED_FROM and not name:
            raise ValueError("transfers from 2,000 yuan need the payee's real name (user_name)")
        if name and (amount_fen < NAME_CHECK_FROM or len(name) > MAX_NAME):
            raise ValueError("user_name is accepted from 0.3 yuan and at most 32 characters")
        body: dict[str, Any] = {
            "appid": self.config.appid,
            "out_bill_no": out_bill_no,
            "transfer_scene_id": scene_id,
            "openid": openid,
            "transfer_amount": amount_fen,
            "transfer_remark": remark[:MAX_REMARK],
            "transfer_scene_report_infos": [
                {"info_type": kind, "info_content": content} for kind, content in report_infos
            ],
        }
        if notify_url:
            body["notify_url"] = notify_url
        if user_recv_perception:
            body["user_recv_perception"] = user_recv_perception
        headers: dict[str, str] = {}
        if name:
            serial, key = self.config.encryption_key()
            body["user_name"] = encrypt_sensitive(key, name)
            headers["Wechatpay-Serial"] = serial
        return bill_from_resource(self._call("POST", TRANSFER_PATH, body=body, headers=headers))

    def query_transfer_bill(self, out_bill_no: str) -> TransferBill:
        return bill_from_resource(self._call("GET", f"{TRANSFER_PATH}/out-bill-no/{_segment(out_bill_no)}"))

    def cancel_transfer_bill(self, out_bill_no: str) -> TransferBill:
        """Ask WeChat Pay to cancel a bill the user has not confirmed: the answer's state is
        ``CANCELING`` (query later for ``CANCELLED``) or, for a bill already cancelled,
        ``CANCELLED``. ``WechatApiError`` ``INVALID_REQUEST`` (400): the bill is final (``SUCCESS`` /
        ``FAIL``); ``NOT_FOUND`` (404): no such bill. Safe to retry."""
        if not OUT_BILL_NO_RE.match(out_bill_no):
            raise ValueError("out_bill_no must be 1-32 letters or digits")
        return bill_from_resource(
            self._call("POST", f"{TRANSFER_PATH}/out-bill-no/{_segment(out_bill_no)}/cancel")
        )
