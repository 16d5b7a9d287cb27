"""Shadow labelling: answer some cloud-routed requests locally too, in the background.

A judge compares the local answer with the cloud's and stores the label in the ledger; those
labels are what ``hybridgate tune`` fits the router on. Audits are the other direction: some
locally answered requests are asked of the cloud too (``shadow.audit_rate``), the only labels
on the answers the local tier keeps; without them a retune sees only the traffic the old
policy sent away, and its quality promise would be about other traffic than it serves.
The caller is never delayed: work goes to
``workers`` background threads (one by default) through a bounded queue, and when the queue is
full the sample is dropped. Each drop is counted in the ledger (event ``shadow_dropped``), so
``hybridgate report`` shows how many labels a burst cost instead of losing them silently.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from router._defaults import SHADOW_MAX_PENDING
from router.types import BackendResult, ChatRequest

log = logging.getLogger("hybridgate.shadow")

DEFAULT_MAX_PENDING = SHADOW_MAX_PENDING
"""Shadow jobs queued or running at once before new ones are dropped (see ``router._defaults``)."""

DROP_LOG_INTERVAL_S = 60.0
"""At most one warning per this many seconds while jobs are being dropped."""


class ShadowLabeller:
    """Background local answers + judge -> ``ledger.add_label``.

    >>> labeller = ShadowLabeller(ledger=ledger, local=lambda: local_transport, judge="auto")
    >>> labeller.submit(request, cloud_result)   # returns at once
    >>> labeller.drain()                         # tests: wait for pending work

    ``judge="llm"`` asks the cloud model itself (``router.scoring.judges.LLMJudge`` through ``cloud``);
    that call is paid for, so it gets its own ledger row (reason ``judge``).
    """

    def __init__(
        self,
        *,
        ledger: Any,
        local: Callable[[], Any],
        judge: str = "auto",
        max_pending: int = DEFAULT_MAX_PENDING,
        workers: int = 1,
        prices: Any = None,
        usd_per_hour: float = 0.0,
        cloud: Any = None,
        cloud_model: str = "",
        policy_version: str = "",
    ) -> None:
        self.ledger = ledger
        self._local = local
        self.judge = judge
        self.max_pending = max_pending
        self.workers = max(1, workers)
        self._prices = prices
        self._usd_per_hour = usd_per_hour
        self._cloud = cloud
        self._cloud_model = cloud_model
        self._policy_version = policy_version
        self._pool: ThreadPoolExecutor | None = None
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()
        self.dropped = 0
        self.labelled = 0
        self._last_drop_log = float("-inf")

    def submit(self, request: ChatRequest, cloud_result: BackendResult) -> bool:
        """Queue a shadow answer; returns False (and drops it) when the queue is full.

        A drop is counted in the ledger (``Ledger.record_event``) and warned about at most once
        per ``DROP_LOG_INTERVAL_S``, so an undersized ``shadow.max_pending`` shows up in
        ``hybridgate report`` rather than as quietly missing labels.
        """
        return self._queue(request.request_id, self._label, request, cloud_result)

    def submit_audit(
        self,
        request: ChatRequest,
        local_result: BackendResult,
        *,
        rate: float,
        messages: list[dict[str, Any]] | None,
    ) -> bool:
        """Queue an audit of a kept local answer: ask the cloud too, ledger it, label it.

        ``rate`` is the share of local answers audited: the label's weight (``1 / rate``) when
        a retune mixes audits with requests the cloud answered anyway. ``messages`` are the
        request's stored messages (secrets scrubbed), so the cloud's answer is also a nightly
        training example for a prompt the local tier kept.
        """
        return self._queue(request.request_id, self._audit, request, local_result, rate, messages)

    def _queue(self, request_id: str, job: Callable[..., None], *args: Any) -> bool:
        warn = False
        with self._lock:
            full = len(self._pending) >= self.max_pending
            if full:
                self.dropped += 1
                dropped, now = self.dropped, time.monotonic()
                if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
                    self._last_drop_log, warn = now, True
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=self.workers, thread_name_prefix="hybridgate-shadow"
                    )
                future = self._pool.submit(job, *args)
                self._pending.add(future)
        if full:  # the ledger write and the warning happen outside the lock
            self._count_drop(request_id)
            if warn:
                log.warning(
                    "shadow queue full (%d pending): dropped %d job(s) so far; raise "
                    "shadow.max_pending or shadow.workers",
                    self.max_pending,
                    dropped,
                )
            return False
        future.add_done_callback(self._done)
        return True

    def _count_drop(self, request_id: str) -> None:
        """Record one drop in the ledger; never raises (the caller's request matters more)."""
        from router.ledger import EVENT_SHADOW_DROPPED

        record = getattr(self.ledger, "record_event", None)
        if record is None:  # a ledger stand-in without events (tests, custom sinks)
            return
        try:
            record(EVENT_SHADOW_DROPPED, request_id=request_id)
        except Exception:
            log.exception("could not count a dropped shadow job for request %s", request_id)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _label(self, request: ChatRequest, cloud_result: BackendResult) -> None:
        from router.scoring.judges import label_local_answer

        try:
            # nobody waits on a label: it queues behind traffic instead of being refused
            local = self._local().complete(dataclasses.replace(request, background=True))
            label_local_answer(
                self.ledger,
                request.request_id,
                local,
                reference=cloud_result.text,
                usd_per_hour=self._usd_per_hour,
                judge=self.judge,
                llm_judge=lambda answer, reference: self._llm_label(request, answer, reference),
            )
            self.labelled += 1
        except Exception:  # a background sample must never take the gateway down
            log.exception("shadow labelling failed for request %s", request.request_id)

    def _audit(
        self,
        request: ChatRequest,
        local: BackendResult,
        rate: float,
        messages: list[dict[str, Any]] | None,
    ) -> None:
        """The cloud's answer to a request the local tier kept, as its own paid row (reason
        ``audit``; baseline 0, as an all-cloud app would not pay twice) carrying the label."""
        from router.ledger import LedgerEntry
        from router.scoring.judges import label_local_answer

        if self._cloud is None:
            return
        t0 = time.time()
        entry = LedgerEntry(
            request_id=f"audit-{uuid.uuid4().hex[:12]}",
            ts=t0,
            route="cloud",
            reason="audit",
            model=request.model,
            requested_model=request.model,
            policy_version=self._policy_version,
            messages=messages,
            tags={"audit_of": request.request_id, "audit_rate": repr(float(rate))},
        )
        try:
            cloud = self._cloud.complete(dataclasses.replace(request, stream=False))
            cost = cloud.cost_usd
            if cost is None and self._prices is not None:
                cost = self._prices.cloud_cost(
                    request.model, cloud.prompt_tokens, cloud.completion_tokens
                )
            entry.model = cloud.model or request.model
            entry.prompt_tokens, entry.completion_tokens = (
                cloud.prompt_tokens,
                cloud.completion_tokens,
            )
            entry.cost_usd = float(cost or 0.0)
            entry.answer = cloud.text if messages is not None else None
        except Exception as exc:  # a background sample must never take the gateway down
            entry.error_type = type(exc).__name__  # no message: it may quote the request
            entry.error_message = "the audit's cloud call failed"
            log.warning("audit of request %s failed: %s", request.request_id, type(exc).__name__)
            return
        finally:
            entry.latency_ms = (time.time() - t0) * 1000
            self.ledger.record(entry)
        try:  # the row first: a label needs its request
            label_local_answer(
                self.ledger,
                entry.request_id,
                local,
                reference=cloud.text,
                usd_per_hour=self._usd_per_hour,
                judge=self.judge,
                llm_judge=lambda answer, reference: self._llm_label(request, answer, reference),
            )
            self.labelled += 1
        except Exception:
            log.exception("audit labelling failed for request %s", request.request_id)

    def _llm_label(self, request: ChatRequest, answer: str, reference: str) -> float:
        """Judge with the cloud model and record the judge call's cost in the ledger."""
        from router._gateway.validation import prompt_text
        from router.ledger import LedgerEntry
        from router.scoring.judges import LLMJudge

        if self._cloud is None:
            raise ValueError("judge 'llm' needs a cloud transport")
        question = prompt_text(request) or None
        judge = LLMJudge(self._cloud, model=self._cloud_model)
        t0 = time.time()
        entry = LedgerEntry(
            request_id=f"judge-{uuid.uuid4().hex[:12]}",
            ts=t0,
            route="cloud",
            reason="judge",
            model=self._cloud_model,
            requested_model=self._cloud_model,
            policy_version=self._policy_version,
            tags={"judged_request": request.request_id},
        )
        try:
            score, result = judge(
                answer=answer,
                reference=reference,
                question=question,
            )
            cost = result.cost_usd
            if cost is None and self._prices is not None:
                cost = self._prices.cloud_cost(
                    self._cloud_model, result.prompt_tokens, result.completion_tokens
                )
            entry.prompt_tokens = result.prompt_tokens
            entry.completion_tokens = result.completion_tokens
            # Baseline stays 0: an all-cloud app would not pay for judging, so it is our overhead.
            entry.cost_usd = float(cost or 0.0)
            entry.answer = result.text
            return score
        except Exception as exc:
            entry.error_type = type(exc).__name__
            entry.error_message = str(exc)
            raise
        finally:
            entry.latency_ms = (time.time() - t0) * 1000
            self.ledger.record(entry)

    def drain(self, timeout: float | None = None) -> None:
        """Wait for queued shadow work (tests, shutdown)."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.result(timeout=timeout)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
