"""Router quality on RouteLLM's GSM8K responses: APGR / CPT of the difficulty classifier.

    python benchmarks/router_quality.py --data ../shared/data/routellm_gsm8k/gsm8k_responses.csv

Prints the table, then one JSON line (the CLI's ``--json`` keys plus the rest) last.
Pass several ``--features`` / ``--seeds`` to compare settings; every number is k-fold.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from router.tuning.routebench import bench_router, format_report

_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = _ROOT.parent / "shared" / "data" / "routellm_gsm8k" / "gsm8k_responses.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--prompt-col", default="prompt")
    parser.add_argument("--weak-col", default="mistralai/Mixtral-8x7B-Instruct-v0.1")
    parser.add_argument("--strong-col", default="gpt-4-1106-preview")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--features", nargs="+", default=["tfidf+hand"])
    parser.add_argument("--target", nargs="+", default=["no_gain"])
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()

    summary = []
    last = None
    for features in args.features:
        for target in args.target:
            runs = []
            for seed in args.seeds:
                start = time.perf_counter()
                result = bench_router(
                    args.data,
                    prompt_col=args.prompt_col,
                    weak_col=args.weak_col,
                    strong_col=args.strong_col,
                    folds=args.folds,
                    features=features,
                    target=target,
                    C=args.C,
                    seed=seed,
                )
                result["seconds"] = time.perf_counter() - start
                runs.append(result)
            last = runs[0]
            print(format_report(last))
            print()
            summary.append(
                {
                    "features": features,
                    "target": target,
                    "seeds": args.seeds,
                    **{
                        k: round(statistics.mean(r[k] for r in runs), 4)
                        for k in ("apgr", "cpt50", "cpt80", "random_apgr", "oracle_apgr")
                    },
                    "apgr_per_seed": [round(r["apgr"], 4) for r in runs],
                    "seconds_per_run": round(statistics.mean(r["seconds"] for r in runs), 2),
                }
            )
    if len(summary) > 1:
        print(f"{'features':<20}{'target':<10}{'APGR':>8}{'CPT50':>8}{'CPT80':>8}  per seed")
        for row in summary:
            print(
                f"{row['features']:<20}{row['target']:<10}{row['apgr']:>8.3f}"
                f"{row['cpt50']:>8.1%}{row['cpt80']:>8.1%}  {row['apgr_per_seed']}"
            )
    keys = ("apgr", "cpt50", "cpt80", "random_apgr", "random_cpt50", "random_cpt80")
    keys += ("oracle_apgr", "oracle_cpt50", "oracle_cpt80", "n", "folds", "features", "target")
    final = {k: last[k] for k in keys}
    final["summary"] = summary
    print(json.dumps(final))


if __name__ == "__main__":
    main()
