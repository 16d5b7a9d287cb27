"""A three-tier cascade tuned jointly, against the two-tier one, on real per-row evidence.

Tiers: a weak local student (tier 0), a stronger model as the cheap middle tier (tier 1,
priced as ``--mid-model``), and the reference (``--final-model``: its answers are the gold
labels, quality 1.0). Each tier's confidence and correctness per row come from
``benchmarks/distill_banking77.py --rows-out`` runs on the same held-out Banking77 rows (same
seed and split, joined by text):

    python benchmarks/distill_banking77.py --train-examples 1000 --epochs 1 --top-layers 15 \\
        --skip-before --precision auto --rows-out .bench/tiers/weak.jsonl --json
    python benchmarks/distill_banking77.py --train-examples 4500 --epochs 2 --top-layers 15 \\
        --skip-before --precision auto --rows-out .bench/tiers/strong.jsonl --json
    python benchmarks/tier_cascade.py --local .bench/tiers/weak.jsonl \\
        --mid .bench/tiers/strong.jsonl --splits 100 --json

No public data set records a cheap cloud model's logprobs next to a frontier model's answers,
so the middle tier here is the 4,500-example student's real confidences and correctness,
priced per token as gpt-4o-mini: a stand-in for the cheap model's behaviour, not a measurement
of gpt-4o-mini. Over ``--splits`` random halvings, thresholds are tuned on one half
(``router.tuning.tiers.tune_tiers``: target ``--target-quality``, delta 0.05, Bonferroni over
the grid) and applied to the other; reported: how often the fresh half meets the target, the
5th percentile of fresh quality, each tier's share and the cost against all-final, for the
three-tier cascade and for the two-tier one (local, then the final model) tuned the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.ledger.pricing import PriceBook  # noqa: E402
from router.tuning.tiers import TierData, outcome, tune_tiers  # noqa: E402


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def build(args: argparse.Namespace) -> TierData:
    """Join the two runs by text; price each tier's try."""
    local, mid = _rows(args.local), _rows(args.mid)
    by_text = {r["text"]: r for r in mid}
    prices = PriceBook()
    conf, ok, usd, final = [], [], [], []
    for r in local:
        m = by_text.get(r["text"])
        if m is None:
            continue
        pt, at = r["prompt_tokens"], r["answer_tokens"]
        conf.append([r["score"], m["score"]])
        ok.append([r["label"], m["label"]])
        usd.append(
            [
                r["local_seconds"] * args.usd_per_hour / 3600,
                prices.cloud_cost(args.mid_model, pt, at),
            ]
        )
        final.append(prices.cloud_cost(args.final_model, pt, at))
    if not conf:
        raise SystemExit("the two row files share no text: were they made on the same split?")
    return TierData(("local", args.mid_model), np.array(conf), np.array(ok), np.array(usd),
                    np.array(final))  # fmt: skip


def _part(d: TierData, idx: np.ndarray, tiers: int) -> TierData:
    return TierData(d.names[:tiers], d.confidence[idx, :tiers], d.correct[idx, :tiers],
                    d.usd[idx, :tiers], d.final_usd[idx])  # fmt: skip


def run(data: TierData, tiers: int, args: argparse.Namespace, method: str = "pareto") -> dict:
    rng = np.random.default_rng(args.seed)
    n = len(data.final_usd)
    met, quality, cost, shares = [], [], [], []
    for _ in range(args.splits):
        order = rng.permutation(n)
        cal, test = order[: n // 2], order[n // 2 :]
        choice = tune_tiers(
            _part(data, cal, tiers), target_quality=args.target_quality, method=method
        )
        fresh = _part(data, test, tiers)
        misses, paid, by = outcome(fresh, choice.thresholds)
        q = 1 - misses / len(test)
        met.append(q >= args.target_quality - 1e-12)
        quality.append(q)
        cost.append(paid / fresh.final_usd.sum())
        shares.append([float((by == j).mean()) for j in range(tiers + 1)])
    share = np.mean(shares, axis=0)
    return {
        "tiers": [*data.names[:tiers], args.final_model],
        "method": method,
        "meets_target": round(float(np.mean(met)), 4),
        "fresh_quality_p5": round(float(np.percentile(quality, 5)), 4),
        "fresh_quality_mean": round(float(np.mean(quality)), 4),
        "cost_vs_all_final": round(float(np.mean(cost)), 4),
        "answered_share": [round(float(s), 4) for s in share],
    }


def hindsight(data: TierData, tiers: int, args: argparse.Namespace) -> dict:
    """The cheapest grid vector meeting the target on each fresh half itself (no promise)."""
    from router.tuning.tiers import candidates

    rng = np.random.default_rng(args.seed)
    n = len(data.final_usd)
    cost, shares = [], []
    for _ in range(args.splits):
        test = rng.permutation(n)[n // 2 :]
        fresh = _part(data, test, tiers)
        best = (1.0, [0.0] * tiers + [1.0])
        for vector in candidates(fresh):
            misses, paid, by = outcome(fresh, vector)
            frac = paid / fresh.final_usd.sum()
            if 1 - misses / len(test) >= args.target_quality and frac < best[0]:
                best = (frac, [float((by == j).mean()) for j in range(tiers + 1)])
        cost.append(best[0])
        shares.append(best[1])
    return {
        "cost_vs_all_final": round(float(np.mean(cost)), 4),
        "answered_share": [round(float(s), 4) for s in np.mean(shares, axis=0)],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--local", type=Path, required=True, help="tier 0 rows (--rows-out JSONL)")
    p.add_argument("--mid", type=Path, required=True, help="tier 1 rows (--rows-out JSONL)")
    p.add_argument("--mid-model", default="gpt-4o-mini", help="price tier 1 as this model")
    p.add_argument("--final-model", default="gpt-4-1106-preview", help="price the last tier")
    p.add_argument("--usd-per-hour", type=float, default=0.10, help="local hardware price")
    p.add_argument("--target-quality", type=float, default=0.97)
    p.add_argument("--splits", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    data = build(args)
    acc = data.correct.mean(axis=0)
    out = {
        "rows": len(data.final_usd),
        "accuracy": {name: round(float(a), 4) for name, a in zip(data.names, acc, strict=True)},
        "final_model": args.final_model,
        "target_quality": args.target_quality,
        "splits": args.splits,
        "three_tier": run(data, 2, args),
        "two_tier": run(data, 1, args),
        "three_tier_bonferroni": run(data, 2, args, "bonferroni"),
        "two_tier_bonferroni": run(data, 1, args, "bonferroni"),
        "hindsight_three_tier": hindsight(data, 2, args),
        "hindsight_two_tier": hindsight(data, 1, args),
    }
    if args.json:
        print(json.dumps(out))
        return
    for key in ("three_tier", "two_tier", "three_tier_bonferroni", "two_tier_bonferroni"):
        r = out[key]
        print(
            f"{' -> '.join(r['tiers'])}: meets {100 * r['meets_target']:.0f}% of fresh halves, "
            f"p5 quality {r['fresh_quality_p5']:.3f}, cost {100 * r['cost_vs_all_final']:.1f}%"
            f", shares {r['answered_share']}"
        )


if __name__ == "__main__":
    main()
