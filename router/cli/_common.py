"""What every command module shares: the ``--policy`` / ``--ledger`` options, the one-line
error exit, and the policy/ledger lookups. Standard library and typer only, so importing the
CLI stays fast; the command modules import this, never each other."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from router.policy import RoutingPolicy

PolicyOpt = typer.Option(
    None,
    "--policy",
    "-p",
    help="Policy name or YAML path [env HYBRIDGATE_POLICY; default: default].",
)
LedgerOpt = typer.Option(
    None,
    "--ledger",
    help="Ledger SQLite path or postgresql:// URL [env HYBRIDGATE_LEDGER].",
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one red ``error:`` line and exit: bad input is a message, never a traceback."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def load_policy(policy: str | None) -> RoutingPolicy:
    """The policy ``--policy`` / ``$HYBRIDGATE_POLICY`` names, or exit 2 with the loader's
    one-line ``file:line: field: problem`` message."""
    from router._errors import PolicyError
    from router._paths import policy_source
    from router.policy import load_policy as load

    try:
        return load(policy_source(policy))
    except PolicyError as exc:
        fail(str(exc))


def ledger_path(ledger: str | None) -> Path | str:
    """``--ledger``, else ``$HYBRIDGATE_LEDGER``, else the data home's ledger."""
    from router._paths import ledger_path as resolve

    return resolve(ledger)


def console() -> Console:
    """A rich console for tables: the terminal's width, or 160 columns when piped."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)
