"""Routing policies: frozen, self-validating config objects loaded from YAML.

A policy says *how* to route (mode, thresholds, budget, rules); ``router._gateway.decision`` says *what
happens* with it. Decision code receives a ``RoutingPolicy`` object, never a path or dict, and
nothing here reads environment variables. Every dataclass validates itself in ``__post_init__``
and raises ``PolicyError`` naming the field; the YAML loader adds file and line:

    policies/x.yaml:7: thresholds.route: must be a number between 0 and 1, got 'high'

This module imports only ``yaml`` and the standard library so the CLI ``report`` path stays light.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from router.errors import PolicyError

MODES: tuple[str, ...] = ("cloud", "local", "route", "cascade", "hybrid")
"""Valid ``RoutingPolicy.mode`` values (see ``router._gateway.decision`` for what each does)."""

ON_EXCEEDED: tuple[str, ...] = ("local", "fail")
"""Valid ``BudgetConfig.on_exceeded`` values."""

DEFAULT_CACHE_TTL_S: float = 7 * 24 * 3600.0
"""One week: long enough for repeated prompts, short enough that stale answers age out."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_PREFIXES = ("sk-", "sk_", "pk-", "rk-", "xai-", "gsk_", "AIza", "hf_")


def _looks_like_secret(value: str) -> bool:
    """Env var names are short and mostly upper case; keys are prefixed or long mixed-case."""
    if value.startswith(_SECRET_PREFIXES):
        return True
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value)
    return len(value) >= 32 and mixed and any(c.isdigit() for c in value)


# ----------------------------------------------------------------------------- errors


