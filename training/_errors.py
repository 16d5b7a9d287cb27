"""Training errors, rooted in the gateway's one exception tree (``router.errors``)."""

from __future__ import annotations

from router.errors import HybridGateError


class TrainingError(HybridGateError, RuntimeError):
    """Training cannot run as configured (e.g. QLoRA without CUDA); the message says why."""


class RegistryError(HybridGateError, ValueError):
    """An adapter version is unknown, or the registry on disk is inconsistent."""
