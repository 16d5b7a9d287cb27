"""Local engine throughput: single-stream and aggregate tok/s through the DynamicBatcher.

Run under the shared CPU lock so other heavy jobs do not distort the numbers::

    flock /tmp/hybridgate-cpu.lock python benchmarks/local_throughput.py \
        --precision int8,bf16,fp32 --concurrency 1,4,16,32 --new-tokens 64 --json

Each concurrency level runs N clients at once, each sending ``--rounds`` chat prompts back to
back (greedy, no stop strings; counting prompts so the model does not stop before its
``max_tokens``, which cycles through ``--lengths``), and reports aggregate generated tokens /
wall second, time-to-first-token (first streamed delta) p50/p99/max and the process's peak RSS.
``--rounds 1`` with one length is a burst of N identical-length requests; several rounds of mixed
lengths is where requests arrive while others decode (continuous batching's case)::

    python benchmarks/local_throughput.py --precision fp32,int4 --concurrency 16 \
        --lengths 8,64,16,128 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _request(i: int, max_tokens: int):
    from local_models import GenerationRequest

    return GenerationRequest(
        messages=(
            {"role": "user", "content": f"Count from {i + 1} to {i + 200}, separated by commas."},
        ),
        max_tokens=max_tokens,
    )


def _run_level(batcher, n: int, lengths: list[int], rounds: int = 1) -> dict:
    """``n`` clients, each sending ``rounds`` requests back to back (closed loop); client
    ``c``'s ``k``-th request asks for ``lengths[(c + k) % len(lengths)]`` tokens."""
    ttft: list[float] = []
    results = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for k in range(rounds):
            req = _request(c * rounds + k, lengths[(c + k) % len(lengths)])
            t0 = time.perf_counter()
            first = None
            final = None
            for piece in batcher.stream(req):
                if first is None:
                    first = time.perf_counter() - t0
                final = piece
            with lock:
                ttft.append(first or 0.0)
                results.append(final)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    from router.ledger.reports import percentile

    tokens = sum(r.completion_tokens for r in results)
    return {
        "concurrency": n,
        "requests": len(results),
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tok_per_s": round(tokens / wall, 1),
        "ttft_ms_mean": round(1000 * sum(ttft) / len(ttft), 1),
        "ttft_ms_p50": round(1000 * percentile(ttft, 50), 1),
        "ttft_ms_p99": round(1000 * percentile(ttft, 99), 1),
        "ttft_ms_max": round(1000 * max(ttft), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--precision", default="int8", help="comma list: fp32,bf16,int8")
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--lengths",
        default=None,
        help="comma list of max_tokens the clients cycle through (default: --new-tokens)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="requests each client sends back to back"
    )
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="batcher max_wait_ms")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from local_models import DynamicBatcher, LocalEngine, LocalModelConfig

    levels = [int(x) for x in args.concurrency.split(",")]
    lengths = [int(x) for x in (args.lengths or str(args.new_tokens)).split(",")]
    report: dict = {
        "model": args.model,
        "lengths": lengths,
        "rounds": args.rounds,
        "precisions": {},
    }
    precisions = args.precision.split(",")
    if len(precisions) > 1:  # one process per precision, so peak RSS is per precision
        import subprocess

        for precision in precisions:
            argv_one = list(argv if argv is not None else sys.argv[1:])
            i = argv_one.index("--precision")
            argv_one[i + 1] = precision
            out = subprocess.run(
                [sys.executable, __file__, *argv_one, "--json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            report["precisions"].update(json.loads(out)["precisions"])
        _print(report, as_json=args.json)
        return 0
    for precision in precisions:
        config = LocalModelConfig(
            model=args.model,
            precision=precision,
            device="cpu",
            max_batch_size=args.max_batch_size,
            max_wait_ms=args.max_wait_ms,
            threads=args.threads,
        )
        t0 = time.perf_counter()
        engine = LocalEngine.from_config(config)
        load_s = time.perf_counter() - t0
        with DynamicBatcher(
            engine, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, max_queue=1024
        ) as batcher:
            _run_level(batcher, 2, [8])  # warm-up
            rows = [_run_level(batcher, n, lengths, args.rounds) for n in levels]
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        report["precisions"][precision] = {
            "load_s": round(load_s, 2),
            "peak_rss_mb": round(peak_rss_mb, 1),
            "levels": rows,
        }
        del engine
    _print(report, as_json=args.json)
    return 0


def _print(report: dict, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for precision, data in report["precisions"].items():
        print(f"[{precision}] load {data['load_s']:.1f}s peak RSS {data['peak_rss_mb']:.0f} MB")
        for r in data["levels"]:
            print(
                f"  concurrency {r['concurrency']:>3}: {r['tok_per_s']:>7.1f} tok/s "
                f"(ttft p50 {r['ttft_ms_p50']} ms, p99 {r['ttft_ms_p99']} ms, "
                f"max {r['ttft_ms_max']} ms; {r['requests']} requests)"
            )


if __name__ == "__main__":
    raise SystemExit(main())
