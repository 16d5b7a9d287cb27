"""Local small-model backend: loading/conversion, quantization, batched generation, LoRA swap,
the adapter registry.

>>> from local_models import LocalEngine, LocalModelConfig, DynamicBatcher
>>> engine = LocalEngine.from_config(LocalModelConfig(precision="int8"))
>>> batcher = DynamicBatcher(engine, max_batch_size=16, max_wait_ms=5, max_queue=256)

A leaf package: it imports nothing from ``router`` or ``training`` and raises its own few errors
(``local_models.errors``), which the gateway's local transport translates. Importing it is cheap:
torch/transformers/peft load only when a model does.
"""

from local_models.batcher import DynamicBatcher
from local_models.config import GenerationRequest, GenerationResult, LocalModelConfig
from local_models.engine import LocalEngine
from local_models.errors import (
    AdapterMetadataError,
    BatcherClosed,
    InvalidRequest,
    LocalModelError,
    ModelLoadError,
    Overloaded,
    RegistryError,
)
from local_models.loader import (
    DEFAULT_MODEL,
    default_gguf_path,
    load_model,
    models_cache_dir,
    pull_default_model,
    resolve_model,
)
from local_models.prompt import render_chat
from local_models.quantization import available_precisions
from local_models.registry import AdapterInfo, AdapterRegistry

__all__ = [
    "DEFAULT_MODEL",
    "AdapterInfo",
    "AdapterMetadataError",
    "AdapterRegistry",
    "BatcherClosed",
    "DynamicBatcher",
    "GenerationRequest",
    "GenerationResult",
    "InvalidRequest",
    "LocalEngine",
    "LocalModelConfig",
    "LocalModelError",
    "ModelLoadError",
    "Overloaded",
    "RegistryError",
    "available_precisions",
    "default_gguf_path",
    "load_model",
    "models_cache_dir",
    "pull_default_model",
    "render_chat",
    "resolve_model",
]
