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

    if what not in ("route", "cascade"):
        fail(f"--what must be route or cascade, got {what!r}")
    if not 0 < delta < 1:
        fail(f"--delta must be between 0 and 1 (exclusive), got {delta!r}")
    pol = load_policy(policy)
    out_path = out or policy_path()
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
