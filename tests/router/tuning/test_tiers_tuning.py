"""Joint thresholds for an N-tier cascade: cheapest vector with a realized-quality promise."""

from __future__ import annotations

import numpy as np
import pytest

from router.tuning.tiers import TierData, outcome, tier_data_from_csv, tune_tiers


def synthetic(n: int, seed: int = 0) -> TierData:
    """A local tier right when confident, a cheap cloud tier right more often, both calibrated."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0, 1, size=(n, 2))
    correct = (rng.uniform(0, 1, size=(n, 2)) < np.c_[conf[:, 0], 0.5 + 0.5 * conf[:, 1]]).astype(
        int
    )
    usd = np.c_[np.full(n, 1e-6), np.full(n, 1e-4)]
    return TierData(("local", "gpt-4o-mini"), conf, correct, usd, np.full(n, 1e-3))


@pytest.mark.parametrize("method", ["pareto", "bonferroni"])
def test_the_choice_meets_the_target_on_its_labels_and_is_cheaper_than_all_cloud(method):
    data = synthetic(2000)
    choice = tune_tiers(data, target_quality=0.95, delta=0.05, method=method)
    assert choice.method == method
    assert not choice.all_cloud and choice.quality_lo >= 0.95 and choice.quality >= 0.95
    assert choice.cost_fraction < 0.8 and sum(choice.answered) == pytest.approx(1.0)
    misses, cost, _ = outcome(data, choice.thresholds)
    assert 1 - misses / 2000 == pytest.approx(choice.quality)
    assert cost / data.final_usd.sum() == pytest.approx(choice.cost_fraction)


def test_an_unknown_method_is_named():
    with pytest.raises(ValueError, match="method must be one of pareto, bonferroni"):
        tune_tiers(synthetic(50), target_quality=0.9, method="magic")


def test_useless_tiers_leave_all_cloud_at_exactly_its_cost():
    data = synthetic(500)
    broken = TierData(
        data.names, data.confidence, np.zeros_like(data.correct), data.usd, data.final_usd
    )
    choice = tune_tiers(broken, target_quality=0.97)
    assert choice.all_cloud and choice.cost_fraction == 1.0 and choice.answered[-1] == 1.0


def test_realized_quality_on_fresh_halves_meets_the_target_in_at_least_95_percent():
    rng = np.random.default_rng(1)
    full = synthetic(4000, seed=2)
    met = []
    for _ in range(40):
        order = rng.permutation(4000)
        cal, test = order[:2000], order[2000:]

        def part(idx):
            return TierData(
                full.names,
                full.confidence[idx],
                full.correct[idx],
                full.usd[idx],
                full.final_usd[idx],
            )

        choice = tune_tiers(part(cal), target_quality=0.95, delta=0.05)
        misses, _, _ = outcome(part(test), choice.thresholds)
        met.append(1 - misses / 2000 >= 0.95)
    assert np.mean(met) >= 0.95


def test_csv_labels_are_read_and_a_missing_column_is_named(tmp_path):
    good = tmp_path / "tiers.csv"
    good.write_text(
        "local_confidence,local_correct,local_usd,mini_confidence,mini_correct,mini_usd,final_usd\n"
        "0.9,1,0.000001,0.8,1,0.0001,0.001\n0.2,0,0.000001,0.95,1,0.0001,0.001\n"
    )
    data = tier_data_from_csv(good)
    assert data.names == ("local", "mini") and data.confidence.shape == (2, 2)
    bad = tmp_path / "bad.csv"
    bad.write_text("local_confidence,local_correct,final_usd\n0.5,1,0.001\n")
    with pytest.raises(ValueError, match="missing column.*local_usd"):
        tier_data_from_csv(bad)
