"""The offline demo: its traffic, and (real model) the whole loop at a tiny scale."""

from __future__ import annotations

import random

import pytest
from typer.testing import CliRunner

from router.devtools.demo import _pools, _traffic


def test_phases_never_share_a_text_and_mix_math_in():
    pools = _pools(0, parts=3)  # phase 1 + two rounds
    texts = [{r["text"] for r in pool} for pool in pools]
    assert not texts[0] & texts[1] and not texts[0] & texts[2] and not texts[1] & texts[2]
    pool1 = pools[0]
    assert len({r["category"] for r in pool1}) == 20
    traffic = _traffic(400, rng=random.Random(0), banking=pool1, offset=0, gsm_share=0.1)
    math_share = sum(t["messages"][0]["role"] == "user" for t in traffic) / len(traffic)
    assert 0.05 < math_share < 0.15
    intents = [t for t in traffic if t["messages"][0]["role"] == "system"]
    texts = [t["messages"][1]["content"] for t in intents]
    assert len(set(texts)) == len(texts)  # no repeats while the pool lasts


@pytest.mark.real_model
def test_demo_runs_the_whole_loop_on_the_real_model(tmp_path):
    from router.cli import app
    from router.ledger import Ledger

    home = tmp_path / "demo"
    result = CliRunner().invoke(
        app,
        ["demo", "--requests", "40", "--train-examples", "30", "--home", str(home)],
    )
    assert result.exit_code == 0, result.output
    assert "before (all cloud): 40 requests" in result.output
    assert "distill: promoted" in result.output or "distill: rejected" in result.output
    assert "after round 1: cost" in result.output
    assert "demo finished" in result.output
    rows = Ledger(home / "ledger.sqlite").rows()
    assert len([r for r in rows if r.reason != "judge"]) == 80  # every request has its row
    assert (home / "adapters" / "v0001" / "metadata.json").is_file()


def test_a_round_without_a_tuned_policy_goes_all_cloud(tmp_path):
    """#9.18: no tuned policy (the gate rejected, or nothing could be tuned) means no
    evidence for any threshold: the round is served by the cloud and keeps shadow labelling,
    never by the bundled cascade defaults."""
    from router.devtools.simulate import _round_policy
    from router.policy import load_policy, save_policy

    base = load_policy("default").replace(**{"local.adapter": None})
    policy, shadowing = _round_policy(tmp_path / "policy.yaml", base, None, "http://127.0.0.1:1")
    assert policy.mode == "cloud" and shadowing and policy.shadow.rate > 0
    save_policy(base.replace(**{"rules.local_classes": []}), tmp_path / "policy.yaml")
    policy, shadowing = _round_policy(tmp_path / "policy.yaml", base, None, "http://127.0.0.1:1")
    assert policy.rules.local_classes == () and shadowing and policy.shadow.rate > 0
    save_policy(base.replace(**{"rules.local_classes": ["x"]}), tmp_path / "policy.yaml")
    policy, shadowing = _round_policy(tmp_path / "policy.yaml", base, None, "http://127.0.0.1:1")
    assert not shadowing and policy.shadow.rate == 0.0


def test_demo_summary_lines_compute_cost_shares_in_the_library(tmp_path):
    """The cost maths live in ``router.devtools.simulate`` (the CLI only prints them)."""
    from router.devtools.demo import DemoResult, RoundResult, cost_share
    from router.ledger import LedgerEntry
    from router.ledger.reports import summarize

    def report(costs):
        rows = [
            LedgerEntry(
                request_id=f"r{i}", ts=1.0, route="cloud", cost_usd=c, baseline_cost_usd=1.0
            )
            for i, c in enumerate(costs)
        ]
        return summarize(rows, by="route")

    before, after = report([1.0, 1.0]), report([0.25, 0.25])
    assert cost_share(before) == 1.0 and cost_share(after) == 0.25
    assert cost_share(summarize([], by="route")) == 0.0  # no traffic: no division by zero
    rnd = RoundResult(None, after, agreement=0.9, quality=0.98, local_share=0.75, seconds=1.0)
    lines = DemoResult(before, [rnd], seconds=12.4, home=tmp_path, name="demo").summary_lines()
    assert lines == [
        "before: cost 100.0% of all-cloud",
        "after round 1: cost 25.0% of all-cloud, 75% answered locally, quality 98.0% of "
        "all-cloud, student agreement 90.0% on its local answers",
        f"demo finished in 12 s; ledger at {tmp_path / 'ledger.sqlite'}",
    ]
