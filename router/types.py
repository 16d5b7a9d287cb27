"""Typed values that flow through the gateway: request in, backend result, routing facts out.

Data flows one way: ``ChatRequest`` (validated) -> ``Decision`` (policy) -> a transport returns a
``BackendResult`` -> the client builds an OpenAI ``ChatCompletion`` carrying ``RouteInfo`` and
writes one ledger row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

Route = Literal["local", "cloud", "cache"]


@dataclass(frozen=True)
class Tenant:
    """Who a request is for, when a server authenticated it: a ledger column, a cache
    namespace and a daily budget scope (``hybridgate serve --keys``)."""

    name: str
    daily_usd: float | None = None
    """Most USD this tenant's requests may spend on the cloud per day; None -> no own cap."""


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat-completion request, independent of the backend that will answer it."""

    messages: tuple[dict[str, Any], ...]
    model: str
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    timeout: float | None = None
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    tenant: Tenant | None = None
    """Set by the gateway from an authenticated caller, never from the request body."""
    background: bool = False
    """Throughput work nobody waits on (shadow labels): the local queue's wait bound never
    refuses it. Set by the gateway, never from the request body."""
    logprobs: bool = False
    """Return each answer token's log-probability (``choices[0].logprobs``); local answers
    only: what a gateway using this one as its engine (``local.api_base``) reads confidence
    from."""
    allowed_answers: tuple[str, ...] | None = None
    """Decode to exactly one of these strings (vLLM's ``structured_outputs={"choice": [...]}``);
    local answers only."""

    @property
    def deterministic(self) -> bool:
        """Greedy (temperature 0 or unset-with-seed) requests give the same answer twice."""
        return self.temperature == 0 or (self.temperature is None and self.seed is not None)


@dataclass
class BackendResult:
    """What a backend returns; the client turns it into an OpenAI ``ChatCompletion``."""

    text: str
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"] = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    compute_seconds: float = 0.0
    """Wall-clock seconds the backend spent computing (local cost = this x $/hour)."""
    token_logprobs: list[float] | None = None
    """Per-token log-probabilities of the generated answer (local backend), for the cascade."""
    cost_usd: float | None = None
    """Price the provider charged, when the backend knows it (cloud)."""
    adapter_version: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    closed_answer: bool = False
    answer_check: float | None = None
    """The local adapter's answer checker's probability of a closed-set answer (None: none)."""
    """The local answer was decoded from a closed answer set (confidence = its probability)."""
    tokens: list[str] | None = None
    """The answer's tokens as text, one per ``token_logprobs`` entry (for ``logprobs=True``)."""


@dataclass
class StreamDelta:
    """One piece of a streamed answer; the last one carries the full ``BackendResult``."""

    text: str = ""
    result: BackendResult | None = None


class RouteInfo(BaseModel):
    """Routing facts attached to every response as ``completion.route``."""

    route: Route
    """Which backend answered: ``local``, ``cloud`` or ``cache``."""
    reason: str
    """Why: the rule or score that decided, e.g. ``score>=0.62`` or ``escalated:low_confidence``."""
    score: float | None = None
    """Difficulty-classifier P(local answer acceptable), when one ran."""
    confidence: float | None = None
    """Local answer confidence from token log-probabilities, when the cascade ran."""
    escalated: bool = False
    cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0
    """What the same request would have cost on the cloud model (the all-cloud baseline)."""
    latency_ms: float = 0.0
    policy_version: str = ""
    adapter_version: str | None = None
    cache_hit: bool = False
    request_id: str = ""
    tenant: str | None = None


class HybridChatCompletion(ChatCompletion):
    """An OpenAI ``ChatCompletion`` plus ``route``; ``isinstance(x, ChatCompletion)`` holds."""

    route: RouteInfo


class HybridChatCompletionChunk(ChatCompletionChunk):
    """An OpenAI ``ChatCompletionChunk``; the final chunk carries ``route``."""

    route: RouteInfo | None = None


__all__ = [
    "BackendResult",
    "ChatRequest",
    "HybridChatCompletion",
    "HybridChatCompletionChunk",
    "Route",
    "RouteInfo",
    "StreamDelta",
    "Tenant",
]
