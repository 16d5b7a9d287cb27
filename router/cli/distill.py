"""``hybridgate distill``: the nightly loop once (ledger -> LoRA -> gate -> promote -> relabel ->
retune), or with ``--dry-run`` the picked hyper-parameters and a measured time/cost estimate."""

from __future__ import annotations

import json

import typer

from router.cli._common import LedgerOpt, PolicyOpt, fail, ledger_path, load_policy


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
    ledger: str | None = LedgerOpt,
) -> None:
    """Distil cloud answers into a new LoRA adapter; promote it only if it beats the current one."""
    from router._errors import LedgerError
    from router._paths import ledger_exists, policy_path
    from router.ledger import Ledger
    from router.ledger.reports import parse_since
    from training.nightly import estimate_distill, run_distill

    pol = load_policy(policy)
    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        fail(str(exc))
    path = ledger_path(ledger)
    if not ledger_exists(path):
        if nightly:
            typer.echo("no ledger yet; nothing to distil")
            return
        fail(f"no ledger at {path}: send traffic through the gateway first")
    try:
        led = Ledger(path)
    except LedgerError as exc:
        fail(str(exc))
    with led:
        if dry_run:
            try:
                plan = estimate_distill(
                    ledger=led, policy=pol, since=start, max_train=max_train, epochs=epochs
                )
            except ValueError as exc:  # nothing usable, or too little to split
                fail(str(exc))
            for line in plan.lines():
                typer.echo(line)
            return
        summary = run_distill(
            ledger=led,
            policy=pol,
            min_examples=min_examples,
            since=start,
            max_train=max_train,
            epochs=epochs,
            target_quality=target_quality,
            policy_out=policy_path(),
            progress=not as_json,
        )
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), default=str))
    else:
        for line in summary.lines():
            typer.echo(line)
    if summary.status == "too_few_examples" and not nightly:
        raise typer.Exit(1)
