"""Transport over the local model: ChatRequest -> batcher -> BackendResult.

Only translation lives here (parameters in, errors out); batching and generation are in
``local_models``. ``local_models`` is a leaf with its own few errors (``local_models.errors``);
this is the boundary where they become ``router.errors``' types, chained ``from exc``, as
httpx's transports translate httpcore's errors:

==============================  ==========================================
``local_models.errors``         ``router.errors``
==============================  ==========================================
ModelLoadError, RegistryError   ModelLoadError
AdapterMetadataError            AdapterMetadataError (defined below)
InvalidRequest                  InvalidRequest (400, ``param`` kept)
Overloaded                      Overloaded (503)
BatcherClosed, LocalModelError  LocalModelError (500)
torch out of memory             LocalOutOfMemory (503)
future timeout                  BatcherTimeout (504)
==============================  ==========================================

Every way the gateway reaches into ``local_models`` passes here: requests, building the
transport (``from_config``), adapter swaps and reading the registry's current adapter
(:func:`current_adapter`). torch is imported inside ``from_config``, so importing this module
is cheap for the CLI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from local_models import errors as local
from router._defaults import LOCAL_MAX_NEW_TOKENS
from router.errors import (
    BatcherTimeout,
    HybridGateError,
    InvalidRequest,
    LocalModelError,
    LocalOutOfMemory,
    ModelLoadError,
    Overloaded,
)
from router.types import BackendResult, ChatRequest, StreamDelta

if TYPE_CHECKING:
    from local_models import GenerationRequest, GenerationResult, LocalModelConfig


class AdapterMetadataError(ModelLoadError, local.AdapterMetadataError):
    """Broken adapter metadata, as the gateway raises it: a ``router.errors.ModelLoadError``
    (local-failure handling, cloud fallback) that is still ``local_models``' (and so
    ``training``'s) ``AdapterMetadataError``, because callers catch that public name around
    ``HybridClient`` calls; the ledger's ``error_type`` keeps reading ``AdapterMetadataError``."""


_TRANSLATIONS: dict[type[local.LocalModelError], type[HybridGateError]] = {
    local.AdapterMetadataError: AdapterMetadataError,
    local.RegistryError: ModelLoadError,
    local.ModelLoadError: ModelLoadError,
    local.InvalidRequest: InvalidRequest,
    local.Overloaded: Overloaded,
    local.BatcherClosed: LocalModelError,
    local.LocalModelError: LocalModelError,
}
"""``local_models`` error -> ours; the first class of the error's MRO found here wins."""


