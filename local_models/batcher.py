"""Continuous batching: requests from many threads/coroutines share one model thread.

The model thread keeps one ``RunningBatch`` (``running_batch.py``) and, between decode steps,
splices waiting requests into it (up to ``max_batch_size`` rows): a request waits for the step
in progress, never for a whole earlier generation. When nothing is running, the first request
waits up to ``max_wait_ms`` for company so a burst is prefilled in one pass. A row leaves as
soon as it ends, or when its caller cancels the future (a closed stream, a timed-out
``result``), freeing its slot. After an adapter swap the running rows finish on the adapter
they started on and newcomers wait for them, so every answer comes from one adapter. torch
releases the GIL, so sync and async callers stay responsive. A full queue fails fast with
``Overloaded``: full by count (``max_queue``) or by expected wait (``max_queue_wait_s``: the
requests ahead divided by the throughput measured while demand exceeded the batch).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

from local_models.config import GenerationRequest, GenerationResult
from local_models.engine import LocalEngine
from local_models.errors import BatcherClosed, LocalModelError, Overloaded
from local_models.running_batch import Row, RunningBatch
from local_models.threads import release_thread_pool

logger = logging.getLogger(__name__)

_DONE = object()


class _Throughput:
    """Rows finished per second of model time while requests were waiting (so the rate is the
    batch's capacity, not the offered load), decayed so it follows the adapter, lengths and
    machine load of the last minute or so."""

    DECAY = 0.98
    MIN_SECONDS = 1.0

    def __init__(self) -> None:
        self.rows = 0.0
        self.seconds = 0.0

    def add(self, rows: int, seconds: float) -> None:
        self.rows = self.rows * self.DECAY + rows
        self.seconds = self.seconds * self.DECAY + seconds

    def seconds_for(self, rows: int) -> float | None:
        """Expected seconds for ``rows`` more rows to finish; None until measured."""
        if self.seconds < self.MIN_SECONDS or self.rows <= 0:
            return None
        return rows * self.seconds / self.rows


def _too_long(wait: float, bound: float) -> Overloaded:
    """The refusal of a request that would wait ``wait`` s for a slot, over ``bound``."""
    return Overloaded(
        f"local queue would wait ~{wait:.1f} s for a slot (the bound is {bound:g} s); "
        "retry later or route to the cloud",
        retry_after_s=wait - bound,
    )


@dataclass
class _Item:
    request: GenerationRequest
    future: Future
    on_delta: Callable[[str], None] | None = None
    enqueued: float = field(default_factory=time.perf_counter)


def _settle(future: Future, *, result: object = None, error: BaseException | None = None) -> None:
    """Resolve a future unless its caller cancelled it meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled by its caller: nobody is waiting
        pass


def _guarded(item: _Item) -> Callable[[str], None] | None:
    """The item's delta callback, made unable to break the batch its neighbours decode in."""
    callback = item.on_delta
    if callback is None:
        return None

    def deliver(text: str) -> None:
        try:
            callback(text)
        except Exception:  # noqa: BLE001 - a broken consumer loses its stream, not the batch
            logger.exception("stream consumer failed; cancelling its request")
            item.future.cancel()

    return deliver


class DynamicBatcher:
    """Queue + background model thread that groups concurrent requests into batches.

    >>> batcher = DynamicBatcher(engine, max_batch_size=16, max_wait_ms=5, max_queue=256)
    >>> result = batcher.submit(request).result()      # or: await batcher.asubmit(request)
    >>> for piece in batcher.stream(request): ...       # str deltas, then the GenerationResult
    """

    def __init__(
        self,
        engine: LocalEngine,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        max_queue_wait_s: float | None = None,
    ) -> None:
        """Start the model thread.

        Args:
            engine: The engine that runs each batch.
            max_batch_size: Most requests per batch.
            max_wait_ms: How long the first request of a batch waits for company.
            max_queue: Pending requests beyond this are rejected with ``Overloaded``.
            max_queue_wait_s: A request expected to wait longer than this for a slot is
                rejected with ``Overloaded`` (None: no bound).

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
        self.max_queue_wait_s = max_queue_wait_s
        self._saturated = _Throughput()
        self._finished = 0  # rows delivered (model thread only)
        self._pending: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.running_rows = 0
        """Rows decoding right now (read by a server's /metrics; written by the model thread)."""
        self.observe_wait: Callable[[float], None] | None = None
        """Called with each request's seconds in the queue when it joins the batch (metrics)."""
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
            max_queue_wait_s=c.max_queue_wait_s,
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
            ahead = len(self._pending)
            if ahead >= self.max_queue:
                raise Overloaded(
                    f"local queue full ({self.max_queue} requests waiting); retry later or "
                    "route to the cloud",
                    retry_after_s=self._saturated.seconds_for(ahead - self.max_queue + 1),
                )
            bound = self.max_queue_wait_s
            # ``ahead`` waiting means the batch is full: this one needs ahead + 1 slots to free
            if ahead > 0 and bound is not None and not req.background:
                wait = self._saturated.seconds_for(ahead + 1)
                if wait is not None and wait > bound:
                    raise _too_long(wait, bound)
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
        try:
            while True:
                piece = pieces.get()
                if piece is _DONE:
                    break
                yield piece
            yield future.result()
        finally:  # the caller stopped reading: free its slot in the running batch
            future.cancel()

    async def astream(self, req: GenerationRequest) -> AsyncIterator[str | GenerationResult]:
        """Async form of :meth:`stream`."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(pieces.put_nowait, item)
            except RuntimeError:  # the caller's event loop is gone
                future.cancel()

        future = self.submit(req, on_delta=put)
        future.add_done_callback(lambda _f: put(_DONE))
        try:
            while True:
                piece = await pieces.get()
                if piece is _DONE:
                    break
                yield piece
            yield future.result()
        finally:
            future.cancel()

    def expected_wait_s(self) -> float | None:
        """Seconds a request queued now would wait for a slot (None: not measured yet)."""
        with self._cond:
            ahead = len(self._pending)
        return self._saturated.seconds_for(ahead + 1) if ahead else 0.0

    @property
    def queue_depth(self) -> int:
        """Requests waiting to join the running batch (not counting its rows)."""
        with self._cond:
            return len(self._pending)

    def close(self) -> None:
        """Stop the model thread; waiting requests fail with BatcherClosed, running rows finish."""
        with self._cond:
            self._closed = True
            leftover = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for item in leftover:
            _settle(item.future, error=BatcherClosed("the local batcher was closed"))
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=60)

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ model thread
    def _take(self, *, idle: bool, room: int) -> list[_Item] | None:
        """Waiting requests to splice in (at most ``room``); None when closed and idle.

        Idle, it blocks for the first request, then gives it ``max_wait_ms`` to gather company
        (one prefill for a burst); with rows running it takes whoever waits, without waiting.
        """
        with self._cond:
            if idle:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                deadline = self._pending[0].enqueued + self.max_wait_s
                while len(self._pending) < room and not self._closed:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            taken: list[_Item] = []
            while self._pending and len(taken) < room:
                item = self._pending.popleft()
                if not item.future.cancelled():
                    taken.append(item)
            return taken

    def _run(self) -> None:
        batch = None
        while True:
            running = batch is not None and bool(batch.rows)
            # After an adapter swap, running rows finish on their adapter before anyone joins.
            frozen = running and not batch.serves_current_model
            room = 0 if frozen else self.max_batch_size - (len(batch.rows) if running else 0)
            if not running and not self._pending:
                # Going idle: free this thread's OpenMP team so torch work elsewhere in the
                # process (training, another model) runs at full speed (``threads.py``).
                release_thread_pool()
            items = self._take(idle=not running, room=room) if room else []
            if items is None:
                return
            saturated = bool(self._pending)  # demand exceeds the batch: time is capacity
            t0, done0 = time.perf_counter(), self._finished
            if items:
                if not running:
                    batch = self.engine.open_batch()
                if not self._admit(batch, items):
                    batch = None
                    continue
            if batch is not None and batch.rows and not self._step(batch):
                batch = None
            if saturated:
                self._saturated.add(self._finished - done0, time.perf_counter() - t0)
                self._shed()
            self.running_rows = len(batch.rows) if batch is not None else 0

    def _shed(self) -> None:
        """Refuse the newest waiting requests that can no longer start within the bound.

        A burst arrives before the throughput is known, so ``submit`` lets it in up to
        ``max_queue``; once measured, whoever would wait too long is told at once (and a
        cloud-eligible request goes to the cloud now, not after the wait).
        """
        bound = self.max_queue_wait_s
        per_row = self._saturated.seconds_for(1)
        if bound is None or per_row is None:
            return
        keep = max(1, int(bound / per_row))  # the request at position k waits (k + 1) rows
        shed: list[tuple[int, _Item]] = []
        with self._cond:
            if len(self._pending) <= keep:
                return
            kept: collections.deque[_Item] = collections.deque()
            for position, item in enumerate(self._pending):
                if position < keep or item.request.background:
                    kept.append(item)
                else:
                    shed.append((position, item))
            self._pending = kept
        for position, item in shed:
            _settle(item.future, error=_too_long((position + 1) * per_row, bound))

    def _admit(self, batch: RunningBatch, items: list[_Item]) -> bool:
        """Prefill newcomers into ``batch``; False when the batch broke (all its rows failed)."""
        accepted, encoded = [], []
        for item in items:
            try:
                encoded.append(self.engine.encode(item.request))
            except LocalModelError as exc:  # one bad request must not fail its neighbours
                _settle(item.future, error=exc)
            else:
                accepted.append(item)
        if not accepted:
            return True
        if self.observe_wait is not None:
            now = time.perf_counter()
            for item in accepted:
                self.observe_wait(now - item.enqueued)
        try:
            rows = batch.add(
                [item.request for item in accepted],
                encoded,
                tags=accepted,
                on_delta=[_guarded(item) for item in accepted],
            )
        except BaseException as exc:  # noqa: BLE001 - deliver every failure to its caller
            logger.exception("local prefill failed")
            for item in accepted + [row.tag for row in batch.rows]:
                _settle(item.future, error=exc)
            return False
        self._deliver(batch, [row for row in rows if row.finish is not None])
        return True

    def _step(self, batch: RunningBatch) -> bool:
        """One decode step; False when it failed (every running row gets the error)."""
        gone = [row for row in batch.rows if row.tag.future.cancelled()]
        if gone:
            batch.drop(gone)
            if not batch.rows:
                return True
        try:
            done = batch.step()
        except BaseException as exc:  # noqa: BLE001
            logger.exception("local decode step failed")
            for row in batch.rows:
                _settle(row.tag.future, error=exc)
            return False
        self._deliver(batch, done)
        return True

    def _deliver(self, batch: RunningBatch, rows: list[Row]) -> None:
        self._finished += len(rows)
        for row in rows:
            _settle(row.tag.future, result=batch.result(row))
