"""``hybridgate adapters list | show | promote | rollback | export | publish``: the versioned
adapter registry, and getting an adapter onto an inference engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from router.cli._common import fail

adapters_app = typer.Typer(
    help="LoRA adapter versions (list, show, promote, rollback, export, publish).",
    no_args_is_help=True,
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


def _base_config(info: Any, base: Path | None) -> dict[str, Any]:
    """The base model's ``config.json``: ``--base``, else the path the adapter was trained on."""
    if base is None:
        try:
            trained_on = json.loads((info.path / "adapter_config.json").read_text("utf-8"))
            base = Path(str(trained_on.get("base_model_name_or_path") or ""))
        except (OSError, ValueError):
            base = None
    config = base / "config.json" if base is not None else None
    if config is None or not config.is_file():
        fail(
            f"the base model's config.json was not found{f' in {base}' if base else ''}; "
            "pass --base DIR (the base model's directory)"
        )
    return json.loads(config.read_text("utf-8"))


@adapters_app.command("export")
def adapters_export(
    out: Path = typer.Argument(..., help="Directory (peft) or .gguf file (gguf) to write."),
    version: str | None = typer.Option(None, "--version", help="Version [default: current]."),
    fmt: str = typer.Option("peft", "--format", help="peft (vLLM) or gguf (llama.cpp --lora)."),
    base_model: str = typer.Option(
        "smollm2-135m-instruct", "--base-model", help="peft: the base model's name on the engine."
    ),
    base: Path | None = typer.Option(
        None, "--base", help="gguf: the base model's directory (for its config.json)."
    ),
    root: Path | None = RootOpt,
) -> None:
    """Write an adapter in the format an inference engine loads."""
    from local_models.adapter_export import export_gguf, export_peft
    from local_models.errors import LocalModelError

    if fmt not in ("peft", "gguf"):
        fail(f"--format must be peft or gguf, got {fmt!r}")
    reg = _registry(root)
    try:
        info = reg.show(version) if version else reg.current()
        if info is None:
            fail("no adapter is promoted yet: run hybridgate distill, or pass --version")
        if fmt == "peft":
            written = export_peft(info.path, out, base_model=base_model)
        else:
            written = export_gguf(info.path, out, base_config=_base_config(info, base))
    except LocalModelError as exc:
        fail(str(exc))
    typer.echo(f"{info.version} -> {written} ({fmt})")


@adapters_app.command("publish")
def adapters_publish(
    to: str = typer.Option(..., "--to", help="The engine's base URL (local.api_base), .../v1."),
    version: str | None = typer.Option(
        None, "--version", help="Version to serve [default: current]; an older one = rollback."
    ),
    engine_path: str | None = typer.Option(
        None,
        "--engine-path",
        help="A directory the engine reads (shared volume); the PEFT copy is written there. "
        "Default: this registry's path (engine on this host).",
    ),
    api_key_env: str | None = typer.Option(
        None, "--api-key-env", help="Variable holding the engine's API key."
    ),
    drain_s: float = typer.Option(
        10.0, "--drain", help="Seconds before the replaced adapter is unloaded."
    ),
    root: Path | None = RootOpt,
) -> None:
    """Load an adapter on a vLLM engine under a versioned name and switch gateways to it."""
    import os

    from router.publication import PublishError, publish

    if not to.startswith(("http://", "https://")):
        fail(f"--to must be an http(s):// URL ending in /v1, got {to!r}")
    key = os.environ.get(api_key_env) if api_key_env else None
    try:
        record = publish(
            to, version=version, root=root, api_key=key, engine_path=engine_path, drain_s=drain_s
        )
    except PublishError as exc:
        fail(str(exc))
    back = f"; rollback: --version {record.previous}" if record.previous else ""
    typer.echo(f"{to} serves {record.version} as {record.name!r}{back}")
