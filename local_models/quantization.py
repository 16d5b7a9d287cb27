"""Precision registry: one backend module per quantization method, looked up in a dict.

Backends register here (``quant_torch`` for CPU fp32/bf16/int8, ``quant_bnb`` for CUDA
bitsandbytes); the engine and loader never branch on precision names themselves.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from local_models.errors import ModelLoadError

AUTO_PRECISION = {"cpu": "fp32", "cuda": "bf16"}
"""What ``precision="auto"`` means per device when the CPU has no native bf16 matmul.

On a CPU with AVX512-BF16 or AMX (``cpu_has_bf16``), auto is ``int4`` instead: Q4_1-exact
4-bit weights with bf16 compute and the LoRA unmerged; ``benchmarks/quantized_student.py``
measured the demo's student there within 1 point of fp32 with the same confidence AUC, and
``benchmarks/decode_paths.py`` measured it several times faster (README "Which precision").
int8 dynamic quantization (activations too) cut that student's accuracy by ~20 points and is
never picked automatically. Without native bf16 (older CPUs), bf16 and int4 fall back to slow
kernels, so fp32 stays the default there."""


def cpu_has_bf16() -> bool:
    """True when the CPU advertises native bf16 dot products (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:  # non-Linux: stay on the safe default
        return False
    return False


def auto_precision(device: str) -> str:
    """The precision ``auto`` resolves to on ``device`` (``cpu`` or ``cuda``)."""
    if device == "cpu" and cpu_has_bf16():
        return "int4"
    return AUTO_PRECISION[device]


@dataclass(frozen=True)
class QuantBackend:
    """How one precision turns a safetensors dir (or an fp32 model) into a serving model."""

    name: str
    """Precision name as users write it (``int8``, ``nf4``...)."""
    device: str
    """``cpu`` or ``cuda``."""
    load: Callable[..., Any]
    """``load(path, *, device) -> model``: load weights straight into this precision."""
    convert: Callable[[Any], Any] | None = None
    """``convert(fp32_model) -> model`` for backends that can quantize an in-memory model
    (needed to serve merged LoRA adapters); None when only ``load`` is possible."""
    check: Callable[[], None] | None = None
    """Raises ModelLoadError naming the missing hardware or package."""
    merges_adapter: bool = True
    """False: ``convert`` receives the PEFT model with the LoRA attached, unmerged, and keeps
    it beside the base (a merge into 4-bit weights would be rounded away)."""


_REGISTRY: dict[tuple[str, str], QuantBackend] = {}
_BACKEND_MODULES = ("local_models.quant_torch", "local_models.quant_int4", "local_models.quant_bnb")
_loaded = False


def register(backend: QuantBackend) -> QuantBackend:
    """Add a backend to the registry (called at import of each backend module)."""
    _REGISTRY[(backend.name, backend.device)] = backend
    return backend


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        for module in _BACKEND_MODULES:
            importlib.import_module(module)
        _loaded = True


def available_precisions() -> dict[str, list[str]]:
    """Registered precisions per device, e.g. ``{"cpu": ["bf16", "fp32", "int8"], ...}``."""
    _ensure_loaded()
    out: dict[str, list[str]] = {}
    for name, device in _REGISTRY:
        out.setdefault(device, []).append(name)
    return {k: sorted(v) for k, v in out.items()}


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda`` when available else ``cpu``; validate explicit names.

    Raises:
        ValueError: unknown device name.
    """
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return device


def get_backend(precision: str, *, device: str) -> QuantBackend:
    """Find the backend for ``precision`` on ``device`` and check its requirements.

    Args:
        precision: Registered name or ``auto``.
        device: ``cpu`` or ``cuda`` (already resolved).

    Returns:
        The backend.

    Raises:
        ModelLoadError: Unknown precision, or one that needs CUDA/bitsandbytes not present.
    """
    _ensure_loaded()
    if precision == "auto":
        precision = auto_precision(device)
    backend = _REGISTRY.get((precision, device))
    if backend is None:
        other = [d for (p, d) in _REGISTRY if p == precision]
        if other:
            raise ModelLoadError(
                f"precision {precision!r} needs device {' or '.join(sorted(other))}, "
                f"but device is {device!r}"
                + (" (no CUDA GPU available)" if "cuda" in other and device == "cpu" else "")
            )
        raise ModelLoadError(
            f"unknown precision {precision!r}; available: {available_precisions()}"
        )
    if backend.check is not None:
        backend.check()
    return backend
