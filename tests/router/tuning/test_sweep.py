"""Threshold tuning: cheapest threshold whose quality lower bound meets the target."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from router.tuning.sweep import (
    format_choice,
    format_curve,
    meets_target,
    plot_curve,
    tune_threshold,
)


def _synthetic(n: int = 3000, seed: int = 0):
    """Local answers are always fine above 0.6 and a coin flip below it."""
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    labels = np.where(scores >= 0.6, 1, (rng.random(n) < 0.5).astype(int))
    return scores, labels, np.full(n, 0.01), np.full(n, 0.001)


def test_finds_the_known_threshold() -> None:
    scores, labels, cloud, local = _synthetic()
    result = tune_threshold(scores, labels, cloud, local, target_quality=0.99)
    # quality(t) = 1 - 0.5 * max(0, 0.6 - t): 0.99 needs t >= 0.58; the lower bound pushes it up
    assert 0.57 <= result.threshold <= 0.62
    assert result.quality_ci[0] >= 0.99
    assert result.quality_ci[0] <= result.expected_quality <= result.quality_ci[1]
    routed = scores >= result.threshold
    assert result.local_fraction == pytest.approx(routed.mean())
    expected_cost = (0.001 * routed.sum() + 0.01 * (~routed).sum()) / (0.01 * len(scores))
    assert result.cost_fraction == pytest.approx(expected_cost)
    # a looser target is met more cheaply
    loose = tune_threshold(scores, labels, cloud, local, target_quality=0.9)
    assert loose.threshold < result.threshold and loose.cost_fraction < result.cost_fraction


def test_point_estimate_alone_would_be_too_optimistic() -> None:
    scores, labels, cloud, local = _synthetic(n=300, seed=3)
    result = tune_threshold(scores, labels, cloud, local, target_quality=0.97)
    chosen = next(p for p in result.curve if p.threshold == result.threshold)
    cheaper_point_ok = [
        p for p in result.curve if p.quality >= 0.97 and p.cost_fraction < chosen.cost_fraction
    ]
    assert cheaper_point_ok  # the lower-bound rule deliberately gives up some savings


def test_useless_local_model_falls_back_to_all_cloud() -> None:
    scores = np.ones(100)  # confident scores of 1.0, yet every local answer is wrong
    labels = np.zeros(100, dtype=int)
    result = tune_threshold(scores, labels, np.ones(100), np.zeros(100), target_quality=0.99)
    assert result.local_fraction == 0.0 and result.expected_quality == 1.0
    assert result.cost_fraction == 1.0


def test_too_little_data_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="need at least 50 labelled requests, have 10"):
        tune_threshold([0.5] * 10, [1] * 10, [0.01] * 10, [0.0] * 10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": [2] * 60}, "labels must be 0/1"),
        ({"scores": [1.5] * 60}, r"scores must be in \[0, 1\]"),
        ({"cloud_costs": [0.0] * 60}, "total cloud cost is 0"),
        ({"local_costs": [0.0] * 59}, "has 59 values"),
    ],
)
def test_bad_inputs(kwargs, match: str) -> None:
    args = {
        "scores": [0.5] * 60,
        "labels": [1] * 60,
        "cloud_costs": [0.01] * 60,
        "local_costs": [0.0] * 60,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        tune_threshold(**args)


def test_format_and_plot(tmp_path) -> None:
    scores, labels, cloud, local = _synthetic(n=500)
    result = tune_threshold(scores, labels, cloud, local, n_bootstrap=200)
    table = format_curve(result)
    assert "<- chosen" in table and f"{result.threshold:.4f}" in table
    path = plot_curve(result, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_verdict_rule_for_the_choice_and_the_report() -> None:
    """``tune`` prints the verdict the sweep chose by (one home: ``sweep.meets_target``)."""
    assert meets_target(0.97, 0.97) and meets_target(0.97 - 1e-13, 0.97)
    assert not meets_target(0.969, 0.97)
    scores, labels, cloud, local = _synthetic()
    result = tune_threshold(scores, labels, cloud, local, target_quality=0.99)
    assert result.meets_target
    assert all(
        meets_target(p.quality_lo, 0.99) for p in result.curve if p.threshold == result.threshold
    )
    line = format_choice(result, what="cascade")
    assert line.startswith(f"cascade threshold {result.threshold:.3f}: quality ")
    assert "meets target 0.99;" in line and f"{result.n_labels} labels" in line
    missed = dataclasses.replace(result, quality_ci=(0.5, 0.6))
    assert "cannot meet (all-cloud chosen) target 0.99" in format_choice(missed)
