from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from tests.training.helpers import make_examples
from training import (
    AdapterRegistry,
    EvalResult,
    LoraTrainingConfig,
    RegistryError,
    distill_and_promote,
    gate,
)


def _fake_adapter(path: Path, tag: str) -> Path:
    """A well-formed adapter (LoRA config, finite tensors) tagged in its config. It fits no
    model, so the tests that promote it skip the model smoke test (``smoke_test=False``)."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "tag": tag}))
    save_file({"lora_A.weight": torch.ones(2, 4)}, str(path / "adapter_model.safetensors"))
    return path


def _tag(adapter_dir: Path) -> str:
    return json.loads((adapter_dir / "adapter_config.json").read_text())["tag"]


def test_register_promote_list_show(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    assert reg.current() is None and reg.current_path() is None and reg.list() == []
    v1 = reg.register(
        _fake_adapter(tmp_path / "a", "one"), {"n_train": 10, "metrics": {"agreement": 0.5}}
    )
    v2 = reg.register(_fake_adapter(tmp_path / "b", "two"), {"n_train": 20})
    assert (v1, v2) == ("v0001", "v0002")
    assert reg.current() is None  # registering does not promote
    reg.promote(v1, smoke_test=False)
    assert reg.current().version == "v0001"
    assert reg.show("v0001").metrics == {"agreement": 0.5}
    info = reg.show(v2)
    assert info.metadata["version"] == "v0002" and info.metadata["n_train"] == 20
    assert _tag(info.path) == "two"
    assert [i.version for i in reg.list()] == ["v0001", "v0002"]


def test_rollback_restores_the_previous_adapter(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    v1 = reg.register(_fake_adapter(tmp_path / "a", "one"), {})
    v2 = reg.register(_fake_adapter(tmp_path / "b", "two"), {})
    with pytest.raises(RegistryError, match="roll back"):
        reg.rollback()
    reg.promote(v1, smoke_test=False)
    reg.promote(v2, smoke_test=False)
    assert _tag(reg.current_path()) == "two"
    assert reg.rollback().version == v1
    assert _tag(reg.current_path()) == "one"
    assert reg.history() == [v1]


def test_unknown_version_and_non_adapter_dirs_are_named(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    with pytest.raises(RegistryError, match="v0042"):
        reg.promote("v0042")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="not a PEFT adapter"):
        reg.register(tmp_path / "empty", {})


def test_default_root_follows_hybridgate_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYBRIDGATE_HOME", str(tmp_path))
    assert AdapterRegistry().root == tmp_path / "adapters"


def test_current_is_always_valid_while_switching(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    versions = [reg.register(_fake_adapter(tmp_path / f"a{i}", str(i)), {}) for i in range(3)]
    reg.promote(versions[0], smoke_test=False)
    stop = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                info = AdapterRegistry(reg.root).current()
                assert info is not None and (info.path / "adapter_config.json").is_file()
                seen.append(info.version)
            except BaseException as exc:  # noqa: BLE001 - report any failure to the test
                errors.append(exc)
                return

    t = threading.Thread(target=reader)
    t.start()
    for i in range(300):
        reg.promote(versions[i % 3], smoke_test=False)
    stop.set()
    t.join()
    assert not errors and seen and set(seen) <= set(versions)


def test_failed_pointer_write_leaves_current_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    v1 = reg.register(_fake_adapter(tmp_path / "a", "one"), {})
    v2 = reg.register(_fake_adapter(tmp_path / "b", "two"), {})
    reg.promote(v1, smoke_test=False)

    def failing_replace(src, dst):  # noqa: ANN001
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        reg.promote(v2, smoke_test=False)
    monkeypatch.undo()
    assert reg.current().version == v1
    assert not [p for p in reg.root.iterdir() if p.name.startswith("CURRENT.")]  # no temp litter


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
    v1 = reg.register(_fake_adapter(tmp_path / "a", "one"), {})
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
    # same data again: no agreement gain over the current adapter -> registered, not promoted
    second = distill_and_promote(
        str(tiny_model_dir), train, held, cfg, registry=reg, min_gain=0.5, **loose
    )
    assert second.version == "v0002" and not second.decision.promote
    assert reg.current().version == "v0001"
