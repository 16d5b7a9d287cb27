"""Local small-model backend: loading/conversion, quantization, batched generation, LoRA swap.

>>> from local_models import LocalEngine, LocalModelConfig, DynamicBatcher
>>> engine = LocalEngine.from_config(LocalModelConfig(precision="int8"))
>>> batcher = DynamicBatcher(engine, max_batch_size=16, max_wait_ms=5, max_queue=256)

Importing this package is cheap: torch/transformers/peft load only when a model does.
"""

from local_models.batcher import DynamicBatcher
from local_models.config import GenerationRequest, GenerationResult, LocalModelConfig
from local_models.engine import LocalEngine
from local_models.loader import (
    DEFAULT_MODEL,
    default_gguf_path,
    load_model,
    models_cache_dir,
    pull_default_model,
    resolve_model,
)
from local_models.quantization import available_precisions

__all__ = [
    "DEFAULT_MODEL",
    "DynamicBatcher",
    "GenerationRequest",
    "GenerationResult",
    "LocalEngine",
    "LocalModelConfig",
    "available_precisions",
    "default_gguf_path",
    "load_model",
    "models_cache_dir",
    "pull_default_model",
    "resolve_model",
]
