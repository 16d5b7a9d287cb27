"""``hybridgate ask``: one request through the gateway, and where it went and what it cost."""

from __future__ import annotations

from typing import Any

import typer

from router.cli._common import LedgerOpt, PolicyOpt, fail, ledger_path, load_policy


def ask(
    question: str = typer.Argument(..., help="The user message."),
    local: bool = typer.Option(False, "--local", help="Answer from the local model only."),
    cloud: bool = typer.Option(False, "--cloud", help="Answer from the cloud model only."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Cloud model (default: the policy's)."
    ),
    api_base: str | None = typer.Option(None, "--api-base", help="Cloud endpoint override."),
    max_tokens: int = typer.Option(256, "--max-tokens"),
    stream: bool = typer.Option(False, "--stream", help="Print tokens as they arrive."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole response as JSON."),
    server: str | None = typer.Option(
        None,
        "--server",
        help="Ask a running `hybridgate serve` (its /v1 URL) instead of an in-process gateway; "
        "the key is read from HYBRIDGATE_API_KEY.",
    ),
    policy: str | None = PolicyOpt,
    ledger: str | None = LedgerOpt,
) -> None:
    """Send one request through the gateway and show where it went and what it cost."""
    if local and cloud:
        fail("--local and --cloud exclude each other")
    if server:
        route = "local" if local else "cloud" if cloud else None
        _ask_server(server, question, model, route, max_tokens, stream, as_json)
        return
    from router.client import HybridClient
    from router.errors import HybridGateError

    pol = load_policy(policy)
    if local:
        pol = pol.replace(mode="local")
    elif cloud:
        pol = pol.replace(mode="cloud")
    try:
        client = HybridClient(policy=pol, ledger=ledger_path(ledger), api_base=api_base)
    except HybridGateError as exc:  # a bad ledger, classifier or adapter named by the policy
        fail(str(exc))
    kwargs: dict[str, Any] = {
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if model:
        kwargs["model"] = model
    try:
        if stream:
            route = None
            for chunk in client.chat.completions.create(stream=True, **kwargs):
                if chunk.choices and chunk.choices[0].delta.content:
                    typer.echo(chunk.choices[0].delta.content, nl=False)
                route = chunk.route or route
            typer.echo()
        else:
            reply = client.chat.completions.create(**kwargs)
            route = reply.route
            if as_json:
                typer.echo(reply.model_dump_json(indent=2))
                return
            typer.echo(reply.choices[0].message.content)
    except HybridGateError as exc:
        fail(f"{type(exc).__name__}: {exc}", code=1)
    finally:
        client.close()
    if route is not None:
        typer.secho(
            f"[{route.route}] {route.reason} | ${route.cost_usd:.6f} (cloud would be "
            f"${route.baseline_cost_usd:.6f}) | {route.latency_ms:.0f} ms",
            fg="cyan",
            err=True,
        )


def _ask_server(
    url: str,
    question: str,
    model: str | None,
    route: str | None,
    max_tokens: int,
    stream: bool,
    as_json: bool,
) -> None:
    """The same request through the ``openai`` SDK to a server; its route comes back in headers."""
    import os

    import openai

    client = openai.OpenAI(
        base_url=url, api_key=os.environ.get("HYBRIDGATE_API_KEY") or "none", max_retries=1
    )
    kwargs: dict[str, Any] = {
        "model": model or "hybridgate",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if route:
        kwargs["metadata"] = {"route": route}
    try:
        if stream:
            with client.chat.completions.with_raw_response.create(stream=True, **kwargs) as raw:
                headers = raw.headers
                for chunk in raw.parse():
                    if chunk.choices and chunk.choices[0].delta.content:
                        typer.echo(chunk.choices[0].delta.content, nl=False)
            typer.echo()
        else:
            raw = client.chat.completions.with_raw_response.create(**kwargs)
            headers, reply = raw.headers, raw.parse()
            if as_json:
                typer.echo(reply.model_dump_json(indent=2))
                return
            typer.echo(reply.choices[0].message.content)
    except openai.APIConnectionError:
        fail(f"no hybridgate server answers at {url} (is `hybridgate serve` running?)", code=1)
    except openai.APIStatusError as exc:
        fail(f"{exc.status_code}: {exc.message}", code=1)
    cost = headers.get("x-hybridgate-cost-usd")
    line = f"[{headers.get('x-hybridgate-route', '?')}] {headers.get('x-hybridgate-reason', '')}"
    if cost is not None:
        line += f" | ${float(cost):.6f} (cloud would be ${float(headers['x-hybridgate-baseline-usd']):.6f})"
    typer.secho(line, fg="cyan", err=True)
