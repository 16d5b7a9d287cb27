"""Does quantization keep a LoRA-tuned student's quality? Accuracy and cascade confidence.

Serves the demo's intent traffic (phase-3 texts it never trained on, with their answer set)
through ``LocalEngine`` at each precision with the given adapter, and reports accuracy, wall
time and how well each confidence signal separates right from wrong answers: ROC AUC and the
share of requests a cascade could keep locally at >= 96% precision.

    hybridgate demo --home /tmp/demo          # trains and promotes an adapter
    flock /tmp/hybridgate-cpu.lock python benchmarks/quantized_student.py \\
        --adapter /tmp/demo/adapters/v0001 --precision fp32,int8,bf16 --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _auc(scores: list[float], ok: list[bool]) -> float:
    pos = [s for s, y in zip(scores, ok, strict=True) if y]
    neg = [s for s, y in zip(scores, ok, strict=True) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _coverage(scores: list[float], ok: list[bool], precision: float) -> float:
    """Largest share of requests, most confident first, whose accuracy stays >= precision."""
    ranked = sorted(zip(scores, ok, strict=True), key=lambda t: -t[0])
    best, right = 0, 0
    for i, (_, y) in enumerate(ranked, start=1):
        right += y
        if right / i >= precision:
            best = i
    return best / len(ranked) if ranked else 0.0


def measure(adapter: Path, precision: str, rows: list[dict[str, str]], system: str) -> dict:
    from local_models import GenerationRequest, LocalEngine, LocalModelConfig

    engine = LocalEngine.from_config(
        LocalModelConfig(adapter_path=str(adapter), adapter_version="bench", precision=precision)
    )
    ok: list[bool] = []
    logprobs: list[list[float]] = []
    t0 = time.perf_counter()
    for i in range(0, len(rows), 16):
        batch = rows[i : i + 16]
        results = engine.generate(
            [
                GenerationRequest(
                    messages=(
                        {"role": "system", "content": system},
                        {"role": "user", "content": r["text"]},
                    ),
                    max_tokens=12,
                )
                for r in batch
            ]
        )
        for r, g in zip(batch, results, strict=True):
            ok.append(g.text.strip() == r["category"])
            logprobs.append(g.token_logprobs or [-50.0])
    seconds = time.perf_counter() - t0
    signals = {
        "geometric_mean": [math.exp(sum(lp) / len(lp)) for lp in logprobs],
        "min_token": [math.exp(min(lp)) for lp in logprobs],
        "sequence": [math.exp(sum(lp)) for lp in logprobs],
    }
    return {
        "precision": precision,
        "accuracy": round(sum(ok) / len(ok), 4),
        "seconds": round(seconds, 1),
        "confidence": {
            name: {
                "auc": round(_auc(s, ok), 3),
                "coverage_at_96pct": round(_coverage(s, ok, 0.96), 3),
            }
            for name, s in signals.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", type=Path, required=True, help="adapter dir (registry vNNNN)")
    parser.add_argument("--precision", default="fp32,int8,bf16")
    parser.add_argument("--rows", type=int, default=480)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not (args.adapter / "adapter_config.json").is_file():
        parser.error(f"{args.adapter} is not an adapter directory (no adapter_config.json)")

    from router.devtools.demo import INTENT_SYSTEM, _pools

    rows = _pools(0)[1][: args.rows]
    report: dict[str, Any] = {"rows": len(rows), "results": []}
    for precision in [p.strip() for p in args.precision.split(",") if p.strip()]:
        res = measure(args.adapter, precision, rows, INTENT_SYSTEM)
        report["results"].append(res)
        if not args.json:
            print(json.dumps(res), flush=True)
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
