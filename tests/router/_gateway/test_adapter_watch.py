"""A running gateway follows promotions made elsewhere, without ever losing its model."""

from __future__ import annotations

import threading
from pathlib import Path

from router._gateway.adapter_watch import CurrentAdapterWatcher


class FakeTransport:
    def __init__(self, fail: bool = False) -> None:
        self.adapter_version: str | None = "v0001"
        self.fail = fail
        self.calls: list[tuple[str, str]] = []
        self.release = threading.Event()

    def swap_adapter(self, path: str, *, version: str) -> None:
        self.calls.append((path, version))
        self.release.wait(5)
        if self.fail:
            raise RuntimeError("corrupt adapter")
        self.adapter_version = version


def test_promotion_is_swapped_in_the_background_once():
    current = {"found": (Path("/adapters/v0002"), "v0002")}
    watcher = CurrentAdapterWatcher(lambda: current["found"], interval_s=0.0)
    transport = FakeTransport()
    watcher.poll(transport)  # returns while the swap still runs
    assert transport.adapter_version == "v0001"
    watcher.poll(transport)  # a swap in progress is not started twice
    transport.release.set()
    watcher.wait(5)
    assert transport.adapter_version == "v0002"
    assert transport.calls == [("/adapters/v0002", "v0002")]
    watcher.poll(transport)  # already serving it: nothing to do
    assert len(transport.calls) == 1


def test_failed_swap_keeps_the_old_adapter_and_is_not_retried():
    watcher = CurrentAdapterWatcher(lambda: (Path("/bad"), "v0009"), interval_s=0.0)
    transport = FakeTransport(fail=True)
    transport.release.set()
    watcher.poll(transport)
    watcher.wait(5)
    assert transport.adapter_version == "v0001"
    watcher.poll(transport)
    watcher.wait(5)
    assert len(transport.calls) == 1


def test_polls_are_rate_limited_and_registry_errors_do_not_raise():
    reads = []

    def current():
        reads.append(1)
        raise OSError("registry unreadable")

    watcher = CurrentAdapterWatcher(current, interval_s=60.0)
    transport = FakeTransport()
    for _ in range(5):
        watcher.poll(transport)
    assert len(reads) == 1 and transport.calls == []
