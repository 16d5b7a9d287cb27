"""The policy's sections: one frozen, self-validating dataclass per YAML section.

``RoutingPolicy`` holds one of each (``cloud:``, ``local:``, ``thresholds:`` ...). Every class
validates itself in ``__post_init__`` with ``router.policy.fields`` and raises a ``PolicyError``
naming the dotted field; ``router.policy.io`` adds file and line. Defaults come from
``router._defaults``. Where a runtime object needs a section's values in its own shape, the
section is passed whole (``ResponseCache(policy.cache)``, ``PriceBook(policy.cloud.prices)``,
``RetryConfig.from_policy(policy.cloud)``) or builds it in one method
(``LocalConfig.engine_config``), so no caller copies fields by hand.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import yaml

from router import _defaults as d
from router.policy.fields import (
    FieldError,
    ReadOnlyDict,
    boolean,
    check_keys,
    choice,
    classes,
    env_var_name,
    http_url,
    integer,
    number,
    plain,
    redis_url,
    show,
    store,
    string,
    tags,
)

if TYPE_CHECKING:
    from local_models.config import LocalModelConfig

MODES: tuple[str, ...] = ("cloud", "local", "route", "cascade", "hybrid")
"""Valid ``RoutingPolicy.mode`` values (see ``router._gateway.decision`` for what each does)."""

ON_EXCEEDED: tuple[str, ...] = ("local", "fail")
"""Valid ``BudgetConfig.on_exceeded`` values."""
CLOUD_TRANSPORTS: tuple[str, ...] = ("auto", "openai", "litellm")
LOCAL_ENGINES: tuple[str, ...] = ("vllm", "llama.cpp", "openai")
"""``local.engine``: how a closed answer set is sent (``router._transports.engine.ENGINES``)."""
"""Valid ``CloudConfig.transport`` values."""

TOKENS_PER_MTOK = 1_000_000
"""Prices are written per million tokens, the unit providers publish."""


# ----------------------------------------------------------------------------- prices


@dataclass(frozen=True, kw_only=True)
class ModelPrice:
    """What one cloud model costs, in USD per 1M tokens: the one price type.

    A policy's ``cloud.prices`` entries are these, and ``router.ledger.pricing.PriceBook``
    converts litellm's shipped per-token map into them, so the ledger and the policy never
    disagree on units or validation.

    >>> price = ModelPrice(input_per_mtok=0.15, output_per_mtok=0.60)
    >>> price.cost(prompt_tokens=2_000, completion_tokens=0)  # USD for a 2k-token prompt
    0.0003
    """

    input_per_mtok: float
    """USD per one million prompt (input) tokens."""
    output_per_mtok: float
    """USD per one million completion (output) tokens."""

    def __post_init__(self) -> None:
        for name in ("input_per_mtok", "output_per_mtok"):
            store(self, name, number((name,), getattr(self, name), lo=0))

    @classmethod
    def per_token(cls, *, input_per_token: float, output_per_token: float) -> ModelPrice:
        """Build from USD per token (the unit of litellm's price map)."""
        return cls(
            input_per_mtok=input_per_token * TOKENS_PER_MTOK,
            output_per_mtok=output_per_token * TOKENS_PER_MTOK,
        )

    @property
    def input_per_token(self) -> float:
        """USD per prompt token."""
        return self.input_per_mtok / TOKENS_PER_MTOK

    @property
    def output_per_token(self) -> float:
        """USD per completion token."""
        return self.output_per_mtok / TOKENS_PER_MTOK

    def cost(self, *, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one call with these token counts."""
        spent = prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        return spent / TOKENS_PER_MTOK


def parse_prices(value: Any, *, path: tuple[str, ...] = ("cloud", "prices")) -> ReadOnlyDict:
    """``{model: ModelPrice}`` (read-only) from ``ModelPrice`` objects or plain mappings.

    Args:
        value: ``{model: ModelPrice | {"input_per_mtok": .., "output_per_mtok": ..}}``.
        path: Where the mapping sits, for error messages.

    Raises:
        PolicyError: A model name, key or price is invalid; the message names
            ``cloud.prices.<model>.<key>``.
    """
    if not isinstance(value, Mapping):
        raise FieldError(path, f"must be a mapping of model name to prices, got {show(value)}")
    out: dict[str, ModelPrice] = {}
    for model, price in value.items():
        if not isinstance(model, str) or not model.strip():
            raise FieldError(path, f"model names must be non-empty strings, got {show(model)}")
        here = (*path, model)
        if isinstance(price, ModelPrice):
            out[model] = price
            continue
        if not isinstance(price, Mapping):
            raise FieldError(
                here,
                f"must be a mapping with input_per_mtok and output_per_mtok, got {show(price)}",
            )
        check_keys(ModelPrice, price, here)
        for name in ("input_per_mtok", "output_per_mtok"):
            if name not in price:
                raise FieldError((*here, name), "is required (USD per 1M tokens)")
        try:
            out[model] = ModelPrice(**price)
        except FieldError as exc:
            raise exc.at(source=None, prefix=here) from None
    return ReadOnlyDict(out)


# ----------------------------------------------------------------------------- cloud tiers


@dataclass(frozen=True, kw_only=True)
class CloudTier:
    """A cheaper cloud model a cascade asks before ``cloud.model`` (an N-tier cascade).

    Its answer stands when its confidence (the geometric-mean token probability of the
    ``logprobs`` it returns, the score the local tier uses) is at least ``threshold``; else the
    next tier is asked, and ``cloud.model`` last, whose answer always stands.

    >>> CloudTier(model="gpt-4o-mini", threshold=0.9).threshold
    0.9
    """

    model: str
    threshold: float = 0.9
    """Keep this tier's answer at or above this confidence; ``hybridgate tune`` sets it."""

    def __post_init__(self) -> None:
        store(self, "model", string(("model",), self.model))
        store(self, "threshold", number(("threshold",), self.threshold, lo=0, hi=1))


def parse_tiers(value: Any, *, final: str, path: tuple[str, ...] = ("cloud", "tiers")) -> tuple:
    """``(CloudTier, ...)`` from tier objects or ``{model, threshold}`` mappings, in order.

    Raises:
        PolicyError: Not a list, a bad entry, a repeated model, or ``cloud.model`` itself
            listed (it is the last tier already); the message names ``cloud.tiers[i]``.
    """
    if value is None:
        return ()
    if isinstance(value, (str, Mapping)) or not isinstance(value, (list, tuple)):
        raise FieldError(path, f"must be a list of {{model, threshold}} entries, got {show(value)}")
    out: list[CloudTier] = []
    for i, tier in enumerate(value):
        here = (*path[:-1], f"{path[-1]}[{i}]")
        if not isinstance(tier, CloudTier):
            if not isinstance(tier, Mapping):
                raise FieldError(
                    here, f"must be a mapping with model and threshold, got {show(tier)}"
                )
            check_keys(CloudTier, tier, here)
            if "model" not in tier:
                raise FieldError((*here, "model"), "is required (the cloud model this tier asks)")
            try:
                tier = CloudTier(**tier)
            except FieldError as exc:
                raise exc.at(source=None, prefix=here) from None
        if tier.model == final:
            raise FieldError(
                (*here, "model"),
                f"{final!r} is cloud.model, the last tier already; list only the cheaper models "
                "asked before it",
            )
        if any(t.model == tier.model for t in out):
            raise FieldError((*here, "model"), f"{tier.model!r} is listed twice")
        out.append(tier)
    return tuple(out)


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True, kw_only=True)
class CloudConfig:
    """The cloud backend reached through litellm.

    >>> cloud = CloudConfig(model="gpt-4o-mini", api_key_env="OPENAI_API_KEY")
    >>> cloud.timeout_s
    60.0
    """

    _section: ClassVar[str] = "cloud"

    model: str = "gpt-4o-mini"
    """litellm model name used for cloud-routed requests (e.g. ``gpt-4o``, ``anthropic/...``)."""
    api_base: str | None = None
    """Override the provider's base URL (an OpenAI-compatible proxy); None -> provider default."""
    api_key_env: str | None = None
    """NAME of the environment variable holding the API key, never the key itself.
    None -> litellm's usual variable for the provider (e.g. ``OPENAI_API_KEY``)."""
    transport: Literal["auto", "openai", "litellm"] = "auto"
    """How requests reach the model: ``openai`` = OpenAI's wire protocol over httpx (OpenAI,
    vLLM, llama-server, any OpenAI-compatible ``api_base``; ~6 ms less per call than litellm),
    ``litellm`` = through litellm (every provider), ``auto`` = ``openai`` for bare and
    ``openai/`` model names, litellm for other providers (``anthropic/...``)."""
    timeout_s: float = d.CLOUD_TIMEOUT_S
    """Seconds one cloud attempt may take before ``CloudTimeout`` (then it may be retried)."""
    deadline_s: float | None = d.CLOUD_DEADLINE_S
    """Seconds the whole call may take, local try, retries and backoff included (a request's
    ``timeout=`` argument replaces it); null -> no overall limit (attempts x timeout_s)."""
    connect_timeout_s: float = d.CLOUD_CONNECT_TIMEOUT_S
    """Seconds to establish the connection; must not exceed ``timeout_s``."""
    max_retries: int = d.CLOUD_MAX_RETRIES
    """Retries on retryable cloud errors (429, 5xx, timeouts); 0 disables retrying."""
    backoff_base_s: float = d.BACKOFF_BASE_S
    """First retry delay; doubles each attempt (with jitter), capped by ``backoff_max_s``."""
    backoff_max_s: float = d.BACKOFF_MAX_S
    """Longest single retry delay (a server's Retry-After is also capped to this)."""
    prices: Mapping[str, ModelPrice] = field(default_factory=ReadOnlyDict)
    """Per-model USD prices (read-only); models not listed fall back to litellm's price table.
    ``PriceBook(policy.cloud.prices)`` is the ledger's price book."""
    tiers: tuple[CloudTier, ...] = ()
    """Cheaper models a cascade asks, in order, after the local model and before ``model``
    (each with its threshold; same api_base, key and transport as ``model``). Empty (the
    default): the two-tier cascade, local then ``model``."""

    def __post_init__(self) -> None:
        s = self._section
        store(self, "model", string((s, "model"), self.model))
        store(self, "api_base", http_url((s, "api_base"), self.api_base))
        store(self, "api_key_env", env_var_name((s, "api_key_env"), self.api_key_env))
        store(self, "transport", choice((s, "transport"), self.transport, CLOUD_TRANSPORTS))
        store(self, "timeout_s", number((s, "timeout_s"), self.timeout_s, lo=0, lo_open=True))
        store(
            self,
            "connect_timeout_s",
            number((s, "connect_timeout_s"), self.connect_timeout_s, lo=0, lo_open=True),
        )
        if self.deadline_s is not None:
            store(
                self,
                "deadline_s",
                number((s, "deadline_s"), self.deadline_s, lo=0, lo_open=True),
            )
        if self.connect_timeout_s > self.timeout_s:
            raise FieldError(
                (s, "connect_timeout_s"),
                f"must be <= cloud.timeout_s ({self.timeout_s:g}), got {self.connect_timeout_s:g}",
                also=((s, "timeout_s"),),
            )
        store(self, "max_retries", integer((s, "max_retries"), self.max_retries, lo=0))
        store(self, "backoff_base_s", number((s, "backoff_base_s"), self.backoff_base_s, lo=0))
        store(self, "backoff_max_s", number((s, "backoff_max_s"), self.backoff_max_s, lo=0))
        if self.backoff_max_s < self.backoff_base_s:
            raise FieldError(
                (s, "backoff_max_s"),
                f"must be >= cloud.backoff_base_s ({self.backoff_base_s:g}), "
                f"got {self.backoff_max_s:g}",
                also=((s, "backoff_base_s"),),
            )
        store(self, "prices", parse_prices(self.prices))
        store(self, "tiers", parse_tiers(self.tiers, final=self.model))


@dataclass(frozen=True, kw_only=True)
class LocalConfig:
    """The local small model and its batcher.

    >>> local = LocalConfig(adapter="current", max_batch_size=8)
    >>> local.max_new_tokens
    256
    """

    _section: ClassVar[str] = "local"

    model: str = "smollm2-135m-instruct"
    """Local model id understood by ``local_models.loader`` (its ``DEFAULT_MODEL``); with
    ``api_base``, the base model's name on that engine."""
    adapter: str | None = None
    """LoRA adapter: ``"current"`` = the promoted adapter from the adapter registry, a path to
    an adapter directory, or None for the base model. With ``api_base``: ``current`` = the
    adapter ``hybridgate adapters publish`` last loaded on that engine, another value = a
    LoRA name the engine already serves."""
    api_base: str | None = None
    """``http://gpu-host:8000/v1``: answer local requests on this OpenAI-compatible engine
    (vLLM, llama-server, Ollama, another ``hybridgate serve``) instead of in this process;
    null -> the in-process model."""
    api_key_env: str | None = None
    """Name of the environment variable holding the engine's API key (never the key)."""
    engine: Literal["vllm", "llama.cpp", "openai"] = "vllm"
    """With ``api_base``, how closed answer sets are sent: ``vllm`` = ``structured_outputs``
    (vLLM >= 0.10 and ``hybridgate serve``), ``llama.cpp`` = a GBNF ``grammar``, ``openai`` =
    none (requests of classes with an answer set are refused locally)."""
    precision: str = "auto"
    """Weight precision / quantization backend name (``local_models`` validates the name);
    ``"auto"`` picks the best available on this machine."""
    max_batch_size: int = d.LOCAL_MAX_BATCH_SIZE
    """Most requests decoding together (continuous batching: newcomers join between steps)."""
    max_wait_ms: float = d.LOCAL_MAX_WAIT_MS
    """When the model is idle, how long a first request waits for company; running batches
    take newcomers at the next step without waiting."""
    max_queue: int = d.LOCAL_MAX_QUEUE
    """Queued local requests beyond this are refused (``Overloaded``); >= ``max_batch_size``."""
    max_queue_wait_s: float | None = d.LOCAL_MAX_QUEUE_WAIT_S
    """Refuse a local request at once when its expected wait for a batch slot is longer (a
    cloud-eligible one then goes to the cloud); null -> only ``max_queue`` bounds the queue."""
    max_prompt_tokens: int = d.LOCAL_MAX_PROMPT_TOKENS
    """Longest prompt the local model accepts; longer prompts go to the cloud."""
    max_new_tokens: int = d.LOCAL_MAX_NEW_TOKENS
    """Most tokens one local answer may have: its length limit when the request sets no
    ``max_tokens``, and the cap when it sets one (``min(max_tokens, max_new_tokens)``)."""
    usd_per_hour: float = d.LOCAL_USD_PER_HOUR
    """What the local hardware costs per hour; the ledger charges local calls by wall time."""

    def __post_init__(self) -> None:
        s = self._section
        store(self, "model", string((s, "model"), self.model))
        store(self, "adapter", string((s, "adapter"), self.adapter, optional=True))
        store(self, "api_base", http_url((s, "api_base"), self.api_base))
        store(self, "api_key_env", env_var_name((s, "api_key_env"), self.api_key_env))
        store(self, "engine", choice((s, "engine"), self.engine, LOCAL_ENGINES))
        store(self, "precision", string((s, "precision"), self.precision))
        store(self, "max_batch_size", integer((s, "max_batch_size"), self.max_batch_size, lo=1))
        store(self, "max_wait_ms", number((s, "max_wait_ms"), self.max_wait_ms, lo=0))
        store(self, "max_queue", integer((s, "max_queue"), self.max_queue, lo=1))
        store(
            self,
            "max_queue_wait_s",
            number(
                (s, "max_queue_wait_s"), self.max_queue_wait_s, lo=0, lo_open=True, optional=True
            ),
        )
        if self.max_queue < self.max_batch_size:
            raise FieldError(
                (s, "max_queue"),
                f"must be >= local.max_batch_size ({self.max_batch_size}), got {self.max_queue}",
                also=((s, "max_batch_size"),),
            )
        store(
            self,
            "max_prompt_tokens",
            integer((s, "max_prompt_tokens"), self.max_prompt_tokens, lo=1),
        )
        store(self, "max_new_tokens", integer((s, "max_new_tokens"), self.max_new_tokens, lo=1))
        store(self, "usd_per_hour", number((s, "usd_per_hour"), self.usd_per_hour, lo=0))

    def engine_config(
        self, *, adapter_path: str | None = None, adapter_version: str | None = None
    ) -> LocalModelConfig:
        """The ``local_models`` engine config this section describes: the one translation.

        ``local_models`` imports nothing from ``router``, so it cannot read this section; every
        field the two share is passed here, so ``LocalModelConfig``'s own defaults never decide
        a policy-built engine. ``max_new_tokens`` is not an engine field: ``LocalTransport``
        applies it per request.

        Args:
            adapter_path: The adapter directory ``adapter`` resolved to (the caller looks
                ``current`` up in the registry); None -> the base model.
            adapter_version: Label reported on every result served with that adapter.

        Returns:
            The config ``LocalTransport.from_config`` loads.
        """
        from local_models.config import LocalModelConfig

        return LocalModelConfig(
            model=self.model,
            precision=self.precision,
            adapter_path=adapter_path,
            adapter_version=adapter_version,
            max_batch_size=self.max_batch_size,
            max_wait_ms=self.max_wait_ms,
            max_queue=self.max_queue,
            max_queue_wait_s=self.max_queue_wait_s,
        )


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """Score cut-offs, each in [0, 1]; ``hybridgate tune`` rewrites these.

    >>> t = Thresholds(route=0.7)
    >>> t.hybrid_low <= t.hybrid_high
    True
    """

    _section: ClassVar[str] = "thresholds"

    route: float = 0.5
    """Mode ``route``: classifier P(local answer ok) >= route -> local, else cloud."""
    cascade: float = 0.6
    """Modes ``cascade``/``hybrid``: local answer confidence >= cascade -> keep it, else
    escalate to the cloud. Confidence is a label's probability for answers from a closed
    answer set, the geometric-mean token probability otherwise (``router.scoring.confidence``)."""
    hybrid_low: float = 0.3
    """Mode ``hybrid``: classifier score < hybrid_low -> straight to the cloud."""
    hybrid_high: float = 0.8
    """Mode ``hybrid``: score >= hybrid_high -> local only; in between -> cascade."""

    def __post_init__(self) -> None:
        s = self._section
        for name in ("route", "cascade", "hybrid_low", "hybrid_high"):
            store(self, name, number((s, name), getattr(self, name), lo=0, hi=1))
        if self.hybrid_low > self.hybrid_high:
            raise FieldError(
                (s, "hybrid_low"),
                f"must be <= thresholds.hybrid_high ({self.hybrid_high:g}), "
                f"got {self.hybrid_low:g}",
                also=((s, "hybrid_high"),),
            )


@dataclass(frozen=True, kw_only=True)
class CacheSettings:
    """The on-disk answer cache in front of both backends.

    >>> CacheSettings(ttl_s=None).enabled  # never expire
    True
    """

    _section: ClassVar[str] = "cache"

    enabled: bool = True
    """Serve repeated identical requests from disk instead of calling a backend."""
    ttl_s: float | None = d.CACHE_TTL_S
    """Seconds a cached answer stays valid; null -> never expires."""
    size_limit_mb: int = d.CACHE_SIZE_LIMIT_MB
    """Disk space the cache may use; beyond it the least recently *stored* entries are evicted
    (not least recently used: tracking reads would cost a write on every hit)."""
    cache_nondeterministic: bool = False
    """Also cache sampled (temperature > 0, no seed) answers; trades variety for savings."""
    url: str | None = None
    """``redis://host:6379/0``: keep entries in Redis, shared by every gateway pointing at it
    (null -> the disk cache). Size is Redis' own bound (``maxmemory`` + an ``allkeys-*``
    eviction policy); ``size_limit_mb`` is the disk cache's."""
    password_env: str | None = None
    """Name of the environment variable holding the Redis password (never the password)."""

    def __post_init__(self) -> None:
        s = self._section
        store(self, "url", redis_url((s, "url"), self.url))
        store(self, "password_env", env_var_name((s, "password_env"), self.password_env))
        store(self, "enabled", boolean((s, "enabled"), self.enabled))
        store(self, "ttl_s", number((s, "ttl_s"), self.ttl_s, lo=0, lo_open=True, optional=True))
        store(self, "size_limit_mb", integer((s, "size_limit_mb"), self.size_limit_mb, lo=1))
        store(
            self,
            "cache_nondeterministic",
            boolean((s, "cache_nondeterministic"), self.cache_nondeterministic),
        )


@dataclass(frozen=True, kw_only=True)
class BudgetConfig:
    """A daily cap on cloud spend, read from the cost ledger.

    >>> BudgetConfig(daily_usd=5, on_exceeded="local").daily_usd
    5.0
    """

    _section: ClassVar[str] = "budget"

    daily_usd: float | None = None
    """Most USD to spend on the cloud per calendar day; null -> no cap."""
    on_exceeded: Literal["local", "fail"] = "local"
    """Once spent: ``local`` answers cloud-bound requests locally, ``fail`` raises
    ``BudgetExceeded``."""
    timezone: str = "UTC"
    """IANA time zone whose midnight resets the daily budget (e.g. ``Europe/Berlin``)."""

    def __post_init__(self) -> None:
        s = self._section
        store(self, "daily_usd", number((s, "daily_usd"), self.daily_usd, lo=0, optional=True))
        store(self, "on_exceeded", choice((s, "on_exceeded"), self.on_exceeded, ON_EXCEEDED))
        store(self, "timezone", string((s, "timezone"), self.timezone))
        if self.timezone != "UTC":
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise FieldError(
                    (s, "timezone"),
                    f"must be an IANA time zone like 'UTC' or 'Europe/Berlin', "
                    f"got {show(self.timezone)}",
                ) from None


@dataclass(frozen=True, kw_only=True)
class RulesConfig:
    """Hard rules applied before any score: they always win.

    >>> RulesConfig(force_cloud_tags=("legal",)).cloud_if_tools
    True
    """

    _section: ClassVar[str] = "rules"

    force_cloud_tags: tuple[str, ...] = ()
    """Requests whose metadata carries one of these tags (key or value) always go to the cloud."""
    force_local_tags: tuple[str, ...] = ()
    """Requests carrying one of these tags always stay local (e.g. private data)."""
    max_local_prompt_tokens: int | None = None
    """Prompts longer than this go to the cloud; null -> ``local.max_prompt_tokens``."""
    cloud_if_tools: bool = True
    """Send requests with ``tools`` to the cloud (the local model cannot call tools)."""
    cloud_if_response_format: bool = True
    """Send requests with ``response_format`` (JSON mode/schema) to the cloud."""
    local_classes: tuple[str, ...] | None = None
    """Traffic classes (a request's system prompt, ``""`` without one; see
    ``local_models.answer_sets.traffic_class``) the local model may answer; requests of other
    classes go to the cloud. None -> every class. ``hybridgate distill`` writes the classes the
    promoted adapter cleared its floor on, and ``()`` while it has not earned any traffic."""

    def __post_init__(self) -> None:
        s = self._section
        store(self, "force_cloud_tags", tags((s, "force_cloud_tags"), self.force_cloud_tags))
        store(self, "force_local_tags", tags((s, "force_local_tags"), self.force_local_tags))
        both = sorted(set(self.force_cloud_tags) & set(self.force_local_tags))
        if both:
            raise FieldError(
                (s, "force_local_tags"),
                f"tags {both} are also in rules.force_cloud_tags; a tag can force only one way",
                also=((s, "force_cloud_tags"),),
            )
        store(
            self,
            "max_local_prompt_tokens",
            integer(
                (s, "max_local_prompt_tokens"), self.max_local_prompt_tokens, lo=1, optional=True
            ),
        )
        store(self, "cloud_if_tools", boolean((s, "cloud_if_tools"), self.cloud_if_tools))
        store(
            self,
            "cloud_if_response_format",
            boolean((s, "cloud_if_response_format"), self.cloud_if_response_format),
        )
        store(self, "local_classes", classes((s, "local_classes"), self.local_classes))


@dataclass(frozen=True, kw_only=True)
class ShadowConfig:
    """Shadow evaluation: answer some cloud-routed requests locally too, to measure quality.

    >>> ShadowConfig(rate=0.1).judge
    'auto'
    """

    _section: ClassVar[str] = "shadow"

    rate: float = 0.0
    """Fraction (0..1) of cloud-routed requests also answered locally in the background."""
    audit_rate: float = 0.0
    """Fraction (0..1) of locally answered requests also asked of the cloud in the background
    (each one a paid call, ledgered as reason ``audit``): the only labels on what the local
    tier keeps, so a retune's quality promise covers the traffic the local tier serves. The
    nightly run sets ``training.nightly.AUDIT_RATE`` when an adapter takes traffic and this is 0."""
    judge: str = "auto"
    """How a shadow answer is compared with the cloud answer: a rule judge name, ``auto`` (picks
    one from the answer's shape) or ``llm`` (asks the cloud model; its cost is in the ledger)."""
    max_pending: int = d.SHADOW_MAX_PENDING
    """Most shadow jobs queued at once; extra ones are dropped, never slowing real traffic."""
    workers: int = 1
    """Shadow jobs answered at once. The local batcher batches them together, so a few workers
    label several times faster; each one also competes with real local traffic for the CPU."""

    def __post_init__(self) -> None:
        s = self._section
        store(self, "rate", number((s, "rate"), self.rate, lo=0, hi=1))
        store(self, "audit_rate", number((s, "audit_rate"), self.audit_rate, lo=0, hi=1))
        from router.scoring.judges import JUDGES

        choices = ("auto", "llm", *sorted(JUDGES))
        store(self, "judge", choice((s, "judge"), self.judge, choices))
        store(self, "max_pending", integer((s, "max_pending"), self.max_pending, lo=1))
        store(self, "workers", integer((s, "workers"), self.workers, lo=1))


@dataclass(frozen=True, kw_only=True)
class DistillSettings:
    """How ``hybridgate distill`` picks training data and decides what a new adapter serves.

    The gate works per traffic class (requests sharing a system prompt): a class is served by
    the local model only when the adapter agrees with the teacher on at least ``min_agreement``
    of that class's held-out requests, so one good class cannot carry a useless one.

    >>> DistillSettings().min_agreement
    0.5
    """

    _section: ClassVar[str] = "distill"

    max_answer_chars: int | None = 64
    """Teacher answers longer than this are not distilled (math working, prose: the small
    student cannot learn them and they pull the training recipe towards long text); null ->
    no limit. Every path (``distill``, ``--dry-run``, the nightly run, the demo) applies it."""
    min_agreement: float = 0.5
    """Held-out agreement a traffic class needs before an adapter may answer it locally; the
    first adapter included (it has nothing to beat)."""
    min_gain: float = 0.01
    """A later adapter is promoted only if it beats the current one by this much (absolute
    agreement) on some class it clears the floor on, and loses no more on any class the current
    one serves."""
    min_class_examples: int = 10
    """Held-out requests a class needs before its agreement counts (fewer: not served)."""

    def __post_init__(self) -> None:
        s = self._section
        store(
            self,
            "max_answer_chars",
            integer((s, "max_answer_chars"), self.max_answer_chars, lo=1, optional=True),
        )
        store(self, "min_agreement", number((s, "min_agreement"), self.min_agreement, lo=0, hi=1))
        store(self, "min_gain", number((s, "min_gain"), self.min_gain, lo=0, hi=1))
        store(
            self,
            "min_class_examples",
            integer((s, "min_class_examples"), self.min_class_examples, lo=1),
        )


SECTIONS: dict[str, type] = {
    "cloud": CloudConfig,
    "local": LocalConfig,
    "thresholds": Thresholds,
    "cache": CacheSettings,
    "budget": BudgetConfig,
    "rules": RulesConfig,
    "shadow": ShadowConfig,
    "distill": DistillSettings,
}


@dataclass(frozen=True, kw_only=True)
class RoutingPolicy:
    """Everything that decides where a request goes; load it from YAML.

    >>> policy = load_policy("default")
    >>> policy.replace(**{"thresholds.route": 0.7}).thresholds.route
    0.7
    """

    name: str = "default"
    """Label shown in reports and stored in every ledger row (with ``version``)."""
    mode: Literal["cloud", "local", "route", "cascade", "hybrid"] = "cloud"
    """``cloud``/``local``: always that backend. ``route``: classifier picks one side.
    ``cascade``: local first, escalate low-confidence answers. ``hybrid``: route the clear
    cases, cascade the uncertain middle band."""
    cloud: CloudConfig = field(default_factory=CloudConfig)
    """The cloud backend (litellm)."""
    local: LocalConfig = field(default_factory=LocalConfig)
    """The local model and batcher."""
    thresholds: Thresholds = field(default_factory=Thresholds)
    """Score cut-offs for route/cascade/hybrid."""
    classifier: str | None = None
    """Path to a saved ``DifficultyClassifier`` JSON; relative paths are resolved against the
    policy file's directory when loaded. None -> no classifier (route sends all to the cloud,
    hybrid cascades everything)."""
    cache: CacheSettings = field(default_factory=CacheSettings)
    """The answer cache."""
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    """Daily cloud spend cap."""
    rules: RulesConfig = field(default_factory=RulesConfig)
    """Hard rules applied before scoring."""
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    """Shadow evaluation of the local model."""
    distill: DistillSettings = field(default_factory=DistillSettings)
    """Training data and the per-class promotion gate of ``hybridgate distill``."""
    store_content: bool = True
    """Store prompt and answer text in the ledger (needed for distillation); false keeps only
    token counts and costs, and turns the response cache off (it would be answer text on disk)."""

    def __post_init__(self) -> None:
        store(self, "name", string(("name",), self.name))
        store(self, "mode", choice(("mode",), self.mode, MODES))
        for section, cls in SECTIONS.items():
            value = getattr(self, section)
            if not isinstance(value, cls):
                raise FieldError(
                    (section,), f"must be a {cls.__name__}, got {type(value).__name__}"
                )
        store(self, "classifier", string(("classifier",), self.classifier, optional=True))
        store(self, "store_content", boolean(("store_content",), self.store_content))
        limit = self.rules.max_local_prompt_tokens
        if limit is not None and limit > self.local.max_prompt_tokens:
            raise FieldError(
                ("rules", "max_local_prompt_tokens"),
                f"must be <= local.max_prompt_tokens ({self.local.max_prompt_tokens}), got {limit}",
                also=(("local", "max_prompt_tokens"),),
            )

    @property
    def max_local_prompt_tokens(self) -> int:
        """Longest prompt (tokens) routed locally: the rule if set, else the model's limit."""
        return self.rules.max_local_prompt_tokens or self.local.max_prompt_tokens

    @functools.cached_property
    def version(self) -> str:
        """Content hash (12 hex chars): equal policies share it; ledger rows record it.
        Computed once per (immutable) policy: every request reads it."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON/YAML-ready data that ``policy_from_dict`` turns back into ``self``."""
        return plain(self)

    def to_yaml(self) -> str:
        """Return this policy as YAML that ``load_policy`` reads back to an equal policy."""
        header = f"# hybridgate routing policy {self.name!r}, version {self.version}\n"
        return header + yaml.safe_dump(
            self.to_dict(), sort_keys=False, default_flow_style=False, allow_unicode=True
        )

    def replace(self, **changes: Any) -> RoutingPolicy:
        """Return a copy with some fields changed; nested fields by dotted key.

        Args:
            **changes: Field names (``mode="route"``) or dotted paths
                (``**{"thresholds.route": 0.7}``); values may be plain data or config objects.

        Returns:
            A new, validated ``RoutingPolicy``.

        Raises:
            PolicyError: A key is unknown or a value is invalid.
        """
        data = self.to_dict()
        for key, value in changes.items():
            parts = key.split(".")
            node = data
            for i, part in enumerate(parts[:-1]):
                child = node.get(part)
                if not isinstance(child, dict):
                    if part in node:
                        raise FieldError(
                            tuple(parts[: i + 1]), "is not a section; cannot set a field inside it"
                        )
                    child = node[part] = {}
                node = child
            node[parts[-1]] = plain(value)
        return build_policy(data)


def build_policy(data: Any, *, base_dir: Path | None = None) -> RoutingPolicy:
    """Validate plain data into a ``RoutingPolicy``; errors are path-qualified ``FieldError``."""
    if not isinstance(data, Mapping):
        raise FieldError((), f"a policy must be a mapping of settings, got {show(data)}")
    check_keys(RoutingPolicy, data, ())
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        cls = SECTIONS.get(key)
        if cls is None:
            kwargs[key] = value
            continue
        section = {} if value is None else value
        if not isinstance(section, Mapping):
            raise FieldError((key,), f"must be a mapping of settings, got {show(value)}")
        check_keys(cls, section, (key,))
        kwargs[key] = cls(**section)
    classifier = kwargs.get("classifier")
    relative = (
        isinstance(classifier, str) and classifier.strip() and not Path(classifier).is_absolute()
    )
    if base_dir is not None and relative:
        kwargs["classifier"] = str(base_dir / classifier)
    return RoutingPolicy(**kwargs)


__all__ = [
    "MODES",
    "ON_EXCEEDED",
    "SECTIONS",
    "TOKENS_PER_MTOK",
    "BudgetConfig",
    "CacheSettings",
    "CloudConfig",
    "CloudTier",
    "DistillSettings",
    "LocalConfig",
    "ModelPrice",
    "RoutingPolicy",
    "RulesConfig",
    "ShadowConfig",
    "Thresholds",
    "build_policy",
    "parse_prices",
    "parse_tiers",
]
