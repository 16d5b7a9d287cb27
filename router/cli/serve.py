"""``hybridgate serve``: the gateway as an OpenAI-compatible HTTP server (``router.server``)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from router.cli._common import LedgerOpt, PolicyOpt, fail, ledger_path, load_policy


def serve(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to bind (loopback by default)."
    ),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    policy: str | None = PolicyOpt,
    ledger: str | None = LedgerOpt,
    keys: Path | None = typer.Option(
        None, "--keys", help="YAML file of API keys -> tenant, budget, allowed models/routes."
    ),
    workers: int = typer.Option(
        1, "--workers", help="Processes; each loads its own local model (keep 1 to batch)."
    ),
    api_base: str | None = typer.Option(None, "--api-base", help="Cloud endpoint override."),
    allow_no_auth: bool = typer.Option(
        False, "--allow-no-auth", help="Bind a non-loopback --host without --keys (trusted nets)."
    ),
    graceful_s: float = typer.Option(
        30.0, "--graceful-timeout", help="Seconds in-flight requests get to finish on SIGTERM."
    ),
    otlp_endpoint: str | None = typer.Option(
        None,
        "--otlp-endpoint",
        help="Send gen_ai.* spans over OTLP/HTTP (default: OTEL_EXPORTER_OTLP_ENDPOINT; "
        "needs the otel extra).",
    ),
    hash_key: bool = typer.Option(
        False, "--hash-key", help="Read an API key from stdin, print its sha256: form, exit."
    ),
) -> None:
    """Serve OpenAI's /v1/chat/completions (and /v1/models, /healthz, /readyz, /metrics) from
    one shared gateway: one local model, batcher, cache and ledger for every client."""
    from router._errors import PolicyError
    from router._paths import policy_source
    from router.errors import HybridGateError
    from router.ledger.postgres import display
    from router.server.run import ServeConfig, check_bind
    from router.server.run import serve as run
    from router.server.tracing import configured_endpoint

    if hash_key:
        from router.server.keys import hash_key as digest

        if sys.stdin.isatty():
            import getpass

            key = getpass.getpass("API key: ")
        else:
            key = sys.stdin.readline()
        key = key.strip()
        if len(key) < 8:
            fail("an API key must be at least 8 characters")
        typer.echo(digest(key))
        return
    load_policy(policy)  # a bad policy is a one-line error, before anything binds
    config = ServeConfig(
        policy=str(policy_source(policy)),
        ledger=str(ledger_path(ledger)),
        keys=str(keys) if keys else None,
        api_base=api_base,
        host=host,
        port=port,
        workers=workers,
        allow_no_auth=allow_no_auth,
        graceful_s=graceful_s,
        otlp_endpoint=otlp_endpoint,
    )
    try:
        check_bind(config)
        traces = configured_endpoint(otlp_endpoint)
        typer.secho(
            f"hybridgate serving on http://{host}:{port}/v1 (policy {config.policy}, "
            f"ledger {display(config.ledger)}{', keys ' + config.keys if keys else ''}"
            f"{', spans to ' + traces if traces else ''})",
            fg="cyan",
            err=True,
        )
        run(config)
    except (PolicyError, HybridGateError) as exc:
        fail(str(exc))
