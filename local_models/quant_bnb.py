"""CUDA bitsandbytes precisions: ``nf4`` (4-bit, bf16 compute) and ``int8`` (LLM.int8).

Guarded: without a CUDA GPU or the ``bitsandbytes`` package the check raises a
ModelLoadError that names what is missing, before any weights are read.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from local_models.errors import ModelLoadError
from local_models.quantization import QuantBackend, register


def _check() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ModelLoadError("bitsandbytes precisions (nf4, int8 on cuda) need a CUDA GPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            "bitsandbytes is not installed: pip install 'hybridgate[cuda]' (bitsandbytes>=0.43)"
        )


def _load(bits: int):  # noqa: ANN202 - small factory
    def load(path: Path, *, device: str) -> Any:
        import torch
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        _check()
        if bits == 4:
            qconf = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
        else:
            qconf = BitsAndBytesConfig(load_in_8bit=True)
        try:
            return AutoModelForCausalLM.from_pretrained(
                path, quantization_config=qconf, device_map={"": 0}, dtype=torch.bfloat16
            )
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"bitsandbytes load of {path} failed: {exc}") from exc

    return load


register(QuantBackend("nf4", "cuda", load=_load(4), check=_check))
register(QuantBackend("int8", "cuda", load=_load(8), check=_check))
