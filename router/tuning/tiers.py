"""Thresholds for an N-tier cascade, chosen jointly, with the same quality promise as one.

Tiers ``0..k-1`` are the local model and then the cheaper cloud models of ``cloud.tiers``;
tier ``k`` is ``cloud.model``, the reference (its answers define quality 1.0). A request is
answered by the first tier whose confidence clears that tier's threshold, else by the last;
every tier asked on the way is paid. On labelled requests where *every* tier answered (label:
was tier ``j``'s answer acceptable against the last tier's), each threshold vector has a miss
count and a cost.

Choice rule: Learn-then-Test over candidate vectors fixed before any label is read (per
tier: quantiles of its confidences, or "off": the tier is not asked). Two ways to control the
error over many candidates:

- ``pareto`` (the default; Pareto Testing, Laufer-Goldshtein et al. 2023): a random
  ``opt_share`` of the labels only *orders* the candidates — their quality/cost Pareto front,
  most conservative first — and the rest tests them in that order at ``delta`` each
  (fixed-sequence testing, stopping at the first failure). The order does not depend on the
  testing labels, so the promise holds, and no correction for the number of candidates is
  paid; the price is the labels spent on ordering.
- ``bonferroni``: every candidate tested on all labels at ``delta / m``.

With probability >= ``1 - delta`` the chosen vector's quality over ``fresh`` new requests
meets the target. All-cloud (only the last tier) has quality exactly 1.0 and cost exactly 1.0
and always passes: the choice is never dearer than all-cloud on the labels.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.tuning.sweep import DEFAULT_DELTA, meets_target, realized_quality_lower

DEFAULT_LEVELS = 20
"""Threshold candidates per tier (confidence quantiles), plus "off" for cloud tiers."""

DEFAULT_OPT_SHARE = 0.3
"""Pareto Testing: the share of labels that orders the candidates (the rest tests them)."""

METHODS = ("pareto", "bonferroni")


@dataclass(frozen=True)
class TierData:
    """Labelled requests every tier answered: one column per tier before the last."""

    names: tuple[str, ...]
    """``local``, then each cheaper cloud tier's model."""
    confidence: np.ndarray
    """``(n, k)``: each tier's confidence in its answer."""
    correct: np.ndarray
    """``(n, k)``: 1 where that tier's answer was acceptable against the last tier's."""
    usd: np.ndarray
    """``(n, k)``: what asking that tier cost."""
    final_usd: np.ndarray
    """``(n,)``: what the last tier (``cloud.model``) cost: the all-cloud baseline."""

    def __post_init__(self) -> None:
        n, k = np.shape(self.confidence)
        if len(self.names) != k or k < 1:
            raise ValueError(f"{len(self.names)} tier names for {k} confidence columns")
        for name in ("correct", "usd"):
            if np.shape(getattr(self, name)) != (n, k):
                raise ValueError(f"{name} must have shape {(n, k)}")
        if np.shape(self.final_usd) != (n,):
            raise ValueError(f"final_usd must have shape {(n,)}")


