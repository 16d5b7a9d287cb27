"""Pick the routing threshold: the cheapest one that provably keeps quality at the target.

A request goes local when its score (classifier P(local acceptable), or cascade confidence) is
``>= threshold``. On labelled requests (label 1 = the local answer was acceptable, judged against
the cloud answer), quality relative to all-cloud is::

    quality(t) = 1 - (number routed local whose label is 0) / n

i.e. the cloud answer is the reference, so all-cloud has quality 1.0. Cost is local cost for
requests routed local plus cloud cost for the rest (in a cascade an escalated request pays both),
as a fraction of the all-cloud cost.

Choice rule (Learn-then-Test, Angelopoulos et al. 2021, with exact p-values): each threshold's
quality gets a lower bound at confidence ``1 - delta``; thresholds are tested in
order from the strictest (fewest local) to the loosest and the test stops at the first that fails
(fixed-sequence testing: no multiplicity correction needed, and for a miss rate that only grows as
the threshold falls the data-dependent grid is covered too). The choice is the cheapest threshold
that passed. The promise is about *realized* quality: with probability at least ``1 - delta``,
the quality of the next ``fresh`` requests from the same distribution (default: as many as were
labelled; longer windows only average out more) meets the target - an exact test of whether the
labelled and the fresh requests could be one random split of the same set (hypergeometric).
``fresh=0`` promises the expected quality only (Clopper-Pearson). All-cloud (no local answer,
quality exactly 1.0, cost exactly 1.0) always passes, so a poor or costly local model degrades to
all-cloud routing and the choice is never dearer than all-cloud.

Weights: when the labels are not one random sample of the traffic (a cloud-answered request is
always labelled, an audited local answer only at ``shadow.audit_rate``), each label counts
``1 / (its sampling rate)``; quality, cost and local share are then weighted estimates of the
traffic's, and the bound is the exact one on an effective sample: the smaller of Kish's
``(sum w)^2 / sum w^2`` and the size at which a plain sample's miss rate would vary as much
as the weighted one does - an approximation, exact when every weight is 1. Fewer, heavier labels give a looser bound: the
price of a promise about traffic the labels saw only a sample of.
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

DEFAULT_DELTA = 0.05
"""Allowed probability that the chosen threshold's true quality is below the target."""

TARGET_TOLERANCE = 1e-12
"""Float slack when comparing a quality bound with the target (0.97 may be 0.9699999...)."""


def meets_target(quality_lo: float, target_quality: float) -> bool:
    """The one verdict rule: quality's ``1 - delta`` lower bound clears the target.

    The sweep picks its threshold with it and ``hybridgate tune`` reports with it, so the
    printed verdict cannot disagree with the choice.
    """
    return quality_lo >= target_quality - TARGET_TOLERANCE


def realized_quality_lower(misses: np.ndarray, n: int, delta: float, fresh: int) -> np.ndarray:
    """Lower bound, at confidence ``1 - delta``, of quality over ``fresh`` new requests.

    ``fresh == 0``: of the expected quality (``1 - miss_rate_upper(misses, n, delta)``).
    Otherwise an exact exchangeability test: if the ``fresh`` requests held ``t`` misses, the
    ``n`` labelled ones are a random draw from all ``n + fresh``, so seeing only ``k`` there has
    hypergeometric probability ``P(X <= k)``; the bound is ``1 - t_max / fresh`` for the largest
    ``t`` that probability does not rule out at ``delta``.
    """
    if fresh == 0:
        return 1.0 - miss_rate_upper(misses, n, delta)
    from scipy.stats import hypergeom

    k = np.asarray(misses, dtype=int)
    lo, hi = np.zeros_like(k), np.full_like(k, fresh)  # t = 0 is always plausible
    while (lo < hi).any():  # largest plausible t, by bisection (plausibility falls as t grows)
        mid = (lo + hi + 1) // 2
        plausible = hypergeom.cdf(k, n + fresh, k + mid, n) > delta
        lo, hi = np.where(plausible, mid, lo), np.where(plausible, hi, mid - 1)
    return 1.0 - lo / fresh


