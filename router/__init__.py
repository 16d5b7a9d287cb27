"""hybridgate's gateway: drop-in OpenAI-style clients that route local or cloud.

>>> from router import HybridClient
>>> client = HybridClient(policy="default")
>>> client.chat.completions.create(messages=[{"role": "user", "content": "hi"}]).route

Names are imported lazily (PEP 562) so that ``hybridgate report`` does not pay for ``openai``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "HybridClient": "router.client",
    "AsyncHybridClient": "router.client",
    "RoutingPolicy": "router.policy",
    "load_policy": "router.policy",
    "Ledger": "router.ledger",
    "LedgerEntry": "router.ledger",
    "PriceBook": "router.ledger.pricing",
    "RouteInfo": "router.types",
    "ChatRequest": "router.types",
    "BackendResult": "router.types",
    "DifficultyClassifier": "router.scoring.classifier",
    "ReplayCloud": "router.devtools.replay",
    "RetryConfig": "router._gateway.retry",
    "HybridGateError": "router.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'router' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
