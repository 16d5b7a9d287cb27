"""Drop-in replacements for ``openai.OpenAI`` / ``openai.AsyncOpenAI`` chat completions.

>>> from router import HybridClient
>>> client = HybridClient(policy="default")
>>> reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
>>> reply.choices[0].message.content, reply.route.route, reply.route.cost_usd
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from router._gateway.core import Gateway
from router._gateway.retry import Retrier, RetryConfig
from router.errors import ModelLoadError
from router.ledger import Ledger
from router.ledger.pricing import PriceBook
from router.policy import PolicyError, RoutingPolicy, load_policy


class _Completions:
    def __init__(self, gateway: Gateway, *, is_async: bool) -> None:
        self._gateway = gateway
        self._async = is_async

    def create(self, **kwargs: Any) -> Any:
        """Same parameters and return types as ``openai``'s ``chat.completions.create``.

        Returns a ``ChatCompletion`` (or an iterator of ``ChatCompletionChunk`` with
        ``stream=True``) whose ``route`` attribute tells where it was answered and what it cost.

        Raises:
            InvalidRequest: a bad or unsupported parameter (also ``openai.BadRequestError``).
            CloudError: the cloud failed after retries (also the matching ``openai`` error).
            BudgetExceeded: the daily budget is spent and the policy says to fail.
        """
        if self._async:
            return self._gateway.acreate(kwargs)
        return self._gateway.create(kwargs)


class _Chat:
    def __init__(self, gateway: Gateway, *, is_async: bool) -> None:
        self.completions = _Completions(gateway, is_async=is_async)


class HybridClient:
    """OpenAI-shaped client that routes each request local or cloud and ledgers its cost.

    >>> client = HybridClient(policy="cost-saver", ledger="~/.hybridgate/ledger.sqlite")
    >>> client.chat.completions.create(messages=[{"role": "user", "content": "2+2?"}])

    Args:
        policy: a ``RoutingPolicy``, a bundled name (``default``, ``cost-saver``,
            ``quality-first``) or a path to a YAML file.
        ledger: a ``Ledger``, the path of its SQLite file (default: the user data dir), or a
            ``postgresql://`` URL (a ledger shared by several gateways).
        api_key: cloud API key; default: the variable named by ``cloud.api_key_env``.
        api_base: override the cloud endpoint (e.g. the replay cloud, a proxy, vLLM).
        cloud / local: transports to use instead of the ones built from the policy (tests,
            custom backends); ``local`` may also be a zero-argument factory.
        cache: False disables the response cache; or pass a ``ResponseCache``.
        classifier: a fitted difficulty classifier (default: the policy's ``classifier`` file).
        retry: retry settings for cloud calls (default: from the policy).
    """

    _is_async = False

    def __init__(
        self,
        *,
        policy: RoutingPolicy | str | Path = "default",
        ledger: Ledger | str | Path | None = None,
        api_key: str | None = None,
        api_base: str | None = None,
        cloud: Any = None,
        local: Any = None,
        cache: Any = None,
        classifier: Any = None,
        retry: RetryConfig | None = None,
        seed: int | None = None,
    ) -> None:
        policy = policy if isinstance(policy, RoutingPolicy) else load_policy(policy)
        if cloud is None:
            cloud = _cloud_transport(policy, api_key, api_base)
        redactions = getattr(cloud, "redactions", None)
        secrets = tuple(v for v in (api_key, *(redactions() if redactions else ())) if v)
        prices = PriceBook(policy.cloud.prices)
        for tier in policy.cloud.tiers:
            if not prices.has_price(tier.model):
                raise PolicyError(
                    f"cloud.tiers: no price is known for {tier.model!r}; add it under "
                    "cloud.prices in your policy (USD per 1M input/output tokens)"
                )
        tiers = tuple(
            _cloud_transport(policy, api_key, api_base, model=t.model) for t in policy.cloud.tiers
        )
        if not isinstance(ledger, Ledger):
            ledger = Ledger(ledger, store_content=policy.store_content, redact=secrets)
        self._gateway = Gateway(
            policy=policy,
            ledger=ledger,
            prices=prices,
            cloud=cloud,
            tiers=tiers,
            local_factory=_local_factory(policy, local),
            cache=_cache(policy, cache),
            classifier=classifier if classifier is not None else _classifier(policy),
            retrier=Retrier(retry or RetryConfig.from_policy(policy.cloud), seed=seed),
            seed=seed,
            adapter_watcher=_adapter_watcher(policy, local),
            adapter_hint=_adapter_hint(policy) if local is None or _is_factory(local) else None,
            secrets=secrets,
        )
        self.chat = _Chat(self._gateway, is_async=self._is_async)

    @property
    def policy(self) -> RoutingPolicy:
        return self._gateway.policy

    @property
    def gateway(self) -> Gateway:
        """The request loop under this client (``hybridgate serve`` shares one per process)."""
        return self._gateway

    @property
    def ledger(self) -> Ledger:
        return self._gateway.ledger

    @property
    def shadow(self) -> Any:
        """The shadow labeller (``drain()`` waits for background labels)."""
        return self._gateway.shadow

    def swap_adapter(self, path: str | Path, *, version: str) -> None:
        """Hot-swap the local LoRA adapter; in-flight requests finish on the old one."""
        self._gateway.local().swap_adapter(str(path), version=version)

    def close(self) -> None:
        self._gateway.close()

    def __enter__(self) -> HybridClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncHybridClient(HybridClient):
    """The ``openai.AsyncOpenAI`` counterpart: ``await client.chat.completions.create(...)``.

    >>> client = AsyncHybridClient(policy="default")
    >>> reply = await client.chat.completions.create(messages=[{"role": "user", "content": "hi"}])
    >>> async for chunk in await client.chat.completions.create(messages=..., stream=True): ...
    """

    _is_async = True

    async def __aenter__(self) -> AsyncHybridClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _cloud_transport(
    policy: RoutingPolicy, api_key: str | None, api_base: str | None, model: str | None = None
) -> Any:
    """OpenAI's protocol over httpx where the model speaks it (``cloud.transport``), else
    litellm; ``model``: a cheaper tier's model instead of ``cloud.model`` (same endpoint)."""
    model = model or policy.cloud.model
    if api_key is None and policy.cloud.api_key_env:
        api_key = os.environ.get(policy.cloud.api_key_env)
    from router._transports.openai_http import OpenAIHTTPTransport, speaks_openai

    kind = policy.cloud.transport
    if kind == "openai" or (kind == "auto" and speaks_openai(model)):
        transport: type = OpenAIHTTPTransport
    else:
        from router._transports.cloud import CloudTransport

        transport = CloudTransport
    return transport(
        model=model,
        api_base=api_base or policy.cloud.api_base,
        api_key=api_key,
        timeout_s=policy.cloud.timeout_s,
        connect_timeout_s=policy.cloud.connect_timeout_s,
    )


def _is_factory(local: Any) -> bool:
    return callable(local) and not hasattr(local, "complete")


def _local_factory(policy: RoutingPolicy, local: Any) -> Any:
    if local is not None:
        return local if _is_factory(local) else (lambda: local)

    if policy.local.api_base:
        return lambda: _engine_transport(policy)

    def build() -> Any:
        from router._transports.local import LocalTransport

        adapter_path, adapter_version = _adapter(policy.local.adapter)
        config = policy.local.engine_config(
            adapter_path=adapter_path, adapter_version=adapter_version
        )
        return LocalTransport.from_config(config, max_new_tokens=policy.local.max_new_tokens)

    return build


def _engine_transport(policy: RoutingPolicy) -> Any:
    """The local tier on an OpenAI-compatible engine (``local.api_base``)."""
    from router._transports.engine import EngineTransport

    local = policy.local
    assert local.api_base is not None
    served: tuple[str | None, str, str] | None = None
    if local.adapter == "current":
        found = _published(local.api_base)
        served = (found[0], found[1], "") if found else None
    elif local.adapter:  # a LoRA name the engine serves already (vLLM --lora-modules)
        served = (None, local.adapter, local.adapter)
    return EngineTransport(
        model=local.model,
        api_base=local.api_base,
        api_key=os.environ.get(local.api_key_env) if local.api_key_env else None,
        engine=local.engine,
        max_new_tokens=local.max_new_tokens,
        served=served,
        timeout_s=policy.cloud.timeout_s,
        connect_timeout_s=policy.cloud.connect_timeout_s,
    )


def _published(api_base: str) -> tuple[str, str] | None:
    """``(adapter path, version)`` the engine at ``api_base`` was last published."""
    from router.publication import published

    found = published(api_base)
    return (found.path, found.version) if found else None


def _adapter_watcher(policy: RoutingPolicy, local: Any) -> Any:
    """With ``local.adapter: current``, follow promotions (an engine: publications) made
    while this client runs."""
    if local is not None or policy.local.adapter != "current":
        return None
    from router._gateway.adapter_watch import CurrentAdapterWatcher, registry_current

    api_base = policy.local.api_base
    if api_base:
        return CurrentAdapterWatcher(lambda: _as_path(_published(api_base)))
    return CurrentAdapterWatcher(registry_current())


def _as_path(found: tuple[str, str] | None) -> tuple[Path, str] | None:
    return (Path(found[0]), found[1]) if found else None


def _adapter_hint(policy: RoutingPolicy) -> Any:
    """``() -> version`` the local model will load, read before it loads (for cache keys)."""

    def hint() -> str | None:
        try:
            if policy.local.api_base:
                if policy.local.adapter != "current":
                    return policy.local.adapter
                found = _published(policy.local.api_base)
                return found[1] if found else None
            return _adapter(policy.local.adapter)[1]
        except Exception:  # an unreadable registry fails the local call later, not this lookup
            return None

    return hint


def _adapter(spec: str | None) -> tuple[str | None, str | None]:
    """``current`` -> the promoted adapter in the registry; a path -> itself; None -> base model."""
    if not spec:
        return None, None
    if spec == "current":
        from router._transports.local import current_adapter

        found = current_adapter()  # registry errors arrive as router.errors' ModelLoadError
        return (str(found[0]), found[1]) if found else (None, None)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"adapter directory {str(path)!r} does not exist (local.adapter)")
    return str(path), path.name


def _cache(policy: RoutingPolicy, cache: Any) -> Any:
    # store_content: false promises no prompt or answer text in any file; a response cache is
    # answer text on disk, so it stays off.
    if cache is False or not policy.cache.enabled or not policy.store_content:
        return None
    if cache is not None:
        return cache
    from router._gateway.cache import ResponseCache

    return ResponseCache(policy.cache)


def _classifier(policy: RoutingPolicy) -> Any:
    if not policy.classifier:
        return None
    from router.scoring.classifier import DifficultyClassifier

    return DifficultyClassifier.load(policy.classifier)
