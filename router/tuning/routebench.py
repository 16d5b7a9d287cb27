"""Router quality on recorded weak/strong answers, with RouteLLM's metrics.

Given per-prompt quality of a weak and a strong model (e.g. RouteLLM's ``gsm8k_responses.csv``),
route the prompts a router thinks hardest to the strong model and measure quality as the share of
strong calls grows from 0 to 100%:

- ``PGR(f) = (quality(f) - weak) / (strong - weak)``: performance gap recovered.
- ``APGR``: area under PGR over the strong-call fraction ``f`` in [0, 1] (trapezoid rule), as in
  RouteLLM's ``evals/evaluate.py``; random routing scores about 0.5, the oracle close to 1.
- ``CPT(p)``: the smallest strong-call fraction whose PGR reaches ``p`` (linear interpolation);
  reported here as a fraction in [0, 1], so ``cpt50=0.40`` means 40% strong calls.

Everything is k-fold: each fold's classifier is fitted on the other folds only, then scores its
held-out prompts; per-fold curves are averaged (weighted by fold size) on a common grid. Random
routing is averaged over several seeded draws. The oracle routes first the prompts where strong
beats weak (RouteLLM's ``get_optimal_accuracy``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

GRID_POINTS = 101
"""Strong-call fractions 0%, 1%, ..., 100% at which curves are evaluated."""

RANDOM_DRAWS = 20
"""Seeded random-router draws averaged per fold."""

LocalTarget = Callable[[np.ndarray, np.ndarray], np.ndarray]

TARGETS: dict[str, LocalTarget] = {
    "weak_ok": lambda weak, strong: (weak >= 0.5).astype(int),
    "no_gain": lambda weak, strong: (strong <= weak).astype(int),
}
"""Training label "local acceptable" from weak/strong correctness.

``weak_ok``: the weak answer was correct. ``no_gain``: the strong model would not have done
better (weak correct, or both wrong), so sending the prompt to strong buys nothing.
"""


def _parse_quality(value: str, *, column: str, row: int) -> float:
    text = value.strip().lower()
    if text in ("true", "yes"):
        return 1.0
    if text in ("false", "no"):
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"row {row}: column {column!r} must be a correctness (True/False) or score, "
            f"got {value!r}"
        ) from None


def load_routing_csv(
    csv_path: str | Path,
    *,
    prompt_col: str,
    weak_col: str,
    strong_col: str,
    drop_contaminated: bool = True,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read prompts and per-prompt weak/strong quality from a CSV.

    Args:
        csv_path: CSV with one row per prompt.
        prompt_col: Column holding the prompt text.
        weak_col: Column with the weak model's correctness (True/False) or score.
        strong_col: Column with the strong model's correctness or score.
        drop_contaminated: Drop prompts listed (``eval_prompt``) in a sibling
            ``contaminated_prompts.jsonl``, as RouteLLM does, when that file exists.

    Returns:
        ``(prompts, weak, strong)``.

    Raises:
        FileNotFoundError: If the CSV is missing.
        ValueError: If a column is missing or a value cannot be read.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"routing CSV not found: {path}")
    dropped: set[str] = set()
    sidecar = path.with_name("contaminated_prompts.jsonl")
    if drop_contaminated and sidecar.is_file():
        for line in sidecar.read_text(encoding="utf-8").splitlines():
            if line.strip():
                dropped.add(json.loads(line)["eval_prompt"])
    prompts: list[str] = []
    weak: list[float] = []
    strong: list[float] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [
            c for c in (prompt_col, weak_col, strong_col) if c not in (reader.fieldnames or [])
        ]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; columns are {reader.fieldnames}"
            )
        for i, row in enumerate(reader, start=2):
            if row[prompt_col] in dropped:
                continue
            prompts.append(row[prompt_col])
            weak.append(_parse_quality(row[weak_col], column=weak_col, row=i))
            strong.append(_parse_quality(row[strong_col], column=strong_col, row=i))
    if len(prompts) < 2:
        raise ValueError(f"{path}: need at least 2 prompts, found {len(prompts)}")
    return prompts, np.asarray(weak), np.asarray(strong)


def routing_curve(strong_need: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Mean quality when the top-``f`` fraction by ``strong_need`` goes to strong, on the grid.

    Args:
        strong_need: Higher means "send to strong first".
        weak: Per-prompt weak quality.
        strong: Per-prompt strong quality.

    Returns:
        Quality at each of :data:`GRID_POINTS` strong-call fractions from 0 to 1.
    """
    n = len(weak)
    order = np.argsort(-np.asarray(strong_need, dtype=float), kind="stable")
    gains = (strong - weak)[order]
    totals = weak.sum() + np.concatenate([[0.0], np.cumsum(gains)])  # k = 0..n strong calls
    grid = np.linspace(0.0, 1.0, GRID_POINTS)
    return np.interp(grid * n, np.arange(n + 1), totals) / n


