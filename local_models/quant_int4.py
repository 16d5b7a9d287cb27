"""CPU ``int4``: 4-bit weights in groups of 32 with bf16 compute, LoRA kept unmerged on top.

Why this shape: the default model ships as a Q4_1 GGUF, so every linear weight already *is* a
4-bit value in groups of 32 (``w = d * q + m``); re-packing it for torch's int4 kernel moves 4x
fewer bytes than fp32 and loses next to nothing against the fp32 copy training sees. A single
decoded token is memory-bound, so the packed kernel serves small batches; a batch of many rows
(prefill, a full wave) is compute-bound, where bf16 dense matmul on AVX512-BF16 beats the
packed kernel, so a bf16 copy serves those (``DENSE_ROWS``). The LoRA student is not merged into
the 4-bit weights (4-bit re-quantization would round it away): its A/B stay beside them, so what
is served is the base it was trained on plus the adapter, as QLoRA trains and serves; the bf16
copy has it merged.
``benchmarks/decode_paths.py`` and ``benchmarks/quantized_student.py`` measure both claims.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from local_models.errors import ModelLoadError
from local_models.loader import load_fp32_weights
from local_models.quantization import QuantBackend, register

GROUP = 32
"""Weights per scale/zero pair: the GGUF Q4_1 block size."""
DENSE_ROWS = 8
"""Inputs with this many rows or more use the bf16 dense copy (compute-bound there)."""


def _check() -> None:
    import torch

    if not hasattr(torch, "_weight_int4pack_mm_for_cpu"):
        raise ModelLoadError(
            f"precision 'int4' needs torch's CPU int4 kernel (torch >= 2.5), found {torch.__version__}"
        )


def _build_module():  # noqa: ANN202 - class built lazily so importing this file needs no torch
    import torch

    class Int4Linear(torch.nn.Module):
        """``nn.Linear`` replacement: packed int4 + bf16 dense weights, optional LoRA."""

        def __init__(
            self,
            weight: Any,
            bias: Any | None,
            lora: tuple[Any, Any, float] | None = None,
        ) -> None:
            super().__init__()
            w = weight.detach().float()
            n, k = w.shape
            if k % GROUP:
                raise ModelLoadError(f"int4 needs in_features divisible by {GROUP}, got {k}")
            groups = w.reshape(n, k // GROUP, GROUP)
            low, high = groups.amin(-1), groups.amax(-1)
            scale = ((high - low) / 15).clamp(min=1e-8)
            q = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15)
            q = q.to(torch.int32).reshape(n, k)
            # torch's layout: w = (q - 8) * scale + zero, so zero = low + 8 * scale.
            self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(q, 2))
            zeros = low + 8 * scale
            self.register_buffer(
                "scales_zeros",
                torch.stack([scale, zeros], -1).transpose(0, 1).contiguous().bfloat16(),
            )
            a, b, scaling = lora if lora is not None else (None, None, 0.0)
            # The dense copy is not re-quantized, so the adapter can be merged into it.
            merged = w if a is None else w + float(scaling) * (b.detach().float() @ a.float())
            self.register_buffer("dense", merged.bfloat16())
            self.register_buffer("bias", None if bias is None else bias.detach().bfloat16())
            self.out_features, self.in_features = n, k
            self.register_buffer("lora_a", None if a is None else a.detach().bfloat16())
            # scaling folded into B once, not multiplied on every decoded token
            scaled_b = None if b is None else (b.detach().float() * float(scaling)).bfloat16()
            self.register_buffer("lora_b", scaled_b)

        def forward(self, x: Any) -> Any:
            shape = x.shape
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
            if flat.shape[0] >= DENSE_ROWS:
                y = torch.nn.functional.linear(flat, self.dense)  # adapter merged in
            else:
                y = torch._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP, self.scales_zeros)
                if self.lora_a is not None:
                    y = y + (flat @ self.lora_a.T) @ self.lora_b.T
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*shape[:-1], self.out_features)

    return Int4Linear


def _lora_of(module: Any) -> tuple[Any, tuple[Any, Any, float] | None] | None:
    """(base Linear, LoRA A/B/scaling) of a PEFT LoRA layer; None for anything else."""
    base = getattr(module, "base_layer", None)
    lora_a = getattr(module, "lora_A", None)
    if base is None or lora_a is None:
        return None
    names = list(lora_a.keys())
    if not names:
        return base, None
    if len(names) > 1 or getattr(module, "use_dora", {}).get(names[0], False):
        raise ModelLoadError("int4 serves one plain LoRA adapter at a time (no DoRA)")
    name = names[0]
    return base, (lora_a[name].weight, module.lora_B[name].weight, module.scaling[name])


def to_int4(model: Any) -> Any:
    """Pack every decoder-layer linear to int4; the rest (embeddings, norms, head) to bf16.

    ``model`` is a plain HF causal LM or a PEFT model with one LoRA adapter attached and not
    merged; the result is a plain HF model whose linears carry the adapter.
    """
    import torch

    int4_linear = _build_module()
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = inner.model.layers

    def pack(parent: Any) -> None:
        for name, child in list(parent.named_children()):
            lora = _lora_of(child)
            if lora is not None:  # a PEFT layer: its own lora_A/B Linears are not packed
                base, adapter = lora
                setattr(parent, name, int4_linear(base.weight, base.bias, adapter))
            elif isinstance(child, torch.nn.Linear):
                setattr(parent, name, int4_linear(child.weight, child.bias))
            else:
                pack(child)

    pack(layers)
    return inner.to(torch.bfloat16).eval()


def _load(path: Path, *, device: str) -> Any:
    return to_int4(load_fp32_weights(path))


register(
    QuantBackend("int4", "cpu", load=_load, convert=to_int4, check=_check, merges_adapter=False)
)
