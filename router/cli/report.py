"""``hybridgate report``: savings versus all-cloud, from the ledger.

Starts fast: it imports neither openai, litellm nor torch (its errors come from the light
``router._errors``), and opens the ledger read-only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from router.cli._common import LedgerOpt, console, fail, ledger_path

if TYPE_CHECKING:
    from router.ledger import LedgerEntry


def report(
    since: str | None = typer.Option(
        None, "--since", help="2026-11-01, an ISO time, or 7d / 24h / 30m."
    ),
    by: str = typer.Option(
        "route",
        "--by",
        help="Group by day, route, model, class (traffic class: system prompt), tenant, tier "
        "(the cascade tier that answered, and what each tier's tries cost), or none.",
    ),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json or csv."),
    plot: Path | None = typer.Option(None, "--plot", help="Also write a PNG chart here."),
    ledger: str | None = LedgerOpt,
) -> None:
    """Savings versus sending everything to the cloud, from the ledger."""
    from router._paths import ledger_exists, policy_path
    from router.ledger.reports import (
        parse_since,
        render_table,
        serving_status_lines,
        shadow_line,
        summarize,
        tier_lines,
        to_csv,
        to_json,
        unpaid_lines,
    )
    from router.ledger.reports import plot as plot_report

    if fmt not in ("table", "json", "csv"):
        fail(f"--format must be table, json or csv, got {fmt!r}")
    path = ledger_path(ledger)
    if not ledger_exists(path):
        fail(f"no ledger at {path}: send some requests first (hybridgate ask / hybridgate demo)")
    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        fail(str(exc))
    rows, shadow = _read_ledger(path, since=start)
    try:
        rep = summarize(rows, by=None if by == "none" else by)
    except ValueError as exc:
        fail(str(exc))
    if fmt == "json":
        data = json.loads(to_json(rep))
        data["shadow"] = shadow
        typer.echo(json.dumps(data, indent=2))
    elif fmt == "csv":
        typer.echo(to_csv(rep), nl=False)
    else:
        console().print(render_table(rep))
        typer.echo(shadow_line(shadow))
        for line in [*tier_lines(rep), *unpaid_lines(rep)]:
            typer.echo(line)
    for line in serving_status_lines(policy_path()):  # why the adapter serves what
        typer.echo(line, err=fmt != "table")  # json/csv stay machine-readable on stdout
    if plot:
        plot_report(rep, plot)
        typer.echo(f"wrote {plot}", err=True)


def _read_ledger(path: Path, *, since: float | None) -> tuple[list[LedgerEntry], dict[str, int]]:
    """Rows and the shadow summary, opened read-only: ``report`` never writes, so a ledger
    this user may only read still reports. A corrupt or truncated file exits 2 naming it."""
    import sqlite3

    from router._errors import HybridGateError
    from router.ledger import Ledger

    try:
        with Ledger(path, read_only=True) as led:
            return led.rows(since=since), led.shadow_summary(since=since)
    except sqlite3.Error as exc:  # damage found while reading pages, after a clean open
        fail(f"ledger {path}: cannot be read ({exc}); is it truncated or corrupt?")
    except HybridGateError as exc:
        fail(str(exc))
