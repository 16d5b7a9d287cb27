"""The few errors ``local_models`` raises: a leaf package, so its own small tree.

::

    LocalModelError             (root: everything this package raises on purpose)
      ModelLoadError            weights, tokenizer, adapter or precision unusable here
      InvalidRequest            a generation request the engine cannot run (also ValueError)
      Overloaded                the batcher's queue is full
      BatcherClosed             the batcher was closed before the request ran
      RegistryError             unknown adapter version, failed promotion check (also ValueError)
        AdapterMetadataError    a registry/adapter JSON file is unreadable (also ModelLoadError)

``local_models`` imports nothing from ``router`` or ``training``. The gateway's transport
(``router/_transports/local.py``) translates these into ``router.errors`` at its boundary, chained
``from exc``, as httpx's transports translate httpcore's errors; ``training`` catches them as they
are. Lower-layer failures (torch's out-of-memory, a peft exception) are not wrapped here unless
the message can say something more useful.
"""

from __future__ import annotations


class LocalModelError(Exception):
    """Root of the errors ``local_models`` raises."""


class ModelLoadError(LocalModelError):
    """The model, its tokenizer or an adapter cannot be loaded; the message says how to fix it."""


class InvalidRequest(LocalModelError, ValueError):
    """A generation request is malformed or does not fit (bad messages, a prompt longer than the
    context, a parameter out of range). ``param`` names the offending field when known."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class Overloaded(LocalModelError):
    """The local request queue is full: back off or route elsewhere."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        """Seconds until the queue is expected to have room, when the batcher knows."""


class BatcherClosed(LocalModelError):
    """The batcher was closed, before this request was queued or while it waited."""


class RegistryError(LocalModelError, ValueError):
    """An adapter version is unknown, the registry on disk is inconsistent, or a version failed
    the checks ``AdapterRegistry.promote`` runs before ``CURRENT`` moves."""


class AdapterMetadataError(RegistryError, ModelLoadError):
    """An adapter's ``metadata.json`` (or the registry's own files) cannot be read or parsed.

    It is also a ``ModelLoadError``: a local request that needs the adapter gets the gateway's
    usual local-failure handling (cloud fallback) instead of a raw ``JSONDecodeError``.
    """


__all__ = [
    "AdapterMetadataError",
    "BatcherClosed",
    "InvalidRequest",
    "LocalModelError",
    "ModelLoadError",
    "Overloaded",
    "RegistryError",
]
