"""The CLI over a real ledger: report figures, tune output, clear errors."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from router.cli import app
from router.ledger import Ledger, LedgerEntry

runner = CliRunner()


def _seed_ledger(path, n=200, seed=0):
    rng = random.Random(seed)
    ledger = Ledger(path)
    for i in range(n):
        easy = i % 2 == 0
        text = (
            f"what is my card balance please {i}" if easy else f"prove the theorem about primes {i}"
        )
        route = "local" if easy else "cloud"
        ledger.record(
            LedgerEntry(
                request_id=f"r{i}",
                ts=time.time(),
                route=route,
                cost_usd=0.0001 if easy else 0.002,
                baseline_cost_usd=0.002,
                messages=[{"role": "user", "content": text}],
                answer="x",
            )
        )
        ok = 1.0 if (easy and rng.random() < 0.97) or (not easy and rng.random() < 0.05) else 0.0
        ledger.add_label(
            f"r{i}", judge="exact_match", label=ok, local_answer="y", local_cost_usd=0.0001
        )
    ledger.close()


def test_report_json_matches_ledger_sums(tmp_path):
    path = tmp_path / "ledger.sqlite"
    _seed_ledger(path, n=10)
    result = runner.invoke(app, ["report", "--ledger", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["totals"]["requests"] == 10
    assert abs(data["totals"]["cost_usd"] - (5 * 0.0001 + 5 * 0.002)) < 1e-12
    assert abs(data["totals"]["baseline_cost_usd"] - 10 * 0.002) < 1e-12


def test_report_without_ledger_says_what_to_do(tmp_path):
    result = runner.invoke(app, ["report", "--ledger", str(tmp_path / "missing.sqlite")])
    assert result.exit_code == 2
    assert "no ledger" in result.output


def test_tune_writes_policy_with_classifier_and_routes_easy_prompts_local(tmp_path):
    path = tmp_path / "ledger.sqlite"
    _seed_ledger(path)
    out = tmp_path / "tuned" / "policy.yaml"
    result = runner.invoke(
        app, ["tune", "--ledger", str(path), "--target-quality", "0.95", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "meets target" in result.output
    from router.policy import load_policy
    from router.scoring.classifier import DifficultyClassifier

    policy = load_policy(out)
    clf = DifficultyClassifier.load(policy.classifier)
    p_easy, p_hard = clf.predict_proba(
        ["what is my card balance please", "prove the theorem about primes"]
    )[:, 1]
    assert p_easy >= policy.thresholds.route > p_hard


def test_tune_delta_must_be_a_probability(tmp_path):
    path = tmp_path / "ledger.sqlite"
    _seed_ledger(path)
    result = runner.invoke(
        app, ["tune", "--ledger", str(path), "--delta", "1.5", "--out", str(tmp_path / "p.yaml")]
    )
    assert result.exit_code == 2
    assert "--delta must be between 0 and 1" in result.output


def test_tune_with_too_few_labels_says_how_many_are_needed(tmp_path):
    path = tmp_path / "ledger.sqlite"
    _seed_ledger(path, n=6)
    result = runner.invoke(app, ["tune", "--ledger", str(path), "--out", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2
    assert "need at least" in result.output and "have 6" in result.output


ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("openai", "litellm", "torch", "transformers", "sklearn")

LIGHT_REPORT = """
import sys
import router.cli
print(",".join(m for m in {heavy!r} + ("rich",) if m in sys.modules))
from typer.testing import CliRunner
result = CliRunner().invoke(router.cli.app, ["report", "--ledger", sys.argv[1], "-f", "json"])
assert result.exit_code == 0, result.output
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


def test_import_and_report_stay_light(tmp_path):
    """``import router.cli`` loads no command's libraries (not even rich), and ``report``
    runs without openai, litellm or torch, now that the commands live in seven modules."""
    path = tmp_path / "ledger.sqlite"
    _seed_ledger(path, n=3)
    code = LIGHT_REPORT.format(heavy=HEAVY)
    run = subprocess.run(
        [sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["", ""], run.stdout


def test_python_dash_m_router_cli_is_the_hybridgate_command():
    run = subprocess.run(
        [sys.executable, "-m", "router.cli", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    for command in ("ask", "report", "doctor", "tune", "bench", "distill", "adapters", "demo"):
        assert command in run.stdout


def test_doctor_says_whether_the_redis_cache_answers(tmp_path, redis_url) -> None:
    from router.devtools.services import free_port

    for url, expected in (
        (redis_url, "(reachable)"),
        (f"redis://127.0.0.1:{free_port()}/0", "NOT reachable"),
    ):
        policy = tmp_path / "policy.yaml"
        policy.write_text(json.dumps({"mode": "cloud", "cache": {"url": url}}))
        result = runner.invoke(app, ["doctor", "--policy", str(policy)])
        assert result.exit_code == 0, result.output
        (line,) = [x for x in result.output.splitlines() if x.startswith("cache")]
        assert f"redis at {url}" in line and expected in line
