"""``hybridgate tune``: from labelled traffic to a new policy + classifier.

Labels come from shadow labelling (the ledger's ``labels`` table) or a CSV. The classifier's
scores used for the threshold sweep are out-of-fold (each prompt scored by a model that never saw
it), so the chosen threshold is not flattered by training-set fit.

Both sides are priced: a local answer costs the compute seconds the ledger measured for it, an
escalated cascade answer pays for the local try and the cloud. A traffic class (system prompt)
whose local answers cost at least what the cloud would at the chosen threshold is taken off the
local tier (``rules.local_classes``) and the rest re-tuned, so the written policy is never dearer
than all-cloud on the labelled traffic, class by class.
"""

from __future__ import annotations

import csv
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from router._text import class_label, last_user_text
from router.tuning.sweep import DEFAULT_DELTA, TuneResult, tune_threshold

Target = Literal["route", "cascade"]


@dataclass
class LabelledSet:
    """One row per labelled request: prompt, label (1 = local acceptable), costs, confidence,
    traffic class (its system prompt, ``""`` without one)."""

    prompts: list[str]
    labels: np.ndarray
    cloud_costs: np.ndarray
    local_costs: np.ndarray
    confidences: np.ndarray  # NaN where unknown
    classes: list[str] = field(default_factory=list)
    weights: np.ndarray | None = None
    """``1 / (the rate each row was sampled for labelling at)``: an audited local answer
    stands for the ones not audited (``router.tuning.sweep``). None: all 1."""

    def __post_init__(self) -> None:
        if not self.classes:
            self.classes = [""] * len(self.prompts)
        if self.weights is None:
            self.weights = np.ones(len(self.prompts))

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, keep: np.ndarray) -> LabelledSet:
        """The rows where ``keep`` is true."""
        idx = np.flatnonzero(keep)
        return LabelledSet(
            [self.prompts[i] for i in idx],
            self.labels[idx],
            self.cloud_costs[idx],
            self.local_costs[idx],
            self.confidences[idx],
            [self.classes[i] for i in idx],
            self.w[idx],
        )

    @property
    def w(self) -> np.ndarray:
        assert self.weights is not None  # set in __post_init__
        return self.weights


def labelled_from_ledger(
    ledger: Any,
    *,
    threshold: float = 0.5,
    classes: Collection[str] | None = None,
    after: float | None = None,
) -> LabelledSet:
    """Shadow labels joined with their requests; a judge score >= ``threshold`` counts as 1.

    ``classes`` keeps only requests of those traffic classes (system prompts, see
    ``local_models.answer_sets.traffic_class``): the ones the policy lets the local model
    answer (``rules.local_classes``), so thresholds are tuned on the traffic they will see.
    None keeps every request. ``after`` keeps only requests newer than that Unix time: an
    adapter's ``trained_until``, so it is never calibrated on prompts it was trained on (its
    answers there are better than on fresh traffic, and the quality promise would not hold).
    An audit's label (tag ``audit_rate``) weighs ``1 / rate``: it stands for the local
    answers that were not audited.
    """
    from local_models.answer_sets import traffic_class

    wanted = None if classes is None else {c.strip() for c in classes}
    prompts, labels, cloud, local, conf, kinds, weights = [], [], [], [], [], [], []
    for entry, label in ledger.labelled():
        text = last_user_text(entry.messages)
        if not text:
            continue  # content storage was off for this request
        if after is not None and entry.ts <= after:
            continue  # possibly trained on
        kind = traffic_class(entry.messages or [])
        if wanted is not None and kind not in wanted:
            continue  # always answered by the cloud: says nothing about the threshold
        prompts.append(text)
        labels.append(1 if label.label >= threshold else 0)
        cloud.append(entry.baseline_cost_usd or entry.cost_usd)
        local.append(label.local_cost_usd)
        conf.append(np.nan if label.local_confidence is None else label.local_confidence)
        kinds.append(kind)
        weights.append(1.0 / _sampled_rate(entry))
    return LabelledSet(
        prompts,
        np.array(labels),
        np.array(cloud),
        np.array(local),
        np.array(conf, dtype=float),
        kinds,
        np.array(weights, dtype=float),
    )


def _sampled_rate(entry: Any) -> float:
    """The rate a row was sampled at for labelling: an audit's (its tag ``audit_rate``); 1
    for every other row (the cloud answered it anyway, so it is always labelled)."""
    if entry.reason != "audit":
        return 1.0
    try:
        rate = float((entry.tags or {}).get("audit_rate", 1.0))
    except ValueError:
        return 1.0
    return rate if 0.0 < rate <= 1.0 else 1.0


def labelled_from_csv(path: str | Path) -> LabelledSet:
    """CSV columns: ``prompt,label`` and optionally ``cloud_cost,local_cost,local_confidence``
    and ``class`` (the traffic class, e.g. the system prompt; ``""`` when absent)."""
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
        classes=[(r.get("class") or "").strip() for r in rows],
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
    dropped: dict[str, str] = field(default_factory=dict)
    """Traffic class -> why it was taken off the local tier (its local answers do not pay)."""


def _class_costs(
    data: LabelledSet, scores: np.ndarray, threshold: float, *, escalation: bool
) -> dict[str, tuple[float, float, int]]:
    """Per traffic class at ``threshold``: (cost, all-cloud cost, requests answered locally)."""
    local = scores >= threshold
    paid = np.where(local, data.local_costs, data.cloud_costs)
    if escalation:
        paid = paid + np.where(local, 0.0, data.local_costs)
    kinds = np.array(data.classes, dtype=object)
    out = {}
    for kind in dict.fromkeys(data.classes):
        rows = kinds == kind
        out[kind] = (
            float((data.w * paid)[rows].sum()),
            float((data.w * data.cloud_costs)[rows].sum()),
            int(local[rows].sum()),
        )
    return out


