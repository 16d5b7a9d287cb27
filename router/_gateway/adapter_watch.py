"""Follow the registry's ``current`` adapter from a running gateway.

``hybridgate distill`` (often another process, from cron) promotes a new adapter by switching the
registry's ``CURRENT`` file. A gateway whose policy says ``local.adapter: current`` notices within
``interval_s`` (one small file read, only on local calls) and hot-swaps in a background thread;
the engine switches between batches, so no request is dropped, and a swap that fails leaves the
old adapter serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("hybridgate.adapters")

CurrentFn = Callable[[], "tuple[Path, str] | None"]


def registry_current(root: str | Path | None = None) -> CurrentFn:
    """``() -> (path, version)`` of the promoted adapter in the registry at ``root``
    (``local_models.registry``, read through the local transport so its errors are ours)."""

    def current() -> tuple[Path, str] | None:
        from router._transports.local import current_adapter

        return current_adapter(root)

    return current


class CurrentAdapterWatcher:
    """Swap a local transport to the promoted adapter when the promotion changes.

    >>> watcher = CurrentAdapterWatcher(registry_current(), interval_s=2.0)
    >>> watcher.poll(local_transport)   # cheap; swaps in the background when needed
    """

    def __init__(self, current: CurrentFn, *, interval_s: float = 2.0) -> None:
        self._current = current
        self.interval_s = interval_s
        self._last_check = float("-inf")
        self._lock = threading.Lock()
        self._swapping: threading.Thread | None = None
        self._failed: str | None = None
        self.swaps = 0

    def poll(self, transport: Any) -> None:
        """Start a background swap if the registry's current version differs from the served one."""
        if not callable(getattr(transport, "swap_adapter", None)):
            return
        with self._lock:
            now = time.monotonic()
            if now - self._last_check < self.interval_s:
                return
            self._last_check = now
            if self._swapping is not None and self._swapping.is_alive():
                return
            try:
                found = self._current()
            except Exception:  # an unreadable registry must not fail the request
                log.exception("could not read the current adapter")
                return
            if found is None:
                return
            path, version = found
            if version == getattr(transport, "adapter_version", None) or version == self._failed:
                return
            self._swapping = threading.Thread(
                target=self._swap,
                args=(transport, path, version),
                name="hybridgate-adapter-swap",
                daemon=True,
            )
            self._swapping.start()

    def _swap(self, transport: Any, path: Path, version: str) -> None:
        try:
            transport.swap_adapter(str(path), version=version)
            self.swaps += 1
            log.info("now serving adapter %s", version)
        except Exception:
            self._failed = version  # do not retry a broken version on every poll
            log.exception("swap to adapter %s failed; the previous adapter keeps serving", version)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a swap in progress (tests, shutdown)."""
        thread = self._swapping
        if thread is not None:
            thread.join(timeout)
