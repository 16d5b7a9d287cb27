"""Local small-model backend: loading/conversion, quantization, batched generation, LoRA swap,
the adapter registry.

>>> from local_models import LocalEngine, LocalModelConfig, DynamicBatcher
>>> engine = LocalEngine.from_config(LocalModelConfig(precision="int8"))
>>> batcher = DynamicBatcher(engine, max_batch_size=16, max_wait_ms=5, max_queue=256)

A leaf package: it imports nothing from ``router`` or ``training`` and raises its own few errors
(``local_models.errors``), which the gateway's local transport translates. Importing it is cheap:
names load on first use (PEP 562), and torch/transformers/peft only when a model does, so
``router`` may use ``local_models._home`` on the CLI's fast path.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DynamicBatcher": "local_models.batcher",
    "GenerationRequest": "local_models.config",
    "GenerationResult": "local_models.config",
    "LocalModelConfig": "local_models.config",
    "LocalEngine": "local_models.engine",
    "AdapterMetadataError": "local_models.errors",
    "BatcherClosed": "local_models.errors",
    "InvalidRequest": "local_models.errors",
    "LocalModelError": "local_models.errors",
    "ModelLoadError": "local_models.errors",
    "Overloaded": "local_models.errors",
    "RegistryError": "local_models.errors",
    "DEFAULT_MODEL": "local_models.loader",
    "default_gguf_path": "local_models.loader",
    "load_model": "local_models.loader",
    "models_cache_dir": "local_models.loader",
    "pull_default_model": "local_models.loader",
    "resolve_model": "local_models.loader",
    "render_chat": "local_models.prompt",
    "available_precisions": "local_models.quantization",
    "AdapterInfo": "local_models.registry",
    "AdapterRegistry": "local_models.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'local_models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