@dataclass(frozen=True)
class TierChoice:
    """The chosen thresholds and what they give on the labels."""

    names: tuple[str, ...]
    thresholds: tuple[float | None, ...]
    """Per tier before the last; None: the tier is not asked (all None: all-cloud)."""
    quality: float
    quality_lo: float
    """Realized quality's lower bound at confidence ``1 - delta`` (Bonferroni over the grid)."""
    cost_fraction: float
    """Cost relative to the last tier answering everything."""
    answered: tuple[float, ...]
    """Share answered by each tier, the last included (sums to 1)."""
    candidates: int
    n: int
    target_quality: float
    delta: float
    fresh: int
    method: str = "pareto"
    tested: int = 0
    """Candidates the test reached (Pareto: in order, up to the first failure)."""

    @property
    def all_cloud(self) -> bool:
        return all(t is None for t in self.thresholds)

    def lines(self) -> list[str]:
        """What ``hybridgate tune --what tiers`` prints."""
        shares = ", ".join(
            f"{name} {100 * s:.1f}%"
            for name, s in zip((*self.names, "last tier"), self.answered, strict=True)
        )
        chosen = ", ".join(
            f"{name} {'off' if t is None else f'>= {t:.3f}'}"
            for name, t in zip(self.names, self.thresholds, strict=True)
        )
        return [
            f"thresholds: {chosen}" + (" (all-cloud)" if self.all_cloud else ""),
            f"answered by: {shares}",
            f"quality {self.quality:.4f} (>= {self.quality_lo:.4f} over {self.fresh} fresh "
            f"requests with {100 * (1 - self.delta):.0f}% confidence; target "
            f"{self.target_quality}), cost {100 * self.cost_fraction:.1f}% of all-cloud, "
            f"{self.candidates} candidates ({self.method}, {self.tested} tested), "
            f"{self.n} labels",
        ]


def answered_by(confidence: np.ndarray, thresholds: Sequence[float | None]) -> np.ndarray:
    """Per request, the index of the tier that answers (``k`` = the last tier)."""
    n, k = confidence.shape
    out = np.full(n, k)
    open_ = np.ones(n, dtype=bool)
    for j, t in enumerate(thresholds):
        if t is None:
            continue
        keep = open_ & (confidence[:, j] >= t)
        out[keep] = j
        open_ &= ~keep
    return out


def outcome(data: TierData, thresholds: Sequence[float | None]) -> tuple[int, float, np.ndarray]:
    """``(misses, cost, answering tier per request)`` of one threshold vector."""
    n, k = data.confidence.shape
    by = answered_by(data.confidence, thresholds)
    asked = np.array([t is not None for t in thresholds])
    misses = int(sum(int((data.correct[by == j, j] == 0).sum()) for j in range(k)))
    paid = np.zeros(n)
    for j in range(k):
        if asked[j]:
            paid += np.where(by >= j, data.usd[:, j], 0.0)  # asked when no earlier tier kept
    paid += np.where(by == k, data.final_usd, 0.0)
    return misses, float(paid.sum()), by


def candidates(data: TierData, levels: int = DEFAULT_LEVELS) -> list[tuple[float | None, ...]]:
    """Threshold vectors to test, from the confidences alone (no labels): per tier, quantiles
    (or off, for cloud tiers); the local tier is on unless everything is off (all-cloud)."""
    k = data.confidence.shape[1]
    qs = np.linspace(0.0, 1.0, levels + 1)[:-1]
    grids: list[list[float | None]] = []
    for j in range(k):
        values = sorted({round(float(v), 6) for v in np.quantile(data.confidence[:, j], qs)})
        grids.append([*values, None] if j else values)
    out: list[tuple[float | None, ...]] = [tuple([None] * k)]
    out += [tuple(v) for v in itertools.product(*grids)]
    return out