def miss_rate_upper(misses: np.ndarray, n: int, delta: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound of a binomial rate at confidence ``1 - delta``.

    Inverting the exact binomial test: ``bound <= a`` exactly when the test of "rate > a" has
    p-value ``<= delta``, so the bound is the Learn-then-Test p-value rule in closed form.
    """
    from scipy.stats import beta

    k = np.asarray(misses, dtype=float)
    bound = beta.ppf(1.0 - delta, k + 1.0, np.maximum(n - k, 1.0))
    return np.where(k >= n, 1.0, bound)


@dataclass(frozen=True)
class CurvePoint:
    """Quality and cost of one candidate threshold."""

    threshold: float
    quality: float
    """Point estimate of quality relative to all-cloud (1.0)."""
    quality_lo: float
    """Lower bound of quality at confidence ``1 - delta`` (``realized_quality_lower``)."""
    cost_fraction: float
    """Cost relative to sending every request to the cloud."""
    local_fraction: float
    """Share of requests answered locally."""
    tested: bool = True
    """False for thresholds after the first that failed: fixed-sequence testing never reaches
    them, so they cannot be chosen even if their bound clears the target."""


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
    quality_lo: float
    """The chosen threshold's quality lower bound at confidence ``1 - delta``."""
    cost_fraction: float
    local_fraction: float
    target_quality: float
    n_labels: int
    delta: float = DEFAULT_DELTA
    fresh: int = 0
    """Fresh requests the bound is about (0: the expected quality)."""
    curve: list[CurvePoint] = field(default_factory=list)
    n_effective: float | None = None
    """Kish's effective sample size of weighted labels; None when every weight is 1."""

    @property
    def meets_target(self) -> bool:
        """The chosen threshold's lower bound of quality clears ``target_quality``."""
        return meets_target(self.quality_lo, self.target_quality)

    @property
    def all_cloud(self) -> bool:
        """Nothing is answered locally: the local tier does not pay, or cannot show the target."""
        return self.local_fraction == 0.0


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
    delta: float = DEFAULT_DELTA,
    fresh: int | None = None,
    escalation: bool = False,
    min_labels: int = DEFAULT_MIN_LABELS,
    weights: Sequence[float] | None = None,
) -> TuneResult:
    """Sweep thresholds and pick the cheapest whose quality bound clears the target.

    Args:
        scores: Per-request score in [0, 1]; local when ``score >= threshold``.
        labels: 1 if the local answer was acceptable, else 0.
        cloud_costs: Per-request cost (USD) if sent to the cloud.
        local_costs: Per-request cost (USD) of the local answer.
        target_quality: Required quality relative to all-cloud, in (0, 1].
        delta: Allowed probability that quality on fresh traffic misses the target, in (0, 1).
        fresh: How many fresh requests the promise is about (None: as many as labelled; 0: the
            expected quality only).
        escalation: A cascade: every request is answered locally first and one below the
            threshold pays the cloud too. The all-cloud point then means "no local attempt".
        min_labels: Minimum number of labelled requests.
        weights: Per-request weight, ``1 / (the rate it was sampled for labelling at)``
            (None: all 1, one random sample of the traffic).

    Returns:
        The chosen threshold with its expected quality, bound and cost, and the full curve.

    Raises:
        ValueError: Too few labels, mismatched lengths, labels not 0/1, scores outside [0, 1],
            negative costs, zero total cloud cost, or a target or delta out of range.
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
    w = np.ones(n) if weights is None else _as_array("weights", weights, n)
    if (w <= 0).any():
        raise ValueError("weights must be > 0 (1 / the rate a label was sampled at)")
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
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    fresh = n if fresh is None else int(fresh)
    if fresh < 0:
        raise ValueError(f"fresh must be >= 0 requests, got {fresh!r}")

    uniq = np.unique(s)
    if len(uniq) > MAX_CANDIDATES:
        uniq = np.unique(np.quantile(s, np.linspace(0, 1, MAX_CANDIDATES)))
    all_cloud = float(np.nextafter(1.0, 2.0)) if s.max() >= 1.0 else 1.0
    thresholds = np.concatenate([uniq[uniq < all_cloud], [all_cloud]])

    # Bin requests by how many thresholds they clear: at threshold i, bins > i go local.
    n_bins = len(thresholds) + 1
    bins = np.searchsorted(thresholds, s, side="right")
    misses_b = np.bincount(bins, weights=w * (1 - y), minlength=n_bins)
    local_b = np.bincount(bins, weights=w * local, minlength=n_bins)
    cloud_b = np.bincount(bins, weights=w * cloud, minlength=n_bins)
    counts_b = np.bincount(bins, weights=w, minlength=n_bins)
    total = float(w.sum())

    def local_sum(per_bin: np.ndarray) -> np.ndarray:
        """Sum over the bins routed local at each threshold (bins i+1.. at threshold i)."""
        tail = np.cumsum(per_bin[::-1])[::-1]
        return tail[1:]

    misses = local_sum(misses_b)
    quality = 1.0 - misses / total
    cloud_paid = np.cumsum(cloud_b)[:-1]
    local_paid = (w * local).sum() if escalation else local_sum(local_b)
    cost_fraction = (local_paid + cloud_paid) / (w * cloud).sum()
    local_fraction = local_sum(counts_b) / total
    cost_fraction[-1], local_fraction[-1] = 1.0, 0.0  # all-cloud: no local attempt at all
    n_eff = total**2 / float((w**2).sum())
    weighted = not np.allclose(w, w[0])
    if weighted:  # the exact bound on an effective sample, misses rounded up
        miss_rate = misses / total
        # the weighted miss rate's own variance: heavy weights on the error-prone rows count
        w2_misses = local_sum(np.bincount(bins, weights=w**2 * (1 - y), minlength=n_bins))
        var = (w2_misses * (1 - 2 * miss_rate) + miss_rate**2 * (w**2).sum()) / total**2
        with np.errstate(divide="ignore", invalid="ignore"):
            n_stat = np.where(var > 0, miss_rate * (1 - miss_rate) / var, n_eff)
        n_b = np.maximum(1, np.floor(np.minimum(n_stat, n_eff) + 1e-9)).astype(int)
        k_b = np.minimum(n_b, np.ceil(miss_rate * n_b - 1e-9)).astype(int)
        quality_lo = np.array(
            [realized_quality_lower(k, nb, delta, fresh) for k, nb in zip(k_b, n_b, strict=True)]
        ).reshape(-1)
    else:
        quality_lo = realized_quality_lower(np.rint(misses / w[0]), n, delta, fresh)
    quality_lo[-1] = 1.0  # nothing local, nothing to estimate

    # Fixed-sequence testing from the strictest threshold down; stop at the first failure.
    tested = np.zeros(len(thresholds), dtype=bool)
    passed: list[int] = []
    for i in range(len(thresholds) - 1, -1, -1):
        tested[i] = True
        if not meets_target(quality_lo[i], target_quality):
            break
        passed.append(i)

    curve = [
        CurvePoint(
            threshold=float(t),
            quality=float(q),
            quality_lo=float(a),
            cost_fraction=float(c),
            local_fraction=float(f),
            tested=bool(k),
        )
        for t, q, a, c, f, k in zip(
            thresholds, quality, quality_lo, cost_fraction, local_fraction, tested, strict=True
        )
    ]
    best = min(passed, key=lambda i: (cost_fraction[i], -local_fraction[i]))
    chosen = curve[best]
    return TuneResult(
        threshold=chosen.threshold,
        expected_quality=chosen.quality,
        quality_lo=chosen.quality_lo,
        cost_fraction=chosen.cost_fraction,
        local_fraction=chosen.local_fraction,
        target_quality=float(target_quality),
        n_labels=n,
        delta=float(delta),
        fresh=fresh,
        curve=curve,
        n_effective=round(n_eff, 1) if weighted else None,
    )


def _confidence(result: TuneResult) -> str:
    return f"{1 - result.delta:.0%}"


def _promise(result: TuneResult) -> str:
    """``>= 0.973 over 500 fresh requests with 95% confidence``."""
    over = f" over {result.fresh} fresh requests" if result.fresh else " (expected)"
    return f">= {result.quality_lo:.3f}{over} with {_confidence(result)} confidence"


def format_curve(result: TuneResult, *, rows: int = 15) -> str:
    """A plain-text table of the curve (about ``rows`` evenly spaced points plus the choice)."""
    step = max(1, len(result.curve) // rows)
    picked = list(result.curve[::step])
    for p in (result.curve[-1:] if result.curve else []) + [
        p for p in result.curve if p.threshold == result.threshold
    ]:
        if p not in picked:
            picked.append(p)
    picked.sort(key=lambda p: p.threshold)
    bound = f"{_confidence(result)} bound"
    lines = [f"{'threshold':>10}{'quality':>9}{bound:>12}{'cost':>8}{'local':>8}"]
    for p in picked:
        if p.threshold == result.threshold:
            mark = "  <- chosen"
        elif p is result.curve[-1]:
            mark = "  (all-cloud)"
        elif not p.tested:
            mark = "  (not tested)"
        else:
            mark = ""
        lines.append(
            f"{p.threshold:>10.4f}{p.quality:>9.3f}{p.quality_lo:>12.3f}"
            f"{p.cost_fraction:>8.1%}{p.local_fraction:>8.1%}{mark}"
        )
    lines.append(
        f"chosen threshold {result.threshold:.4f}: quality {result.expected_quality:.3f} "
        f"({_promise(result)}), cost "
        f"{result.cost_fraction:.1%} of all-cloud, {result.local_fraction:.1%} local; "
        f"target {result.target_quality:.3f} on {result.n_labels} labels"
    )
    return "\n".join(lines)


def format_choice(result: TuneResult, *, what: str = "route") -> str:
    """One line for ``hybridgate tune``: the chosen ``what`` threshold, its quality bound,
    the verdict against the target, and what it costs."""
    if result.all_cloud:
        return (
            f"{what}: no threshold answers anything locally at quality >= "
            f"{result.target_quality:g} ({_confidence(result)} confidence) for less than "
            f"all-cloud on {result.n_labels} labels; all-cloud chosen"
        )
    return (
        f"{what} threshold {result.threshold:.3f}: quality {result.expected_quality:.3f} "
        f"({_promise(result)}) meets target "
        f"{result.target_quality:g}; cost {result.cost_fraction:.1%} of all-cloud, "
        f"{result.local_fraction:.1%} local, {result.n_labels} labels"
    )


def plot_curve(result: TuneResult, path: str | Path) -> Path:
    """Save a quality-vs-cost plot (with the lower bound and the choice) as an image.

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
    ax.plot(x, [p.quality_lo for p in pts], linestyle=":",
            label=f"{_confidence(result)} lower bound")  # fmt: skip
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
    "DEFAULT_DELTA",
    "DEFAULT_MIN_LABELS",
    "CurvePoint",
    "TARGET_TOLERANCE",
    "TuneResult",
    "format_choice",
    "format_curve",
    "meets_target",
    "miss_rate_upper",
    "realized_quality_lower",
    "plot_curve",
    "tune_threshold",
]
