"""Dynamic batching: requests from many threads/coroutines share one model thread.

Wave-based: a batch forms when ``max_batch_size`` requests wait or ``max_wait_ms`` passes
after the first one, then runs to completion (each row leaves as soon as it finishes, so
the tail of a wave is cheap); short and long requests (by ``max_tokens``) go in separate
waves. One background thread owns the model; torch releases the GIL, so sync and async
callers both stay responsive. A full queue fails fast with ``Overloaded``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

from local_models.config import GenerationRequest, GenerationResult
from local_models.engine import LocalEngine
from local_models.errors import BatcherClosed, LocalModelError, Overloaded

logger = logging.getLogger(__name__)

_DONE = object()


@dataclass
class _Item:
    request: GenerationRequest
    future: Future
    on_delta: Callable[[str], None] | None = None
    enqueued: float = field(default_factory=time.perf_counter)


LONG_GENERATION = 64
"""Requests allowed more new tokens than this form their own waves (see ``_next_batch``)."""


def _is_long(item: _Item) -> bool:
    return item.request.max_tokens > LONG_GENERATION


class DynamicBatcher:
    """Queue + background model thread that groups concurrent requests into batches.

    >>> batcher = DynamicBatcher(engine, max_batch_size=16, max_wait_ms=5, max_queue=256)
    >>> result = batcher.submit(request).result()      # or: await batcher.asubmit(request)
    >>> for piece in batcher.stream(request): ...       # str deltas, then the GenerationResult
    """

    def __init__(
        self, engine: LocalEngine, *, max_batch_size: int, max_wait_ms: float, max_queue: int
    ) -> None:
        """Start the model thread.

        Args:
            engine: The engine that runs each batch.
            max_batch_size: Most requests per batch.
            max_wait_ms: How long the first request of a batch waits for company.
            max_queue: Pending requests beyond this are rejected with ``Overloaded``.

        Raises:
            ValueError: A limit is not positive.
        """
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(
                "max_batch_size and max_queue must be >= 1 and max_wait_ms >= 0, got "
                f"{max_batch_size}, {max_queue}, {max_wait_ms}"
            )
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._pending: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="hybridgate-batcher", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, engine: LocalEngine) -> DynamicBatcher:
        """Build with the limits in ``engine.config``."""
        c = engine.config
        return cls(
            engine,
            max_batch_size=c.max_batch_size,
            max_wait_ms=c.max_wait_ms,
            max_queue=c.max_queue,
        )

    # ------------------------------------------------------------------ public API
    def submit(
        self, req: GenerationRequest, *, on_delta: Callable[[str], None] | None = None
    ) -> Future[GenerationResult]:
        """Queue one request; the future resolves to its result.

        Raises:
            Overloaded: ``max_queue`` requests are already waiting (raised at once).
            BatcherClosed: The batcher is closed.
        """
        if not isinstance(req, GenerationRequest):
            raise TypeError(f"expected GenerationRequest, got {type(req).__name__}")
        future: Future[GenerationResult] = Future()
        with self._cond:
            if self._closed:
                raise BatcherClosed("the local batcher is closed")
            if len(self._pending) >= self.max_queue:
                raise Overloaded(
                    f"local queue full ({self.max_queue} requests waiting); retry later or "
                    "route to the cloud"
                )
            self._pending.append(_Item(req, future, on_delta))
            self._cond.notify()
        return future

    async def asubmit(self, req: GenerationRequest) -> GenerationResult:
        """Async form of :meth:`submit`."""
        return await asyncio.wrap_future(self.submit(req))

    def stream(self, req: GenerationRequest) -> Iterator[str | GenerationResult]:
        """Yield text deltas as they are decoded, then the final ``GenerationResult``."""
        pieces: queue.SimpleQueue = queue.SimpleQueue()
        future = self.submit(req, on_delta=pieces.put)
        future.add_done_callback(lambda _f: pieces.put(_DONE))
        while True:
            piece = pieces.get()
            if piece is _DONE:
                break
            yield piece
        yield future.result()

    async def astream(self, req: GenerationRequest) -> AsyncIterator[str | GenerationResult]:
        """Async form of :meth:`stream`."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, item)

        future = self.submit(req, on_delta=put)
        future.add_done_callback(lambda _f: put(_DONE))
        while True:
            piece = await pieces.get()
            if piece is _DONE:
                break
            yield piece
        yield future.result()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not counting the one running)."""
        with self._cond:
            return len(self._pending)

    def close(self) -> None:
        """Stop the model thread; waiting requests fail with BatcherClosed."""
        with self._cond:
            self._closed = True
            leftover = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for item in leftover:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(BatcherClosed("the local batcher was closed"))
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=60)

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ model thread
    def _next_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = self._pending[0].enqueued + self.max_wait_s
            while len(self._pending) < self.max_batch_size and not self._closed:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._closed:
                return None
            # The oldest request goes first and takes company of its own length class: a
            # wave lasts as long as its longest row, so short requests are not held behind a
            # long generation and long ones share one wave instead of stretching many.
            long = _is_long(self._pending[0])
            batch: list[_Item] = []
            kept: collections.deque[_Item] = collections.deque()
            while self._pending and len(batch) < self.max_batch_size:
                item = self._pending.popleft()
                if _is_long(item) != long:
                    kept.append(item)
                elif item.future.set_running_or_notify_cancel():  # skip cancelled callers
                    batch.append(item)
            kept.extend(self._pending)
            self._pending = kept
            return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[_Item]) -> None:
        def on_delta(index: int, text: str) -> None:
            callback = batch[index].on_delta
            if callback is not None:
                callback(text)

        try:
            results = self.engine.generate([item.request for item in batch], on_delta=on_delta)
        except LocalModelError as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            # One bad request (e.g. prompt too long) must not fail its neighbours.
            for item in batch:
                self._run_single(item)
            return
        except BaseException as exc:  # noqa: BLE001 - deliver every failure to its caller
            logger.exception("local batch failed")
            for item in batch:
                item.future.set_exception(exc)
            return
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)

    def _run_single(self, item: _Item) -> None:
        def on_delta(_index: int, text: str) -> None:
            if item.on_delta is not None:
                item.on_delta(text)

        try:
            [result] = self.engine.generate([item.request], on_delta=on_delta)
        except BaseException as exc:  # noqa: BLE001
            item.future.set_exception(exc)
        else:
            item.future.set_result(result)
