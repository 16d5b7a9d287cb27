"""Adapters in the formats inference engines load: a PEFT directory (vLLM) and a GGUF LoRA
(llama.cpp's ``llama-server --lora``).

A registered adapter already is a PEFT directory (``adapter_config.json`` +
``adapter_model.safetensors``, plus our ``metadata.json`` with its answer sets), so the PEFT
export is a clean copy without local paths. The GGUF export does what llama.cpp's
``convert_lora_to_gguf.py`` does for a Llama-family base, with the ``gguf`` package: tensors
renamed to llama.cpp's (``blk.N.attn_q.weight.lora_a`` / ``.lora_b``), the rows of q/k
``lora_B`` permuted the way ``convert_hf_to_gguf`` permutes the base q/k weights (llama.cpp
stores rotary halves interleaved), and ``general.type = adapter``, ``adapter.type = lora``,
``adapter.lora.alpha`` as metadata.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from local_models.errors import ModelLoadError

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
"""What vLLM (and ``peft.PeftModel.from_pretrained``) reads from a LoRA directory."""
_PEFT_PREFIX = "base_model.model."


def _adapter_config(adapter_dir: Path) -> dict[str, Any]:
    for name in PEFT_FILES:
        if not (adapter_dir / name).is_file():
            raise ModelLoadError(f"{adapter_dir}: not a PEFT adapter directory ({name} missing)")
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{adapter_dir / 'adapter_config.json'}: unreadable ({exc})") from None
    if config.get("peft_type") != "LORA" or config.get("use_dora"):
        raise ModelLoadError(f"{adapter_dir}: only plain LoRA adapters export (no DoRA)")
    return config


def export_peft(adapter_dir: str | Path, out_dir: str | Path, *, base_model: str) -> Path:
    """Copy an adapter as a PEFT directory an engine on another host can load.

    Args:
        adapter_dir: A registered adapter version (or any PEFT LoRA directory).
        out_dir: Where to write it (created; must not exist or be empty).
        base_model: The base model's name on the engine, written as
            ``base_model_name_or_path`` in place of this machine's local path.

    Returns:
        ``out_dir``.

    Raises:
        ModelLoadError: ``adapter_dir`` is not a PEFT LoRA, or ``out_dir`` is not empty.
    """
    src, out = Path(adapter_dir), Path(out_dir)
    config = _adapter_config(src)
    if out.exists() and any(out.iterdir()):
        raise ModelLoadError(f"{out} is not empty; export into a new directory")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    config["base_model_name_or_path"] = base_model
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    shutil.copyfile(src / "adapter_model.safetensors", out / "adapter_model.safetensors")
    if (src / "metadata.json").is_file():  # answer sets: what the gateway constrains to
        shutil.copyfile(src / "metadata.json", out / "metadata.json")
    for path in out.iterdir():
        os.chmod(path, 0o600)
    return out


def _permute_rows(weight: Any, n_head: int) -> Any:
    """llama.cpp's q/k row order (``LlamaModel.permute`` in ``convert_hf_to_gguf.py``)."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def export_gguf(
    adapter_dir: str | Path, out_file: str | Path, *, base_config: Mapping[str, Any]
) -> Path:
    """Write an adapter as a GGUF LoRA for ``llama-server --lora FILE`` (Llama-family bases).

    Args:
        adapter_dir: A registered adapter version (PEFT LoRA directory).
        out_file: The ``.gguf`` file to write.
        base_config: The base model's ``config.json`` (``num_attention_heads``,
            ``num_key_value_heads``, ``num_hidden_layers``): the q/k permutation needs them.

    Returns:
        ``out_file``.

    Raises:
        ModelLoadError: Not a PEFT LoRA, a tensor llama.cpp has no name for, or a base config
            without the head counts.
    """
    import gguf
    from safetensors.torch import load_file

    src = Path(adapter_dir)
    config = _adapter_config(src)
    try:
        n_head = int(base_config["num_attention_heads"])
        n_kv = int(base_config.get("num_key_value_heads") or n_head)
        n_layers = int(base_config["num_hidden_layers"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"base model config lacks {exc}; pass the base config.json") from None
    alpha = float(config["lora_alpha"])
    if config.get("use_rslora"):  # rsLoRA scales by alpha/sqrt(r); llama.cpp by alpha/r
        alpha *= math.sqrt(float(config["r"]))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in load_file(str(src / "adapter_model.safetensors")).items():
        base = key.removeprefix(_PEFT_PREFIX)
        for part in ("lora_A", "lora_B"):
            if f".{part}." in base:
                module = base.replace(f".{part}.weight", "").replace(f".{part}.default.weight", "")
                pairs.setdefault(module, {})[part] = tensor.float()
                break
        else:
            raise ModelLoadError(f"{src}: tensor {key!r} is not a LoRA A/B matrix")

    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for module in sorted(pairs):
        pair = pairs[module]
        if set(pair) != {"lora_A", "lora_B"}:
            raise ModelLoadError(f"{src}: {module} has only {sorted(pair)}")
        name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if name is None:
            raise ModelLoadError(f"{src}: llama.cpp has no tensor for {module!r}")
        lora_b = pair["lora_B"]
        if module.endswith("q_proj"):
            lora_b = _permute_rows(lora_b, n_head)
        elif module.endswith("k_proj"):
            lora_b = _permute_rows(lora_b, n_kv)
        writer.add_tensor(name + ".lora_a", pair["lora_A"].contiguous().numpy())
        writer.add_tensor(name + ".lora_b", lora_b.contiguous().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.chmod(out, 0o600)
    return out


__all__ = ["PEFT_FILES", "export_gguf", "export_peft"]
