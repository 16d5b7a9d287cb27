"""Training with the frozen-layer cache against recomputing the frozen layers, same run.

LoRA on the top ``--top-layers`` of SmolLM2-135M leaves the bottom layers frozen; with
``frozen_cache`` (the default) their output is computed once per example and every step runs
only the top layers (``training.lora.FrozenLayers``). Both arms train the same adapter on the
same Banking77 examples (``distill_banking77.py``'s split and recipe, 2 epochs), alternating A/B/A/B so machine
noise hits both; reported: training seconds of each, the ratio, and the final loss of each.

    python benchmarks/frozen_cache.py --train-examples 300 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.distill_banking77 import _parse, select_examples  # noqa: E402
from training import LoraTrainingConfig, train_lora  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-examples", type=int, default=300)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--top-layers", type=int, default=15)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    train, _ = select_examples(_parse(["--train-examples", str(args.train_examples)]))
    seconds: dict[bool, list[float]] = {True: [], False: []}
    losses: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for cache in (True, False):
                cfg = LoraTrainingConfig(
                    r=8, alpha=16, top_layers=args.top_layers, frozen_cache=cache, lr=3e-3,
                    epochs=args.epochs, batch_size=16, max_seq_len=96, warmup_ratio=0.05,
                    schedule="cosine", seed=0, num_threads=args.threads,
                )  # fmt: skip
                out = Path(tmp) / f"{cache}-{r}"
                res = train_lora(args.model, train, cfg, output_dir=out, progress=False)
                seconds[cache].append(res.train_seconds)
                losses[cache].append(res.final_loss)
    cached, plain = statistics.median(seconds[True]), statistics.median(seconds[False])
    result = {
        "train_examples": len(train),
        "epochs": args.epochs,
        "top_layers": args.top_layers,
        "seconds_cached": [round(s, 1) for s in seconds[True]],
        "seconds_recomputed": [round(s, 1) for s in seconds[False]],
        "speedup": round(plain / cached, 3),
        "final_loss_cached": round(losses[True][0], 4),
        "final_loss_recomputed": round(losses[False][0], 4),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"frozen-layer cache: {cached:.1f} s vs {plain:.1f} s recomputed "
        f"({result['speedup']:.2f}x), final loss {result['final_loss_cached']} vs "
        f"{result['final_loss_recomputed']}"
    )


if __name__ == "__main__":
    main()
