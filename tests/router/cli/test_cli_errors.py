"""CLI failure paths (issue #9 item 14) and the CLI pieces of item 20.

Each broken input must give one ``error:`` line naming the file and the problem, exit code 2,
and no traceback; ``report`` must read a ledger it may not write.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from router.cli import app
from router.ledger import EVENT_SHADOW_DROPPED, Ledger, LedgerEntry

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[3]


def _one_error_line(result, *needles: str) -> None:
    """Exit 2, a single ``error:`` line that contains every needle, and no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in result.output


def _ledger(path: Path, n: int = 5, drops: int = 0) -> Path:
    with Ledger(path) as led:
        for i in range(n):
            led.record(
                LedgerEntry(
                    request_id=f"r{i}",
                    ts=time.time(),
                    route="cloud",
                    cost_usd=0.002,
                    baseline_cost_usd=0.002,
                )
            )
        for i in range(drops):
            led.record_event(EVENT_SHADOW_DROPPED, request_id=f"r{i}")
    return path


# ----------------------------------------------------------------------------- ask --policy


def test_ask_with_a_bad_policy_file_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: hybrid\nthresholds:\n  route: high\n")
    result = runner.invoke(
        app, ["ask", "hi", "--policy", str(bad), "--ledger", str(tmp_path / "l.sqlite")]
    )
    _one_error_line(result, "bad.yaml:3", "thresholds.route")


def test_ask_with_a_missing_policy_file_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", "hi", "--policy", str(tmp_path / "nope.yaml")])
    _one_error_line(result, "nope.yaml")


# ----------------------------------------------------------------------------- report


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_report_on_a_damaged_ledger_names_the_file(tmp_path: Path, damage: str) -> None:
    path = _ledger(tmp_path / "ledger.sqlite", n=300)
    data = path.read_bytes()
    if damage == "truncated":  # a copy cut short (disk full, interrupted transfer)
        path.write_bytes(data[: len(data) // 3])
    else:
        path.write_bytes(b"not sqlite at all " * 300)
    result = runner.invoke(app, ["report", "--ledger", str(path)])
    _one_error_line(result, str(path))


READ_ONLY_REPORT = """
mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" || exit 77
cd / && PYTHONPATH="$3" exec "$2" -m router.cli report --ledger "$1/ledger.sqlite" -f json
"""


def test_report_reads_a_ledger_on_a_read_only_mount(tmp_path: Path) -> None:
    """A cleanly closed ledger where nothing may be written (a read-only mount, a backup):
    SQLite cannot create the ``-shm`` index a WAL file is normally read through. ``report``
    runs in a private mount namespace (``unshare``) so the mount vanishes with it."""
    folder = tmp_path / "ro"
    folder.mkdir()
    _ledger(folder / "ledger.sqlite", n=4)
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a private read-only mount")
    run = subprocess.run(
        ["unshare", "-rm", "sh", "-c", READ_ONLY_REPORT, "sh", folder, sys.executable, ROOT],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if run.returncode == 77 or run.stderr.startswith("unshare:"):
        pytest.skip(f"no private read-only mount here: {run.stderr.strip()[:200]}")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["totals"]["requests"] == 4 and data["shadow"] == {"dropped": 0}
    assert sorted(p.name for p in folder.iterdir()) == ["ledger.sqlite"]  # nothing written


@pytest.mark.skipif(
    not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
    reason="root ignores file modes",
)
def test_report_reads_a_chmod_read_only_ledger_in_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = _ledger(folder / "ledger.sqlite", n=3)
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        result = runner.invoke(app, ["report", "--ledger", str(path), "--format", "json"])
    finally:
        folder.chmod(0o755)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["totals"]["requests"] == 3


def test_report_shows_how_many_shadow_jobs_were_dropped(tmp_path: Path) -> None:
    path = _ledger(tmp_path / "ledger.sqlite", n=3, drops=28)
    table = runner.invoke(app, ["report", "--ledger", str(path)])
    assert table.exit_code == 0, table.output
    assert "shadow jobs dropped (queue full): 28" in table.output
    as_json = runner.invoke(app, ["report", "--ledger", str(path), "--format", "json"])
    assert json.loads(as_json.output)["shadow"] == {"dropped": 28}
    since = runner.invoke(app, ["report", "--ledger", str(path), "-f", "json", "--since", "1m"])
    assert json.loads(since.output)["shadow"] == {"dropped": 28}


# ----------------------------------------------------------------------------- adapters


def _registry_with(tmp_path: Path, created: float | None = None) -> Path:
    from local_models.registry import AdapterRegistry

    src = tmp_path / "adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    (src / "adapter_model.safetensors").write_bytes(b"w")
    root = tmp_path / "adapters"
    reg = AdapterRegistry(root)
    version = reg.register(src, {"n_train": 7, "metrics": {"agreement": 0.8}})
    (root / "CURRENT").write_text(version)  # not promote(): it would load the fake weights
    if created is not None:
        meta = root / version / "metadata.json"
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "created": created}))
    return root


def test_adapters_list_prints_created_as_iso_local_time(tmp_path: Path) -> None:
    created = 1_790_000_000.25
    root = _registry_with(tmp_path, created=created)
    result = runner.invoke(app, ["adapters", "list", "--root", str(root)])
    assert result.exit_code == 0, result.output
    expected = datetime.fromtimestamp(created).astimezone().isoformat(timespec="seconds")
    assert f"created {expected}" in result.output
    assert "1790000000" not in result.output


def test_adapters_list_with_broken_metadata_names_the_file(tmp_path: Path) -> None:
    root = _registry_with(tmp_path)
    meta = root / "v0001" / "metadata.json"
    meta.write_text('{"n_train": 7, "metr')  # torn by a crash or a bad hand edit
    result = runner.invoke(app, ["adapters", "list", "--root", str(root)])
    _one_error_line(result, str(meta), "invalid JSON")


# ----------------------------------------------------------------------------- replay-cloud


def test_replay_cloud_serves_the_answers_file(tmp_path: Path, monkeypatch) -> None:
    from router.devtools.replay import ReplayCloud

    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"What is hybridgate?": "A router."}))
    seen: dict[str, str] = {}

    def one_request_then_stop(self: ReplayCloud) -> None:
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "What is hybridgate?"}],
        }
        reply = httpx.post(f"{self.base_url}/chat/completions", json=body, timeout=10)
        seen["answer"] = reply.json()["choices"][0]["message"]["content"]
        self.stop()

    monkeypatch.setattr(ReplayCloud, "serve_forever", one_request_then_stop)
    result = runner.invoke(app, ["replay-cloud", "--port", "0", "--answers", str(answers)])
    assert result.exit_code == 0, result.output
    assert seen == {"answer": "A router."}


def test_replay_cloud_rejects_an_answers_file_that_is_not_an_object(tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text('["not", "a", "mapping"]')
    result = runner.invoke(app, ["replay-cloud", "--port", "0", "--answers", str(answers)])
    _one_error_line(result, str(answers), "JSON object")


@pytest.mark.parametrize("command", [["tune"], ["distill"]])
def test_tune_and_distill_on_a_foreign_ledger_name_the_file(tmp_path: Path, command) -> None:
    import sqlite3

    path = tmp_path / "ledger.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    result = runner.invoke(app, [*command, "--ledger", str(path)])
    _one_error_line(result, str(path), "not a hybridgate ledger")
