"""Latency of locally answered requests through ``HybridClient``, alone and under load.

Serves the demo's intent traffic (texts it never trained on, under its system prompt) with a
promoted adapter through ``HybridClient`` in ``mode: local`` (int4 on this CPU via ``auto``),
from N closed-loop client threads, each sending its next request when the last one returned -
the way ``hybridgate demo`` sends its traffic (8 at once). Reports p50/p95 latency and req/s
per concurrency, and ``concurrency / throughput``: with a closed loop Little's law makes that
the mean latency, so at a fixed concurrency only more throughput lowers it::

    hybridgate demo --home /tmp/demo          # trains and promotes an adapter
    python benchmarks/local_latency.py --adapter /tmp/demo/adapters/v0001 \\
        --precision auto,fp32 --concurrency 1,8 --requests 160 --json
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _level(client, texts: list[str], system: str, concurrency: int) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()
    todo = iter(texts)

    def worker() -> None:
        while True:
            with lock:
                text = next(todo, None)
            if text is None:
                return
            t0 = time.perf_counter()
            reply = client.chat.completions.create(
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": text},
                ],
                max_tokens=16,
            )
            elapsed = time.perf_counter() - t0
            assert reply.route.route == "local", reply.route
            with lock:
                latencies.append(elapsed)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    from router.ledger.reports import percentile

    rate = len(latencies) / wall
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "p50_ms": round(1000 * percentile(latencies, 50), 1),
        "p95_ms": round(1000 * percentile(latencies, 95), 1),
        "req_per_s": round(rate, 1),
        "concurrency_over_throughput_ms": round(1000 * concurrency / rate, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", type=Path, required=True, help="adapter dir (registry vNNNN)")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--requests", type=int, default=160, help="requests per level")
    parser.add_argument(
        "--precision", default="auto,fp32", help="comma list; fp32 was the default before #11"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not (args.adapter / "adapter_config.json").is_file():
        parser.error(f"{args.adapter} is not an adapter directory (no adapter_config.json)")

    from router import HybridClient
    from router.devtools.demo import INTENT_SYSTEM, _pools
    from router.ledger import Ledger
    from router.policy import policy_from_dict

    texts = [r["text"] for r in _pools(0)[1]]
    levels = [int(c) for c in args.concurrency.split(",")]
    home = Path(tempfile.mkdtemp(prefix="hg-latency-"))
    atexit.register(shutil.rmtree, home, True)
    report: dict = {"adapter": str(args.adapter), "precisions": {}}
    for precision in [p.strip() for p in args.precision.split(",") if p.strip()]:
        policy = policy_from_dict(
            {
                "name": "bench",
                "mode": "local",
                "cache": {"enabled": False},
                "shadow": {"rate": 0.0},
                "local": {"precision": precision, "adapter": str(args.adapter)},
            }
        )
        ledger = Ledger(home / f"ledger-{precision}.sqlite")
        rows = report["precisions"][precision] = []
        with HybridClient(policy=policy, ledger=ledger) as client:
            _level(client, texts[:8], INTENT_SYSTEM, 4)  # load the model, warm up
            start = 8
            for n in levels:  # the same texts at every precision
                row = _level(client, texts[start : start + args.requests], INTENT_SYSTEM, n)
                start += args.requests
                rows.append(row)
                if not args.json:
                    print(precision, json.dumps(row), flush=True)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
