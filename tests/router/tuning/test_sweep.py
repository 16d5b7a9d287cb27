"""Threshold tuning: the cheapest threshold whose quality provably meets the target."""

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
    assert result.quality_lo >= 0.99
    assert result.quality_lo <= result.expected_quality
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


def test_true_quality_meets_the_target_with_probability_one_minus_delta() -> None:
    """The promise ``tune`` makes: over fresh labelled samples, the chosen threshold's true
    (population) quality misses the target in at most ``delta`` of them."""
    rng = np.random.default_rng(7)
    target, delta, n = 0.95, 0.1, 400

    def true_quality(t: float) -> float:  # scores ~ U(0, 1); P(wrong | s) = 0.5 below 0.6
        return 1.0 - 0.5 * max(0.0, 0.6 - t) if t <= 1 else 1.0

    misses = 0
    for _ in range(300):
        scores, labels, cloud, local = _synthetic(n=n, seed=int(rng.integers(1 << 30)))
        r = tune_threshold(
            scores, labels, cloud, local, target_quality=target, delta=delta, fresh=0
        )
        misses += true_quality(r.threshold) < target
    # The bound is nearly exact here (the miss count at the true cut-off decides), so allow
    # three standard errors of 300 draws over delta; a point-estimate rule misses ~half the time.
    assert misses / 300 <= delta + 3 * (delta * (1 - delta) / 300) ** 0.5


def test_realized_quality_on_fresh_traffic_meets_the_target_with_probability_one_minus_delta():
    """The default promise is about what the next requests will see: tuned on 400 labels,
    the quality realized on 400 fresh requests misses the target in at most ``delta`` of draws;
    promising the expected quality only (``fresh=0``) breaks that more often."""
    rng = np.random.default_rng(11)
    target, delta, draws = 0.95, 0.1, 300
    realized_miss = {None: 0, 0: 0}
    for _ in range(draws):
        seed = int(rng.integers(1 << 30))
        scores, labels, cloud, local = _synthetic(n=400, seed=seed)
        fresh_s, fresh_y, _, _ = _synthetic(n=400, seed=seed + 1)
        for fresh in realized_miss:
            r = tune_threshold(scores, labels, cloud, local, target_quality=target, delta=delta,
                               fresh=fresh)  # fmt: skip
            quality = 1 - ((1 - fresh_y) * (fresh_s >= r.threshold)).mean()
            realized_miss[fresh] += quality < target - 1e-12
    assert realized_miss[None] / draws <= delta + 3 * (delta * (1 - delta) / draws) ** 0.5
    assert realized_miss[0] > realized_miss[None]


def test_point_estimate_rule_would_break_the_promise() -> None:
    """The same draws, choosing by point estimate: the guarantee is what the bound buys."""
    rng = np.random.default_rng(7)
    broken = 0
    for _ in range(100):
        scores, labels, cloud, local = _synthetic(n=400, seed=int(rng.integers(1 << 30)))
        r = tune_threshold(scores, labels, cloud, local, target_quality=0.95, delta=0.1)
        cheapest = min((p for p in r.curve if p.quality >= 0.95), key=lambda p: p.cost_fraction)
        broken += 1.0 - 0.5 * max(0.0, 0.6 - cheapest.threshold) < 0.95
    assert broken > 20


def test_thresholds_after_a_failed_test_are_never_chosen() -> None:
    """Fixed-sequence testing: a looser threshold that looks fine after a failed one is not
    tested, so the guarantee needs no multiplicity correction."""
    # 200 prompts: top 100 all right, next 20 all wrong, bottom 80 all right
    scores = np.concatenate([np.linspace(0.9, 1.0, 100), np.linspace(0.5, 0.6, 20),
                             np.linspace(0.0, 0.4, 80)])  # fmt: skip
    labels = np.concatenate([np.ones(100), np.zeros(20), np.ones(80)]).astype(int)
    r = tune_threshold(scores, labels, np.ones(200), np.zeros(200), target_quality=0.9)
    assert r.threshold >= 0.5  # t=0 has quality 0.9 but lies past the failed middle band
    assert any(not p.tested for p in r.curve)
    assert all(p.tested for p in r.curve if p.threshold == r.threshold)


