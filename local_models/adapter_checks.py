"""Check an adapter version before ``CURRENT`` points at it.

The registry used to switch ``CURRENT`` to any directory with the right file names, so a
truncated copy, NaN weights or an adapter for another model went live and every local request
failed (or, worse, answered garbage). ``AdapterRegistry.promote`` now runs two checks first:

- :func:`check_files` (no model, milliseconds): the config is a LoRA config, the weights parse,
  are floating point and finite, and are the bytes that were registered (the sha256 recorded by
  ``register``), so nothing changed them after the gate measured them;
- :func:`smoke_test` (loads the base model, seconds): the adapter loads onto the base it was
  trained on, every tensor lands in a module of that base, and one forward pass gives finite
  logits.

Both raise ``RegistryError`` naming the version's directory and what is wrong. They live in
``local_models`` beside the registry: what they check is whether serving can load the adapter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from local_models.answer_checker import CHECKER_FILE
from local_models.errors import ModelLoadError, RegistryError

WEIGHTS_SHA256_KEY = "adapter_sha256"
"""Metadata key of the sha256 over an adapter's ``*.safetensors`` (written by ``register``)."""

SMOKE_MESSAGES: tuple[dict[str, str], ...] = ({"role": "user", "content": "Hello, can you help?"},)
"""The one conversation the forward pass runs (any short prompt works: it checks mechanics)."""


def hash_model_files(model_dir: Path | None) -> str | None:
    """sha256 over a model's or adapter's weight files (safetensors or GGUF), in name order;
    None when there are none. Registration records it; promotion compares it."""
    if model_dir is None:
        return None
    files = sorted([*Path(model_dir).glob("*.safetensors"), *Path(model_dir).glob("*.gguf")])
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def weights_sha256(adapter_dir: str | Path) -> str | None:
    """sha256 over the adapter's weight files in name order (None when there are none)."""
    return hash_model_files(Path(adapter_dir))


def _config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path}: adapter_config.json is unreadable: {exc}") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{path}: adapter_config.json is not a JSON object")
    peft_type = config.get("peft_type")
    if peft_type is not None and str(peft_type).upper() != "LORA":
        raise RegistryError(f"{path}: not a LoRA adapter (peft_type {peft_type!r})")
    r = config.get("r")
    if r is not None and (not isinstance(r, int) or isinstance(r, bool) or r < 1):
        raise RegistryError(f"{path}: adapter_config.json has an invalid rank r={r!r}")
    return config


def check_files(path: str | Path, metadata: Mapping[str, Any]) -> int:
    """Cheap checks of an adapter directory; returns the number of weight tensors.

    Raises:
        RegistryError: no or unreadable weights, non-float or non-finite tensors, a config
            that is not LoRA, or weights that differ from the ones registered.
    """
    import torch
    from safetensors import safe_open

    path = Path(path)
    _config(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise RegistryError(f"{path}: no *.safetensors weights")
    recorded = metadata.get(WEIGHTS_SHA256_KEY)
    if recorded is not None and recorded != weights_sha256(path):
        raise RegistryError(
            f"{path}: weights changed since the adapter was registered (sha256 differs from "
            "metadata.json's adapter_sha256); register the new weights as a new version"
        )
    n = 0
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                    tensor = fh.get_tensor(key)
                    if not tensor.is_floating_point():
                        raise RegistryError(f"{f}: tensor {key!r} is {tensor.dtype}, not float")
                    if tensor.numel() == 0:
                        raise RegistryError(f"{f}: tensor {key!r} is empty")
                    if not bool(torch.isfinite(tensor).all()):
                        raise RegistryError(f"{f}: tensor {key!r} holds NaN or infinite values")
                    n += 1
        except RegistryError:
            raise
        except Exception as exc:  # safetensors raises its own error types for bad bytes
            raise RegistryError(f"{f}: unreadable adapter weights: {exc}") from None
    if n == 0:
        raise RegistryError(f"{path}: the weight files hold no tensors")
    return n


def smoke_test(path: str | Path, metadata: Mapping[str, Any]) -> None:
    """Load the adapter onto its base model and run one forward pass.

    The base is the one recorded at registration (``base_model``, else the adapter config's
    ``base_model_name_or_path``); when its hash was recorded too (``base_model_sha256``) the
    installed base must match it, since an adapter is only meaningful on the weights it was
    trained on.

    Raises:
        RegistryError: no base model is known, the base differs from the recorded one, the
            adapter does not load onto it or misses/adds tensors, or the logits are not finite.
    """
    import torch
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    from local_models.loader import load_fp32_weights, load_tokenizer, resolve_model
    from local_models.prompt import prompt_messages, render_chat

    path = Path(path)
    config = _config(path)
    base = metadata.get("base_model") or config.get("base_model_name_or_path")
    if not base:
        raise RegistryError(
            f"{path}: cannot smoke-test the adapter: neither metadata.json (base_model) nor "
            "adapter_config.json (base_model_name_or_path) names its base model"
        )
    try:
        base_dir = resolve_model(str(base))
        model, tok = load_fp32_weights(base_dir), load_tokenizer(base_dir)
    except ModelLoadError as exc:
        raise RegistryError(f"{path}: cannot load its base model {base!r}: {exc}") from None
    recorded = metadata.get("base_model_sha256")
    if recorded is not None and hash_model_files(base_dir) != recorded:
        raise RegistryError(
            f"{path}: the adapter was trained on another build of {base!r} (base_model_sha256 "
            "differs from the installed weights)"
        )
    try:
        peft_model = PeftModel.from_pretrained(model, str(path))
    except Exception as exc:  # shape mismatches, bad configs: PEFT raises many types
        raise RegistryError(f"{path}: the adapter does not load onto {base!r}: {exc}") from None
    expected = get_peft_model_state_dict(peft_model)
    stored: dict[str, Any] = {}
    for f in sorted(path.glob("*.safetensors")):
        if f.name != CHECKER_FILE:  # the answer checker's tensors belong to no module
            stored.update(load_file(str(f)))
    unexpected = sorted(set(stored) - set(expected))
    missing = sorted(set(expected) - set(stored))
    if unexpected or missing:
        detail = f"{len(unexpected)} tensors match no module of the base" if unexpected else ""
        if missing:
            detail += ("; " if detail else "") + f"{len(missing)} adapter tensors are missing"
        example = (unexpected or missing)[0]
        raise RegistryError(f"{path}: the adapter does not fit {base!r}: {detail} (e.g. {example})")
    messages = prompt_messages(SMOKE_MESSAGES, system_prompt=metadata.get("system_prompt"))
    ids = tok(render_chat(tok, messages), add_special_tokens=False).input_ids
    peft_model.eval()
    with torch.no_grad():
        logits = peft_model(input_ids=torch.tensor([ids], device=peft_model.device)).logits
    if not bool(torch.isfinite(logits).all()):
        raise RegistryError(f"{path}: the adapter makes {base!r} produce NaN or infinite logits")


__all__ = ["WEIGHTS_SHA256_KEY", "check_files", "hash_model_files", "smoke_test", "weights_sha256"]