def retune(
    data: LabelledSet,
    policy: Any,
    *,
    target: Target = "route",
    target_quality: float = 0.97,
    delta: float = DEFAULT_DELTA,
    fresh: int | None = None,
    out_dir: str | Path,
    min_labels: int | None = None,
    seed: int = 0,
) -> Retuned:
    """Fit, sweep, pick the cheapest threshold meeting ``target_quality``; write policy inputs.

    ``target="route"`` fits the difficulty classifier and sets ``thresholds.route`` (and, for
    hybrid policies, ``hybrid_high``); ``target="cascade"`` tunes ``thresholds.cascade`` on the
    local answers' confidence. Quality over ``fresh`` new requests (None: as many as labelled)
    meets the target with probability ``1 - delta`` (``router.tuning.sweep``).

    A traffic class whose local answers cost at least the cloud's (whatever the threshold, or
    at the chosen one) is dropped from ``rules.local_classes`` and the others re-tuned; when no
    class pays, or none can show the target, the policy answers nothing locally
    (``rules.local_classes: []``; in hybrid routing the cascade band still decides).
    """
    allowed = policy.rules.local_classes
    keep = np.array([allowed is None or c in allowed for c in data.classes], dtype=bool)
    dropped = _cannot_pay(data, keep)
    keep &= np.array([c not in dropped for c in data.classes], dtype=bool)
    once = {
        "target": target,
        "target_quality": target_quality,
        "delta": delta,
        "fresh": fresh,
        "out_dir": out_dir,
        "min_labels": min_labels,
        "seed": seed,
    }
    if not keep.any() and not dropped:  # nothing labelled to tune on: raises the usual error
        _retune_once(data.subset(keep), policy, **once)  # type: ignore[arg-type]
    tuned = Retuned(_all_cloud(len(data), target_quality, delta), policy, None)
    while keep.any():
        tuned, swept, scores = _retune_once(data.subset(keep), policy, **once)  # type: ignore[arg-type]
        if tuned.result.all_cloud:
            break
        losers = {
            kind: f"at threshold {tuned.result.threshold:.4f} its {n_local} local answers and "
            f"escalations cost ${paid:.6f} vs ${cloud:.6f} all-cloud"
            for kind, (paid, cloud, n_local) in _class_costs(
                swept, scores, tuned.result.threshold, escalation=target == "cascade"
            ).items()
            if n_local and paid > 0 and paid >= cloud
        }
        if not losers:
            break
        dropped.update(losers)
        keep &= np.array([c not in losers for c in data.classes], dtype=bool)
    if not keep.any():
        tuned = Retuned(_all_cloud(len(data), target_quality, delta), policy, None)
    result = tuned.result
    if not keep.any() or (result.all_cloud and (target == "cascade" or policy.mode == "route")):
        tuned.policy = tuned.policy.replace(**{"rules.local_classes": []})
    elif dropped:
        kept = sorted({c for c, k in zip(data.classes, keep, strict=True) if k})
        tuned.policy = tuned.policy.replace(**{"rules.local_classes": kept})
    tuned.dropped = {class_label(k): why for k, why in dropped.items()}
    return tuned


def _cannot_pay(data: LabelledSet, keep: np.ndarray) -> dict[str, str]:
    """Classes (among ``keep``) where even answering every request locally costs at least
    all-cloud: no threshold can make them pay."""
    kinds = np.array(data.classes, dtype=object)
    out = {}
    for kind in dict.fromkeys(data.classes):
        rows = keep & (kinds == kind)
        local_all = (data.w * data.local_costs)[rows].sum()
        cloud_all = (data.w * data.cloud_costs)[rows].sum()
        if local_all > 0 and local_all >= cloud_all:
            out[kind] = (
                f"answering all {int(rows.sum())} of its labelled requests locally costs "
                f"${local_all:.6f} vs ${cloud_all:.6f} all-cloud"
            )
    return out


def _all_cloud(n: int, target_quality: float, delta: float) -> TuneResult:
    """The choice when no class pays: nothing local, quality and cost exactly all-cloud's."""
    return TuneResult(
        threshold=1.0,
        expected_quality=1.0,
        quality_lo=1.0,
        cost_fraction=1.0,
        local_fraction=0.0,
        target_quality=target_quality,
        n_labels=n,
        delta=delta,
    )


def _retune_once(
    data: LabelledSet,
    policy: Any,
    *,
    target: Target,
    target_quality: float,
    delta: float,
    fresh: int | None,
    out_dir: str | Path,
    min_labels: int | None,
    seed: int,
) -> tuple[Retuned, LabelledSet, np.ndarray]:
    """One fit and sweep on ``data``; returns the result, the rows and the scores it swept."""
    kwargs: dict[str, Any] = {"target_quality": target_quality, "delta": delta, "fresh": fresh}
    if min_labels is not None:
        kwargs["min_labels"] = min_labels
    from router._paths import private_dir

    out = private_dir(out_dir)  # the fitted router holds the user's prompt vocabulary
    if target == "cascade":
        known = ~np.isnan(data.confidences)
        data = data.subset(known)
        result = tune_threshold(
            data.confidences,
            data.labels,
            data.cloud_costs,
            data.local_costs,
            escalation=True,  # an escalated request paid for the local try and then the cloud
            weights=data.w,
            **kwargs,
        )
        tuned = policy.replace(**{"thresholds.cascade": round(result.threshold, 4)})
        return Retuned(result, tuned, None), data, data.confidences

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
    result = tune_threshold(
        scores, data.labels, data.cloud_costs, data.local_costs, weights=data.w, **kwargs
    )
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
    return Retuned(result, policy.replace(**changes), Path(clf_path)), data, scores
