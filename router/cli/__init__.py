"""The ``hybridgate`` command line: one module per command group, each thin.

A command parses its arguments, builds config objects, calls library functions and prints;
the work (estimates, verdicts, cost shares, locations) lives in the packages. Heavy modules
are imported inside commands, so ``import router.cli`` takes tens of milliseconds and
``hybridgate report`` never imports openai, litellm or torch.

Commands, by module: ``ask``; ``report``; ``doctor``; ``serve``; ``tune`` and ``bench router``
(``tune``); ``distill``; ``adapters list|show|promote|rollback`` (``adapters``); ``demo``, ``simulate``,
``replay-cloud`` and ``models pull`` (``demo``). Shared options and the error exit are in
``router.cli._common``.

Environment: ``HYBRIDGATE_HOME`` (data dir: ledger, cache, models, adapters),
``HYBRIDGATE_POLICY`` (policy name or YAML path), ``HYBRIDGATE_LEDGER`` (ledger path); see
``router._paths``.
"""

from __future__ import annotations

import typer

from router.cli import adapters, ask, demo, distill, doctor, report, serve, tune

app = typer.Typer(
    help="hybridgate: route easy LLM requests to a local model, hard ones to the cloud, and "
    "see what it saved.",
    no_args_is_help=True,
    add_completion=False,
)

# Registration table: command name -> the function that implements it (in help order).
app.command("ask")(ask.ask)
app.command("report")(report.report)
app.command("doctor")(doctor.doctor)
app.command("serve")(serve.serve)
app.command("replay-cloud")(demo.replay_cloud)
app.add_typer(demo.models_app, name="models")
app.add_typer(tune.bench_app, name="bench")
app.command("tune")(tune.tune)
app.command("distill")(distill.distill)
app.command("demo")(demo.demo)
app.command("simulate")(demo.simulate)
app.add_typer(adapters.adapters_app, name="adapters")


def main() -> None:
    """The ``hybridgate`` entry point (``router.cli:main`` in pyproject)."""
    app()


__all__ = ["app", "main"]
