"""Which confidence score separates a student's right labels from its wrong ones?

Serves held-out Banking77 rows through the serving engine (constrained to the closed label set,
``--precision``), keeps every answer's token log-probabilities, and scores them several ways:
the geometric-mean token probability (what open answers use), the label's probability (the
product: what closed answer sets use), the least likely token and the first token. For each:
ROC AUC of right vs wrong, and the local share of a cascade tuned to ``--target-quality`` by the
shipped tuner on one half and measured on the other (``--splits`` random halvings).

    python benchmarks/confidence_scores.py --adapter DIR --train-examples 4500 --json

The rows are chosen as ``benchmarks/distill_banking77.py`` chooses them with the same flags
(``--data``, ``--holdout``, ``--train-examples``, ``--eval-examples``, ``--seed``), so ``DIR`` is
scored on rows it was not trained on.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SCORES = {
    "geometric mean (open answers)": lambda lp: math.exp(sum(lp) / len(lp)),
    "label probability (closed sets)": lambda lp: math.exp(sum(lp)),
    "least likely token": lambda lp: math.exp(min(lp)),
    "first token": lambda lp: math.exp(lp[0]),
}


def main(argv: list[str] | None = None) -> dict:
    import distill_banking77 as db
    from sklearn.metrics import roc_auc_score

    from router.scoring.judges import label_match
    from router.tuning.sweep import tune_threshold
    from training import closed_answer_set

    args = db._parse(argv)
    if args.adapter is None:
        db._die("pass --adapter DIR (a trained student, e.g. from distill_banking77.py)")
    splits = 100
    train, heldout = db.select_examples(args)
    labels = closed_answer_set(train)
    ok, logprobs = [], []
    for e, g in db.serve_heldout(args.model, args.adapter, heldout, labels, args):
        ok.append(int(label_match(answer=g.text, reference=e.answer)))
        logprobs.append(list(g.token_logprobs) or [-math.inf])
    y = np.array(ok)
    rng = np.random.default_rng(args.seed)
    halves = [rng.permutation(len(y)) for _ in range(splits)]
    out: dict = {"rows": len(y), "accuracy": round(float(y.mean()), 4), "splits": splits}
    print(f"{len(y)} held-out rows, accuracy {y.mean():.1%}, {splits} halvings, target "
          f"{args.target_quality}")  # fmt: skip
    print(f"{'score':<34}{'AUC':>7}{'local share':>13}{'met target':>12}")
    for name, fn in SCORES.items():
        s = np.array([fn(lp) if math.isfinite(lp[0]) else 0.0 for lp in logprobs])
        shares, met = [], []
        for order in halves:
            cal, fresh = order[: len(y) // 2], order[len(y) // 2 :]
            r = tune_threshold(
                s[cal], y[cal], np.ones(len(cal)), np.full(len(cal), 0.01),
                target_quality=args.target_quality, escalation=True,
            )  # fmt: skip
            keep = np.zeros(len(fresh), bool) if r.all_cloud else s[fresh] >= r.threshold
            shares.append(keep.mean())
            met.append(1 - ((1 - y[fresh]) * keep).mean() >= args.target_quality - 1e-12)
        auc = float(roc_auc_score(y, s))
        out[name] = {"auc": round(auc, 4), "local_share": round(float(np.mean(shares)), 4),
                     "met_target": round(float(np.mean(met)), 4)}  # fmt: skip
        print(f"{name:<34}{auc:>7.3f}{np.mean(shares):>13.1%}{np.mean(met):>12.0%}")
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
