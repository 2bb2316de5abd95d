"""WeChat: the mini-program server API (``miniprogram``) and WeChat Pay API v3 (``pay_v3``).

Both clients speak plain HTTPS through ``httpx`` and take their base URL as a constructor
argument, so tests (and local development) can point them at ``siyu.testing.fake_wechat``.
"""

from siyu.integrations.wechat.errors import (
    NotificationError,
    ResponseSignatureError,
    WechatApiError,
    WechatError,
)

__all__ = ["NotificationError", "ResponseSignatureError", "WechatApiError", "WechatError"]
