"""Cache of backend answers (local and cloud), keyed by everything that changes the answer.

The gateway looks it up after the decision, under the backend that would answer (cloud model,
or local model + precision + adapter version), so a request never gets an answer from a backend
its decision excludes. Settings are the policy's ``cache:`` section (``CacheSettings``); the
folder is a location, not a policy knob, so it is a constructor argument. With ``cache.url``
the entries live in Redis instead (``router._gateway.cache_redis``), under the same keys.

Why JSON only: diskcache's default ``Disk`` pickles values and unpickles whatever it finds
in ``cache.db``; anyone who can write to the cache folder could then run code in the
gateway. :class:`JSONOnlyDisk` stores values as JSON text and refuses to read pickled
rows, and keys are plain sha256 strings.

Why deterministic requests only by default: a sampled answer (temperature > 0) is one draw
of many; replaying it would silently change the request's meaning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_RAW, MODE_TEXT, UNKNOWN

from router.policy.sections import CacheSettings
from router.types import BackendResult, ChatRequest

logger = logging.getLogger(__name__)

KEY_SCHEMA = 1
"""Bumped when the key recipe changes, so old entries simply miss."""
DB_FILES = ("cache.db", "cache.db-wal", "cache.db-shm")
"""What diskcache keeps in the folder; removed when the database is corrupt."""


@dataclass(frozen=True)
class CachedAnswer:
    """A stored answer (local or cloud); :meth:`to_result` turns it back into a
    ``BackendResult``."""

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    adapter_version: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    stored_at: float = 0.0
    """Unix time the answer was cached."""

    def to_result(self) -> BackendResult:
        """A ``BackendResult`` for the client; no compute was spent, so cost is zero."""
        return BackendResult(
            text=self.text,
            finish_reason=self.finish_reason,  # type: ignore[arg-type]
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            model=self.model,
            compute_seconds=0.0,
            cost_usd=0.0,
            adapter_version=self.adapter_version,
            tool_calls=self.tool_calls,
        )


class UnsafeCacheEntry(ValueError):
    """A cache row is not JSON (e.g. a pickle planted in the folder); it is never loaded."""


class JSONOnlyDisk(diskcache.Disk):
    """A diskcache ``Disk`` that stores JSON text and refuses pickled keys and values."""

    def __init__(self, directory: str, min_file_size: int = 0, **_ignored: Any) -> None:
        super().__init__(directory, min_file_size=min_file_size)

    def put(self, key: Any) -> tuple[Any, bool]:
        if not isinstance(key, str):
            raise TypeError(f"cache keys must be str, got {type(key).__name__}")
        return key, True

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise UnsafeCacheEntry("refusing a pickled cache key")
        return key

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[Any, ...]:
        if read:
            raise TypeError("JSONOnlyDisk stores JSON values, not files")
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return super().store(text, False, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode not in (MODE_RAW, MODE_TEXT) or read:
            raise UnsafeCacheEntry(f"refusing a non-JSON cache value (mode {mode})")
        text = super().fetch(mode, filename, value, False)
        if not isinstance(text, str):
            raise UnsafeCacheEntry("cache value is not text")
        return json.loads(text)


def default_cache_dir() -> Path:
    """``$HYBRIDGATE_HOME/cache`` when set, else ``user_cache_dir("hybridgate")/cache``; the
    rule lives in ``router._paths`` with every other default location."""
    from router._paths import cache_dir

    return cache_dir()


def _num(value: float | None) -> float | None:
    """0 and 0.0 must give the same key."""
    return None if value is None else float(value)


class DiskStore:
    """The embedded default: diskcache (SQLite) in a private folder, JSON values only.

    One host only: processes on it share the folder, but there is no cross-process single
    flight (``lead`` always says "you lead"); the in-process one is the gateway's.
    """

    shared = False
    errors = 0

    def __init__(self, directory: Path, config: CacheSettings) -> None:
        self.directory = directory
        self.config = config
        self._cache: diskcache.Cache | None = None
        self._open()

    def _settings(self) -> dict[str, Any]:
        return {
            "size_limit": self.config.size_limit_mb * 2**20,
            # Evicts the oldest *stored* entries first, not the least recently read: tracking
            # reads ("least-recently-used") would cost a database write on every hit.
            "eviction_policy": "least-recently-stored",
            "disk_min_file_size": 2**20,  # answers stay inside cache.db
            "statistics": False,
        }

    def _open(self) -> None:
        from router._paths import private_dir, private_file, tighten

        private_dir(self.directory)  # answers are the user's data: 0700 folder, 0600 files
        db = self.directory / DB_FILES[0]
        if db.exists():
            for name in DB_FILES:
                tighten(self.directory / name)
        else:
            private_file(db)  # SQLite gives -wal/-shm the main file's mode
        try:
            self._cache = diskcache.Cache(
                str(self.directory), disk=JSONOnlyDisk, **self._settings()
            )
        except sqlite3.DatabaseError as exc:
            self._rebuild(exc)

    def _rebuild(self, exc: BaseException) -> None:
        """Throw away a corrupt cache database and start empty (a cache may always forget)."""
        message = f"response cache at {self.directory} is corrupt ({exc}); rebuilding it empty"
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)
        if self._cache is not None:
            with contextlib.suppress(sqlite3.Error):
                self._cache.close()
        for name in DB_FILES:
            (self.directory / name).unlink(missing_ok=True)
        from router._paths import private_file

        private_file(self.directory / DB_FILES[0])
        self._cache = diskcache.Cache(str(self.directory), disk=JSONOnlyDisk, **self._settings())

    def get(self, key: str) -> Any:
        try:
            return self._cache.get(key)  # type: ignore[union-attr]
        except sqlite3.DatabaseError as exc:
            self._rebuild(exc)
        except (UnsafeCacheEntry, ValueError, OSError) as exc:
            logger.warning("ignoring unreadable cache entry %s: %s", key[:12], exc)
        return None

    def set(self, key: str, value: dict[str, Any], ttl_s: float | None) -> bool:
        try:
            self._cache.set(key, value, expire=ttl_s)  # type: ignore[union-attr]
        except sqlite3.DatabaseError as exc:
            self._rebuild(exc)
            return False
        return True

    def lead(self, key: str, ttl_s: float) -> bool:
        return True

    def release(self, key: str) -> None:
        pass

    def leading_elsewhere(self, key: str) -> bool:
        return False

    def clear(self) -> int:
        return self._cache.clear()  # type: ignore[union-attr]

    def count(self) -> int:
        return len(self._cache)  # type: ignore[arg-type]

    def volume(self) -> int:
        return self._cache.volume()  # type: ignore[union-attr]

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()

    @property
    def location(self) -> str:
        return str(self.directory)


class ResponseCache:
    """Caches answers for deterministic requests; safe across threads and processes.

    The key rules live here; where entries are kept is a store: the disk (default) or Redis
    (``cache.url: redis://...``, shared by every gateway that points at it).

    >>> cache = ResponseCache(CacheSettings(ttl_s=3600), directory="/tmp/hg-cache")
    >>> cache.put(req, result, model="smollm2", adapter_version="v3")
    >>> cache.get(req, model="smollm2", adapter_version="v3").text
    """

    def __init__(
        self, config: CacheSettings | None = None, *, directory: str | Path | None = None
    ) -> None:
        """Open (or create) the store; a corrupt disk database is rebuilt with a warning.

        Args:
            config: The policy's ``cache:`` section (``policy.cache``); None -> its defaults.
            directory: Cache folder for the disk store; None -> :func:`default_cache_dir`.
        """
        self.config = config if config is not None else CacheSettings()
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._store: Any = None
        if self.config.enabled and self.config.url:
            from router._gateway.cache_redis import RedisStore

            self._store = RedisStore(self.config.url, password_env=self.config.password_env)
        elif self.config.enabled:
            self._store = DiskStore(self.directory, self.config)

    @property
    def shared(self) -> bool:
        """Whether other processes and hosts see the same entries (Redis)."""
        return self._store is not None and self._store.shared

    # -- keys ----------------------------------------------------------------------

    def key(self, request: ChatRequest, *, model: str, adapter_version: str | None) -> str:
        """sha256 of the canonical JSON of everything that changes the answer.

        Args:
            request: The request.
            model: The model that answers (not necessarily ``request.model``).
            adapter_version: The LoRA adapter loaded, if any.

        Returns:
            64 hex characters. The tenant (a server's authenticated tenant, and
            ``request.user``) is part of the key, so tenants never see each other's entries.
        """
        material: dict[str, Any] = {
            "v": KEY_SCHEMA,
            "namespace": request.user or "",
            "model": model,
            "adapter_version": adapter_version,
            "messages": list(request.messages),
            "temperature": _num(request.temperature),
            "top_p": _num(request.top_p),
            "max_tokens": request.max_tokens,
            "stop": list(request.stop),
            "seed": request.seed,
            "tools": list(request.tools) if request.tools is not None else None,
            "tool_choice": request.tool_choice,
            "response_format": request.response_format,
        }
        if request.allowed_answers is not None:  # absent otherwise, so existing keys stay valid
            material["allowed_answers"] = list(request.allowed_answers)
        if request.tenant is not None:  # absent in-process, so existing keys stay valid
            material["tenant"] = request.tenant.name
        canonical = json.dumps(
            material, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
        )
        return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()

    def cacheable(self, request: ChatRequest) -> bool:
        """Whether answers to ``request`` may be stored and replayed.

        Returns:
            ``True`` for deterministic requests (``request.deterministic``), or for any request
            when ``cache_nondeterministic`` is set; ``False`` when the cache is disabled or the
            request asks for ``logprobs``.
        """
        if not self.config.enabled or request.logprobs:  # a replay carries no logprobs
            return False
        return self.config.cache_nondeterministic or request.deterministic

    # -- get/put -------------------------------------------------------------------

    def get(
        self,
        request: ChatRequest,
        *,
        model: str,
        adapter_version: str | None,
        count: bool = True,
    ) -> CachedAnswer | None:
        """The cached answer for ``request``, or ``None`` on a miss.

        Args:
            request: The request.
            model: The model that would answer.
            adapter_version: The adapter that would be loaded.
            count: Count this lookup in the hit/miss statistics (not for repeated polls).

        Returns:
            The stored answer, or ``None`` (miss, expired, uncacheable, disabled, unreadable,
            or the store unreachable).
        """
        if self._store is None or not self.cacheable(request):
            return None
        key = self.key(request, model=model, adapter_version=adapter_version)
        answer = self._decode(self._store.get(key))
        if not count:
            return answer
        with self._lock:
            if answer is None:
                self._misses += 1
            else:
                self._hits += 1
        return answer

    @staticmethod
    def _decode(value: Any) -> CachedAnswer | None:
        if not isinstance(value, dict) or not isinstance(value.get("text"), str):
            return None
        try:
            return CachedAnswer(**value)
        except TypeError:
            return None

    def put(
        self,
        request: ChatRequest,
        result: BackendResult,
        *,
        model: str,
        adapter_version: str | None,
    ) -> bool:
        """Store ``result`` as the answer to ``request`` (only when :meth:`cacheable`).

        Args:
            request: The request answered.
            result: The backend's result (local or cloud).
            model: The model that answered.
            adapter_version: The adapter that was loaded.

        Returns:
            Whether it was stored.
        """
        if self._store is None or not self.cacheable(request):
            return False
        if result.finish_reason == "content_filter":
            return False
        answer = CachedAnswer(
            text=result.text,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            model=result.model or model,
            adapter_version=adapter_version,
            tool_calls=result.tool_calls,
            stored_at=time.time(),
        )
        key = self.key(request, model=model, adapter_version=adapter_version)
        try:
            return self._store.set(key, asdict(answer), self.config.ttl_s)
        except (TypeError, ValueError) as exc:  # e.g. tool_calls not JSON-serialisable
            logger.warning("not caching an answer that is not JSON-serialisable: %s", exc)
            return False

    # -- single flight across processes (shared stores) ------------------------------

    def lead(self, key: str, ttl_s: float) -> bool:
        """Claim computing the answer under flight ``key``; False if another gateway holds it."""
        return self._store is None or self._store.lead(key, ttl_s)

    def release(self, key: str) -> None:
        """Give up the claim (the answer is stored, or the call failed)."""
        if self._store is not None:
            self._store.release(key)

    def leading_elsewhere(self, key: str) -> bool:
        """Whether another gateway still holds the claim on ``key``."""
        return self._store is not None and self._store.leading_elsewhere(key)

    # -- housekeeping --------------------------------------------------------------

    def clear(self) -> int:
        """Remove every entry and reset hit/miss counters.

        Returns:
            Number of entries removed.
        """
        with self._lock:
            self._hits = self._misses = 0
        return self._store.clear() if self._store is not None else 0

    def stats(self) -> dict[str, Any]:
        """Counters for reports and ``/metrics``.

        Returns:
            ``hits``, ``misses``, ``hit_rate`` (this process), ``entries``, ``size_bytes``,
            ``directory`` (the folder or the Redis URL without its password), ``enabled`` and
            ``store_errors`` (calls the store failed: each one was served as a miss).
        """
        with self._lock:
            hits, misses = self._hits, self._misses
        store = self._store
        entries = store.count() if store is not None else 0
        size = store.volume() if store is not None else 0
        return {
            "enabled": self.config.enabled,
            "directory": store.location if store is not None else str(self.directory),
            "store_errors": store.errors if store is not None else 0,
            "hits": hits,
            "misses": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
            "entries": entries,
            "size_bytes": size,
        }

    @property
    def store_errors(self) -> int:
        """Store calls that failed in this process (a Redis outage: served as misses)."""
        return self._store.errors if self._store is not None else 0

    def close(self) -> None:
        """Close the database connections."""
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "CachedAnswer",
    "DiskStore",
    "JSONOnlyDisk",
    "ResponseCache",
    "UnsafeCacheEntry",
    "default_cache_dir",
]
