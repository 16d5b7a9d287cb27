"""``hybridgate adapters list | show | promote | rollback``: the versioned adapter registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from router.cli._common import fail

adapters_app = typer.Typer(
    help="LoRA adapter versions (list, show, promote, rollback).", no_args_is_help=True
)

RootOpt = typer.Option(
    None, "--root", help="Adapter registry dir [default: HYBRIDGATE_HOME/adapters]."
)


def _registry(root: Path | None) -> Any:
    """The registry at ``--root``; its default folder is the registry's own to resolve. Its
    errors are ``local_models.errors`` (a leaf package), caught here as one error line."""
    from local_models.registry import AdapterRegistry

    return AdapterRegistry(root)


def _local_time(ts: object) -> str:
    """A Unix timestamp as ISO 8601 local time with its UTC offset; anything else as given."""
    from datetime import datetime

    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return str(ts if ts is not None else "?")
    try:
        return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return str(ts)


@adapters_app.command("list")
def adapters_list(root: Path | None = RootOpt) -> None:
    """Registered adapter versions; * marks the one serving."""
    from local_models.errors import LocalModelError

    reg = _registry(root)
    try:
        current = reg.current()
        infos = reg.list()
    except LocalModelError as exc:  # broken metadata.json / CURRENT / history.json, named
        fail(str(exc))
    if not infos:
        typer.echo("no adapters yet: run hybridgate distill")
        return
    for info in infos:
        mark = "*" if current and info.version == current.version else " "
        agreement = info.metrics.get("agreement")
        typer.echo(
            f"{mark} {info.version}  created {_local_time(info.metadata.get('created'))}  "
            f"agreement {agreement if agreement is None else f'{agreement:.3f}'}  "
            f"n_train {info.metadata.get('n_train', '?')}"
        )


@adapters_app.command("show")
def adapters_show(version: str, root: Path | None = RootOpt) -> None:
    """One version's metadata (base model hash, data window, metrics, config)."""
    from local_models.errors import LocalModelError

    try:
        info = _registry(root).show(version)
    except LocalModelError as exc:
        fail(str(exc))
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
    from local_models.errors import LocalModelError

    try:
        info = _registry(root).promote(version)
    except LocalModelError as exc:
        fail(str(exc))
    typer.echo(f"current adapter: {info.version}")


@adapters_app.command("rollback")
def adapters_rollback(root: Path | None = RootOpt) -> None:
    """Switch back to the previously current adapter."""
    from local_models.errors import LocalModelError

    try:
        info = _registry(root).rollback()
    except LocalModelError as exc:
        fail(str(exc))
    typer.echo(f"rolled back; current adapter: {info.version}")
