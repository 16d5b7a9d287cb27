"""The request loop: validate -> decide -> cache -> local / cloud (with cascade) -> ledger.

``HybridClient`` is a thin OpenAI-shaped surface over one ``Gateway``. Everything that must happen
exactly once per request lives here: the deadline, retries, cost accounting, the ledger row
(written on every exit, failures included) and shadow labelling.

Three promises shape the code:

- A request the decision pinned to the local model (a ``force_local_tags`` tag,
  ``metadata={"route": "local"}``, ``mode: local``, a spent budget with ``on_exceeded: local``)
  never reaches the cloud: a local failure is the caller's error, not a fallback.
- The cache is looked up *after* the decision, under the backend that produced each answer, so a
  request never gets an answer from a backend its decision excludes.
- Rows == requests: a stream that is never read, cut short, or closed early still gets its row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from router._gateway.decision import Decider, Decision
from router._gateway.responses import completion
from router._gateway.retry import Retrier
from router._gateway.shadow import ShadowLabeller
from router._gateway.stream import AsyncHybridStream, HybridStream, StreamAssembler
from router._gateway.validation import build_request
from router.errors import (
    BackendError,
    CloudError,
    CloudTimeout,
    HybridGateError,
    InvalidRequest,
    LocalModelError,
)
from router.ledger import Ledger, LedgerEntry, redact_values
from router.ledger.pricing import PriceBook
from router.scoring.confidence import confidence as answer_confidence
from router.types import BackendResult, ChatRequest, RouteInfo, StreamDelta, Tenant

log = logging.getLogger("hybridgate")

FLIGHT_CLAIM_S = 120.0
"""How long a shared-cache flight claim lives when the call has no deadline (a crashed
leader's claim expires; waiting gateways then answer on their own)."""
FLIGHT_POLL_S = 0.01
WARN_EVERY_S = 30.0
"""A repeated warning (the local queue full under load) is logged once per this window."""


class _ThrottledLog:
    """One warning per kind per window, with how many were folded into it: at 500 clients a
    full local queue would otherwise log a line per request."""

    def __init__(self, every_s: float = WARN_EVERY_S) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._folded: dict[str, int] = {}
        self._lock = threading.Lock()

    def warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.every_s:
                self._folded[kind] = self._folded.get(kind, 0) + 1
                return
            self._last[kind] = now
            folded = self._folded.pop(kind, 0)
        if folded:
            message += f" (and {folded} more in the last {self.every_s:.0f} s)"
        log.warning(message, *args)


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
    deltas: Any = None
    """For a streamed answer: the opened delta stream (its first delta already arrived)."""
    tier: str | None = None
    """The cheaper cloud tier (its model) whose answer stood; None: the local or final model."""
    tiers_usd: float = 0.0
    """What the other cloud tries cost (paid, not kept): the cheaper tiers asked before the
    answering one, and for an explored request every try after it too."""
    answer_usd: float | None = None
    """What the answering tier cost, when it is a cheaper tier (else priced as ``cloud.model``)."""

    def _with(self, local_seconds: float, confidence: float | None) -> _Outcome:
        """An escalated outcome: the local try's compute and confidence go on its row."""
        self.escalated = True
        self.local_seconds = local_seconds
        self.confidence = confidence
        return self

    @classmethod
    def answer(
        cls, route: str, reason: str, got: Any, score: float | None, streamed: bool
    ) -> _Outcome:
        """The outcome of a step whose answer stands: a result, or a stream still to read."""
        if streamed:
            return cls(route, reason, BackendResult(""), score, deltas=got)
        seconds = got.compute_seconds if route == "local" else 0.0
        return cls(route, reason, got, score, local_seconds=seconds)


@dataclass(frozen=True)
class _Step:
    """One backend call the plan asks for."""

    backend: str
    """``local``, ``cloud`` (``cloud.model``, the last tier) or ``tier`` (a cheaper one)."""
    stream: bool = False
    tier: int = 0
    """For ``tier``: the index into ``cloud.tiers``."""


Plan = Generator[_Step, Any, _Outcome]


@dataclass
class _Call:
    """One request in flight: its validated form, its ledger row, and its clock."""

    entry: LedgerEntry
    t0: float
    request: ChatRequest | None = None
    deadline: float | None = None
    """``time.monotonic()`` by which the whole call (local try, retries, backoff) must end."""
    total_s: float | None = None
    flight: str | None = None
    """The shared-cache flight this call leads (released once its answer is stored)."""
    cloud_allowed: bool = True
    """False once the decision pinned the request local: nothing may send it to the cloud."""

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def at(self, route: str, reason: str, *, escalated: bool = False) -> None:
        """Note where the call is now, so a failure's row says where it failed."""
        self.entry.route = route
        self.entry.reason = reason
        self.entry.escalated = self.entry.escalated or escalated


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
        seed: int | None = None,
        adapter_watcher: Any = None,
        adapter_hint: Callable[[], str | None] | None = None,
        secrets: tuple[str, ...] = (),
        tiers: tuple[Any, ...] = (),
    ) -> None:
        """``tiers``: one cloud transport per ``policy.cloud.tiers`` entry, in its order."""
        if len(tiers) != len(policy.cloud.tiers):
            raise ValueError(
                f"{len(policy.cloud.tiers)} cloud tiers in the policy, {len(tiers)} transports"
            )
        self.policy = policy
        self.tiers = tiers
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
        self._adapter_hint = adapter_hint
        self._secrets = tuple(s for s in secrets if s)
        self._flights: dict[str, Future[BackendResult]] = {}
        self._flights_lock = threading.Lock()
        self._warnings = _ThrottledLog()
        self.decider = Decider(
            policy,
            classifier=classifier,
            cloud_spend_today=self._cloud_spend_today,
        )
        self.shadow = ShadowLabeller(
            ledger=ledger,
            local=self.local,
            judge=policy.shadow.judge,
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
        """The adapter local answers come from now; before the model loads, the one it will
        load (so a fresh gateway after a promotion does not replay the old adapter's answers)."""
        if self._local is not None:
            return getattr(self._local, "adapter_version", None)
        return self._adapter_hint() if self._adapter_hint is not None else None

    def _cloud_spend_today(self, tenant: str | None = None) -> float:
        tz = self.policy.budget.timezone
        return self.ledger.cloud_spend(since=_midnight(tz), tenant=tenant)

    def _cloud_attempt(self, call: _Call) -> ChatRequest:
        """The request for one cloud attempt: its timeout is what is left of the deadline."""
        assert call.request is not None
        per_attempt = float(self.policy.cloud.timeout_s)
        left = call.remaining()
        if left is None:
            return dataclasses.replace(call.request, timeout=per_attempt)
        if left <= 0:
            raise CloudTimeout(
                f"the request's deadline of {call.total_s:g} s passed before the cloud answered "
                "(the timeout argument, or cloud.deadline_s in the policy)"
            )
        return dataclasses.replace(call.request, timeout=min(left, per_attempt))

    def _tier_attempt(self, call: _Call) -> ChatRequest:
        """A cheaper tier's request: the cloud attempt, asking for the logprobs it is judged by."""
        return dataclasses.replace(self._cloud_attempt(call), logprobs=True)

    def _local_attempt(self, call: _Call) -> ChatRequest:
        assert call.request is not None
        left = call.remaining()
        if left is None:
            return call.request
        return dataclasses.replace(call.request, timeout=max(left, 0.001))

    # -- pieces shared by every call shape ---------------------------------------------------
    def begin(self, kwargs: dict[str, Any], tenant: Tenant | None = None) -> _Call:
        """Validate; on bad input still write a ledger row, then raise."""
        call = _Call(
            entry=LedgerEntry(
                request_id="",
                ts=time.time(),
                route="none",
                requested_model=str(kwargs.get("model") or self.policy.cloud.model),
                policy_version=self.policy.version,
                stream=bool(kwargs.get("stream")),
                tenant=tenant.name if tenant is not None else None,
            ),
            t0=time.perf_counter(),
        )
        try:
            request = build_request(kwargs, default_model=self.policy.cloud.model)
            if tenant is not None:
                request = dataclasses.replace(request, tenant=tenant)
            if not self.prices.has_price(request.model):
                raise InvalidRequest(
                    f"unknown model {request.model!r}: no price is known for it; add it under "
                    "cloud.prices in your policy (USD per 1M input/output tokens)",
                    param="model",
                )
        except HybridGateError as exc:
            call.entry.request_id = _new_id()
            self.fail(call, exc)
            raise
        call.request = request
        call.total_s = request.timeout if request.timeout else self.policy.cloud.deadline_s
        if call.total_s:
            call.deadline = time.monotonic() + call.total_s
        entry = call.entry
        entry.request_id = request.request_id
        entry.user = request.user
        entry.tags = dict(request.metadata) or None
        if self.policy.store_content:
            entry.messages = [dict(m) for m in request.messages]
        return call

    def decide(self, call: _Call) -> Decision:
        assert call.request is not None
        decision = self.decider.decide(call.request)
        call.cloud_allowed = decision.cloud_allowed
        call.entry.score = decision.score
        call.at("cloud" if decision.route == "cloud" else "local", decision.reason)
        return decision

    def _answerer(self, backend: str, request: ChatRequest) -> tuple[str, str | None]:
        """Cache identity of the backend that answers: what produced the text is in the key."""
        if backend == "cloud":
            return f"cloud:{request.model}", None
        local = self.policy.local
        where = f"engine={local.api_base}" if local.api_base else local.precision
        identity = f"local:{local.model}:{where}:max_new_tokens={local.max_new_tokens}"
        return identity, self.adapter_version

    def cached(
        self, request: ChatRequest, decision: Decision, *, count: bool = True
    ) -> _Outcome | None:
        """A stored answer from a backend the decision allows, tried in the decision's order."""
        if self.cache is None or not self.cache.cacheable(request):
            return None
        for backend in decision.backends:
            identities = [self._answerer(backend, request)]
            if backend == "cloud" and decision.route == "cascade":  # a cheaper tier's answer
                tiers = [(f"cloud:{t.model}", None) for t in self.policy.cloud.tiers]
                identities = tiers + identities
            for model, adapter in identities:
                hit = self.cache.get(request, model=model, adapter_version=adapter, count=count)
                if hit is not None:
                    break
            if hit is not None:
                return _Outcome(
                    route="cache",
                    reason=f"cache_hit:{backend}",
                    result=hit.to_result(),
                    score=decision.score,
                    cache_hit=True,
                )
        return None

    def _flight_key(self, request: ChatRequest, decision: Decision) -> str | None:
        """Identical cacheable requests in flight at once share one upstream call."""
        if self.cache is None or not self.cache.cacheable(request):
            return None
        backends = ",".join(decision.backends)
        return self.cache.key(request, model=f"flight:{backends}", adapter_version=None)

    def _join(self, request: ChatRequest, decision: Decision) -> tuple[str | None, Future | None]:
        """``(key, future)``: a future to wait on if an identical request leads, else we lead."""
        key = self._flight_key(request, decision)
        if key is None:
            return None, None
        with self._flights_lock:
            leader = self._flights.get(key)
            if leader is not None:
                return key, leader
            self._flights[key] = Future()
        return key, None

    def _land(
        self, key: str | None, result: BackendResult | None, exc: BaseException | None
    ) -> None:
        if key is None:
            return
        with self._flights_lock:
            future = self._flights.pop(key, None)
        if future is None:
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def _lead_shared(self, call: _Call, key: str) -> bool:
        """Claim the flight in a shared cache (Redis); False if another gateway computes it."""
        if not getattr(self.cache, "shared", False):
            return True
        remaining = call.remaining()
        if not self.cache.lead(key, ttl_s=remaining if remaining else FLIGHT_CLAIM_S):
            return False
        call.flight = key
        return True

    def _poll_shared(self, call: _Call, decision: Decision, key: str) -> tuple[bool, Any]:
        """One look while another gateway computes: ``(done, outcome or None)``."""
        assert call.request is not None
        hit = self.cached(call.request, decision, count=False)
        if hit is not None:
            hit.reason = "cache_hit:coalesced"
            return True, hit
        remaining = call.remaining()
        gone = not self.cache.leading_elsewhere(key)
        if gone:  # it failed, or stored just now: one last look
            return True, self.cached(call.request, decision, count=False)
        return remaining is not None and remaining <= FLIGHT_POLL_S, None

    def _wait_shared(self, call: _Call, decision: Decision, key: str) -> _Outcome | None:
        while True:
            time.sleep(FLIGHT_POLL_S)
            done, outcome = self._poll_shared(call, decision, key)
            if done:
                return outcome

    async def _await_shared(self, call: _Call, decision: Decision, key: str) -> _Outcome | None:
        while True:
            await asyncio.sleep(FLIGHT_POLL_S)
            done, outcome = self._poll_shared(call, decision, key)
            if done:
                return outcome

    def _release(self, call: _Call) -> None:
        if call.flight is not None:
            self.cache.release(call.flight)
            call.flight = None

    @staticmethod
    def _shared(result: BackendResult, decision: Decision) -> _Outcome:
        copy = dataclasses.replace(result, compute_seconds=0.0, cost_usd=0.0, token_logprobs=None)
        return _Outcome("cache", "cache_hit:coalesced", copy, score=decision.score, cache_hit=True)

    def keep_local(self, result: BackendResult) -> tuple[bool, float]:
        conf = answer_confidence(
            result.token_logprobs or [],
            closed_answer=result.closed_answer,
            answer_check=result.answer_check,
        )
        return conf >= self.policy.thresholds.cascade, conf

    def _after_local(
        self, call: _Call, decision: Decision, result: BackendResult
    ) -> tuple[_Outcome | None, float | None]:
        """The local outcome when it stands (routed local, or confident enough); else None and
        the confidence that made the cascade escalate (the call is then marked escalating)."""
        if decision.route == "local":
            return _Outcome.answer("local", decision.reason, result, decision.score, False), None
        keep, conf = self.keep_local(result)
        call.entry.confidence = conf
        if keep:
            outcome = _Outcome.answer(
                "local",
                f"confident>={self.policy.thresholds.cascade:.2f}",
                result,
                decision.score,
                False,
            )
            outcome.confidence = conf
            return outcome, conf
        call.at("cloud", "escalated:low_confidence", escalated=True)
        return None, conf

    def _fallback(self, call: _Call, decision: Decision, exc: LocalModelError) -> None:
        """Local failed: the cloud may answer only if the decision was free to choose it."""
        if not decision.cloud_allowed:
            raise exc
        self._warnings.warn(
            type(exc).__name__,
            "local backend failed (%s); falling back to cloud",
            type(exc).__name__,
        )
        call.at("cloud", f"fallback:{type(exc).__name__}", escalated=True)

    def finish(self, call: _Call, outcome: _Outcome) -> RouteInfo:
        """Price the outcome, fill and write the ledger row, cache and shadow; return RouteInfo.

        The row is the one record of the outcome; ``RouteInfo`` is read back from it.
        """
        request, entry = call.request, call.entry
        assert request is not None
        result = outcome.result
        baseline = self.prices.cloud_cost(
            request.model, result.prompt_tokens, result.completion_tokens
        )
        local_cost = self.prices.local_cost(outcome.local_seconds, self.policy.local.usd_per_hour)
        answer_usd = baseline if outcome.answer_usd is None else outcome.answer_usd
        cloud_cost = local_cost + outcome.tiers_usd + answer_usd
        local_cost += outcome.tiers_usd if outcome.route == "local" else 0.0  # explored
        cost = {"cloud": cloud_cost, "local": local_cost}.get(outcome.route, 0.0)
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
        entry.latency_ms = (time.perf_counter() - call.t0) * 1000
        entry.cache_hit = outcome.cache_hit
        entry.adapter_version = result.adapter_version or (
            self.adapter_version if outcome.route == "local" else None
        )
        if self.policy.store_content:
            entry.answer = result.text
        self.ledger.record(entry)
        if self.cache is not None and not outcome.cache_hit and self.cache.cacheable(request):
            model, adapter = self._answerer(outcome.route, request)
            if outcome.tier is not None:
                model = f"cloud:{outcome.tier}"
            if outcome.route == "local":
                adapter = result.adapter_version or adapter
            self.cache.put(request, result, model=model, adapter_version=adapter)
        self._release(call)
        if (
            outcome.route == "cloud"
            and not outcome.escalated
            and self.policy.shadow.rate > 0
            and self._local_factory is not None
            and self._rng.random() < self.policy.shadow.rate
        ):
            self.shadow.submit(request, result)
        elif self._audits(call, outcome):
            self.shadow.submit_audit(
                request, result, rate=self.policy.shadow.audit_rate, messages=entry.messages
            )
        return RouteInfo(**{name: getattr(entry, name) for name in RouteInfo.model_fields})

    def _audits(self, call: _Call, outcome: _Outcome) -> bool:
        """Ask the cloud about this kept local answer too (``shadow.audit_rate`` of them)?
        Never for a request pinned local, a cached answer, or content the ledger does not keep
        (its label could not be tuned on)."""
        rate = self.policy.shadow.audit_rate
        return (
            outcome.route == "local"
            and not outcome.cache_hit
            and call.cloud_allowed
            and rate > 0
            and self.policy.store_content
            and self._rng.random() < rate
        )

    def fail(self, call: _Call, exc: BaseException) -> None:
        """Record a failed request where it failed; the ledger never misses a request."""
        self._release(call)
        entry = call.entry
        entry.error_type = type(exc).__name__
        entry.error_message = self.redact(str(exc))[:500]
        if entry.attempts:  # cheaper tiers answered (and were paid) before the failure
            entry.cost_usd = sum(float(a.get("usd") or 0.0) for a in entry.attempts)
        entry.latency_ms = (time.perf_counter() - call.t0) * 1000
        try:
            self.ledger.record(entry)
        except Exception:  # the caller's error matters more than a failed ledger write
            log.exception("could not record failed request %s", entry.request_id)

    def redact(self, text: str) -> str:
        """Remove the configured secret values (the API key) from text bound for a row or log."""
        return redact_values(text, self._secrets) if self._secrets else text

    # -- the plan: one route for every call shape --------------------------------------------
    def _plan(self, call: _Call, decision: Decision, *, stream: bool) -> Plan:
        """Which backend to ask next, given what the last one answered.

        Written once for sync, async and streaming calls: it yields a ``_Step`` and is sent the
        step's result (a ``BackendResult``, or an opened delta stream for streaming steps), or
        has the step's error thrown in. ``_drive`` and ``_adrive`` only perform the steps.
        A streamed answer is streamed only when it is final (routed local or cloud); a cascade
        must see the whole local answer before it knows whether to keep it.
        """
        streaming = stream and decision.route != "cascade"
        if decision.route == "cloud":
            got = yield _Step("cloud", streaming)
            return _Outcome.answer("cloud", decision.reason, got, decision.score, streaming)
        tiered = decision.route == "cascade" and bool(self.tiers)
        try:
            local = yield _Step("local", streaming)
        except LocalModelError as exc:
            self._fallback(call, decision, exc)  # re-raises when the decision pinned it local
            if tiered:
                call.entry.attempts = [_attempt("local", self.policy.local.model, error=exc)]
                return (yield from self._up_the_tiers(call, decision, 0.0, None))
            got = yield _Step("cloud", streaming)
            outcome = _Outcome.answer("cloud", call.entry.reason, got, decision.score, streaming)
            outcome.escalated = True
            return outcome
        if streaming:  # routed local: the answer stands
            return _Outcome.answer("local", decision.reason, local, decision.score, True)
        kept, conf = self._after_local(call, decision, local)
        explore = tiered and self._explore()
        if kept is not None and not explore:
            return kept
        if tiered:
            local_usd = self.prices.local_cost(
                local.compute_seconds, self.policy.local.usd_per_hour
            )
            call.entry.attempts = [
                _attempt(
                    "local",
                    local.model,
                    local_usd,
                    confidence=conf,
                    kept=kept is not None,
                    answer=self._stored(local),
                )
            ]
            return (
                yield from self._up_the_tiers(
                    call, decision, local.compute_seconds, conf, standing=kept, explore=explore
                )
            )
        got = yield _Step("cloud", False)
        return _Outcome(
            "cloud",
            "escalated:low_confidence",
            got,
            score=decision.score,
            confidence=conf,
            escalated=True,
            local_seconds=local.compute_seconds,
        )

    def _stored(self, result: BackendResult) -> str | None:
        """A try's answer text for its row, when the policy stores content."""
        return result.text if self.policy.store_content else None

    def _explore(self) -> bool:
        """Ask every tier of this cascade request (``shadow.rate`` of them): the labels each
        tier's threshold is tuned on, from a random sample of the traffic rather than only
        from requests every tier was unsure of. The caller still gets the first answer that
        stands; the row pays, and records, every try."""
        rate = self.policy.shadow.rate
        return rate > 0 and self._rng.random() < rate

    def _up_the_tiers(
        self,
        call: _Call,
        decision: Decision,
        local_seconds: float,
        local_conf: float | None,
        *,
        standing: _Outcome | None = None,
        explore: bool = False,
    ) -> Plan:
        """Past the local model in an N-tier cascade: each cheaper cloud tier in order, whose
        answer stands at or above its threshold, then ``cloud.model``. A tier that fails is
        skipped; if the last tier fails, the latest paid tier answer is returned rather than
        thrown away. ``explore``: ask every tier even after an answer stands (``standing``:
        the local one), and return the first that stood."""
        attempts = call.entry.attempts
        assert attempts is not None
        spent = 0.0
        paid: tuple[int, BackendResult, float] | None = None
        for i, tier in enumerate(self.policy.cloud.tiers):
            try:
                got = yield _Step("tier", tier=i)
            except CloudError as exc:
                attempts.append(_attempt(tier.model, tier.model, error=exc))
                continue
            usd = self.prices.cloud_cost(tier.model, got.prompt_tokens, got.completion_tokens)
            if got.token_logprobs is None:
                self._warnings.warn(
                    f"no-logprobs:{tier.model}",
                    "cloud tier %s returned no logprobs, so none of its answers can stand; "
                    "use a model that returns them or remove it from cloud.tiers",
                    tier.model,
                )
            conf = answer_confidence(got.token_logprobs or [])
            kept = standing is None and got.token_logprobs is not None and conf >= tier.threshold
            attempts.append(
                _attempt(
                    tier.model,
                    tier.model,
                    usd,
                    confidence=conf,
                    kept=kept,
                    answer=self._stored(got),
                )  # fmt: skip
            )
            if kept:
                reason = f"tier:{tier.model}>={tier.threshold:.2f}"
                standing = self._tier_outcome(reason, got, decision, tier.model, spent, usd)
                standing._with(local_seconds, local_conf)
                if not explore:
                    return standing
                continue
            spent += usd
            if standing is None:
                paid = (len(attempts) - 1, got, usd)
                call.at("cloud", f"escalated:{tier.model}", escalated=True)
        assert call.request is not None
        try:
            got = yield _Step("cloud", False)
        except CloudError as exc:
            attempts.append(_attempt("cloud", self.policy.cloud.model, error=exc))
            if standing is not None:
                return self._explored(standing, spent)
            if paid is None:
                raise
            index, answer, usd = paid
            attempts[index]["kept"] = True
            model = str(attempts[index]["model"])
            reason = f"fallback:{type(exc).__name__}:{model}"
            outcome = self._tier_outcome(reason, answer, decision, model, spent - usd, usd)
            return outcome._with(local_seconds, local_conf)
        final_usd = self.prices.cloud_cost(
            call.request.model, got.prompt_tokens, got.completion_tokens
        )
        model = got.model or call.request.model
        attempts.append(
            _attempt("cloud", model, final_usd, kept=standing is None, answer=self._stored(got))
        )
        if standing is not None:
            return self._explored(standing, spent + final_usd)
        outcome = _Outcome("cloud", "escalated:low_confidence", got, decision.score)
        outcome.tiers_usd = spent
        return outcome._with(local_seconds, local_conf)

    @staticmethod
    def _explored(standing: _Outcome, others_usd: float) -> _Outcome:
        """The answer that stood, carrying what every other cloud try cost (exploration)."""
        standing.tiers_usd = others_usd
        return standing

    @staticmethod
    def _tier_outcome(
        reason: str, got: BackendResult, decision: Decision, model: str, spent: float, usd: float
    ) -> _Outcome:
        outcome = _Outcome("cloud", reason, got, decision.score, tier=model, answer_usd=usd)
        outcome.tiers_usd = spent
        return outcome

    def _drive(self, call: _Call, plan: Plan) -> _Outcome:
        sent: Any = None
        error: Exception | None = None
        while True:
            try:
                step = plan.throw(error) if error is not None else plan.send(sent)
            except StopIteration as stop:
                return stop.value
            sent, error = None, None
            try:
                sent = self._do(call, step)
            except Exception as exc:
                error = exc

    async def _adrive(self, call: _Call, plan: Plan) -> _Outcome:
        sent: Any = None
        error: Exception | None = None
        while True:
            try:
                step = plan.throw(error) if error is not None else plan.send(sent)
            except StopIteration as stop:
                return stop.value
            sent, error = None, None
            try:
                sent = await self._ado(call, step)
            except Exception as exc:
                error = exc

    def _do(self, call: _Call, step: _Step) -> Any:
        if step.backend == "tier":
            tier = self.tiers[step.tier]
            return self.retrier.call(
                lambda: tier.complete(self._tier_attempt(call)), deadline=call.deadline
            )
        if step.backend == "cloud":
            if step.stream:  # retried until the first delta arrives; later failures are final
                return self.retrier.call(
                    lambda: _open_now(self.cloud.stream(self._cloud_attempt(call))),
                    deadline=call.deadline,
                )
            return self.retrier.call(
                lambda: self.cloud.complete(self._cloud_attempt(call)), deadline=call.deadline
            )
        if step.stream:
            return _open_now(self.local().stream(self._local_attempt(call)))
        return self.local().complete(self._local_attempt(call))

    async def _ado(self, call: _Call, step: _Step) -> Any:
        if step.backend == "tier":
            tier = self.tiers[step.tier]
            return await self.retrier.acall(
                lambda: tier.acomplete(self._tier_attempt(call)), deadline=call.deadline
            )
        if step.backend == "cloud":
            if step.stream:

                async def open_cloud() -> AsyncIterator[StreamDelta]:
                    return await _aopen_now(self.cloud.astream(self._cloud_attempt(call)))

                return await self.retrier.acall(open_cloud, deadline=call.deadline)
            return await self.retrier.acall(
                lambda: self.cloud.acomplete(self._cloud_attempt(call)), deadline=call.deadline
            )
        if step.stream:
            return await _aopen_now(self.local().astream(self._local_attempt(call)))
        return await self.local().acomplete(self._local_attempt(call))

    # -- sync ------------------------------------------------------------------------------
    def create(self, kwargs: dict[str, Any], *, tenant: Tenant | None = None) -> Any:
        call = self.begin(kwargs, tenant)
        request = call.request
        assert request is not None
        try:
            decision = self.decide(call)
            outcome = self.cached(request, decision)
            if outcome is None and request.stream:
                outcome = self._drive(call, self._plan(call, decision, stream=True))
            elif outcome is None:
                outcome = self._coalesced(call, decision)
            if request.stream:
                return HybridStream(
                    self._emit(call, outcome), on_unread=lambda: self._unread(call, outcome)
                )
            info = self.finish(call, outcome)
        except BaseException as exc:
            self.fail(call, exc)
            raise
        return completion(request, outcome.result, info)

    def _coalesced(self, call: _Call, decision: Decision) -> _Outcome:
        assert call.request is not None
        key, leader = self._join(call.request, decision)
        if leader is not None:
            try:
                return self._shared(leader.result(timeout=call.remaining()), decision)
            except Exception:  # the leader failed or is too slow for us: try on our own
                return self._drive(call, self._plan(call, decision, stream=False))
        if key is not None and not self._lead_shared(call, key):
            outcome = self._wait_shared(call, decision, key)  # another gateway computes it
            if outcome is not None:
                self._land(key, outcome.result, None)
                return outcome
        try:
            outcome = self._drive(call, self._plan(call, decision, stream=False))
        except BaseException as exc:
            self._land(key, None, exc)
            raise
        self._land(key, outcome.result, None)
        return outcome

    def _unread(self, call: _Call, outcome: _Outcome) -> None:
        """A stream dropped before its first chunk was read: release upstream, write the row."""
        closer = getattr(outcome.deltas, "close", None)
        if callable(closer):
            closer()
        self.fail(call, ConnectionAbortedError("stream closed before it was read"))

    def _emit(self, call: _Call, outcome: _Outcome) -> Iterator[Any]:
        assert call.request is not None
        deltas = outcome.deltas or iter([StreamDelta(text=outcome.result.text)])
        out = StreamAssembler(call.request, outcome.result)
        done = False
        try:
            yield out.first()
            for delta in deltas:
                piece = out.feed(delta)
                if piece is not None:
                    yield piece
            info = self._streamed(call, outcome, out)
            done = True
            yield from out.last(info)
        except GeneratorExit:
            if not done:
                self.fail(call, ConnectionAbortedError("stream closed by the caller"))
            raise
        except BaseException as exc:
            if not done:
                self.fail(call, exc)
            raise
        finally:
            closer = getattr(deltas, "close", None)
            if not done and callable(closer):
                closer()  # release the upstream connection of a stream we stop early

    def _streamed(self, call: _Call, outcome: _Outcome, out: StreamAssembler) -> RouteInfo:
        """The stream delivered its whole answer: ledger it like any other (sync and async)."""
        outcome.result = out.answer()
        if outcome.route == "local" and out.compute_seconds is not None:
            outcome.local_seconds = out.compute_seconds
        return self.finish(call, outcome)

    # -- async -----------------------------------------------------------------------------
    async def acreate(self, kwargs: dict[str, Any], *, tenant: Tenant | None = None) -> Any:
        """``create`` for async callers; ``tenant`` comes from a server's authentication."""
        call = self.begin(kwargs, tenant)
        request = call.request
        assert request is not None
        try:
            decision = self.decide(call)
            outcome = self.cached(request, decision)
            if outcome is None and request.stream:
                outcome = await self._adrive(call, self._plan(call, decision, stream=True))
            elif outcome is None:
                outcome = await self._acoalesced(call, decision)
            if request.stream:
                return AsyncHybridStream(
                    self._aemit(call, outcome),
                    on_unread=lambda: self.fail(
                        call, ConnectionAbortedError("stream closed before it was read")
                    ),
                    upstream=outcome.deltas,
                    routed=(outcome.route, outcome.reason),
                )
            info = self.finish(call, outcome)
        except BaseException as exc:
            self.fail(call, exc)
            raise
        return completion(request, outcome.result, info)

    async def _acoalesced(self, call: _Call, decision: Decision) -> _Outcome:
        assert call.request is not None
        key, leader = self._join(call.request, decision)
        if leader is not None:
            try:
                waited = asyncio.shield(asyncio.wrap_future(leader))
                return self._shared(await asyncio.wait_for(waited, call.remaining()), decision)
            except Exception:  # the leader failed or is too slow for us: try on our own
                return await self._adrive(call, self._plan(call, decision, stream=False))
        if key is not None and not self._lead_shared(call, key):
            outcome = await self._await_shared(call, decision, key)
            if outcome is not None:
                self._land(key, outcome.result, None)
                return outcome
        try:
            outcome = await self._adrive(call, self._plan(call, decision, stream=False))
        except BaseException as exc:
            self._land(key, None, exc)
            raise
        self._land(key, outcome.result, None)
        return outcome

    async def _aemit(self, call: _Call, outcome: _Outcome) -> AsyncIterator[Any]:
        assert call.request is not None
        deltas = outcome.deltas or _aiter([StreamDelta(text=outcome.result.text)])
        out = StreamAssembler(call.request, outcome.result)
        done = False
        try:
            yield out.first()
            async for delta in deltas:
                piece = out.feed(delta)
                if piece is not None:
                    yield piece
            info = self._streamed(call, outcome, out)
            done = True
            for piece in out.last(info):
                yield piece
        except GeneratorExit:
            if not done:
                self.fail(call, ConnectionAbortedError("stream closed by the caller"))
            raise
        except BaseException as exc:
            if not done:
                self.fail(call, exc)
            raise

    def close(self) -> None:
        self.shadow.close()
        for transport in (self.cloud, *self.tiers):
            cloud_close = getattr(transport, "close", None)
            if callable(cloud_close):
                cloud_close()
        closer = getattr(self._local, "close", None)
        if closer:
            closer()
        # Drop the model with the client, not with the last reference to the client (a closed
        # client kept in scope held ~1 GB through the demo's training step).
        self._local = None
        self._local_factory = _closed_client
        if closer:
            from local_models.memory import trim_heap

            trim_heap()
        if self.cache is not None and hasattr(self.cache, "close"):
            self.cache.close()
        self.ledger.flush()  # rows queued while the file was locked land before we return


def _attempt(
    tier: str,
    model: str,
    usd: float = 0.0,
    *,
    confidence: float | None = None,
    kept: bool = True,
    answer: str | None = None,
    error: BaseException | None = None,
) -> dict[str, Any]:
    """One try of an N-tier cascade, as its row's ``attempts`` records it."""
    out: dict[str, Any] = {"tier": tier, "model": model, "usd": usd, "kept": kept and not error}
    if confidence is not None:
        out["confidence"] = round(confidence, 6)
    if error is not None:
        out["error"] = type(error).__name__
    if answer is not None:
        out["answer"] = answer
    return out


def _closed_client() -> Any:
    raise LocalModelError("this client is closed; create a new one to use the local model")


async def _aiter(items: list[StreamDelta]) -> AsyncIterator[StreamDelta]:
    for item in items:
        yield item


def _open_now(deltas: Any) -> Iterator[StreamDelta]:
    """Start a stream now, so a failure to open it is raised here (and can be retried or fall
    back) rather than on the caller's first read."""
    it = iter(deltas)
    try:
        first = next(it)
    except StopIteration:
        return iter(())
    return itertools.chain([first], it)


async def _aopen_now(deltas: Any) -> AsyncIterator[StreamDelta]:
    it = deltas.__aiter__()
    try:
        first = await it.__anext__()
    except StopAsyncIteration:
        return _aiter([])

    async def chain() -> AsyncIterator[StreamDelta]:
        yield first
        async for delta in it:
            yield delta

    return chain()


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
