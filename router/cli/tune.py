"""``hybridgate tune`` (fit the router to a quality target) and ``hybridgate bench router``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from router.cli._common import LedgerOpt, PolicyOpt, fail, ledger_path, load_policy

bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)


def tune(
    target_quality: float = typer.Option(
        0.97, "--target-quality", help="Quality to keep, relative to all-cloud (0-1]."
    ),
    what: str = typer.Option(
        "route",
        "--what",
        help="route (classifier threshold), cascade (confidence threshold) or tiers (every "
        "threshold of an N-tier cascade, jointly).",
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
    delta: float = typer.Option(
        0.05,
        "--delta",
        help="Allowed probability that quality on fresh traffic misses the target (0-1).",
    ),
    fresh: int | None = typer.Option(
        None,
        "--fresh",
        min=0,
        help="Promise quality over this many fresh requests [default: as many as labelled]; "
        "0 promises the expected quality only.",
    ),
    policy: str | None = PolicyOpt,
    ledger: str | None = LedgerOpt,
) -> None:
    """Fit the router on labelled traffic and pick the cheapest threshold that keeps quality.

    Quality over the next --fresh requests meets --target-quality with probability >= 1 - --delta
    (an exact test, Learn-then-Test); traffic classes whose local answers cost at least the cloud's are taken
    off the local tier, so the written policy is never dearer than all-cloud on these labels.
    """
    from router._paths import policy_path
    from router.errors import HybridGateError
    from router.ledger import Ledger
    from router.policy import save_policy
    from router.tuning.retune import labelled_from_csv, labelled_from_ledger, retune
    from router.tuning.sweep import format_choice, format_curve, plot_curve

    if what not in ("route", "cascade", "tiers"):
        fail(f"--what must be route, cascade or tiers, got {what!r}")
    if not 0 < delta < 1:
        fail(f"--delta must be between 0 and 1 (exclusive), got {delta!r}")
    pol = load_policy(policy)
    out_path = out or policy_path()
    if what == "tiers":
        _tune_tiers(pol, csv_path, ledger, target_quality, delta, fresh, min_labels, out_path)
        return
    try:
        if csv_path:
            data = labelled_from_csv(csv_path)
        else:
            with Ledger(ledger_path(ledger)) as led:
                data = labelled_from_ledger(led)
        tuned = retune(
            data,
            pol,
            target=what,  # type: ignore[arg-type]  # checked above
            target_quality=target_quality,
            delta=delta,
            fresh=fresh,
            out_dir=out_path.parent,
            min_labels=min_labels,
        )
    except (ValueError, HybridGateError) as exc:  # LedgerError names the unusable file
        fail(str(exc))
    typer.echo(format_curve(tuned.result))
    typer.echo("\n" + format_choice(tuned.result, what=what))
    for kind, why in tuned.dropped.items():
        typer.echo(f"class {kind} goes to the cloud: {why}")
    save_policy(tuned.policy, out_path)
    typer.echo(
        f"wrote {out_path}" + (f" and {tuned.classifier_path}" if tuned.classifier_path else "")
    )
    if plot:
        plot_curve(tuned.result, plot)
        typer.echo(f"wrote {plot}")


def _tune_tiers(
    pol: object,
    csv_path: Path | None,
    ledger: str | None,
    target_quality: float,
    delta: float,
    fresh: int | None,
    min_labels: int | None,
    out_path: Path,
) -> None:
    """``tune --what tiers``: every threshold of the N-tier cascade at once."""
    from router.errors import HybridGateError
    from router.ledger import Ledger
    from router.policy import save_policy
    from router.tuning.tiers import (
        tier_data_from_csv,
        tier_data_from_ledger,
        tune_tiers,
        tuned_policy,
    )

    try:
        if csv_path:
            data = tier_data_from_csv(csv_path)
        else:
            with Ledger(ledger_path(ledger)) as led:
                data = tier_data_from_ledger(led)
        n = len(data.final_usd)
        if min_labels is not None and n < min_labels:
            raise ValueError(f"only {n} requests went up every tier; --min-labels is {min_labels}")
        choice = tune_tiers(data, target_quality=target_quality, delta=delta, fresh=fresh)
        tuned = tuned_policy(pol, choice)
    except (ValueError, HybridGateError) as exc:
        fail(str(exc))
    for line in choice.lines():
        typer.echo(line)
    save_policy(tuned, out_path)
    typer.echo(f"wrote {out_path}")


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
        fail(str(exc))
    typer.echo(format_report(result))
    if as_json:
        keys = ("apgr", "cpt50", "cpt80", "random_apgr", "oracle_cpt50")
        typer.echo(json.dumps({k: result[k] for k in keys}))
