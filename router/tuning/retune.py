"""``hybridgate tune``: from labelled traffic to a new policy + classifier.

Labels come from shadow labelling (the ledger's ``labels`` table) or a CSV. The classifier's
scores used for the threshold sweep are out-of-fold (each prompt scored by a model that never saw
it), so the chosen threshold is not flattered by training-set fit.
"""

from __future__ import annotations

import csv
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from router._text import last_user_text
from router.tuning.sweep import TuneResult, tune_threshold

Target = Literal["route", "cascade"]


@dataclass
class LabelledSet:
    """One row per labelled request: prompt, label (1 = local acceptable), costs, confidence."""

    prompts: list[str]
    labels: np.ndarray
    cloud_costs: np.ndarray
    local_costs: np.ndarray
    confidences: np.ndarray  # NaN where unknown

    def __len__(self) -> int:
        return len(self.prompts)


def labelled_from_ledger(
    ledger: Any, *, threshold: float = 0.5, classes: Collection[str] | None = None
) -> LabelledSet:
    """Shadow labels joined with their requests; a judge score >= ``threshold`` counts as 1.

    ``classes`` keeps only requests of those traffic classes (system prompts, see
    ``local_models.answer_sets.traffic_class``): the ones the policy lets the local model
    answer (``rules.local_classes``), so thresholds are tuned on the traffic they will see.
    None keeps every request.
    """
    if classes is not None:
        from local_models.answer_sets import traffic_class

        wanted = {c.strip() for c in classes}
    prompts, labels, cloud, local, conf = [], [], [], [], []
    for entry, label in ledger.labelled():
        text = last_user_text(entry.messages)
        if not text:
            continue  # content storage was off for this request
        if classes is not None and traffic_class(entry.messages or []) not in wanted:
            continue  # always answered by the cloud: says nothing about the threshold
        prompts.append(text)
        labels.append(1 if label.label >= threshold else 0)
        cloud.append(entry.baseline_cost_usd or entry.cost_usd)
        local.append(label.local_cost_usd)
        conf.append(np.nan if label.local_confidence is None else label.local_confidence)
    return LabelledSet(
        prompts, np.array(labels), np.array(cloud), np.array(local), np.array(conf, dtype=float)
    )


def labelled_from_csv(path: str | Path) -> LabelledSet:
    """CSV columns: ``prompt,label`` and optionally ``cloud_cost,local_cost,local_confidence``."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows")
    missing = {"prompt", "label"} - set(rows[0])
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; need prompt,label")

    def num(row: dict[str, str], key: str, default: float) -> float:
        value = row.get(key)
        return float(value) if value not in (None, "") else default

    return LabelledSet(
        prompts=[r["prompt"] for r in rows],
        labels=np.array([1 if num(r, "label", 0) >= 0.5 else 0 for r in rows]),
        cloud_costs=np.array([num(r, "cloud_cost", 1.0) for r in rows]),
        local_costs=np.array([num(r, "local_cost", 0.0) for r in rows]),
        confidences=np.array([num(r, "local_confidence", np.nan) for r in rows]),
    )


def out_of_fold_scores(
    prompts: list[str], labels: np.ndarray, *, folds: int = 5, seed: int = 0, **params: Any
) -> np.ndarray:
    """Score each prompt with a classifier fitted on the other folds."""
    from router.scoring.classifier import DifficultyClassifier

    n = len(prompts)
    order = np.random.default_rng(seed).permutation(n)
    fold_of = np.empty(n, dtype=int)
    fold_of[order] = np.arange(n) % folds
    scores = np.empty(n)
    for k in range(folds):
        train, test = fold_of != k, fold_of == k
        y = labels[train]
        if len(set(y.tolist())) < 2:  # one class only: the best guess is its rate
            scores[test] = float(y.mean()) if len(y) else 0.5
            continue
        clf = DifficultyClassifier(**params).fit([prompts[i] for i in np.flatnonzero(train)], y)
        scores[test] = clf.predict_proba([prompts[i] for i in np.flatnonzero(test)])[:, 1]
    return scores


ROUTER_FEATURES = "tfidf+hand"
"""Word TF-IDF plus hand features (numbers, operations, length): APGR 0.648 vs 0.611 for
TF-IDF alone on RouteLLM's GSM8K split (``benchmarks/router_quality.py``); p50 164 µs a prompt
(``benchmarks/decision_overhead.py``)."""


@dataclass
class Retuned:
    result: TuneResult
    policy: Any
    classifier_path: Path | None


def retune(
    data: LabelledSet,
    policy: Any,
    *,
    target: Target = "route",
    target_quality: float = 0.97,
    out_dir: str | Path,
    min_labels: int | None = None,
    seed: int = 0,
) -> Retuned:
    """Fit, sweep, pick the cheapest threshold meeting ``target_quality``; write policy inputs.

    ``target="route"`` fits the difficulty classifier and sets ``thresholds.route`` (and, for
    hybrid policies, ``hybrid_high``); ``target="cascade"`` tunes ``thresholds.cascade`` on the
    local answers' confidence.
    """
    kwargs: dict[str, Any] = {"target_quality": target_quality, "seed": seed}
    if min_labels is not None:
        kwargs["min_labels"] = min_labels
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if target == "cascade":
        known = ~np.isnan(data.confidences)
        # An escalated request paid for the local attempt and then the cloud.
        result = tune_threshold(
            data.confidences[known],
            data.labels[known],
            data.cloud_costs[known] + data.local_costs[known],
            data.local_costs[known],
            **kwargs,
        )
        return Retuned(
            result, policy.replace(**{"thresholds.cascade": round(result.threshold, 4)}), None
        )

    from router.scoring.classifier import DifficultyClassifier

    n = len(data)
    if min_labels is not None and n < min_labels or n < 2:
        tune_threshold(
            [0.5] * n, data.labels, data.cloud_costs, data.local_costs, **kwargs
        )  # raises
    scores = out_of_fold_scores(
        data.prompts,
        data.labels,
        folds=min(5, max(2, n // 10)),
        seed=seed,
        features=ROUTER_FEATURES,
    )
    result = tune_threshold(scores, data.labels, data.cloud_costs, data.local_costs, **kwargs)
    threshold = round(min(result.threshold, 1.0), 4)
    clf = DifficultyClassifier(features=ROUTER_FEATURES, threshold=threshold).fit(
        data.prompts, data.labels
    )
    clf_path = clf.save(out / "classifier.json")
    changes: dict[str, Any] = {
        "thresholds.route": threshold,
        "classifier": str(Path(clf_path).resolve()),
    }
    if policy.mode == "hybrid":
        changes["thresholds.hybrid_high"] = threshold
        changes["thresholds.hybrid_low"] = min(policy.thresholds.hybrid_low, threshold)
    return Retuned(result, policy.replace(**changes), Path(clf_path))