def test_cascade_that_costs_more_than_the_cloud_is_never_chosen() -> None:
    """Escalations pay twice and local compute is dear: all-cloud (no local try) wins."""
    scores, labels, _, _ = _synthetic(n=1000)
    cloud, local = np.full(1000, 1e-5), np.full(1000, 2e-5)  # local costs twice the call
    r = tune_threshold(scores, labels, cloud, local, target_quality=0.97, escalation=True)
    assert r.all_cloud and r.cost_fraction == 1.0 and r.expected_quality == 1.0
    assert all(p.cost_fraction > 1.0 for p in r.curve[:-1])
    cheap = tune_threshold(
        scores, labels, cloud, np.full(1000, 1e-7), target_quality=0.97, escalation=True
    )
    assert not cheap.all_cloud and cheap.cost_fraction < 1.0
    kept = scores >= cheap.threshold  # everyone pays the local try, the escalated the cloud too
    expected = (1e-7 * 1000 + 1e-5 * (~kept).sum()) / (1e-5 * 1000)
    assert cheap.cost_fraction == pytest.approx(expected)


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
        ({"delta": 0.0}, r"delta must be in \(0, 1\)"),
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
    result = tune_threshold(scores, labels, cloud, local)
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
    assert f"over {result.n_labels} fresh requests with 95% confidence" in line
    none_local = dataclasses.replace(result, local_fraction=0.0)
    assert "all-cloud chosen" in format_choice(none_local)


def test_a_weight_counts_like_that_many_copies_with_a_looser_bound() -> None:
    scores, labels, cloud, local = _synthetic(n=150, seed=5)  # < MAX_CANDIDATES: same grid
    copies = np.where(scores >= 0.6, 4, 1)  # the kept stratum, labelled at 1 in 4
    full = tune_threshold(
        np.repeat(scores, copies), np.repeat(labels, copies), np.repeat(cloud, copies),
        np.repeat(local, copies), target_quality=0.9, fresh=0,
    )  # fmt: skip
    weighted = tune_threshold(
        scores, labels, cloud, local, target_quality=0.9, fresh=0, weights=copies
    )
    for a, b in zip(full.curve, weighted.curve, strict=True):
        assert a.threshold == b.threshold
        assert (a.quality, a.cost_fraction, a.local_fraction) == pytest.approx(
            (b.quality, b.cost_fraction, b.local_fraction)
        )
        assert b.quality_lo <= a.quality_lo + 1e-12  # fewer real labels: a looser bound
    assert weighted.n_effective < copies.sum() and full.n_effective is None
    ones = tune_threshold(scores, labels, cloud, local, weights=np.ones(150))
    assert ones == tune_threshold(scores, labels, cloud, local)


def test_weights_keep_the_promise_when_the_kept_answers_are_labelled_less_often() -> None:
    """Labels from a policy already serving: requests it kept local (score >= 0.7) are labelled
    only when audited (10%), the rest always. Unweighted, the kept answers' errors are
    under-counted and the chosen threshold misses the target far more often than delta."""
    rng = np.random.default_rng(11)
    target, delta, n = 0.98, 0.1, 4000  # met down to a threshold of ~0.4

    def true_quality(t: float) -> float:  # scores ~ U(0, 1); miss rates by score band
        bands = [(0.0, 0.4, 0.5), (0.4, 0.7, 0.01), (0.7, 1.0, 0.05)]
        return 1.0 - sum(p * max(0.0, hi - max(lo, t)) for lo, hi, p in bands)

    misses = {"weighted": 0, "unweighted": 0}
    local = []
    for _ in range(40):
        s = rng.random(n)
        wrong = rng.random(n) < np.select([s < 0.4, s < 0.7], [0.5, 0.01], 0.05)
        kept = s >= 0.7
        labelled = ~kept | (rng.random(n) < 0.1)
        s, y, kept = s[labelled], (~wrong[labelled]).astype(int), kept[labelled]
        cost = np.full(len(s), 0.01), np.full(len(s), 0.0001)
        for name, w in (("weighted", np.where(kept, 10.0, 1.0)), ("unweighted", None)):
            r = tune_threshold(s, y, *cost, target_quality=target, delta=delta, fresh=0, weights=w)
            misses[name] += not r.all_cloud and true_quality(r.threshold) < target
            if name == "weighted":
                local.append(r.local_fraction)
    assert misses["weighted"] <= 40 * delta
    assert np.mean(np.array(local) > 0) >= 0.9  # and still keeps some traffic local
    assert misses["unweighted"] > 40 * delta
