"""The optional Redis connection (flash-sale gate, rate limits, caches)."""

from __future__ import annotations

import redis


def connect(url: str) -> redis.Redis | None:
    if not url:
        return None
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30)
