"""Drop every process's ``LocalCache`` when one process changes what it caches (Redis pub/sub).

``kit.local_cache`` keeps rows (bearer tokens, flash-sale items) per process and drops them at
once for the process's *own* writes; other processes only notice when their entry expires
(``ttl``: 30 s for tokens). With Redis configured, ``CacheBus`` closes that gap:

- **announce**: when a transaction that changed a watched row ends, the cache drops itself and
  ``announce(name)`` publishes the cache's name on ``<prefix>local-cache`` through every started
  bus (one per app or worker; a test process may hold several);
- **listen**: each bus runs one daemon thread subscribed to that channel; a message from another
  process drops the named cache here (its own messages are recognised by a per-bus id and
  skipped). The drop bumps the cache's generation, so a read in flight is not stored either.
- **when Redis is unreachable** nothing fails: a publish that cannot be sent is logged, and the
  listener, on losing its connection, drops every cache (it may have missed messages) and
  reconnects with a back-off. The documented ``ttl`` bound remains the fallback.

A revocation therefore reaches the other processes in the time of one publish and one message
(milliseconds), not 30 s. Changes made by raw SQL outside the ORM are still seen only after the
``ttl``, as before.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable

import redis

log = logging.getLogger("siyu.cache_bus")

_BUSES: list[CacheBus] = []
_BUSES_LOCK = threading.Lock()
_DROPPERS: dict[str, Callable[[], None]] = {}


def register(name: str, drop: Callable[[], None]) -> None:
    """Called by each ``LocalCache``: ``drop`` empties it (all engines)."""
    _DROPPERS[name] = drop


def unregister(name: str, drop: Callable[[], None]) -> None:
    if _DROPPERS.get(name) == drop:
        del _DROPPERS[name]


def announce(name: str) -> None:
    """Tell the other processes that cache ``name`` was changed here (no-op without a started bus)."""
    with _BUSES_LOCK:
        buses = list(_BUSES)
    for bus in buses:
        bus.publish(name)


def drop_all() -> None:
    for drop in list(_DROPPERS.values()):
        drop()


class CacheBus:
    def __init__(self, client: redis.Redis, *, prefix: str = "siyu:", reconnect_seconds: float = 1.0) -> None:
        self.client = client
        self.channel = f"{prefix}local-cache"
        self.origin = uuid.uuid4().hex
        self.reconnect_seconds = reconnect_seconds
        self.received = 0  # messages from other processes acted on (for tests and metrics)
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self, *, wait_seconds: float = 5.0) -> CacheBus:
        """Start listening (returns once subscribed, or after ``wait_seconds`` if Redis is down)."""
        self._thread = threading.Thread(target=self._listen, name="siyu-cache-bus", daemon=True)
        self._thread.start()
        with _BUSES_LOCK:
            _BUSES.append(self)
        self._subscribed.wait(wait_seconds)
        return self

    def stop(self) -> None:
        with _BUSES_LOCK:
            if self in _BUSES:
                _BUSES.remove(self)
        self._stop.set()
        if self._thread is not None:
            if self._subscribed.is_set():  # wake the listener's wait at once (else it notices within 0.5 s)
                with contextlib.suppress(redis.RedisError, OSError):
                    self.client.publish(self.channel, f"{self.origin} ")
            self._thread.join(timeout=2)

    # -- publish --------------------------------------------------------------------------------------

    def publish(self, name: str) -> None:
        try:
            self.client.publish(self.channel, f"{self.origin} {name}")
        except redis.RedisError as exc:
            log.warning("cache bus: could not announce a change of %s (%s); other processes see it within its ttl",
                        name, type(exc).__name__)

    # -- listen ---------------------------------------------------------------------------------------

    def _listen(self) -> None:
        while not self._stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self._subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._handle(message.get("data"))
            except (redis.RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("cache bus: lost the subscription (%s); dropping every local cache, reconnecting",
                            type(exc).__name__)
                drop_all()  # messages may have been missed meanwhile
                self._stop.wait(self.reconnect_seconds)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def _handle(self, data: object) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        origin, _, name = text.partition(" ")
        if origin == self.origin:
            return
        drop = _DROPPERS.get(name)
        if drop is not None:
            drop()
            self.received += 1