def translate(exc: BaseException) -> BaseException:
    """The ``router.errors`` error for a failure from below; ours and non-``Exception``s
    (``KeyboardInterrupt``, ``GeneratorExit``) are returned as they are.

    Args:
        exc: What ``local_models``, torch or a future raised.

    Returns:
        ``exc`` itself, or a new error of our tree whose ``__cause__`` is ``exc``.
    """
    from concurrent.futures import TimeoutError as FutureTimeout

    if isinstance(exc, HybridGateError) or not isinstance(exc, Exception):
        return exc
    target = next((_TRANSLATIONS[t] for t in type(exc).__mro__ if t in _TRANSLATIONS), None)
    err: BaseException
    if target is InvalidRequest:
        err = InvalidRequest(str(exc), param=getattr(exc, "param", None))
    elif target is Overloaded:
        err = Overloaded(str(exc), retry_after_s=getattr(exc, "retry_after_s", None))
    elif target is not None:
        err = target(str(exc))
    elif _is_oom(exc):
        err = LocalOutOfMemory(f"local model ran out of memory: {exc}")
    elif isinstance(exc, (FutureTimeout, TimeoutError)):  # also asyncio's before 3.11
        err = BatcherTimeout("local request did not finish within its timeout")
    else:
        err = LocalModelError(f"local generation failed: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


_T = TypeVar("_T")


def _translated(call: Callable[[], _T]) -> _T:
    """``call()``, with a ``local_models`` error raised as ours (chained ``from`` it)."""
    try:
        return call()
    except local.LocalModelError as exc:
        raise translate(exc) from exc


def current_adapter(root: str | Path | None = None) -> tuple[Path, str] | None:
    """``(path, version)`` of the adapter the registry at ``root`` has promoted, or None.

    The gateway reads the registry (``local_models.registry``) only through here, so a broken
    ``CURRENT`` or ``metadata.json`` reaches it as ``router.errors`` (``AdapterMetadataError``,
    a ``ModelLoadError``) like any other local load failure.

    Raises:
        ModelLoadError: The registry's files cannot be read; the message names the file.
    """
    from local_models.registry import AdapterRegistry

    info = _translated(AdapterRegistry(root).current)
    return (info.path, info.version) if info else None


def _is_oom(exc: BaseException) -> bool:
    import sys

    torch = sys.modules.get("torch")  # torch is loaded whenever a local model ran
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class LocalTransport:
    """Answers requests with the local model through a DynamicBatcher.

    >>> transport = LocalTransport.from_config(LocalModelConfig(precision="int8"))
    >>> transport.complete(ChatRequest(messages=({"role": "user", "content": "hi"},), model="x"))
    BackendResult(text=..., finish_reason='stop', ...)
    """

    name = "local"

    def __init__(
        self,
        engine_or_batcher: Any,
        *,
        model_name: str,
        max_new_tokens: int = LOCAL_MAX_NEW_TOKENS,
    ) -> None:
        """Wrap a DynamicBatcher, or a LocalEngine (a batcher is built from its config).

        Args:
            engine_or_batcher: ``DynamicBatcher`` or ``LocalEngine``.
            model_name: Reported as ``BackendResult.model`` (the model spec).
            max_new_tokens: Most tokens one answer may have (the policy's
                ``local.max_new_tokens``): a request without ``max_tokens`` gets this many, one
                asking for more is capped to it.
        """
        from local_models import DynamicBatcher, LocalEngine

        if isinstance(engine_or_batcher, DynamicBatcher):
            self.batcher = engine_or_batcher
        elif isinstance(engine_or_batcher, LocalEngine):
            self.batcher = DynamicBatcher.from_config(engine_or_batcher)
        else:
            raise TypeError(
                f"expected DynamicBatcher or LocalEngine, got {type(engine_or_batcher).__name__}"
            )
        self.model_name = model_name
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_config(
        cls, config: LocalModelConfig, *, max_new_tokens: int = LOCAL_MAX_NEW_TOKENS
    ) -> LocalTransport:
        """Load the model described by ``config`` and start its batcher.

        Raises:
            ModelLoadError: The model cannot be loaded; the message says how to fix it.
        """
        from local_models import LocalEngine

        return cls(
            _translated(lambda: LocalEngine.from_config(config)),
            model_name=config.model,
            max_new_tokens=max_new_tokens,
        )

    @property
    def engine(self) -> Any:
        """The LocalEngine behind the batcher (for ``swap_adapter``)."""
        return self.batcher.engine

    @property
    def adapter_version(self) -> str | None:
        """The LoRA adapter version new requests are served with (recorded on ledger rows)."""
        return self.engine.adapter_version

    def swap_adapter(self, path: str, *, version: str) -> None:
        """Hot-swap the adapter; in-flight requests finish on the old one, a bad dir keeps it.

        Raises:
            ModelLoadError: The adapter does not load (the old one keeps serving).
        """
        _translated(lambda: self.engine.swap_adapter(path, version=version))

    def close(self) -> None:
        """Stop the batcher thread."""
        self.batcher.close()

    # ------------------------------------------------------------------ translation
    def _to_generation(self, request: ChatRequest) -> GenerationRequest:
        from local_models import GenerationRequest

        if request.tools or request.response_format:
            raise InvalidRequest(
                "the local model does not support tools or response_format, and this request "
                "is pinned to it (or was routed to it); send it to the cloud instead",
                param="tools" if request.tools else "response_format",
            )
        try:
            return GenerationRequest(
                messages=tuple(request.messages),
                max_tokens=min(request.max_tokens or self.max_new_tokens, self.max_new_tokens),
                temperature=0.0 if request.temperature is None else float(request.temperature),
                top_p=1.0 if request.top_p is None else float(request.top_p),
                stop=tuple(request.stop),
                seed=request.seed,
                background=request.background,
                allowed_answers=request.allowed_answers,
            )
        except ValueError as exc:  # local_models' InvalidRequest is a ValueError too
            raise InvalidRequest(str(exc), param=getattr(exc, "param", None)) from exc

    def _to_backend(self, result: GenerationResult, request: ChatRequest) -> BackendResult:
        tokens = None
        if request.logprobs:  # each token's own text, as OpenAI's logprobs.content[i].token
            decode = self.engine.tokenizer.decode
            tokens = [decode([i]) for i in result.token_ids]
        return BackendResult(
            text=result.text,
            finish_reason=result.finish_reason,  # type: ignore[arg-type]
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            model=self.model_name,
            compute_seconds=result.compute_seconds,
            token_logprobs=list(result.token_logprobs),
            adapter_version=result.adapter_version,
            closed_answer=result.closed_answer,
            answer_check=result.answer_check,
            tokens=tokens,
        )

    @staticmethod
    def _raise(exc: BaseException) -> NoReturn:
        translated = translate(exc)
        if translated is exc:
            raise exc
        raise translated from exc

    # ------------------------------------------------------------------ Transport protocol
    def complete(self, request: ChatRequest) -> BackendResult:
        """Answer one request (blocks the calling thread, not the batcher)."""
        gen = self._to_generation(request)
        future = None
        try:
            future = self.batcher.submit(gen)
            result = future.result(timeout=request.timeout)
        except BaseException as exc:
            if future is not None:
                future.cancel()  # a timed-out request leaves the running batch
            self._raise(exc)
        return self._to_backend(result, request)

    async def acomplete(self, request: ChatRequest) -> BackendResult:
        """Async form of :meth:`complete`."""
        import asyncio

        gen = self._to_generation(request)
        try:  # the same deadline as the sync path: what is left of the request's
            result = await asyncio.wait_for(self.batcher.asubmit(gen), timeout=request.timeout)
        except BaseException as exc:
            self._raise(exc)
        return self._to_backend(result, request)

    def stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        """Text deltas as decoded, then one delta carrying the full BackendResult."""
        from local_models import GenerationResult

        gen = self._to_generation(request)
        try:
            for piece in self.batcher.stream(gen):
                if isinstance(piece, GenerationResult):
                    yield StreamDelta(result=self._to_backend(piece, request))
                else:
                    yield StreamDelta(text=piece)
        except Exception as exc:
            self._raise(exc)

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """Async form of :meth:`stream`."""
        from local_models import GenerationResult

        gen = self._to_generation(request)
        try:
            async for piece in self.batcher.astream(gen):
                if isinstance(piece, GenerationResult):
                    yield StreamDelta(result=self._to_backend(piece, request))
                else:
                    yield StreamDelta(text=piece)
        except Exception as exc:
            self._raise(exc)
