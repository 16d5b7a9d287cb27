"""The half of ``router.errors`` that needs no ``openai``: the root and the errors of the light paths.

``router.errors`` is the one documented exception tree; it imports these classes and re-exports
them, so ``router.errors.PolicyError is router._errors.PolicyError``. They live here so that the
modules on the fast paths (``router.policy``, ``router.ledger``, the classifier) can raise them
without importing ``openai`` and ``httpx`` (~0.7 s), which the ``openai``-shaped errors in
``router.errors`` need. Import them from ``router.errors`` unless import time matters.
"""

from __future__ import annotations


class HybridGateError(Exception):
    """Root of every error hybridgate raises."""


class PolicyError(HybridGateError, ValueError):
    """A routing policy is invalid; the message names file, line and field when known."""


class RoutingError(HybridGateError):
    """No backend could be chosen for a request."""


class BackendError(HybridGateError):
    """A backend failed to answer. Fallback code catches this, never bare Exception."""

    retryable: bool = False


class CloudError(BackendError):
    """The cloud provider failed; concrete subclasses also subclass openai's errors."""

    status_code: int | None = None


class BudgetExceeded(HybridGateError):
    """The policy's daily cloud budget is spent and the policy says to fail."""


class NotFittedError(HybridGateError, ValueError):
    """A classifier was used before ``fit`` or ``load``."""


class LedgerError(HybridGateError):
    """The ledger file cannot be used (read-only, corrupt, foreign, newer schema)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


__all__ = [
    "BackendError",
    "BudgetExceeded",
    "CloudError",
    "HybridGateError",
    "LedgerError",
    "NotFittedError",
    "PolicyError",
    "RoutingError",
]
