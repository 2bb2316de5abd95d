"""How a member appears to other customers: a masked nickname (share pages, reviews)."""

from __future__ import annotations


def mask_nickname(nickname: str | None) -> str:
    """``张三丰`` → ``张**丰``, ``张三`` → ``张*``; no nickname → ``微信用户``."""
    name = (nickname or "").strip()
    if not name:
        return "微信用户"
    if len(name) <= 2:
        return name[0] + "*"
    return name[0] + "**" + name[-1]
