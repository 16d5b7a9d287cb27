"""Small builders shared by local-model and training tests."""

from __future__ import annotations

import json
from pathlib import Path


def fake_adapter(path: Path, tag: str) -> Path:
    """A well-formed adapter (LoRA config, finite tensors) tagged in its config. It fits no
    model, so the tests that promote it skip the model smoke test (``smoke_test=False``)."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "tag": tag}))
    save_file({"lora_A.weight": torch.ones(2, 4)}, str(path / "adapter_model.safetensors"))
    return path