def summarize_curve(quality: np.ndarray, weak_q: float, strong_q: float) -> dict[str, float]:
    """APGR and CPT(50%), CPT(80%) of a quality curve on the grid.

    Raises:
        ValueError: If weak and strong quality are equal (PGR undefined).
    """
    if strong_q == weak_q:
        raise ValueError("weak and strong models have equal quality; PGR is undefined")
    grid = np.linspace(0.0, 1.0, GRID_POINTS)
    pgr = (quality - weak_q) / (strong_q - weak_q)
    return {
        "apgr": float(np.trapezoid(pgr, grid)),
        "cpt50": _cpt(pgr, grid, 0.5),
        "cpt80": _cpt(pgr, grid, 0.8),
    }


def _cpt(pgr: np.ndarray, grid: np.ndarray, target: float) -> float:
    hits = np.nonzero(pgr >= target - 1e-12)[0]
    if len(hits) == 0:
        return 1.0
    i = int(hits[0])
    if i == 0:
        return 0.0
    x0, x1, y0, y1 = grid[i - 1], grid[i], pgr[i - 1], pgr[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0)) if y1 != y0 else float(x1)


def _fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = np.arange(n) % folds
    rng.shuffle(ids)
    return ids


def bench_router(
    csv_path: str | Path,
    *,
    prompt_col: str,
    weak_col: str,
    strong_col: str,
    folds: int = 5,
    features: str = "tfidf+hand",
    target: str = "no_gain",
    C: float = 1.0,  # noqa: N803
    seed: int = 0,
    drop_contaminated: bool = True,
) -> dict[str, Any]:
    """K-fold router benchmark of :class:`~router.scoring.classifier.DifficultyClassifier`.

    Args:
        csv_path: CSV of prompts with weak/strong correctness (see :func:`load_routing_csv`).
        prompt_col: Prompt column.
        weak_col: Weak (local) model correctness column.
        strong_col: Strong (cloud) model correctness column.
        folds: Number of folds (>= 2); every score comes from a model not trained on it.
        features: Classifier feature spec, e.g. ``"tfidf+hand"``.
        target: Training label, a key of :data:`TARGETS`.
        C: Classifier regularisation.
        seed: Fold split and random-router seed.
        drop_contaminated: See :func:`load_routing_csv`.

    Returns:
        ``apgr, cpt50, cpt80`` for the classifier, ``random_*`` and ``oracle_*`` likewise, plus
        ``n``, ``folds``, ``weak_quality``, ``strong_quality``, ``features``, ``target`` and
        ``curve`` (strong fraction, classifier / random / oracle quality).

    Raises:
        ValueError: On bad arguments or data (message names the problem).
    """
    prompts, weak, strong = load_routing_csv(
        csv_path,
        prompt_col=prompt_col,
        weak_col=weak_col,
        strong_col=strong_col,
        drop_contaminated=drop_contaminated,
    )
    return bench_router_arrays(
        prompts, weak, strong, folds=folds, features=features, target=target, C=C, seed=seed
    )


