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


def test_relabel_stores_the_served_answer_and_confidence_for_each_prompt(tiny_model_dir, tmp_path):
    """Relabelling goes through the serving engine: answers obey the adapter's answer sets
    and every prompt gets one fresh label with the confidence the cascade will see."""
    import json

    from tests.training.helpers import LABELS, make_examples
    from training import LoraTrainingConfig, train_lora
    from training.nightly import relabel

    examples = make_examples(9)
    cfg = LoraTrainingConfig(r=4, alpha=8, lr=1e-2, epochs=1, batch_size=4, grad_accum=1)
    res = train_lora(str(tiny_model_dir), examples, cfg, output_dir=tmp_path / "a", progress=False)
    (res.adapter_dir / "metadata.json").write_text(json.dumps({"answer_sets": {"": list(LABELS)}}))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for e in examples:
        ledger.record(LedgerEntry(request_id=e.source_id, ts=e.ts, route="cloud"))
    n = relabel(
        ledger,
        examples,
        base=str(tiny_model_dir),
        adapter_dir=res.adapter_dir,
        system_prompt=None,
        usd_per_hour=3.6,
        precision="fp32",
    )
    labelled = {entry.request_id: label for entry, label in ledger.labelled()}
    assert n == len(examples) and set(labelled) == {e.source_id for e in examples}
    for e in examples:
        label = labelled[e.source_id]
        assert label.local_answer in LABELS
        assert label.label == float(label.local_answer == e.answer)
        assert 0.0 < label.local_confidence <= 1.0 and label.local_cost_usd > 0
