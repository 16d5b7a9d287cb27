"""Pick the routing threshold: the cheapest one that keeps quality at the target.

A request goes local when its score (classifier P(local acceptable), or cascade confidence) is
``>= threshold``. On labelled requests (label 1 = the local answer was acceptable, judged against
the cloud answer), quality relative to all-cloud is::

    quality(t) = (sum of labels routed local + number routed to cloud) / n

i.e. the cloud answer is the reference, so all-cloud has quality 1.0. Cost is local cost for
requests routed local plus cloud cost for the rest, as a fraction of the all-cloud cost.

Choice rule (conservative): the chosen threshold is the cheapest whose **bootstrap lower bound**
(2.5th percentile over ``n_bootstrap`` resamples of the requests) of quality clears the target,
not merely its point estimate; both the point estimate and the interval are reported. All-cloud
(quality exactly 1.0) always qualifies, so a poor local model degrades to all-cloud routing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_CANDIDATES = 200
"""At most this many thresholds (score quantiles) are evaluated, plus the all-cloud point."""

DEFAULT_MIN_LABELS = 50
"""Fewer labelled requests than this give a threshold too noisy to trust."""

TARGET_TOLERANCE = 1e-12
"""Float slack when comparing a quality bound with the target (0.97 may be 0.9699999...)."""


def meets_target(quality_lo: float, target_quality: float) -> bool:
    """The one verdict rule: quality's bootstrap lower bound clears the target.

    The sweep picks its threshold with it and ``hybridgate tune`` reports with it, so the
    printed verdict cannot disagree with the choice.
    """
    return quality_lo >= target_quality - TARGET_TOLERANCE


@dataclass(frozen=True)
class CurvePoint:
    """Quality and cost of one candidate threshold."""

    threshold: float
    quality: float
    """Point estimate of quality relative to all-cloud (1.0)."""
    quality_lo: float
    """Bootstrap 2.5th percentile of quality."""
    quality_hi: float
    """Bootstrap 97.5th percentile of quality."""
    cost_fraction: float
    """Cost relative to sending every request to the cloud."""
    local_fraction: float
    """Share of requests routed local."""


@dataclass(frozen=True)
class TuneResult:
    """The chosen threshold and the whole quality/cost curve.

    Usage::

        result = tune_threshold(scores, labels, cloud_costs, local_costs, target_quality=0.97)
        classifier.set_params(threshold=result.threshold)
        print(format_curve(result))
    """

    threshold: float
    expected_quality: float
    quality_ci: tuple[float, float]
    cost_fraction: float
    local_fraction: float
    target_quality: float
    n_labels: int
    curve: list[CurvePoint] = field(default_factory=list)

    @property
    def meets_target(self) -> bool:
        """The chosen threshold's 95% lower bound of quality clears ``target_quality``."""
        return meets_target(self.quality_ci[0], self.target_quality)


def _as_array(name: str, values: Sequence[float], n: int | None) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} values but scores has {n}; need one per request")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def tune_threshold(
    scores: Sequence[float],
    labels: Sequence[int],
    cloud_costs: Sequence[float],
    local_costs: Sequence[float],
    *,
    target_quality: float = 0.97,
    n_bootstrap: int = 1000,
    seed: int = 0,
    min_labels: int = DEFAULT_MIN_LABELS,
) -> TuneResult:
    """Sweep thresholds and pick the cheapest whose quality lower bound clears the target.

    Args:
        scores: Per-request score in [0, 1]; local when ``score >= threshold``.
        labels: 1 if the local answer was acceptable, else 0.
        cloud_costs: Per-request cost (USD) if sent to the cloud.
        local_costs: Per-request cost (USD) if answered locally.
        target_quality: Required quality relative to all-cloud, in (0, 1].
        n_bootstrap: Bootstrap resamples for the confidence interval (>= 100).
        seed: Bootstrap seed.
        min_labels: Minimum number of labelled requests.

    Returns:
        The chosen threshold with its expected quality, interval and cost, and the full curve.

    Raises:
        ValueError: Too few labels, mismatched lengths, labels not 0/1, scores outside [0, 1],
            negative costs, zero total cloud cost, or a target outside (0, 1].
    """
    s = _as_array("scores", scores, None)
    n = len(s)
    if n < min_labels:
        raise ValueError(
            f"need at least {min_labels} labelled requests, have {n}; turn on shadow labelling "
            "(shadow_rate) or pass --csv"
        )
    y = _as_array("labels", labels, n)
    cloud = _as_array("cloud_costs", cloud_costs, n)
    local = _as_array("local_costs", local_costs, n)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 (1 = local answer acceptable)")
    if ((s < 0) | (s > 1)).any():
        raise ValueError("scores must be in [0, 1]")
    if (cloud < 0).any() or (local < 0).any():
        raise ValueError("costs must be >= 0")
    if cloud.sum() <= 0:
        raise ValueError("total cloud cost is 0; cannot express cost as a fraction of all-cloud")
    if not 0 < target_quality <= 1:
        raise ValueError(f"target_quality must be in (0, 1], got {target_quality!r}")
    if n_bootstrap < 100:
        raise ValueError(f"n_bootstrap must be >= 100 for a stable interval, got {n_bootstrap}")

    uniq = np.unique(s)
    if len(uniq) > MAX_CANDIDATES:
        uniq = np.unique(np.quantile(s, np.linspace(0, 1, MAX_CANDIDATES)))
    all_cloud = float(np.nextafter(1.0, 2.0)) if s.max() >= 1.0 else 1.0
    thresholds = np.concatenate([uniq[uniq < all_cloud], [all_cloud]])

    # Bin requests by how many thresholds they clear: at threshold i, bins > i go local. The
    # bootstrap resamples (bin, label) counts from a multinomial, which is exactly a resample of
    # the requests, in O(thresholds) memory instead of O(requests x resamples).
    n_bins = len(thresholds) + 1
    bins = np.searchsorted(thresholds, s, side="right")
    misses_b = np.bincount(bins, weights=1 - y, minlength=n_bins)
    local_b = np.bincount(bins, weights=local, minlength=n_bins)
    cloud_b = np.bincount(bins, weights=cloud, minlength=n_bins)
    counts_b = np.bincount(bins, minlength=n_bins).astype(float)

    def local_sum(per_bin: np.ndarray) -> np.ndarray:
        """Sum over the bins routed local at each threshold (bins i+1.. at threshold i)."""
        tail = np.cumsum(per_bin[..., ::-1], axis=-1)[..., ::-1]
        return tail[..., 1:]

    quality = 1.0 - local_sum(misses_b) / n
    cost = local_sum(local_b) + np.cumsum(cloud_b)[:-1]
    cost_fraction = cost / cloud.sum()
    local_fraction = local_sum(counts_b) / n

    rng = np.random.default_rng(seed)
    probs = np.concatenate([misses_b, counts_b - misses_b]) / n
    draws = rng.multinomial(n, probs / probs.sum(), size=n_bootstrap)  # (B, 2 * n_bins)
    boot_quality = 1.0 - local_sum(draws[:, :n_bins].astype(float)) / n  # (B, T)
    lo, hi = np.percentile(boot_quality, [2.5, 97.5], axis=0)

    curve = [
        CurvePoint(
            threshold=float(t),
            quality=float(q),
            quality_lo=float(a),
            quality_hi=float(b),
            cost_fraction=float(c),
            local_fraction=float(f),
        )
        for t, q, a, b, c, f in zip(
            thresholds, quality, lo, hi, cost_fraction, local_fraction, strict=True
        )
    ]
    feasible = [i for i in range(len(curve)) if meets_target(lo[i], target_quality)]
    best = min(feasible, key=lambda i: (cost_fraction[i], -local_fraction[i]))
    chosen = curve[best]
    return TuneResult(
        threshold=chosen.threshold,
        expected_quality=chosen.quality,
        quality_ci=(chosen.quality_lo, chosen.quality_hi),
        cost_fraction=chosen.cost_fraction,
        local_fraction=chosen.local_fraction,
        target_quality=float(target_quality),
        n_labels=n,
        curve=curve,
    )