def bench_router_arrays(
    prompts: Sequence[str],
    weak: np.ndarray,
    strong: np.ndarray,
    *,
    folds: int = 5,
    features: str = "tfidf+hand",
    target: str = "no_gain",
    C: float = 1.0,  # noqa: N803
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`bench_router` on in-memory data (same arguments and result)."""
    from router.scoring.classifier import DifficultyClassifier

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {sorted(TARGETS)}")
    n = len(prompts)
    if not isinstance(folds, int) or folds < 2 or folds > n:
        raise ValueError(f"folds must be an int in [2, {n}], got {folds!r}")
    weak = np.asarray(weak, dtype=float)
    strong = np.asarray(strong, dtype=float)
    labels = TARGETS[target](weak, strong)
    fold_of = _fold_ids(n, folds, seed)
    rng = np.random.default_rng(seed + 1)
    curves = {"router": np.zeros(GRID_POINTS), "random": np.zeros(GRID_POINTS)}
    curves["oracle"] = np.zeros(GRID_POINTS)
    prompts = list(prompts)
    for k in range(folds):
        test = np.nonzero(fold_of == k)[0]
        train = np.nonzero(fold_of != k)[0]
        clf = DifficultyClassifier(features=features, C=C)
        clf.fit([prompts[i] for i in train], labels[train])
        need = clf.predict_proba([prompts[i] for i in test])[:, 0]
        w, s = weak[test], strong[test]
        share = len(test) / n
        curves["router"] += share * routing_curve(need, w, s)
        rand = np.mean(
            [routing_curve(rng.random(len(test)), w, s) for _ in range(RANDOM_DRAWS)], axis=0
        )
        curves["random"] += share * rand
        curves["oracle"] += share * routing_curve(s - w, w, s)
    weak_q, strong_q = float(weak.mean()), float(strong.mean())
    result: dict[str, Any] = {}
    for name, prefix in (("router", ""), ("random", "random_"), ("oracle", "oracle_")):
        for key, value in summarize_curve(curves[name], weak_q, strong_q).items():
            result[prefix + key] = value
    grid = np.linspace(0.0, 1.0, GRID_POINTS)
    result.update(
        n=n,
        folds=folds,
        weak_quality=weak_q,
        strong_quality=strong_q,
        features=features,
        target=target,
        curve=[
            [float(f), float(a), float(b), float(c)]
            for f, a, b, c in zip(
                grid, curves["router"], curves["random"], curves["oracle"], strict=True
            )
        ],
    )
    return result


def format_report(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`bench_router`'s result, for the CLI."""
    lines = [
        f"router benchmark: n={result.get('n')} prompts, {result.get('folds')}-fold, "
        f"features={result.get('features')}, target={result.get('target')}",
        f"weak quality {result.get('weak_quality', float('nan')):.3f}   "
        f"strong quality {result.get('strong_quality', float('nan')):.3f}",
        "",
        f"{'router':<12}{'APGR':>8}{'CPT(50%)':>11}{'CPT(80%)':>11}",
    ]
    for label, prefix in (("classifier", ""), ("random", "random_"), ("oracle", "oracle_")):
        lines.append(
            f"{label:<12}{result[prefix + 'apgr']:>8.3f}"
            f"{result[prefix + 'cpt50'] * 100:>10.1f}%{result[prefix + 'cpt80'] * 100:>10.1f}%"
        )
    lines.append("CPT(p): share of calls sent to the strong model to recover p of the gap.")
    return "\n".join(lines)


def summary_json(result: dict[str, Any]) -> str:
    """One-line JSON with the CLI's ``--json`` keys (apgr, cpt50, cpt80, random_apgr, ...)."""
    keys = ("apgr", "cpt50", "cpt80", "random_apgr", "random_cpt50", "random_cpt80")
    keys += ("oracle_apgr", "oracle_cpt50", "oracle_cpt80")
    return json.dumps({k: round(float(result[k]), 4) for k in keys})


__all__ = [
    "GRID_POINTS",
    "TARGETS",
    "bench_router",
    "bench_router_arrays",
    "format_report",
    "load_routing_csv",
    "routing_curve",
    "summarize_curve",
    "summary_json",
]
