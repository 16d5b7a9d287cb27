"""The gate and ``distill_and_promote`` on top of the registry (whose own tests live in
``tests/local_models/test_registry.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_models.adapter_checks import smoke_test
from local_models.answer_checker import read_answer_checker
from tests.local_models.helpers import fake_adapter
from tests.training.helpers import make_examples
from training import (
    AdapterRegistry,
    EvalResult,
    LoraTrainingConfig,
    distill_and_promote,
    gate,
)


def test_gate_refuses_worse_or_regressing_candidates() -> None:
    cur = EvalResult(agreement=0.70, loss=0.50, n=300)
    assert not gate(EvalResult(0.65, 0.45, 300), cur).promote
    assert not gate(EvalResult(0.705, 0.45, 300), cur, min_gain=0.01).promote  # within noise
    worse_loss = gate(EvalResult(0.80, 0.60, 300), cur, max_loss_regression=0.05)
    assert not worse_loss.promote and "loss" in worse_loss.reason
    ok = gate(EvalResult(0.80, 0.51, 300), cur)
    assert ok.promote and "0.800" in ok.reason
    assert gate(EvalResult(0.3, 1.0, 10), None, min_agreement=0.2).promote
    assert not gate(EvalResult(0.1, 1.0, 10), None, min_agreement=0.2).promote


def test_crash_mid_training_leaves_current_untouched(tiny_model_dir: Path, tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    v1 = reg.register(fake_adapter(tmp_path / "a", "one"), {})
    reg.promote(v1, smoke_test=False)
    cfg = LoraTrainingConfig(r=4, alpha=8, batch_size=4, max_seq_len=64)

    def crash(info) -> None:
        raise RuntimeError("OOM mid-training")

    train, held = make_examples(12), make_examples(3, start_ts=100)
    with pytest.raises(RuntimeError, match="OOM"):
        distill_and_promote(str(tiny_model_dir), train, held, cfg, registry=reg, callbacks=[crash])
    assert reg.current().version == v1
    assert [i.version for i in reg.list()] == [v1]


def test_distill_registers_and_gates_candidate(tiny_model_dir: Path, tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    cfg = LoraTrainingConfig(r=4, alpha=8, lr=5e-3, epochs=2, batch_size=4, max_seq_len=64)
    train, held = make_examples(12), make_examples(3, start_ts=100)
    # The mechanics on a random-weight model: no floor, and 3 held-out rows count.
    loose = {"min_agreement": 0.0, "min_class_examples": 1}
    first = distill_and_promote(str(tiny_model_dir), train, held, cfg, registry=reg, **loose)
    assert first.version == "v0001" and first.decision.promote and first.current is None
    meta = reg.show("v0001").metadata
    assert meta["n_train"] == 12 and meta["data_window"] == {"min_ts": 0.0, "max_ts": 11.0}
    assert len(meta["base_model_sha256"]) == 64 and meta["metrics"]["n"] == 3
    assert meta["served_classes"] == [""] and len(meta["adapter_sha256"]) == 64
    # the closed label set got an answer checker, fitted on the same rows, kept with the weights
    # (covered by the weights' hash) and ignored by the smoke test's PEFT tensor check
    path = reg.show("v0001").path
    checker = read_answer_checker(path)
    probs = {
        a: checker.probability("", "I lost my card number 99", a) for a in meta["answer_sets"][""]
    }
    assert max(probs, key=probs.get) == "lost_card"
    smoke_test(path, meta)
    # same data again: no agreement gain over the current adapter -> registered, not promoted
    second = distill_and_promote(
        str(tiny_model_dir), train, held, cfg, registry=reg, min_gain=0.5, **loose
    )
    assert second.version == "v0002" and not second.decision.promote
    assert reg.current().version == "v0001"


def test_training_reexports_the_registry_that_lives_in_local_models() -> None:
    import local_models.errors
    import local_models.registry
    import training

    assert training.AdapterRegistry is local_models.registry.AdapterRegistry
    assert training.AdapterInfo is local_models.registry.AdapterInfo
    assert training.RegistryError is local_models.errors.RegistryError
    assert training.AdapterMetadataError is local_models.errors.AdapterMetadataError
    assert issubclass(training.AdapterMetadataError, local_models.errors.ModelLoadError)
    assert not hasattr(training, "exact_match")  # one home: router.scoring.judges