class _FieldError(PolicyError):
    """A ``PolicyError`` that knows which field (dotted path) is wrong, and where."""

    def __init__(
        self,
        path: tuple[str, ...],
        reason: str,
        *,
        also: tuple[tuple[str, ...], ...] = (),
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path = path
        self.field = ".".join(path)
        self.reason = reason
        self.also = also
        self.source = source
        self.line = line
        where = ""
        if source is not None:
            where = f"{source}:{line}: " if line is not None else f"{source}: "
        prefix = f"{self.field}: " if self.field else ""
        super().__init__(f"{where}{prefix}{reason}")


def _show(value: Any) -> str:
    """Render an offending value for an error message, shortened."""
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    if value is None:
        text = "null"
    elif isinstance(value, Mapping):
        text = "a mapping"
    elif isinstance(value, (list, tuple)) and len(text) > 60:
        text = "a list"
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------- validators


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(
    path: tuple[str, ...],
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    optional: bool = False,
) -> float | None:
    """Check a float field and return it as ``float`` (so equal policies hash equal)."""
    if value is None and optional:
        return None
    if lo is not None and hi is not None:
        want = f"a number between {lo:g} and {hi:g}"
    elif lo is not None:
        want = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        want = "a number"
    if optional:
        want += " or null"
    ok = _is_number(value) and value == value  # NaN != NaN
    if ok:
        ok = (lo is None or (value > lo if lo_open else value >= lo)) and (
            hi is None or value <= hi
        )
    if not ok:
        raise _FieldError(path, f"must be {want}, got {_show(value)}")
    return float(value)


def _integer(path: tuple[str, ...], value: Any, *, lo: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or value < lo:
        want = f"an integer >= {lo}" + (" or null" if optional else "")
        raise _FieldError(path, f"must be {want}, got {_show(value)}")
    return value


def _boolean(path: tuple[str, ...], value: Any) -> bool:
    if not isinstance(value, bool):
        raise _FieldError(path, f"must be true or false, got {_show(value)}")
    return value


def _string(path: tuple[str, ...], value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        want = "a non-empty string" + (" or null" if optional else "")
        raise _FieldError(path, f"must be {want}, got {_show(value)}")
    return value


def _choice(path: tuple[str, ...], value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        close = difflib.get_close_matches(value, choices, n=1) if isinstance(value, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = ", ".join(repr(c) for c in choices)
        raise _FieldError(path, f"must be one of {listed}, got {_show(value)}{hint}")
    return value


def _tags(path: tuple[str, ...], value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _FieldError(path, f"must be a list of tag strings, got {_show(value)}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _FieldError(path, f"must be a list of non-empty tag strings, got {_show(item)}")
    return tuple(value)


def _classes(path: tuple[str, ...], value: Any) -> tuple[str, ...] | None:
    """Traffic classes are system prompts, stripped as ``traffic_class`` strips them; ``""``
    (no system prompt) is a class too, so unlike tags empty strings are allowed."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _FieldError(path, f"must be a list of system prompts or null, got {_show(value)}")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise _FieldError(path, f"must be a list of strings, got {_show(item)}")
        if item.strip() not in out:
            out.append(item.strip())
    return tuple(out)


def _set(obj: Any, name: str, value: Any) -> None:
    """Store a normalized value on a frozen dataclass during ``__post_init__``."""
    object.__setattr__(obj, name, value)


class _ReadOnlyDict(dict):
    """A hashable dict that refuses mutation, so a frozen policy stays frozen."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("policy prices are read-only; use RoutingPolicy.replace()")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __copy__(self) -> _ReadOnlyDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _ReadOnlyDict:
        return self


# ----------------------------------------------------------------------------- config objects


@dataclass(frozen=True, kw_only=True)
class ModelPriceConfig:
    """What one cloud model costs, for the cost ledger and savings report.

    >>> price = ModelPriceConfig(input_per_mtok=0.15, output_per_mtok=0.60)
    >>> price.input_per_mtok * 2_000 / 1e6  # USD for a 2k-token prompt
    0.0003
    """

    input_per_mtok: float
    """USD per one million prompt (input) tokens."""
    output_per_mtok: float
    """USD per one million completion (output) tokens."""

    def __post_init__(self) -> None:
        for name in ("input_per_mtok", "output_per_mtok"):
            _set(self, name, _number((name,), getattr(self, name), lo=0))


def _prices(value: Any) -> _ReadOnlyDict:
    """Build ``CloudConfig.prices`` from ``ModelPriceConfig`` objects or plain mappings."""
    path = ("cloud", "prices")
    if not isinstance(value, Mapping):
        raise _FieldError(path, f"must be a mapping of model name to prices, got {_show(value)}")
    out: dict[str, ModelPriceConfig] = {}
    for model, price in value.items():
        if not isinstance(model, str) or not model.strip():
            raise _FieldError(path, f"model names must be non-empty strings, got {_show(model)}")
        here = (*path, model)
        if isinstance(price, ModelPriceConfig):
            out[model] = price
            continue
        if not isinstance(price, Mapping):
            raise _FieldError(
                here,
                f"must be a mapping with input_per_mtok and output_per_mtok, got {_show(price)}",
            )
        _check_keys(ModelPriceConfig, price, here)
        for name in ("input_per_mtok", "output_per_mtok"):
            if name not in price:
                raise _FieldError((*here, name), "is required (USD per 1M tokens)")
        try:
            out[model] = ModelPriceConfig(**price)
        except _FieldError as exc:
            raise _FieldError((*here, *exc.path), exc.reason) from None
    return _ReadOnlyDict(out)


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
    timeout_s: float = 60.0
    """Seconds one cloud attempt may take before ``CloudTimeout`` (then it may be retried)."""
    deadline_s: float | None = 90.0
    """Seconds the whole call may take, local try, retries and backoff included (a request's
    ``timeout=`` argument replaces it); null -> no overall limit (attempts x timeout_s)."""
    connect_timeout_s: float = 5.0
    """Seconds to establish the connection; must not exceed ``timeout_s``."""
    max_retries: int = 3
    """Retries on retryable cloud errors (429, 5xx, timeouts); 0 disables retrying."""
    backoff_base_s: float = 0.5
    """First retry delay; doubles each attempt (with jitter), capped by ``backoff_max_s``."""
    backoff_max_s: float = 20.0
    """Longest single retry delay (a server's Retry-After is also capped to this)."""
    prices: Mapping[str, ModelPriceConfig] = field(default_factory=_ReadOnlyDict)
    """Per-model USD prices (read-only); models not listed fall back to litellm's price table."""

    def __post_init__(self) -> None:
        s = self._section
        _set(self, "model", _string((s, "model"), self.model))
        if self.api_base is not None and (
            not isinstance(self.api_base, str)
            or not self.api_base.startswith(("http://", "https://"))
        ):
            raise _FieldError(
                (s, "api_base"), f"must be an http(s):// URL or null, got {_show(self.api_base)}"
            )
        if self.api_key_env is not None and (
            not isinstance(self.api_key_env, str)
            or not _ENV_NAME.fullmatch(self.api_key_env)
            or _looks_like_secret(self.api_key_env)
        ):
            # Never echo the value: it may be a pasted secret.
            raise _FieldError(
                (s, "api_key_env"),
                "must be the NAME of an environment variable (like OPENAI_API_KEY), "
                "not the key itself",
            )
        _set(self, "timeout_s", _number((s, "timeout_s"), self.timeout_s, lo=0, lo_open=True))
        _set(
            self,
            "connect_timeout_s",
            _number((s, "connect_timeout_s"), self.connect_timeout_s, lo=0, lo_open=True),
        )
        if self.deadline_s is not None:
            _set(
                self,
                "deadline_s",
                _number((s, "deadline_s"), self.deadline_s, lo=0, lo_open=True),
            )
        if self.connect_timeout_s > self.timeout_s:
            raise _FieldError(
                (s, "connect_timeout_s"),
                f"must be <= cloud.timeout_s ({self.timeout_s:g}), got {self.connect_timeout_s:g}",
                also=((s, "timeout_s"),),
            )
        _set(self, "max_retries", _integer((s, "max_retries"), self.max_retries, lo=0))
        _set(self, "backoff_base_s", _number((s, "backoff_base_s"), self.backoff_base_s, lo=0))
        _set(self, "backoff_max_s", _number((s, "backoff_max_s"), self.backoff_max_s, lo=0))
        if self.backoff_max_s < self.backoff_base_s:
            raise _FieldError(
                (s, "backoff_max_s"),
                f"must be >= cloud.backoff_base_s ({self.backoff_base_s:g}), "
                f"got {self.backoff_max_s:g}",
                also=((s, "backoff_base_s"),),
            )
        _set(self, "prices", _prices(self.prices))


@dataclass(frozen=True, kw_only=True)
class LocalConfig:
    """The local small model and its batcher.

    >>> local = LocalConfig(adapter="current", max_batch_size=8)
    >>> local.max_new_tokens
    256
    """

    _section: ClassVar[str] = "local"

    model: str = "smollm2-135m-instruct"
    """Local model id understood by ``local_models.loader``."""
    adapter: str | None = None
    """LoRA adapter: ``"current"`` = the promoted adapter from the adapter registry, a path to
    an adapter directory, or None for the base model."""
    precision: str = "auto"
    """Weight precision / quantization backend name (``local_models`` validates the name);
    ``"auto"`` picks the best available on this machine."""
    max_batch_size: int = 16
    """Most requests the dynamic batcher runs in one forward pass."""
    max_wait_ms: float = 5.0
    """How long the batcher waits for more requests before running a partial batch."""
    max_queue: int = 256
    """Queued local requests beyond this are refused (``Overloaded``); >= ``max_batch_size``."""
    max_prompt_tokens: int = 1536
    """Longest prompt the local model accepts; longer prompts go to the cloud."""
    max_new_tokens: int = 256
    """Cap on generated tokens per local answer (a request's smaller max_tokens wins)."""
    usd_per_hour: float = 0.10
    """What the local hardware costs per hour; the ledger charges local calls by wall time."""

    def __post_init__(self) -> None:
        s = self._section
        _set(self, "model", _string((s, "model"), self.model))
        _set(self, "adapter", _string((s, "adapter"), self.adapter, optional=True))
        _set(self, "precision", _string((s, "precision"), self.precision))
        _set(self, "max_batch_size", _integer((s, "max_batch_size"), self.max_batch_size, lo=1))
        _set(self, "max_wait_ms", _number((s, "max_wait_ms"), self.max_wait_ms, lo=0))
        _set(self, "max_queue", _integer((s, "max_queue"), self.max_queue, lo=1))
        if self.max_queue < self.max_batch_size:
            raise _FieldError(
                (s, "max_queue"),
                f"must be >= local.max_batch_size ({self.max_batch_size}), got {self.max_queue}",
                also=((s, "max_batch_size"),),
            )
        _set(
            self,
            "max_prompt_tokens",
            _integer((s, "max_prompt_tokens"), self.max_prompt_tokens, lo=1),
        )
        _set(self, "max_new_tokens", _integer((s, "max_new_tokens"), self.max_new_tokens, lo=1))
        _set(self, "usd_per_hour", _number((s, "usd_per_hour"), self.usd_per_hour, lo=0))


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
    escalate to the cloud."""
    hybrid_low: float = 0.3
    """Mode ``hybrid``: classifier score < hybrid_low -> straight to the cloud."""
    hybrid_high: float = 0.8
    """Mode ``hybrid``: score >= hybrid_high -> local only; in between -> cascade."""

    def __post_init__(self) -> None:
        s = self._section
        for name in ("route", "cascade", "hybrid_low", "hybrid_high"):
            _set(self, name, _number((s, name), getattr(self, name), lo=0, hi=1))
        if self.hybrid_low > self.hybrid_high:
            raise _FieldError(
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
    ttl_s: float | None = DEFAULT_CACHE_TTL_S
    """Seconds a cached answer stays valid; null -> never expires."""
    size_limit_mb: int = 512
    """Disk space the cache may use before evicting least-recently-used entries."""
    cache_nondeterministic: bool = False
    """Also cache sampled (temperature > 0, no seed) answers; trades variety for savings."""

    def __post_init__(self) -> None:
        s = self._section
        _set(self, "enabled", _boolean((s, "enabled"), self.enabled))
        _set(self, "ttl_s", _number((s, "ttl_s"), self.ttl_s, lo=0, lo_open=True, optional=True))
        _set(self, "size_limit_mb", _integer((s, "size_limit_mb"), self.size_limit_mb, lo=1))
        _set(
            self,
            "cache_nondeterministic",
            _boolean((s, "cache_nondeterministic"), self.cache_nondeterministic),
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
        _set(self, "daily_usd", _number((s, "daily_usd"), self.daily_usd, lo=0, optional=True))
        _set(self, "on_exceeded", _choice((s, "on_exceeded"), self.on_exceeded, ON_EXCEEDED))
        _set(self, "timezone", _string((s, "timezone"), self.timezone))
        if self.timezone != "UTC":
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise _FieldError(
                    (s, "timezone"),
                    f"must be an IANA time zone like 'UTC' or 'Europe/Berlin', "
                    f"got {_show(self.timezone)}",
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
        _set(self, "force_cloud_tags", _tags((s, "force_cloud_tags"), self.force_cloud_tags))
        _set(self, "force_local_tags", _tags((s, "force_local_tags"), self.force_local_tags))
        both = sorted(set(self.force_cloud_tags) & set(self.force_local_tags))
        if both:
            raise _FieldError(
                (s, "force_local_tags"),
                f"tags {both} are also in rules.force_cloud_tags; a tag can force only one way",
                also=((s, "force_cloud_tags"),),
            )
        _set(
            self,
            "max_local_prompt_tokens",
            _integer(
                (s, "max_local_prompt_tokens"), self.max_local_prompt_tokens, lo=1, optional=True
            ),
        )
        _set(self, "cloud_if_tools", _boolean((s, "cloud_if_tools"), self.cloud_if_tools))
        _set(
            self,
            "cloud_if_response_format",
            _boolean((s, "cloud_if_response_format"), self.cloud_if_response_format),
        )
        _set(self, "local_classes", _classes((s, "local_classes"), self.local_classes))


@dataclass(frozen=True, kw_only=True)
class ShadowConfig:
    """Shadow evaluation: answer some cloud-routed requests locally too, to measure quality.

    >>> ShadowConfig(rate=0.1).judge
    'auto'
    """

    _section: ClassVar[str] = "shadow"

    rate: float = 0.0
    """Fraction (0..1) of cloud-routed requests also answered locally in the background."""
    judge: str = "auto"
    """How a shadow answer is compared with the cloud answer: a rule judge name, ``auto`` (picks
    one from the answer's shape) or ``llm`` (asks the cloud model; its cost is in the ledger)."""
    max_pending: int = 1024
    """Most shadow jobs queued at once; extra ones are dropped, never slowing real traffic."""
    workers: int = 1
    """Shadow jobs answered at once. The local batcher batches them together, so a few workers
    label several times faster; each one also competes with real local traffic for the CPU."""

    def __post_init__(self) -> None:
        s = self._section
        _set(self, "rate", _number((s, "rate"), self.rate, lo=0, hi=1))
        from router.scoring.judges import JUDGES

        choices = ("auto", "llm", *sorted(JUDGES))
        _set(self, "judge", _choice((s, "judge"), self.judge, choices))
        _set(self, "max_pending", _integer((s, "max_pending"), self.max_pending, lo=1))
        _set(self, "workers", _integer((s, "workers"), self.workers, lo=1))


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
        _set(
            self,
            "max_answer_chars",
            _integer((s, "max_answer_chars"), self.max_answer_chars, lo=1, optional=True),
        )
        _set(self, "min_agreement", _number((s, "min_agreement"), self.min_agreement, lo=0, hi=1))
        _set(self, "min_gain", _number((s, "min_gain"), self.min_gain, lo=0, hi=1))
        _set(
            self,
            "min_class_examples",
            _integer((s, "min_class_examples"), self.min_class_examples, lo=1),
        )


_SECTIONS: dict[str, type] = {
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
        _set(self, "name", _string(("name",), self.name))
        _set(self, "mode", _choice(("mode",), self.mode, MODES))
        for section, cls in _SECTIONS.items():
            value = getattr(self, section)
            if not isinstance(value, cls):
                raise _FieldError(
                    (section,), f"must be a {cls.__name__}, got {type(value).__name__}"
                )
        _set(self, "classifier", _string(("classifier",), self.classifier, optional=True))
        _set(self, "store_content", _boolean(("store_content",), self.store_content))
        limit = self.rules.max_local_prompt_tokens
        if limit is not None and limit > self.local.max_prompt_tokens:
            raise _FieldError(
                ("rules", "max_local_prompt_tokens"),
                f"must be <= local.max_prompt_tokens ({self.local.max_prompt_tokens}), got {limit}",
                also=(("local", "max_prompt_tokens"),),
            )

    @property
    def max_local_prompt_tokens(self) -> int:
        """Longest prompt (tokens) routed locally: the rule if set, else the model's limit."""
        return self.rules.max_local_prompt_tokens or self.local.max_prompt_tokens

    @property
    def version(self) -> str:
        """Content hash (12 hex chars): equal policies share it; ledger rows record it."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON/YAML-ready data that ``policy_from_dict`` turns back into ``self``."""
        return _plain(self)

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
                        raise _FieldError(
                            tuple(parts[: i + 1]), "is not a section; cannot set a field inside it"
                        )
                    child = node[part] = {}
                node = child
            node[parts[-1]] = _plain(value)
        return _build_policy(data)


# ----------------------------------------------------------------------------- dict <-> objects


def _plain(value: Any) -> Any:
    """Convert config objects to plain dicts/lists (private ClassVars are not fields)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_keys(cls: type, data: Mapping[Any, Any], path: tuple[str, ...]) -> None:
    """Refuse unknown keys (suggesting the closest valid one) and inline API keys."""
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        here = (*path, str(key))
        if isinstance(key, str) and "api_key" in key.lower() and key != "api_key_env":
            raise _FieldError(
                here,
                "refusing an inline API key: put the key in an environment variable "
                "and name it in cloud.api_key_env",
            )
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _FieldError(here, f"unknown key{hint} (valid keys: {', '.join(valid)})")


def _build_policy(data: Any, *, base_dir: Path | None = None) -> RoutingPolicy:
    """Validate plain data into a ``RoutingPolicy``; errors are path-qualified ``_FieldError``."""
    if not isinstance(data, Mapping):
        raise _FieldError((), f"a policy must be a mapping of settings, got {_show(data)}")
    _check_keys(RoutingPolicy, data, ())
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        cls = _SECTIONS.get(key)
        if cls is None:
            kwargs[key] = value
            continue
        section = {} if value is None else value
        if not isinstance(section, Mapping):
            raise _FieldError((key,), f"must be a mapping of settings, got {_show(value)}")
        _check_keys(cls, section, (key,))
        kwargs[key] = cls(**section)
    classifier = kwargs.get("classifier")
    relative = (
        isinstance(classifier, str) and classifier.strip() and not Path(classifier).is_absolute()
    )
    if base_dir is not None and relative:
        kwargs["classifier"] = str(base_dir / classifier)
    return RoutingPolicy(**kwargs)


def policy_from_dict(
    data: Mapping[str, Any], *, source: str = "<dict>", base_dir: str | Path | None = None
) -> RoutingPolicy:
    """Build a policy from plain data (e.g. parsed YAML or ``RoutingPolicy.to_dict()``).

    Args:
        data: Mapping of policy fields; sections as nested mappings. Missing keys take defaults.
        source: Name used in error messages (a file name, ``"<dict>"``...).
        base_dir: Directory that a relative ``classifier`` path is resolved against;
            None leaves it as written.

    Returns:
        The validated, frozen ``RoutingPolicy``.

    Raises:
        PolicyError: Unknown key, wrong type, out-of-range value or contradictory settings;
            the message names ``source`` and the dotted field.
    """
    try:
        return _build_policy(data, base_dir=Path(base_dir) if base_dir is not None else None)
    except _FieldError as exc:
        raise _FieldError(exc.path, exc.reason, source=source) from None


# ----------------------------------------------------------------------------- YAML


def _key_lines(node: yaml.Node, source: str, prefix: tuple[str, ...] = ()) -> dict:
    """Map each key path in a composed YAML document to its 1-based line; refuse duplicates."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            path = (*prefix, str(key_node.value))
            line = key_node.start_mark.line + 1
            if path in lines:
                raise _FieldError(
                    path,
                    f"duplicate key (first set on line {lines[path]})",
                    source=source,
                    line=line,
                )
            lines[path] = line
            lines.update(_key_lines(value_node, source, path))
    return lines


def _locate(exc: _FieldError, lines: dict, source: str) -> _FieldError:
    """Attach file and line: the failing key, else a related key, else the nearest parent."""
    for path in (exc.path, *exc.also):
        if path in lines:
            return _FieldError(exc.path, exc.reason, source=source, line=lines[path])
    for cut in range(len(exc.path) - 1, 0, -1):
        if exc.path[:cut] in lines:
            return _FieldError(exc.path, exc.reason, source=source, line=lines[exc.path[:cut]])
    return _FieldError(exc.path, exc.reason, source=source)


def parse_policy(
    text: str, *, source: str = "<string>", base_dir: str | Path | None = None
) -> RoutingPolicy:
    """Parse policy YAML text (SafeLoader only).

    Args:
        text: The YAML document.
        source: Name used in error messages, normally the file path.
        base_dir: Directory a relative ``classifier`` path is resolved against.

    Returns:
        The validated, frozen ``RoutingPolicy``.

    Raises:
        PolicyError: Invalid YAML, empty document, or an invalid setting; the message reads
            ``source:line: field: problem``.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = " ".join(
            part for part in (getattr(exc, "context", None), getattr(exc, "problem", None)) if part
        ) or str(exc)
        raise PolicyError(f"{where}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()
    if node is None or data is None:
        raise PolicyError(f"{source}: empty policy file; expected a mapping such as 'mode: hybrid'")
    if not isinstance(data, Mapping):
        line = node.start_mark.line + 1
        raise PolicyError(
            f"{source}:{line}: the top level must be a mapping of settings, got {_show(data)}"
        )
    lines = _key_lines(node, source)
    try:
        return _build_policy(data, base_dir=Path(base_dir) if base_dir is not None else None)
    except _FieldError as exc:
        raise _locate(exc, lines, source) from None


def load_policy(source: str | Path) -> RoutingPolicy:
    """Load a policy from a YAML file or a bundled name.

    Args:
        source: A path to a YAML file, or a bundled policy name: ``"default"``,
            ``"cost-saver"`` or ``"quality-first"``. A ``Path`` is always a file.

    Returns:
        The validated, frozen ``RoutingPolicy``.

    Raises:
        PolicyError: The file is missing/unreadable or the policy is invalid; the message
            names the file, line and field.
    """
    from policies import BUNDLED_POLICIES, policy_path

    path = (
        policy_path(source)
        if isinstance(source, str) and source in BUNDLED_POLICIES
        else Path(source)
    )
    bundled = isinstance(source, str) and source in BUNDLED_POLICIES
    label = str(path) if bundled else str(source)
    if not path.is_file():
        hint = ""
        if isinstance(source, str) and not source.endswith((".yaml", ".yml")) and "/" not in source:
            close = difflib.get_close_matches(source, BUNDLED_POLICIES, n=1)
            hint = f"; did you mean the bundled policy {close[0]!r}?" if close else ""
        raise PolicyError(
            f"{label}: no such policy file{hint} (bundled policies: {', '.join(BUNDLED_POLICIES)})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{label}: cannot read policy file: {exc}") from None
    return parse_policy(text, source=label, base_dir=path.parent)


def save_policy(policy: RoutingPolicy, path: str | Path) -> None:
    """Write ``policy`` as YAML to ``path`` (parent directories are created).

    Args:
        policy: The policy to write.
        path: Destination file; overwritten atomically (write then rename).

    Raises:
        PolicyError: ``policy`` is not a ``RoutingPolicy``.
    """
    if not isinstance(policy, RoutingPolicy):
        raise PolicyError(f"save_policy needs a RoutingPolicy, got {type(policy).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(policy.to_yaml(), encoding="utf-8")
    tmp.replace(path)


__all__ = [
    "MODES",
    "ON_EXCEEDED",
    "BudgetConfig",
    "CacheSettings",
    "CloudConfig",
    "DistillSettings",
    "LocalConfig",
    "ModelPriceConfig",
    "RoutingPolicy",
    "RulesConfig",
    "ShadowConfig",
    "Thresholds",
    "load_policy",
    "parse_policy",
    "policy_from_dict",
    "save_policy",
]
