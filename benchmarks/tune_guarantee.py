"""Does ``hybridgate tune``'s quality promise hold on fresh traffic, and what does it cost?

Over ``--splits`` random halvings of labelled rows, each rule picks a threshold on the
calibration half; the other half plays fresh traffic from the same distribution. Reported per
rule: the share of splits whose *realized* quality on the fresh half meets the target, and the
local share and cost there. Rules:

- ``ltt``: what ships (``router.tuning.sweep``): exact binomial bound, fixed-sequence
  Learn-then-Test at ``--delta``, promising quality realized over as many fresh requests as
  were labelled (``hybridgate tune``'s default).
- ``ltt-mean``: the same test promising the expected quality only (``fresh=0``).
- ``bootstrap``: the rule it replaced (2.5th percentile of 1,000 bootstrap resamples).
- ``point``: the cheapest threshold whose point estimate meets the target.
- ``hindsight``: the cheapest threshold meeting the target *on the fresh half itself* (an oracle:
  the local share any rule could hope for). ``ltt``'s shortfall from it is what the guarantee costs.

Rows (``--rows``): the JSONL ``benchmarks/distill_banking77.py --rows-out`` writes (a served
student's confidence and correctness per held-out Banking77 row, its measured compute seconds,
token counts): a cascade priced as ``--cloud-model`` plus local seconds x ``--usd-per-hour``.
Without ``--rows``: RouteLLM's GSM8K answers from ``../shared/data`` (prompt-only router
scores, out-of-fold; label = Mixtral's answer correct; unit prices, a route policy).

    python benchmarks/tune_guarantee.py --rows .bench/b77_rows.jsonl --json
    python benchmarks/tune_guarantee.py --target-quality 0.9 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.tuning.sweep import MAX_CANDIDATES, meets_target, tune_threshold  # noqa: E402

ROUTELLM = ROOT.parent / "shared" / "data" / "routellm_gsm8k" / "gsm8k_responses.csv"
WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=Path, help="JSONL from distill_banking77.py --rows-out")
    p.add_argument(
        "--score-field",
        default="score",
        help="--rows field scored: score (shipped: label probability x answer checker) or "
        "label_score (the label probability alone)",
    )
    p.add_argument("--splits", type=int, default=50, help="random calibration/fresh halvings")
    p.add_argument("--target-quality", type=float, default=0.97)
    p.add_argument("--delta", type=float, default=0.05)
    p.add_argument("--cloud-model", default="gpt-4-1106-preview", help="price of the cloud call")
    p.add_argument("--usd-per-hour", type=float, default=0.10, help="local hardware price")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    return p.parse_args(argv)


def load_rows(
    args: argparse.Namespace,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool, str]:
    """(scores, labels, cloud $, local $, escalation, what) for the chosen source."""
    if args.rows:
        from router.ledger.pricing import PriceBook

        rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
        prices = PriceBook()
        cloud = np.array(
            [
                prices.cloud_cost(args.cloud_model, r["prompt_tokens"], r["answer_tokens"])
                for r in rows
            ]
        )
        local = np.array([r["local_seconds"] for r in rows]) * args.usd_per_hour / 3600
        scores = np.array([r[args.score_field] for r in rows], dtype=float)
        labels = np.array([r["label"] for r in rows], dtype=int)
        return scores, labels, cloud, local, True, f"cascade on {args.rows.name}"
    from router.tuning.retune import ROUTER_FEATURES, out_of_fold_scores
    from router.tuning.routebench import load_routing_csv

    prompts, weak, _ = load_routing_csv(
        ROUTELLM, prompt_col="prompt", weak_col=WEAK, strong_col=STRONG
    )
    labels = (weak >= 0.5).astype(int)
    scores = out_of_fold_scores(prompts, labels, folds=5, seed=args.seed, features=ROUTER_FEATURES)
    n = len(labels)
    return scores, labels, np.ones(n), np.zeros(n), False, "route on RouteLLM GSM8K (unit prices)"


def _apply(t: float | None, s, y, cloud, local, escalation: bool) -> tuple[float, float, float]:
    """Realized (quality, local share, cost vs all-cloud) of threshold ``t`` (None: all-cloud)."""
    if t is None:
        return 1.0, 0.0, 1.0
    keep = s >= t
    paid = np.where(keep, local, cloud + (local if escalation else 0.0))
    return (
        float(1 - ((1 - y) * keep).sum() / len(y)),
        float(keep.mean()),
        float(paid.sum() / cloud.sum()),
    )


def _bootstrap_rule(
    s, y, target: float, rng: np.random.Generator, resamples: int = 1000
) -> float | None:
    """The previous rule: cheapest (most local) threshold whose bootstrap 2.5th percentile of
    quality clears the target."""
    cand = _candidates(s)
    n = len(y)
    idx = rng.integers(0, n, size=(resamples, n))
    best = None
    for t in cand[::-1]:  # strictest first; keep the loosest that passes (loss is monotone)
        miss = ((1 - y) * (s >= t))[idx].sum(axis=1) / n
        if np.percentile(1 - miss, 2.5) >= target - 1e-12:
            best = float(t)
    return best


def _candidates(s: np.ndarray) -> np.ndarray:
    """The thresholds ``tune_threshold`` sweeps (at most ``MAX_CANDIDATES`` score quantiles)."""
    uniq = np.unique(s)
    if len(uniq) > MAX_CANDIDATES:
        uniq = np.unique(np.quantile(s, np.linspace(0, 1, MAX_CANDIDATES)))
    return uniq


def _point_rule(s, y, target: float) -> float | None:
    best = None
    for t in _candidates(s)[::-1]:
        if 1 - ((1 - y) * (s >= t)).sum() / len(y) >= target - 1e-12:
            best = float(t)
    return best


def _cheapest(s, y, cloud, local, escalation, target, thresholds) -> float | None:
    """Among ``thresholds`` meeting the target on (s, y), the cheapest (None: all-cloud)."""
    best, best_cost = None, 1.0
    for t in thresholds:
        q, _, c = _apply(t, s, y, cloud, local, escalation)
        if q >= target - 1e-12 and c < best_cost:
            best, best_cost = float(t), c
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    s, y, cloud, local, escalation, what = load_rows(args)
    rng = np.random.default_rng(args.seed)
    rules = ("ltt", "ltt-mean", "bootstrap", "point", "hindsight")
    got: dict[str, list[tuple[float, float, float]]] = {r: [] for r in rules}
    for _ in range(args.splits):
        order = rng.permutation(len(y))
        cal, fresh_idx = order[: len(y) // 2], order[len(y) // 2 :]
        r, mean = (
            tune_threshold(
                s[cal],
                y[cal],
                cloud[cal],
                local[cal],
                target_quality=args.target_quality,
                delta=args.delta,
                escalation=escalation,
                fresh=fresh,
            )  # fmt: skip
            for fresh in (len(fresh_idx), 0)
        )
        picks = {
            "ltt": None if r.all_cloud else r.threshold,
            "ltt-mean": None if mean.all_cloud else mean.threshold,
            "bootstrap": _bootstrap_rule(s[cal], y[cal], args.target_quality, rng),
            "point": _point_rule(s[cal], y[cal], args.target_quality),
        }
        for rule in ("bootstrap", "point"):  # same pricing as ltt: a threshold dearer than
            t = picks[rule]  # all-cloud on the calibration half is not taken
            if (
                t is not None
                and _apply(t, s[cal], y[cal], cloud[cal], local[cal], escalation)[2] >= 1
            ):
                picks[rule] = None
        picks["hindsight"] = _cheapest(
            s[fresh_idx], y[fresh_idx], cloud[fresh_idx], local[fresh_idx], escalation, args.target_quality,
            np.unique(s[fresh_idx]),
        )  # fmt: skip
        for rule in rules:
            got[rule].append(
                _apply(
                    picks[rule],
                    s[fresh_idx],
                    y[fresh_idx],
                    cloud[fresh_idx],
                    local[fresh_idx],
                    escalation,
                )
            )
    out: dict[str, Any] = {
        "data": what,
        "rows": len(y),
        "splits": args.splits,
        "target_quality": args.target_quality,
        "delta": args.delta,
        "cloud_model": args.cloud_model if args.rows else None,
        "label_rate": round(float(y.mean()), 4),
    }
    print(f"{what}: {len(y)} rows, {args.splits} calibration/fresh halvings, target "
          f"{args.target_quality}, delta {args.delta}")  # fmt: skip
    print(f"{'rule':<10}{'met target':>12}{'fresh quality p5':>18}{'local share':>13}{'cost':>8}")
    for rule in rules:
        q, f, c = (np.array(v) for v in zip(*got[rule], strict=True))
        met = float(np.mean([meets_target(x, args.target_quality) for x in q]))
        out[rule] = {
            "met_target": round(met, 4),
            "fresh_quality_p5": round(float(np.percentile(q, 5)), 4),
            "fresh_quality_mean": round(float(q.mean()), 4),
            "local_share": round(float(f.mean()), 4),
            "cost_fraction": round(float(c.mean()), 4),
        }
        print(
            f"{rule:<10}{met:>12.0%}{np.percentile(q, 5):>18.4f}{f.mean():>13.1%}{c.mean():>8.1%}"
        )
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
