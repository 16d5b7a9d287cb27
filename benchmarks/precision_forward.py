"""Which CPU precision serves SmolLM2-135M fastest: measured, not hoped.

Times one decode step (a one-token forward with a 64-token KV cache, batch 1 and batch 16) for
each candidate: fp32, bf16, torch int8 dynamic (what ``precision="int8"`` serves), torchao
int8 weight-only and int8 dynamic-activation, and ``torch.compile`` of fp32 and int8 dynamic.
Candidates whose package is missing or whose kernels fail on this machine are reported as such.

    pip install torchao==0.18.0   # optional, only for the torchao rows
    flock /tmp/hybridgate-cpu.lock python benchmarks/precision_forward.py --json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _decode_step_ms(model: Any, batch: int, repeats: int) -> float:
    import torch
    from transformers import DynamicCache

    ids = torch.randint(100, 1000, (batch, 64))
    with torch.inference_mode():
        cache = DynamicCache()
        model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        step = torch.randint(100, 1000, (batch, 1))
        times = []
        for i in range(repeats + 3):
            c = copy.deepcopy(cache)
            t0 = time.perf_counter()
            model(input_ids=step, past_key_values=c, use_cache=True)
            if i >= 3:  # warm-up (compile, allocator) excluded
                times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _candidates() -> dict[str, Callable[[Any], Any]]:
    import torch

    from local_models.quant_torch import to_bf16, to_fp32, to_int8_dynamic

    def torchao(kind: str) -> Callable[[Any], Any]:
        def convert(model: Any) -> Any:
            from torchao.quantization import (
                Int8DynamicActivationInt8WeightConfig,
                Int8WeightOnlyConfig,
                quantize_,
            )

            from local_models.quant_torch import _untie_lm_head

            cfg = (
                Int8WeightOnlyConfig() if kind == "wo" else Int8DynamicActivationInt8WeightConfig()
            )
            model = _untie_lm_head(model.float())
            quantize_(model, cfg)
            return model

        return convert

    def compiled(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def go(model: Any) -> Any:
            model = convert(model)
            model.forward = torch.compile(model.forward, dynamic=True)
            return model

        return go

    return {
        "fp32": to_fp32,
        "bf16": to_bf16,
        "int8_dynamic (torch.ao)": to_int8_dynamic,
        "torchao int8 weight-only": torchao("wo"),
        "torchao int8 dyn-act+weight": torchao("da"),
        "fp32 + torch.compile": compiled(to_fp32),
        "int8_dynamic + torch.compile": compiled(to_int8_dynamic),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from local_models.loader import load_fp32_weights, resolve_model

    torch.set_num_threads(torch.get_num_threads())
    path = resolve_model(args.model)
    base = load_fp32_weights(path).eval()
    rows = []
    for name, convert in _candidates().items():
        if args.only and name not in args.only:
            continue
        row: dict[str, Any] = {"precision": name}
        try:
            model = convert(copy.deepcopy(base)).eval()
            row["bs1_ms"] = round(_decode_step_ms(model, 1, args.repeats), 1)
            row["bs16_ms"] = round(_decode_step_ms(model, 16, max(5, args.repeats // 4)), 1)
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot run here is a result
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        rows.append(row)
        if not args.json:
            print(row, flush=True)
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
