"""The response cache's shared store: Redis, for gateways on several processes or hosts.

Same keys as the disk store (``ResponseCache.key``: everything that changes the answer, the
tenant namespace, the answering backend), values are JSON text, the TTL is Redis' own
(``SET ... PX``), and size is bounded by Redis' ``maxmemory`` policy. Identical misses in
flight on different gateways share one upstream call: the first claims the flight with
``SET NX PX`` and the others poll for its answer (``Gateway._wait_elsewhere``).

A cache may always forget, so Redis being down is never a failed request: every call has a
short socket timeout, a failure is counted (``errors``, ``hybridgate_cache_store_errors``),
logged at most every ``WARN_EVERY_S``, and for ``BACKOFF_S`` afterwards the store answers
"miss" without trying, so an outage costs one timeout per back-off window, not one per request.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from router._errors import PolicyError

logger = logging.getLogger(__name__)

T = TypeVar("T")

PREFIX = "hybridgate:cache:"
"""Namespace of answer entries (a shared Redis may hold other things)."""
FLIGHT_PREFIX = "hybridgate:flight:"
SOCKET_TIMEOUT_S = 0.25
"""Per-operation bound: a loopback or LAN Redis answers in well under a millisecond."""
BACKOFF_S = 5.0
WARN_EVERY_S = 30.0
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
"""Delete the flight claim only if it is still ours (it may have expired and been re-taken)."""


def _without_secrets(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


class RedisStore:
    """Answer entries and flight claims in Redis (``redis-py``, the ``redis`` extra)."""

    shared = True

    def __init__(self, url: str, *, password_env: str | None = None) -> None:
        try:
            import redis
        except ImportError:
            raise PolicyError(
                "cache.url names a Redis server but the redis package is not installed: "
                "pip install 'hybridgate[redis]'"
            ) from None
        password = os.environ.get(password_env) if password_env else None
        if password_env and password is None:
            raise PolicyError(
                f"cache.password_env names {password_env}, which is not set in the environment"
            )
        self.location = _without_secrets(url)
        self._redis = redis.Redis.from_url(
            url,
            password=password,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
        )  # bytes back: a value that is not UTF-8 JSON is a miss here, not a decode crash
        self._failure = redis.RedisError
        self._release = self._redis.register_script(_RELEASE)
        self._token = uuid.uuid4().hex  # this gateway's flight claims
        self._lock = threading.Lock()
        self.errors = 0
        self._down_until = 0.0
        self._warned_at = -WARN_EVERY_S

    def _call(self, what: str, op: Callable[[], T], default: T) -> T:
        """Run one Redis operation; on failure count it, maybe warn, back off, return default."""
        if time.monotonic() < self._down_until:
            return default
        try:
            return op()
        except self._failure as exc:
            now = time.monotonic()
            with self._lock:
                self.errors += 1
                self._down_until = now + BACKOFF_S
                warn = now - self._warned_at >= WARN_EVERY_S
                if warn:
                    self._warned_at = now
            if warn:
                logger.warning(
                    "response cache: Redis at %s failed on %s (%s: %s); serving without the "
                    "cache for %.0f s",
                    self.location,
                    what,
                    type(exc).__name__,
                    exc,
                    BACKOFF_S,
                )
            return default

    # -- entries ---------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        raw = self._call("GET", lambda: self._redis.get(PREFIX + key), None)
        if raw is None:
            return None
        try:
            return json.loads(raw)  # UnicodeDecodeError is a ValueError too
        except ValueError:
            logger.warning("ignoring a cache entry that is not JSON: %s", key[:12])
            return None

    def set(self, key: str, value: dict[str, Any], ttl_s: float | None) -> bool:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        return bool(self._call("SET", lambda: self._redis.set(PREFIX + key, text, px=px), False))

    # -- single flight across gateways -------------------------------------------------------

    def lead(self, key: str, ttl_s: float) -> bool:
        px = max(1, int(ttl_s * 1000))
        claimed = self._call(
            "SET NX",
            lambda: self._redis.set(FLIGHT_PREFIX + key, self._token, nx=True, px=px),
            True,
        )
        return bool(claimed)  # Redis down: lead (compute it ourselves)

    def release(self, key: str) -> None:
        self._call(
            "release", lambda: self._release(keys=[FLIGHT_PREFIX + key], args=[self._token]), 0
        )

    def leading_elsewhere(self, key: str) -> bool:
        return bool(self._call("EXISTS", lambda: self._redis.exists(FLIGHT_PREFIX + key), 0))

    # -- housekeeping ------------------------------------------------------------------------

    def _keys(self) -> list[bytes]:
        return list(self._redis.scan_iter(match=PREFIX + "*", count=1000))

    def clear(self) -> int:
        def drop() -> int:
            keys = self._keys()
            for i in range(0, len(keys), 1000):
                self._redis.unlink(*keys[i : i + 1000])
            return len(keys)

        return self._call("clear", drop, 0)

    def count(self) -> int:
        return self._call("count", lambda: len(self._keys()), 0)

    def volume(self) -> int:
        def size() -> int:
            pipe = self._redis.pipeline(transaction=False)
            for key in self._keys():
                pipe.strlen(key)
            return int(sum(pipe.execute()))

        return self._call("size", size, 0)

    def close(self) -> None:
        self._redis.close()


__all__ = ["BACKOFF_S", "FLIGHT_PREFIX", "PREFIX", "RedisStore"]
