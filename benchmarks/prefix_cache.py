"""Shared-prefix KV cache: support-bot traffic (one system prompt, short user texts, short
answers) served in batches through ``LocalEngine``, with the prefix cache on and off.

    flock /tmp/hybridgate-cpu.lock python benchmarks/prefix_cache.py --json

Reports requests/s and ms per batch for each batch size; the answers must be identical
(the script checks it), only the time changes. Texts: the shipped Banking77 slice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYSTEM = "Classify the customer's banking message. Reply with the intent label only."


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--batch-sizes", default="1,8,16")
    p.add_argument("--requests", type=int, default=256, help="requests per setting")
    p.add_argument("--max-tokens", type=int, default=6)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from local_models import GenerationRequest, LocalEngine, LocalModelConfig
    from router.devtools.data import load_banking77

    texts = [r["text"] for r in load_banking77()[: args.requests]]
    reqs = [
        GenerationRequest(
            messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": t}),
            max_tokens=args.max_tokens,
        )
        for t in texts
    ]
    engines = {
        on: LocalEngine.from_config(
            LocalModelConfig(model=args.model, precision=args.precision, prefix_cache=on)
        )
        for on in (False, True)
    }
    prompt_tokens = sum(engines[True].count_prompt_tokens(r.messages) for r in reqs) / len(reqs)
    report: dict = {"precision": args.precision, "mean_prompt_tokens": round(prompt_tokens, 1)}
    for bs in [int(x) for x in args.batch_sizes.split(",")]:
        row: dict = {}
        answers = {}
        for on, engine in engines.items():
            engine.generate(reqs[:bs])  # warm up (and fill the prefix cache, as traffic would)
            t0 = time.perf_counter()
            out = [
                g.text for i in range(0, len(reqs), bs) for g in engine.generate(reqs[i : i + bs])
            ]
            wall = time.perf_counter() - t0
            answers[on] = out
            key = "prefix_cache" if on else "no_prefix_cache"
            row[key] = {
                "requests_per_s": round(len(reqs) / wall, 2),
                "ms_per_batch": round(1000 * wall / -(-len(reqs) // bs), 1),
            }
        row["same_answers"] = answers[True] == answers[False]
        row["speedup"] = round(
            row["prefix_cache"]["requests_per_s"] / row["no_prefix_cache"]["requests_per_s"], 2
        )
        report[f"batch_{bs}"] = row
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:>20}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
