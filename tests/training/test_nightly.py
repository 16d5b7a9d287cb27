"""The nightly chain's safety rails: the lock and the minimum-data skip."""

from __future__ import annotations

import time

from filelock import FileLock

from router.ledger import Ledger, LedgerEntry
from router.policy import load_policy
from training.nightly import run_distill
from training.registry import AdapterRegistry


def _ledger(tmp_path, n):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for i in range(n):
        ledger.record(
            LedgerEntry(
                request_id=f"r{i}",
                ts=time.time() + i,
                route="cloud",
                messages=[{"role": "user", "content": f"question number {i} about cards"}],
                answer=f"label_{i % 3}",
            )
        )
    return ledger


def test_second_concurrent_run_exits_cleanly(tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    lock_path = tmp_path / "distill.lock"
    with FileLock(str(lock_path)):
        summary = run_distill(
            ledger=_ledger(tmp_path, 5),
            policy=load_policy("default"),
            registry=registry,
            lock_path=lock_path,
        )
    assert summary.status == "locked"
    assert registry.current() is None


def test_too_few_new_examples_is_a_clean_skip(tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    summary = run_distill(
        ledger=_ledger(tmp_path, 10),
        policy=load_policy("default"),
        registry=registry,
        min_examples=50,
        lock_path=tmp_path / "l.lock",
    )
    assert summary.status == "too_few_examples"
    assert "need 50" in summary.gate_reason
    assert registry.list() == [] and registry.current() is None
