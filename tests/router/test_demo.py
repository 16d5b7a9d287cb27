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
    from router.devtools.demo import _round_policy
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
