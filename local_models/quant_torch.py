"""Plain-torch precisions: fp32 and bf16 on CPU/CUDA, int8 dynamic quantization on CPU.

int8 uses ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` including the
49152x576 ``lm_head``; quantizing it unties it from the fp32 embedding, which is what makes
int8 fast (the head is the largest matmul per decoded token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from local_models.loader import load_fp32_weights
from local_models.quantization import QuantBackend, register


def _untie_lm_head(model: Any) -> Any:
    import torch

    head = model.get_output_embeddings()
    if head is not None and head.weight is model.get_input_embeddings().weight:
        head.weight = torch.nn.Parameter(head.weight.detach().clone())
        model.config.tie_word_embeddings = False
    return model


def to_fp32(model: Any) -> Any:
    """Identity conversion (keeps the fp32 model)."""
    return model.float()


def to_bf16(model: Any) -> Any:
    """Cast all weights to bfloat16."""
    import torch

    return model.to(torch.bfloat16)


def to_int8_dynamic(model: Any) -> Any:
    """Quantize every nn.Linear (lm_head included) to int8 with dynamic activation scales."""
    import warnings

    import torch

    model = _untie_lm_head(model.float())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notice, not actionable here
        return torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )


def _loader(convert):  # noqa: ANN001, ANN202 - small factory
    def load(path: Path, *, device: str) -> Any:
        model = convert(load_fp32_weights(path))
        return model.to(device) if device != "cpu" else model

    return load


register(QuantBackend("fp32", "cpu", load=_loader(to_fp32), convert=to_fp32))
register(QuantBackend("bf16", "cpu", load=_loader(to_bf16), convert=to_bf16))
register(QuantBackend("int8", "cpu", load=_loader(to_int8_dynamic), convert=to_int8_dynamic))
register(QuantBackend("fp32", "cuda", load=_loader(to_fp32), convert=lambda m: m.cuda()))
register(QuantBackend("bf16", "cuda", load=_loader(to_bf16), convert=lambda m: to_bf16(m).cuda()))
