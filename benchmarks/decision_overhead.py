"""Per-request cost of scoring a prompt with the difficulty classifier (p50/p99, microseconds).

    python benchmarks/decision_overhead.py --data ../shared/data/routellm_gsm8k/gsm8k_responses.csv

Fits on the RouteLLM GSM8K prompts (or, without the file, on the shipped slice), then times
``local_score`` one prompt at a time, which is what the router does per request.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from router.scoring.classifier import DifficultyClassifier
from router.tuning.routebench import TARGETS, load_routing_csv

_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = _ROOT.parent / "shared" / "data" / "routellm_gsm8k" / "gsm8k_responses.csv"


def _data(path: Path) -> tuple[list[str], np.ndarray]:
    if path.is_file():
        prompts, weak, strong = load_routing_csv(
            path,
            prompt_col="prompt",
            weak_col="mistralai/Mixtral-8x7B-Instruct-v0.1",
            strong_col="gpt-4-1106-preview",
        )
        return prompts, TARGETS["no_gain"](weak, strong)
    from router.devtools.data import load_gsm8k

    rows = load_gsm8k()
    return [r["prompt"] for r in rows], np.array(
        [int(r["weak_correct"] or not r["strong_correct"]) for r in rows]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--features", nargs="+", default=["tfidf+hand", "tfidf", "char+hand"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    prompts, labels = _data(args.data)
    results = {}
    for features in args.features:
        clf = DifficultyClassifier(features=features).fit(prompts, labels)
        for p in prompts[:50]:  # warm up
            clf.local_score(p)
        times = []
        for _ in range(args.repeats):
            for p in prompts:
                start = time.perf_counter_ns()
                clf.local_score(p)
                times.append(time.perf_counter_ns() - start)
        us = np.array(times) / 1000.0
        results[features] = {
            "p50_us": round(float(np.percentile(us, 50)), 1),
            "p99_us": round(float(np.percentile(us, 99)), 1),
            "mean_us": round(float(us.mean()), 1),
            "n_features": clf.n_features_,
            "requests": len(us),
        }
        print(
            f"{features:<14} p50 {results[features]['p50_us']:>8.1f} us   "
            f"p99 {results[features]['p99_us']:>8.1f} us   ({clf.n_features_} features)"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
