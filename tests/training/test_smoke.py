"""#9.15: ``promote`` loads and smoke-tests an adapter before ``CURRENT`` points at it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from training import AdapterRegistry, RegistryError

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def good_adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real LoRA adapter for the tiny model, with non-zero weights (no training needed)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    out = tmp_path_factory.mktemp("adapters") / "good"
    peft_model.save_pretrained(out)
    return out


def _variant(src: Path, dst: Path, edit: Callable[[dict], dict] | None = None) -> Path:
    """A copy of ``src`` whose tensors went through ``edit``."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    if edit is not None:
        save_file(edit(load_file(str(src / WEIGHTS))), str(dst / WEIGHTS))
    return dst


def _nan(sd: dict) -> dict:
    key = sorted(sd)[0]
    sd[key] = sd[key].clone()
    sd[key][0, 0] = float("nan")
    return sd


def _wrong_rank(sd: dict) -> dict:
    import torch

    return {k: torch.ones(8, v.shape[1]) if "lora_A" in k else v for k, v in sd.items()}


def _other_model(sd: dict) -> dict:
    return {k.replace("self_attn", "attention"): v for k, v in sd.items()}


def _write_bytes(dst: Path) -> None:
    (dst / WEIGHTS).write_bytes(b"\x00\x13garbage, not safetensors" * 10)


@pytest.fixture
def registry(tiny_model_dir: Path, good_adapter: Path, tmp_path: Path) -> AdapterRegistry:
    """A registry whose current adapter is a good v0001 on the tiny model."""
    reg = AdapterRegistry(tmp_path / "adapters")
    v1 = reg.register(good_adapter, {"base_model": str(tiny_model_dir)})
    reg.promote(v1)
    return reg


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("bytes", "unreadable adapter weights"),
        ("nan", "NaN or infinite"),
        ("wrong_rank", "does not load onto"),
        ("other_model", "does not fit"),
    ],
)
def test_promote_refuses_garbage_weights_and_current_stays(
    registry: AdapterRegistry,
    good_adapter: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    kind: str,
    expected: str,
) -> None:
    edits = {"nan": _nan, "wrong_rank": _wrong_rank, "other_model": _other_model}
    bad = _variant(good_adapter, tmp_path / kind, edits.get(kind))
    if kind == "bytes":
        _write_bytes(bad)
    v2 = registry.register(bad, {"base_model": str(tiny_model_dir)})
    with pytest.raises(RegistryError, match=expected):
        registry.promote(v2)
    assert registry.current().version == "v0001"
    assert registry.history() == ["v0001"]


def test_promote_refuses_weights_changed_after_registration(
    registry: AdapterRegistry, good_adapter: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Well-formed, finite, loadable weights, but not the ones registered (and gated)."""
    import torch

    v2 = registry.register(good_adapter, {"base_model": str(tiny_model_dir)})
    _variant(
        good_adapter,
        tmp_path / "swapped",
        lambda sd: {k: torch.randn_like(v) for k, v in sd.items()},
    )
    shutil.copy(tmp_path / "swapped" / WEIGHTS, registry.root / v2 / WEIGHTS)
    with pytest.raises(RegistryError, match="weights changed since"):
        registry.promote(v2)
    assert registry.current().version == "v0001"


def test_cli_promote_refuses_garbage_and_says_why(
    registry: AdapterRegistry, good_adapter: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from router.cli import app

    bad = _variant(good_adapter, tmp_path / "nan", _nan)
    v2 = registry.register(bad, {"base_model": str(tiny_model_dir)})
    result = CliRunner().invoke(app, ["adapters", "promote", v2, "--root", str(registry.root)])
    assert result.exit_code != 0
    assert "NaN" in result.output and v2 in result.output
    assert registry.current().version == "v0001"


def test_a_good_adapter_is_smoke_tested_and_promoted(
    registry: AdapterRegistry, good_adapter: Path, tiny_model_dir: Path
) -> None:
    v2 = registry.register(good_adapter, {"base_model": str(tiny_model_dir)})
    meta = json.loads((registry.root / v2 / "metadata.json").read_text())
    assert len(meta["adapter_sha256"]) == 64  # what promote checks the files against
    assert registry.promote(v2).version == v2 and registry.current().version == v2


def test_smoke_test_needs_to_know_the_base_model(good_adapter: Path, tmp_path: Path) -> None:
    from local_models.adapter_checks import smoke_test

    bare = _variant(good_adapter, tmp_path / "bare")
    config = json.loads((bare / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    (bare / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(RegistryError, match="base model"):
        smoke_test(bare, {})
