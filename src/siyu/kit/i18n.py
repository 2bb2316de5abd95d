"""Language choice for user-facing messages: zh-CN (default) or English by ``Accept-Language``."""

from __future__ import annotations

SUPPORTED = ("zh-CN", "en")


def pick_language(accept_language: str | None) -> str:
    if not accept_language:
        return "zh-CN"
    best = ("zh-CN", -1.0)
    for part in accept_language.split(","):
        piece = part.strip()
        if not piece:
            continue
        tag, _, q = piece.partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        tag = tag.strip().lower()
        lang = "en" if tag.startswith("en") else "zh-CN" if tag.startswith("zh") else None
        if lang and weight > best[1]:
            best = (lang, weight)
    return best[0]
