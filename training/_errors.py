"""Training errors, rooted in the gateway's one exception tree (``router.errors``)."""

from __future__ import annotations

from router.errors import HybridGateError, ModelLoadError


class TrainingError(HybridGateError, RuntimeError):
    """Training cannot run as configured (e.g. QLoRA without CUDA); the message says why."""


class RegistryError(HybridGateError, ValueError):
    """An adapter version is unknown, or the registry on disk is inconsistent."""


class AdapterMetadataError(RegistryError, ModelLoadError):
    """An adapter's ``metadata.json`` (or the registry's own files) cannot be read or parsed.

    It is also a ``ModelLoadError``: a local request that needs the adapter gets the gateway's
    usual local-failure handling (cloud fallback) instead of a raw ``JSONDecodeError``.
    """
