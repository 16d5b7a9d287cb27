"""Router benchmark: RouteLLM-style PGR/APGR/CPT and the k-fold protocol."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from router.devtools.data import load_gsm8k
from router.tuning.routebench import (
    GRID_POINTS,
    bench_router,
    bench_router_arrays,
    format_report,
    load_routing_csv,
    routing_curve,
    summarize_curve,
    summary_json,
)

W, S = "weak_ok", "strong_ok"


def _write_csv(path, rows) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["question", W, S])
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def gsm_csv(tmp_path):
    path = tmp_path / "gsm.csv"
    _write_csv(
        path,
        [
            {"question": r["prompt"], W: str(r["weak_correct"]), S: str(r["strong_correct"])}
            for r in load_gsm8k()
        ],
    )
    return path


def test_routing_curve_ends_at_weak_and_strong_quality() -> None:
    weak = np.array([1.0, 0.0, 0.0, 1.0])
    strong = np.array([1.0, 1.0, 0.0, 1.0])
    need = np.array([0.1, 0.9, 0.5, 0.2])  # prompt 1 (the only gain) first
    curve = routing_curve(need, weak, strong)
    assert curve[0] == pytest.approx(0.5)
    assert curve[-1] == pytest.approx(0.75)
    assert curve[25] == pytest.approx(0.75)  # 1 of 4 prompts routed: the gain is taken


def test_summarize_curve_linear_is_half_and_step_is_early() -> None:
    grid = np.linspace(0, 1, GRID_POINTS)
    linear = summarize_curve(0.6 + 0.2 * grid, 0.6, 0.8)
    assert linear["apgr"] == pytest.approx(0.5)
    assert linear["cpt50"] == pytest.approx(0.5)
    assert linear["cpt80"] == pytest.approx(0.8)
    early = summarize_curve(np.where(grid >= 0.2, 0.8, 0.6), 0.6, 0.8)
    assert early["apgr"] > 0.75
    assert early["cpt50"] <= 0.2
    with pytest.raises(ValueError, match="PGR is undefined"):
        summarize_curve(grid, 0.5, 0.5)


def test_bench_router_on_real_slice(gsm_csv) -> None:
    result = bench_router(gsm_csv, prompt_col="question", weak_col=W, strong_col=S, folds=3)
    for key in ("apgr", "cpt50", "cpt80", "random_apgr", "random_cpt50", "random_cpt80"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["n"] == 300
    assert result["random_apgr"] == pytest.approx(0.5, abs=0.1)
    assert result["oracle_apgr"] > result["apgr"]
    assert result["oracle_cpt50"] < result["random_cpt50"]
    line = summary_json(result)
    assert {"apgr", "cpt50", "cpt80", "random_apgr", "oracle_cpt50"} <= set(json.loads(line))
    report = format_report(result)
    assert "APGR" in report and "oracle" in report


def test_learnable_difficulty_gets_high_apgr() -> None:
    rng = np.random.default_rng(0)
    prompts, weak, strong = [], [], []
    for i in range(200):
        hard = rng.random() < 0.5
        prompts.append(f"{'integrate the tricky series' if hard else 'add two small'} case {i}")
        weak.append(0.0 if hard else 1.0)
        strong.append(1.0)
    result = bench_router_arrays(prompts, np.array(weak), np.array(strong), folds=4)
    # half the prompts are hard, so even the oracle's APGR is 0.75; the router should match it
    assert result["apgr"] == pytest.approx(result["oracle_apgr"], abs=0.02)
    assert result["apgr"] > result["random_apgr"] + 0.2


def test_contaminated_sidecar_is_dropped(gsm_csv) -> None:
    first = load_gsm8k()[0]["prompt"]
    (gsm_csv.parent / "contaminated_prompts.jsonl").write_text(
        json.dumps({"eval_prompt": first}) + "\n"
    )
    prompts, _, _ = load_routing_csv(gsm_csv, prompt_col="question", weak_col=W, strong_col=S)
    assert len(prompts) == 299 and first not in prompts
    kept, _, _ = load_routing_csv(
        gsm_csv, prompt_col="question", weak_col=W, strong_col=S, drop_contaminated=False
    )
    assert len(kept) == 300


def test_bad_inputs_name_the_problem(gsm_csv, tmp_path) -> None:
    with pytest.raises(ValueError, match="missing column"):
        load_routing_csv(gsm_csv, prompt_col="prompt", weak_col=W, strong_col=S)
    with pytest.raises(FileNotFoundError):
        load_routing_csv(tmp_path / "nope.csv", prompt_col="q", weak_col=W, strong_col=S)
    bad = tmp_path / "bad.csv"
    _write_csv(bad, [{"question": "q", W: "maybe", S: "True"}] * 3)
    with pytest.raises(ValueError, match="row 2: column 'weak_ok'"):
        load_routing_csv(bad, prompt_col="question", weak_col=W, strong_col=S)
    with pytest.raises(ValueError, match="folds must be"):
        bench_router(gsm_csv, prompt_col="question", weak_col=W, strong_col=S, folds=1)
    with pytest.raises(ValueError, match="unknown target"):
        bench_router(gsm_csv, prompt_col="question", weak_col=W, strong_col=S, target="x")
