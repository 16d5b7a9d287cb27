"""The request loop: validate -> cache -> decide -> local / cloud (with cascade) -> ledger.

``HybridClient`` is a thin OpenAI-shaped surface over one ``Gateway``. Everything that must happen
exactly once per request lives here: retries, cost accounting, the ledger row (written in a
``finally``, so failures are recorded too) and shadow labelling.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from router.confidence import confidence as answer_confidence
from router.decision import Decider, Decision
from router.errors import BackendError, CloudError, HybridGateError, LocalModelError
from router.ledger import Ledger, LedgerEntry
from router.pricing import PriceBook
from router.responses import chunk, completion, final_chunk
from router.retry import Retrier
from router.shadow import ShadowLabeller
from router.types import BackendResult, ChatRequest, RouteInfo, StreamDelta
from router.validation import build_request

log = logging.getLogger("hybridgate")


@dataclass
class _Outcome:
    """What one request produced, before it becomes a response and a ledger row."""

    route: str
    reason: str
    result: BackendResult
    score: float | None = None
    confidence: float | None = None
    escalated: bool = False
    local_seconds: float = 0.0
    cache_hit: bool = False


class Gateway:
    """Owns the policy, transports, ledger, cache and price book for one client."""

    def __init__(
        self,
        *,
        policy: Any,
        ledger: Ledger,
        prices: PriceBook,
        cloud: Any,
        local_factory: Callable[[], Any] | None,
        cache: Any = None,
        classifier: Any = None,
        retrier: Retrier,
        judge: str | None = None,
        seed: int | None = None,
        adapter_watcher: Any = None,
    ) -> None:
        self.policy = policy
        self.ledger = ledger
        self.prices = prices
        self.cloud = cloud
        self.cache = cache
        self.retrier = retrier
        self._local_factory = local_factory
        self._local: Any = None
        self._local_lock = threading.Lock()
        self._rng = random.Random(seed)
        self.adapter_watcher = adapter_watcher
        self.decider = Decider(
            policy,
            classifier=classifier,
            cloud_spend_today=self._cloud_spend_today,
        )
        self.shadow = ShadowLabeller(
            ledger=ledger,
            local=self.local,
            judge=judge or policy.shadow.judge,
            max_pending=policy.shadow.max_pending,
            workers=policy.shadow.workers,
            prices=prices,
            usd_per_hour=policy.local.usd_per_hour,
            cloud=cloud,
            cloud_model=policy.cloud.model,
            policy_version=policy.version,
        )

    # -- backends ---------------------------------------------------------------------------
    def local(self) -> Any:
        """The local transport, built on first use (loading a model takes seconds)."""
        if self._local is None:
            with self._local_lock:
                if self._local is None:
                    if self._local_factory is None:
                        raise LocalModelError("no local model is configured for this client")
                    self._local = self._local_factory()
        if self.adapter_watcher is not None:  # a promotion made elsewhere reaches us here
            self.adapter_watcher.poll(self._local)
        return self._local

    @property
    def adapter_version(self) -> str | None:
        return getattr(self._local, "adapter_version", None) if self._local else None

    def _cloud_spend_today(self) -> float:
        tz = self.policy.budget.timezone
        return self.ledger.cloud_spend(since=_midnight(tz))

    # -- pieces shared by every call shape ---------------------------------------------------
    def begin(self, kwargs: dict[str, Any]) -> tuple[ChatRequest, LedgerEntry]:
        """Validate; on bad input still write a ledger row, then raise."""
        entry = LedgerEntry(
            request_id="",
            ts=time.time(),
            route="none",
            requested_model=str(kwargs.get("model") or self.policy.cloud.model),
            policy_version=self.policy.version,
            stream=bool(kwargs.get("stream")),
        )
        entry._t0 = time.perf_counter()  # type: ignore[attr-defined]
        try:
            request = build_request(kwargs, default_model=self.policy.cloud.model)
            if not self.prices.has_price(request.model):
                from router.errors import InvalidRequest

                raise InvalidRequest(
                    f"unknown model {request.model!r}: no price is known for it; add it under "
                    "cloud.prices in your policy (USD per 1M input/output tokens)",
                    param="model",
                )
        except HybridGateError as exc:
            entry.request_id = _new_id()
            self.fail(entry, exc)
            raise
        entry.request_id = request.request_id
        entry.user = request.user
        entry.tags = dict(request.metadata) or None
        if self.policy.store_content:
            entry.messages = [dict(m) for m in request.messages]
        return request, entry

    def cached(self, request: ChatRequest) -> _Outcome | None:
        if self.cache is None or not self.cache.cacheable(request):
            return None
        hit = self.cache.get(request, model=request.model, adapter_version=self.adapter_version)
        if hit is None:
            return None
        result = BackendResult(
            text=hit.text,
            finish_reason=hit.finish_reason,
            prompt_tokens=hit.prompt_tokens,
            completion_tokens=hit.completion_tokens,
            model=hit.model,
            adapter_version=hit.adapter_version,
        )
        return _Outcome(route="cache", reason="cache_hit", result=result, cache_hit=True)

    def decide(self, request: ChatRequest) -> Decision:
        return self.decider.decide(request)

    def _kept_locally(
        self, decision: Any, result: BackendResult
    ) -> tuple[_Outcome | None, float | None]:
        """The local outcome when the local answer stands (routed local, or confident enough);
        else None and the confidence that made the cascade escalate."""
        if decision.route == "local":
            return (
                _Outcome(
                    "local",
                    decision.reason,
                    result,
                    score=decision.score,
                    local_seconds=result.compute_seconds,
                ),
                None,
            )
        keep, conf = self.keep_local(result)
        if not keep:
            return None, conf
        outcome = _Outcome(
            "local",
            f"confident>={self.policy.thresholds.cascade:.2f}",
            result,
            score=decision.score,
            confidence=conf,
            local_seconds=result.compute_seconds,
        )
        return outcome, conf

    def keep_local(self, result: BackendResult) -> tuple[bool, float]:
        conf = answer_confidence(result.token_logprobs or [])
        return conf >= self.policy.thresholds.cascade, conf

    def finish(self, request: ChatRequest, entry: LedgerEntry, outcome: _Outcome) -> RouteInfo:
        """Price the outcome, fill and write the ledger row, cache and shadow; return RouteInfo."""
        result = outcome.result
        baseline = self.prices.cloud_cost(
            request.model, result.prompt_tokens, result.completion_tokens
        )
        local_cost = self.prices.local_cost(outcome.local_seconds, self.policy.local.usd_per_hour)
        if outcome.route == "cloud":
            cost = local_cost + self.prices.cloud_cost(
                request.model, result.prompt_tokens, result.completion_tokens
            )
        elif outcome.route == "local":
            cost = local_cost
        else:
            cost = 0.0
        latency_ms = (time.perf_counter() - entry._t0) * 1000  # type: ignore[attr-defined]
        entry.route = outcome.route
        entry.reason = outcome.reason
        entry.score = outcome.score
        entry.confidence = outcome.confidence
        entry.escalated = outcome.escalated
        entry.model = result.model or request.model
        entry.prompt_tokens = result.prompt_tokens
        entry.completion_tokens = result.completion_tokens
        entry.cost_usd = cost
        entry.baseline_cost_usd = baseline
        entry.latency_ms = latency_ms
        entry.cache_hit = outcome.cache_hit
        entry.adapter_version = result.adapter_version or self.adapter_version
        if self.policy.store_content:
            entry.answer = result.text
        self.ledger.record(entry)
        if self.cache is not None and not outcome.cache_hit and self.cache.cacheable(request):
            self.cache.put(
                request, result, model=request.model, adapter_version=self.adapter_version
            )
        if (
            outcome.route == "cloud"
            and not outcome.escalated
            and self.policy.shadow.rate > 0
            and self._local_factory is not None
            and self._rng.random() < self.policy.shadow.rate
        ):
            self.shadow.submit(request, result)
        return RouteInfo(
            route=outcome.route,  # type: ignore[arg-type]
            reason=outcome.reason,
            score=outcome.score,
            confidence=outcome.confidence,
            escalated=outcome.escalated,
            cost_usd=cost,
            baseline_cost_usd=baseline,
            latency_ms=latency_ms,
            policy_version=self.policy.version,
            adapter_version=entry.adapter_version,
            cache_hit=outcome.cache_hit,
            request_id=request.request_id,
        )

    def fail(self, entry: LedgerEntry, exc: BaseException, route: str | None = None) -> None:
        """Record a failed request; the ledger never misses a request."""
        entry.error_type = type(exc).__name__
        entry.error_message = str(exc)[:500]
        if route:
            entry.route = route
        entry.latency_ms = (time.perf_counter() - entry._t0) * 1000  # type: ignore[attr-defined]
        try:
            self.ledger.record(entry)
        except Exception:  # the caller's error matters more than a failed ledger write
            log.exception("could not record failed request %s", entry.request_id)

    def _deadline(self, request: ChatRequest) -> float | None:
        return time.monotonic() + request.timeout if request.timeout else None

    # -- sync ------------------------------------------------------------------------------
    def create(self, kwargs: dict[str, Any]) -> Any:
        request, entry = self.begin(kwargs)
        if request.stream:
            return self._stream(request, entry)
        route: str | None = None
        try:
            outcome = self.cached(request)
            if outcome is None:
                decision = self.decide(request)
                route = decision.route
                outcome = self._run(request, decision)
            info = self.finish(request, entry, outcome)
        except BaseException as exc:
            self.fail(entry, exc, route)
            raise
        return completion(request, outcome.result, info)

    def _cloud(self, request: ChatRequest) -> BackendResult:
        return self.retrier.call(
            lambda: self.cloud.complete(request), deadline=self._deadline(request)
        )

    def _run(self, request: ChatRequest, decision: Decision) -> _Outcome:
        if decision.route == "cloud":
            return _Outcome("cloud", decision.reason, self._cloud(request), score=decision.score)
        try:
            result = self.local().complete(request)
        except LocalModelError as exc:
            log.warning("local backend failed (%s); falling back to cloud", type(exc).__name__)
            return _Outcome(
                "cloud",
                f"fallback:{type(exc).__name__}",
                self._cloud(request),
                score=decision.score,
                escalated=True,
            )
        kept, conf = self._kept_locally(decision, result)
        if kept is not None:
            return kept
        return _Outcome(
            "cloud",
            "escalated:low_confidence",
            self._cloud(request),
            score=decision.score,
            confidence=conf,
            escalated=True,
            local_seconds=result.compute_seconds,
        )

    def _stream(self, request: ChatRequest, entry: LedgerEntry) -> Iterator[Any]:
        route: str | None = None
        try:
            outcome = self.cached(request)
            if outcome is not None:
                deltas: Iterator[StreamDelta] = iter([StreamDelta(text=outcome.result.text)])
            else:
                decision = self.decide(request)
                route = decision.route
                if decision.route == "cloud":
                    deltas, outcome = (
                        self._cloud_stream(request),
                        _Outcome(
                            "cloud", decision.reason, BackendResult(text=""), score=decision.score
                        ),
                    )
                elif decision.route == "local":
                    deltas = self.local().stream(request)
                    outcome = _Outcome(
                        "local", decision.reason, BackendResult(text=""), score=decision.score
                    )
                else:  # cascade: the answer must be complete before we know whether to keep it
                    outcome = self._run(request, decision)
                    deltas = iter([StreamDelta(text=outcome.result.text)])
        except BaseException as exc:
            self.fail(entry, exc, route)
            raise
        return self._emit(request, entry, deltas, outcome)

    def _cloud_stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        """Open the stream now, retrying until the first delta arrives; later failures are final."""
        holder: dict[str, Iterator[StreamDelta]] = {}

        def open_stream() -> StreamDelta:
            holder["it"] = iter(self.cloud.stream(request))
            return next(holder["it"])

        first = self.retrier.call(open_stream, deadline=self._deadline(request))
        return itertools.chain([first], holder["it"])

    def _emit(
        self,
        request: ChatRequest,
        entry: LedgerEntry,
        deltas: Iterator[StreamDelta],
        outcome: _Outcome,
    ) -> Iterator[Any]:
        cid = f"chatcmpl-{request.request_id}"
        created = int(time.time())
        parts: list[str] = []
        done = False
        try:
            yield chunk(cid, created, request.model, role="assistant")
            for delta in deltas:
                if delta.result is not None:
                    outcome.result = delta.result
                    if outcome.route == "local":
                        outcome.local_seconds = delta.result.compute_seconds
                    continue
                if delta.text:
                    parts.append(delta.text)
                    yield chunk(cid, created, request.model, content=delta.text)
            if outcome.result.text == "" and parts:
                outcome.result.text = "".join(parts)
            info = self.finish(request, entry, outcome)
            done = True
            yield from final_chunk(cid, created, request, outcome.result, info)
        except GeneratorExit:
            if not done:
                self.fail(
                    entry, ConnectionAbortedError("stream closed by the caller"), outcome.route
                )
            raise
        except BaseException as exc:
            if not done:
                self.fail(entry, exc, outcome.route)
            raise

    # -- async -----------------------------------------------------------------------------
    async def acreate(self, kwargs: dict[str, Any]) -> Any:
        request, entry = self.begin(kwargs)
        if request.stream:
            return await self._astream(request, entry)
        route: str | None = None
        try:
            outcome = self.cached(request)
            if outcome is None:
                decision = self.decide(request)
                route = decision.route
                outcome = await self._arun(request, decision)
            info = self.finish(request, entry, outcome)
        except BaseException as exc:
            self.fail(entry, exc, route)
            raise
        return completion(request, outcome.result, info)

    async def _acloud(self, request: ChatRequest) -> BackendResult:
        return await self.retrier.acall(
            lambda: self.cloud.acomplete(request), deadline=self._deadline(request)
        )

    async def _arun(self, request: ChatRequest, decision: Decision) -> _Outcome:
        if decision.route == "cloud":
            return _Outcome(
                "cloud", decision.reason, await self._acloud(request), score=decision.score
            )
        try:
            result = await self.local().acomplete(request)
        except LocalModelError as exc:
            log.warning("local backend failed (%s); falling back to cloud", type(exc).__name__)
            return _Outcome(
                "cloud",
                f"fallback:{type(exc).__name__}",
                await self._acloud(request),
                score=decision.score,
                escalated=True,
            )
        kept, conf = self._kept_locally(decision, result)
        if kept is not None:
            return kept
        return _Outcome(
            "cloud",
            "escalated:low_confidence",
            await self._acloud(request),
            score=decision.score,
            confidence=conf,
            escalated=True,
            local_seconds=result.compute_seconds,
        )

    async def _astream(self, request: ChatRequest, entry: LedgerEntry) -> AsyncIterator[Any]:
        route: str | None = None
        try:
            outcome = self.cached(request)
            if outcome is not None:
                deltas = _aiter([StreamDelta(text=outcome.result.text)])
            else:
                decision = self.decide(request)
                route = decision.route
                if decision.route == "cloud":
                    deltas = await self._acloud_stream(request)
                    outcome = _Outcome(
                        "cloud", decision.reason, BackendResult(text=""), score=decision.score
                    )
                elif decision.route == "local":
                    deltas = self.local().astream(request)
                    outcome = _Outcome(
                        "local", decision.reason, BackendResult(text=""), score=decision.score
                    )
                else:
                    outcome = await self._arun(request, decision)
                    deltas = _aiter([StreamDelta(text=outcome.result.text)])
        except BaseException as exc:
            self.fail(entry, exc, route)
            raise
        return self._aemit(request, entry, deltas, outcome)

    async def _acloud_stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        holder: dict[str, Any] = {}

        async def open_stream() -> StreamDelta:
            it = self.cloud.astream(request).__aiter__()
            holder["it"] = it
            return await it.__anext__()

        first = await self.retrier.acall(open_stream, deadline=self._deadline(request))

        async def chain() -> AsyncIterator[StreamDelta]:
            yield first
            async for d in holder["it"]:
                yield d

        return chain()

    async def _aemit(
        self,
        request: ChatRequest,
        entry: LedgerEntry,
        deltas: AsyncIterator[StreamDelta],
        outcome: _Outcome,
    ) -> AsyncIterator[Any]:
        cid = f"chatcmpl-{request.request_id}"
        created = int(time.time())
        parts: list[str] = []
        done = False
        try:
            yield chunk(cid, created, request.model, role="assistant")
            async for delta in deltas:
                if delta.result is not None:
                    outcome.result = delta.result
                    if outcome.route == "local":
                        outcome.local_seconds = delta.result.compute_seconds
                    continue
                if delta.text:
                    parts.append(delta.text)
                    yield chunk(cid, created, request.model, content=delta.text)
            if outcome.result.text == "" and parts:
                outcome.result.text = "".join(parts)
            info = self.finish(request, entry, outcome)
            done = True
            for c in final_chunk(cid, created, request, outcome.result, info):
                yield c
        except GeneratorExit:
            if not done:
                self.fail(
                    entry, ConnectionAbortedError("stream closed by the caller"), outcome.route
                )
            raise
        except BaseException as exc:
            if not done:
                self.fail(entry, exc, outcome.route)
            raise

    def close(self) -> None:
        self.shadow.close()
        closer = getattr(self._local, "close", None)
        if closer:
            closer()
        if self.cache is not None and hasattr(self.cache, "close"):
            self.cache.close()


async def _aiter(items: list[StreamDelta]) -> AsyncIterator[StreamDelta]:
    for item in items:
        yield item


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex


def _midnight(tz: str) -> float:
    """Unix time of today's midnight in ``tz`` (the daily budget resets then)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    now = datetime.now(ZoneInfo(tz))
    return now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


__all__ = ["BackendError", "CloudError", "Gateway"]