def tune_tiers(
    data: TierData,
    *,
    target_quality: float,
    delta: float = DEFAULT_DELTA,
    fresh: int | None = None,
    levels: int = DEFAULT_LEVELS,
    method: str = "pareto",
    opt_share: float = DEFAULT_OPT_SHARE,
    seed: int = 0,
) -> TierChoice:
    """The cheapest threshold vector whose realized quality meets the target w.p. >= 1 - delta.

    Args:
        data: Labelled requests every tier answered.
        target_quality: Quality relative to the last tier (1.0 = as good as all-cloud).
        delta: Allowed probability that fresh traffic falls below the target.
        fresh: Requests the promise covers (default: as many as are labelled); 0 promises
            the expected quality only.
        levels: Threshold candidates per tier.
        method: ``pareto`` or ``bonferroni`` (see the module docstring).
        opt_share: Pareto Testing's ordering share of the labels.
        seed: The ordering/testing split.

    Raises:
        ValueError: No labels, a target outside (0, 1], or an unknown method.
    """
    n = len(data.final_usd)
    if n == 0:
        raise ValueError("no labelled requests that every tier answered: nothing to tune on")
    if not 0 < target_quality <= 1:
        raise ValueError(f"target_quality must be in (0, 1], got {target_quality}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    fresh = n if fresh is None else fresh
    grid = candidates(data, levels)
    if method == "bonferroni" or n < 10:
        order, test = grid, np.arange(n)
        level = delta / len(grid)
        stop_at_failure = False
        method = "bonferroni"
    else:
        split = np.random.default_rng(seed).permutation(n)
        cut = max(1, int(round(opt_share * n)))
        order = _pareto_order(_subset(data, split[:cut]), grid)
        test, level, stop_at_failure = split[cut:], delta, True
    held = _subset(data, test)
    m = len(held.final_usd)
    baseline = float(held.final_usd.sum()) or 1.0
    best: tuple | None = None
    tested = 0
    for vector in order:
        misses, cost, _ = outcome(held, vector)
        tested += 1
        all_cloud = not any(t is not None for t in vector)
        lo = (
            1.0
            if all_cloud
            else float(realized_quality_lower(np.array([misses]), m, level, fresh)[0])
        )
        if not all_cloud and not meets_target(lo, target_quality):
            if stop_at_failure:
                break
            continue
        if best is None or cost / baseline < best[1] - 1e-12:
            best = (vector, cost / baseline, lo, 1.0 - misses / m)
    assert best is not None  # all-cloud always passes (and is tested first)
    vector, _, lo, _ = best
    misses, cost, by = outcome(data, vector)  # what it gives on every label
    k = data.confidence.shape[1]
    return TierChoice(
        names=data.names,
        thresholds=vector,
        quality=1.0 - misses / n,
        quality_lo=lo,
        cost_fraction=cost / (float(data.final_usd.sum()) or 1.0),
        answered=tuple(float((by == j).mean()) for j in range(k + 1)),
        candidates=len(grid),
        n=n,
        target_quality=target_quality,
        delta=delta,
        fresh=fresh,
        method=method,
        tested=tested,
    )


def _subset(data: TierData, idx: np.ndarray) -> TierData:
    return TierData(
        data.names, data.confidence[idx], data.correct[idx], data.usd[idx], data.final_usd[idx]
    )


def _pareto_order(
    data: TierData, grid: list[tuple[float | None, ...]]
) -> list[tuple[float | None, ...]]:
    """All-cloud, then the candidates on the quality/cost Pareto front of ``data``, from the
    highest estimated quality (the safest) to the lowest."""
    scored = []
    for vector in grid[1:]:
        misses, cost, _ = outcome(data, vector)
        scored.append((misses, cost, vector))
    scored.sort(key=lambda x: (x[0], x[1]))  # fewest misses first, then cheapest
    front, cheapest = [], float("inf")
    for _misses, cost, vector in scored:
        if cost < cheapest - 1e-15:  # dearer than a safer one: dominated
            front.append(vector)
            cheapest = cost
    return [grid[0], *front]


def tier_data_from_ledger(ledger: object, *, after: float | None = None) -> TierData:
    """Labels from requests that went up every tier: each tier's recorded answer (the local
    one included) judged against the last tier's, by the judge the shadow labeller would pick.

    Those are the explored requests (``shadow.rate`` of a tiered cascade's traffic, a random
    sample) and the ones every tier was unsure of; rows kept by an earlier tier say nothing
    about later ones and are left out. Without exploration the labels over-represent requests
    every tier was unsure of.
    """
    from router.scoring.judges import auto_judge, get_judge

    names: tuple[str, ...] | None = None
    conf, ok, usd, final = [], [], [], []
    for entry in ledger.rows():  # type: ignore[attr-defined]
        tries = entry.attempts or []
        if after is not None and entry.ts <= after:
            continue
        if len(tries) < 2:
            continue
        last, earlier = tries[-1], tries[:-1]
        if last.get("tier") != "cloud" or last.get("error") or "answer" not in last:
            continue  # kept before the last tier (not explored), or content storage was off
        if any(t.get("error") or "confidence" not in t or "answer" not in t for t in earlier):
            continue
        row_names = tuple(str(t["tier"]) for t in earlier)
        if names is None:
            names = row_names
        if row_names != names:
            continue  # the policy's tiers changed: keep one cascade's rows
        reference = str(last["answer"])
        judge = get_judge(auto_judge(reference))
        labels = [float(judge(answer=t["answer"], reference=reference)) >= 0.5 for t in earlier]
        conf.append([float(t["confidence"]) for t in earlier])
        ok.append([int(bool(v)) for v in labels])
        usd.append([float(t.get("usd") or 0.0) for t in earlier])
        final.append(float(last.get("usd") or 0.0))
    if names is None:
        return TierData(
            ("local",), np.zeros((0, 1)), np.zeros((0, 1)), np.zeros((0, 1)), np.zeros(0)
        )
    return TierData(names, np.array(conf), np.array(ok), np.array(usd), np.array(final))


def tier_data_from_csv(path: str | Path) -> TierData:
    """Labels from a CSV: for each tier before the last, in order, the columns
    ``<tier>_confidence``, ``<tier>_correct`` (0/1) and ``<tier>_usd``, plus ``final_usd``.

    Raises:
        ValueError: No tier columns, a missing column or a value that is not a number.
    """
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    names = tuple(h.removesuffix("_confidence") for h in header if h.endswith("_confidence"))
    if not names:
        raise ValueError(f"{path}: no <tier>_confidence columns (e.g. local_confidence)")
    need = [f"{t}_{c}" for t in names for c in ("confidence", "correct", "usd")] + ["final_usd"]
    missing = [c for c in need if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")

    def column(name: str) -> list[float]:
        try:
            return [float(r[name]) for r in rows]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: column {name}: {exc}") from None

    def block(kind: str) -> np.ndarray:
        return np.array([column(f"{t}_{kind}") for t in names]).T.reshape(len(rows), len(names))

    return TierData(
        names, block("confidence"), block("correct"), block("usd"), np.array(column("final_usd"))
    )


def tuned_policy(policy: Any, choice: TierChoice) -> Any:
    """``policy`` with the chosen thresholds: ``thresholds.cascade`` for the local tier, each
    cheaper cloud tier's threshold, tiers that are off removed (a hybrid policy stays hybrid,
    any other mode becomes cascade); all-cloud -> ``mode: cloud``.

    Raises:
        ValueError: The labels' tiers are not this policy's cascade (local, then cloud.tiers).
    """
    wanted = ("local", *(t.model for t in policy.cloud.tiers))
    if choice.names != wanted:
        raise ValueError(
            f"the labels are for tiers {', '.join(choice.names)} but the policy's cascade is "
            f"{', '.join(wanted)}; tune with the policy the traffic was served with"
        )
    if choice.all_cloud:
        return policy.replace(mode="cloud")
    tiers = [
        {"model": name, "threshold": t}
        for name, t in zip(choice.names[1:], choice.thresholds[1:], strict=True)
        if t is not None
    ]
    mode = policy.mode if policy.mode in ("cascade", "hybrid") else "cascade"
    return policy.replace(
        **{"mode": mode, "thresholds.cascade": choice.thresholds[0], "cloud.tiers": tiers}
    )


__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_OPT_SHARE",
    "METHODS",
    "TierChoice",
    "TierData",
    "answered_by",
    "candidates",
    "outcome",
    "tier_data_from_csv",
    "tier_data_from_ledger",
    "tuned_policy",
    "tune_tiers",
]