def format_curve(result: TuneResult, *, rows: int = 15) -> str:
    """A plain-text table of the curve (about ``rows`` evenly spaced points plus the choice)."""
    step = max(1, len(result.curve) // rows)
    picked = list(result.curve[::step])
    if result.curve and result.curve[-1] not in picked:
        picked.append(result.curve[-1])
    lines = [
        f"{'threshold':>10}{'quality':>9}{'95% CI':>17}{'cost':>8}{'local':>8}",
    ]
    for p in picked:
        mark = "  <- chosen" if p.threshold == result.threshold else ""
        lines.append(
            f"{p.threshold:>10.4f}{p.quality:>9.3f}   [{p.quality_lo:.3f}, {p.quality_hi:.3f}]"
            f"{p.cost_fraction:>8.1%}{p.local_fraction:>8.1%}{mark}"
        )
    lines.append(
        f"chosen threshold {result.threshold:.4f}: quality {result.expected_quality:.3f} "
        f"(95% CI {result.quality_ci[0]:.3f}-{result.quality_ci[1]:.3f}), cost "
        f"{result.cost_fraction:.1%} of all-cloud, {result.local_fraction:.1%} local; "
        f"target {result.target_quality:.3f} (95% lower bound) on {result.n_labels} labels"
    )
    return "\n".join(lines)


def format_choice(result: TuneResult, *, what: str = "route") -> str:
    """One line for ``hybridgate tune``: the chosen ``what`` threshold, its quality interval,
    the verdict against the target, and what it costs."""
    verdict = "meets" if result.meets_target else "cannot meet (all-cloud chosen)"
    lo, hi = result.quality_ci
    return (
        f"{what} threshold {result.threshold:.3f}: quality {result.expected_quality:.3f} "
        f"[95% CI {lo:.3f}-{hi:.3f}] {verdict} target {result.target_quality:g}; "
        f"cost {result.cost_fraction:.1%} of all-cloud, {result.local_fraction:.1%} local, "
        f"{result.n_labels} labels"
    )


def plot_curve(result: TuneResult, path: str | Path) -> Path:
    """Save a quality-vs-cost plot (with the bootstrap band and the choice) as an image.

    Args:
        result: A :func:`tune_threshold` result.
        path: Output file; the extension picks the format (``.png``, ``.svg``...).

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    pts = sorted(result.curve, key=lambda p: p.cost_fraction)
    x = [p.cost_fraction for p in pts]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.fill_between(x, [p.quality_lo for p in pts], [p.quality_hi for p in pts], alpha=0.25)
    ax.plot(x, [p.quality for p in pts], marker=".", label="quality (point estimate)")
    ax.axhline(result.target_quality, color="red", linestyle="--", label="target")
    ax.scatter([result.cost_fraction], [result.expected_quality], color="black", zorder=3,
               label=f"chosen t={result.threshold:.3f}")  # fmt: skip
    ax.set_xlabel("cost (fraction of all-cloud)")
    ax.set_ylabel("quality (all-cloud = 1.0)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(target)
    plt.close(fig)
    return target


__all__ = [
    "DEFAULT_MIN_LABELS",
    "CurvePoint",
    "TARGET_TOLERANCE",
    "TuneResult",
    "format_choice",
    "format_curve",
    "meets_target",
    "plot_curve",
    "tune_threshold",
]
