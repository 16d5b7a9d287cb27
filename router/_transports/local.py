"""Transport over the local model: ChatRequest -> batcher -> BackendResult.

Only translation lives here (parameters in, errors out); batching and generation are in
``local_models``. Heavy imports happen inside ``from_config``, so importing this module is
cheap for the CLI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from router.errors import InvalidRequest, LocalModelError, LocalOutOfMemory
from router.types import BackendResult, ChatRequest, StreamDelta

if TYPE_CHECKING:
    from local_models import GenerationRequest, GenerationResult, LocalModelConfig

DEFAULT_LOCAL_MAX_TOKENS = 256


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

    def __init__(self, engine_or_batcher: Any, *, model_name: str) -> None:
        """Wrap a DynamicBatcher, or a LocalEngine (a batcher is built from its config).

        Args:
            engine_or_batcher: ``DynamicBatcher`` or ``LocalEngine``.
            model_name: Reported as ``BackendResult.model`` (the model spec).
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

    @classmethod
    def from_config(cls, config: LocalModelConfig) -> LocalTransport:
        """Load the model described by ``config`` and start its batcher.

        Raises:
            ModelLoadError: The model cannot be loaded; the message says how to fix it.
        """
        from local_models import LocalEngine

        return cls(LocalEngine.from_config(config), model_name=config.model)

    @property
    def engine(self) -> Any:
        """The LocalEngine behind the batcher (for ``swap_adapter``)."""
        return self.batcher.engine

    @property
    def adapter_version(self) -> str | None:
        """The LoRA adapter version new requests are served with (recorded on ledger rows)."""
        return self.engine.adapter_version

    def swap_adapter(self, path: str, *, version: str) -> None:
        """Hot-swap the adapter; in-flight requests finish on the old one, a bad dir keeps it."""
        self.engine.swap_adapter(path, version=version)

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
                max_tokens=request.max_tokens or DEFAULT_LOCAL_MAX_TOKENS,
                temperature=0.0 if request.temperature is None else float(request.temperature),
                top_p=1.0 if request.top_p is None else float(request.top_p),
                stop=tuple(request.stop),
                seed=request.seed,
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc

    def _to_backend(self, result: GenerationResult) -> BackendResult:
        return BackendResult(
            text=result.text,
            finish_reason=result.finish_reason,  # type: ignore[arg-type]
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            model=self.model_name,
            compute_seconds=result.compute_seconds,
            token_logprobs=list(result.token_logprobs),
            adapter_version=result.adapter_version,
        )

    @staticmethod
    def _translate(exc: BaseException) -> BaseException:
        """Map a lower-layer failure to our tree (chained ``from exc``); ours pass through."""
        from concurrent.futures import TimeoutError as FutureTimeout

        from router.errors import BatcherTimeout, HybridGateError

        if isinstance(exc, HybridGateError) or not isinstance(exc, Exception):
            return exc
        if _is_oom(exc):
            err: BaseException = LocalOutOfMemory(f"local model ran out of memory: {exc}")
        elif isinstance(exc, FutureTimeout):
            err = BatcherTimeout("local request did not finish within its timeout")
        else:
            err = LocalModelError(f"local generation failed: {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return err

    def _raise(self, exc: BaseException) -> NoReturn:
        translated = self._translate(exc)
        if translated is exc:
            raise exc
        raise translated from exc

    # ------------------------------------------------------------------ Transport protocol
    def complete(self, request: ChatRequest) -> BackendResult:
        """Answer one request (blocks the calling thread, not the batcher)."""
        gen = self._to_generation(request)
        try:
            result = self.batcher.submit(gen).result(timeout=request.timeout)
        except BaseException as exc:
            self._raise(exc)
        return self._to_backend(result)

    async def acomplete(self, request: ChatRequest) -> BackendResult:
        """Async form of :meth:`complete`."""
        gen = self._to_generation(request)
        try:
            result = await self.batcher.asubmit(gen)
        except BaseException as exc:
            self._raise(exc)
        return self._to_backend(result)

    def stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        """Text deltas as decoded, then one delta carrying the full BackendResult."""
        from local_models import GenerationResult

        gen = self._to_generation(request)
        try:
            for piece in self.batcher.stream(gen):
                if isinstance(piece, GenerationResult):
                    yield StreamDelta(result=self._to_backend(piece))
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
                    yield StreamDelta(result=self._to_backend(piece))
                else:
                    yield StreamDelta(text=piece)
        except Exception as exc:
            self._raise(exc)
