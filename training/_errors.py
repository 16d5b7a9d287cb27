"""Training errors, rooted in the gateway's one exception tree (``router.errors``).

The registry's errors belong to the registry, which lives in ``local_models``: ``RegistryError``
and ``AdapterMetadataError`` are re-exported here so ``from training import RegistryError``
keeps working. Model-loading failures reach training code as ``local_models.errors``'
``ModelLoadError`` (training calls ``local_models`` directly, not through the gateway).
"""

from __future__ import annotations

from local_models.errors import AdapterMetadataError, RegistryError
from router.errors import HybridGateError


class TrainingError(HybridGateError, RuntimeError):
    """Training cannot run as configured (e.g. QLoRA without CUDA); the message says why."""


__all__ = ["AdapterMetadataError", "RegistryError", "TrainingError"]
