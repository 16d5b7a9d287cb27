"""Which decode path is fastest on this machine: HF ``generate``, transformers' continuous batching
(``generate_batch``), hybridgate's own engine, and the engine through ``HybridClient``.

Issue #11 asks first whether a home-made decode loop should exist at all. This answers it by
measurement: one process, the same converted SmolLM2-135M fp32 weights, the same rendered chat
prompts, greedy decoding, every path run ``--repeats`` times interleaved (median reported), so
the ratios hold even on a noisy 2-core machine::

    python benchmarks/decode_paths.py --new-tokens 64 --batches 1,32 --json

tok/s = generated tokens / wall second (aggregate over the batch). Prompts ask the model to count
far, so no path stops early; each path's own token count is used.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import resource
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _messages(i: int) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": f"Count from {i + 1} to {i + 300}, separated by commas."},)


def _prompts(tok: Any, n: int) -> list[list[int]]:
    from local_models.prompt import render_chat

    return [
        tok(render_chat(tok, _messages(i)), add_special_tokens=False).input_ids for i in range(n)
    ]


def hf_generate(model: Any, tok: Any, n: int, new_tokens: int) -> tuple[int, float]:
    import torch

    ids = _prompts(tok, n)
    width = max(len(x) for x in ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    wall = time.perf_counter() - t0
    return int((out.shape[1] - width) * n), wall


def hf_generate_batch(model: Any, tok: Any, n: int, new_tokens: int) -> tuple[int, float]:
    """transformers' continuous batching (paged attention); may not support CPU."""
    from transformers import GenerationConfig

    ids = _prompts(tok, n)
    cfg = GenerationConfig(
        max_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=-1,  # count tokens, do not stop: the same work as the other paths
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    t0 = time.perf_counter()
    outputs = model.generate_batch(inputs=ids, generation_config=cfg, progress_bar=False)
    wall = time.perf_counter() - t0
    tokens = sum(len(o.generated_tokens) for o in outputs.values())
    return tokens, wall


def engine_generate(engine: Any, n: int, new_tokens: int) -> tuple[int, float]:
    from local_models import GenerationRequest

    reqs = [GenerationRequest(messages=_messages(i), max_tokens=new_tokens) for i in range(n)]
    t0 = time.perf_counter()
    results = engine.generate(reqs)
    wall = time.perf_counter() - t0
    return sum(r.completion_tokens for r in results), wall


def client_generate(client: Any, n: int, new_tokens: int) -> tuple[int, float]:
    """``n`` concurrent callers through ``HybridClient`` (mode local): batcher, transport,
    decision, ledger row and typed response included."""
    from local_models.threads import release_thread_pool

    # As in an app, only the batcher's model thread runs torch meanwhile: free the OpenMP team
    # this (main) thread kept from the paths run before (see local_models/threads.py).
    release_thread_pool()
    tokens: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        reply = client.chat.completions.create(
            messages=list(_messages(i)), max_tokens=new_tokens, temperature=0
        )
        with lock:
            tokens.append(reply.usage.completion_tokens)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(tokens), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--precisions", default="fp32,int4", help="engine/client precisions (HF runs fp32)"
    )
    ap.add_argument(
        "--skip-generate-batch",
        action="store_true",
        help="leave out generate_batch (its paged cache takes GBs and slows what runs after it)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    import tempfile

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from local_models import LocalEngine, LocalModelConfig
    from local_models.loader import load_fp32_weights, resolve_model
    from router import HybridClient
    from router.policy import policy_from_dict

    path = resolve_model("smollm2-135m-instruct")
    model = load_fp32_weights(path).eval()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    paths: dict[str, Any] = {"hf_generate": lambda n: hf_generate(model, tok, n, args.new_tokens)}
    if not args.skip_generate_batch:
        paths["hf_generate_batch"] = lambda n: hf_generate_batch(model, tok, n, args.new_tokens)
    from router.ledger import Ledger

    clients = []
    for precision in args.precisions.split(","):
        engine = LocalEngine.from_pretrained_model(
            model,
            tok,
            LocalModelConfig(precision=precision, device="cpu", max_batch_size=64),
            keep_base=False,
        )
        home = tempfile.mkdtemp(prefix="hg-decode-")
        atexit.register(shutil.rmtree, home, True)
        policy = policy_from_dict(
            {
                "name": "bench",
                "mode": "local",
                "cache": {"enabled": False},
                "shadow": {"rate": 0.0},
                "local": {"precision": precision, "max_batch_size": 64, "max_wait_ms": 25},
            }
        )
        client = HybridClient(policy=policy, ledger=Ledger(Path(home) / "ledger.sqlite"))
        client_generate(client, 1, 4)  # load the model, warm up
        clients.append(client)
        paths[f"engine_{precision}"] = lambda n, e=engine: engine_generate(e, n, args.new_tokens)
        paths[f"client_{precision}"] = lambda n, c=client: client_generate(c, n, args.new_tokens)
    for run in paths.values():  # warm-up at batch 1; a path that cannot run fails again below
        with contextlib.suppress(Exception):
            run(1)
    batches = [int(b) for b in args.batches.split(",")]
    rates: dict[str, dict[int, list[float]]] = {p: {b: [] for b in batches} for p in paths}
    counts: dict[str, dict[int, int]] = {p: {} for p in paths}
    errors: dict[str, str] = {}
    for _ in range(args.repeats):
        for b in batches:
            for name, run in paths.items():
                if name in errors:
                    continue
                try:
                    tokens, wall = run(b)
                except Exception as exc:  # noqa: BLE001
                    errors[name] = f"{type(exc).__name__}: {exc}"[:300]
                    continue
                rates[name][b].append(tokens / wall)
                counts[name][b] = tokens
                print(f"{name:18s} batch {b:3d}: {tokens / wall:7.1f} tok/s", file=sys.stderr)
    for client in clients:
        client.close()
    table = {
        name: {b: round(statistics.median(v), 1) for b, v in per.items() if v}
        for name, per in rates.items()
    }
    ratios = {
        name: {
            b: round(table[name][b] / table["hf_generate"][b], 2)
            for b in table[name]
            if b in table.get("hf_generate", {})
        }
        for name in table
    }
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "new_tokens": args.new_tokens,
        "precisions": args.precisions.split(","),
        "threads": torch.get_num_threads(),
        "tok_per_s": table,
        "vs_hf_generate": ratios,
        # HF is held to exactly --new-tokens per row (min_new_tokens); the engine stops a row at
        # end-of-turn, so at batch 32 it may generate fewer tokens in a wall time set by its
        # longest rows: its tok/s is then a lower bound of the like-for-like rate.
        "tokens_generated": counts,
        "errors": errors,
        "peak_rss_mb": round(peak_mb),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for name in table:
            cells = "  ".join(
                f"b{b}: {table[name][b]:.1f} ({ratios[name].get(b, 0):.2f}x)" for b in table[name]
            )
            print(f"{name:18s} {cells}")
        for name, err in errors.items():
            print(f"{name:18s} failed: {err}")
        print(f"peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
