"""What the HTTP local tier (``local.api_base``) adds over the in-process model, same run.

Two gateways answer the same requests with the same weights (SmolLM2-135M, the policy's
precision), interleaved request by request so machine noise hits both alike:

- in-process:  HybridClient -> DynamicBatcher -> model (this process)
- engine:      HybridClient -> HTTP (logprobs on) -> ``hybridgate serve`` (local mode, its own
               process, the same model) -> model

Both run one request at a time (latency, not throughput; the engine's batching is what a GPU
host adds). Reported: p50/p99 latency of each, what the HTTP tier adds, the ratio, and whether
the two answered the same text and confidence (greedy, same weights). Ledger rows == requests on
every ledger is checked.

    python benchmarks/local_engine_overhead.py --requests 60
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serve_overhead import _free_port, _hybridgate, _wait, stop_all  # noqa: E402
from router.ledger.reports import percentile  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Name a primary colour.",
    "Say hello in Spanish.",
    "What is 3 plus 4?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=60, help="timed requests per path")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from router.client import HybridClient
    from router.ledger import Ledger
    from router.policy.io import policy_from_dict

    work = Path(tempfile.mkdtemp(prefix="engine-overhead-"))
    atexit.register(shutil.rmtree, work, True)  # ~0.5 GB: the converted model in its home
    env = {**os.environ, "HYBRIDGATE_HOME": str(work / "home"), "PYTHONPATH": str(ROOT)}
    os.environ["HYBRIDGATE_HOME"] = env["HYBRIDGATE_HOME"]
    base = {"cache": {"enabled": False}, "shadow": {"rate": 0}, "mode": "local"}
    policy = work / "engine-policy.yaml"
    policy.write_text(json.dumps({**base, "local": {"adapter": None}}))
    port = _free_port()
    engine_ledger = work / "engine.sqlite"
    proc = subprocess.Popen(
        [*_hybridgate(), "serve", "--port", str(port), "--policy", str(policy)]
        + ["--ledger", str(engine_ledger)],
        env=env,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/readyz", proc, timeout=600)  # 503 while loading
        inproc = HybridClient(
            policy=policy_from_dict({**base, "local": {"adapter": None}}),
            ledger=work / "inproc.sqlite",
        )
        engine = HybridClient(
            policy=policy_from_dict(
                {**base, "local": {"adapter": None, "api_base": f"http://127.0.0.1:{port}/v1"}}
            ),
            ledger=work / "outer.sqlite",
        )
        paths = {"in-process": inproc, "engine": engine}
        times: dict[str, list[float]] = {name: [] for name in paths}
        same_text = same_conf = 0
        for i in range(args.warmup + args.requests):
            messages = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
            replies = {}
            for name, client in paths.items():
                t0 = time.perf_counter()
                replies[name] = client.chat.completions.create(
                    messages=messages, temperature=0, max_tokens=args.max_tokens
                )
                if i >= args.warmup:
                    times[name].append((time.perf_counter() - t0) * 1000)
            a, b = replies["in-process"], replies["engine"]
            assert a.route.route == b.route.route == "local"
            if i >= args.warmup:
                same_text += a.choices[0].message.content == b.choices[0].message.content
                conf_a = a.route.confidence or 0.0
                same_conf += abs(conf_a - (b.route.confidence or 0.0)) < 1e-3
        n = args.warmup + args.requests
        for client in paths.values():
            client.close()
    finally:
        stop_all([proc])
    for path, want in ((work / "inproc.sqlite", n), (work / "outer.sqlite", n)):
        with Ledger(path) as ledger:
            assert len(ledger.rows()) == want, path
    with Ledger(engine_ledger) as ledger:
        assert len(ledger.rows()) == n, "engine ledger"

    fig = {
        name: {"p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99)}
        for name, v in times.items()
    }
    fig["added_p50_ms"] = fig["engine"]["p50_ms"] - fig["in-process"]["p50_ms"]
    fig["ratio_p50"] = fig["engine"]["p50_ms"] / fig["in-process"]["p50_ms"]
    fig["same_text"] = same_text / args.requests
    fig["same_confidence"] = same_conf / args.requests
    print(f"{'path':<12} {'p50 ms':>9} {'p99 ms':>9}")
    for name in paths:
        print(f"{name:<12} {fig[name]['p50_ms']:>9.1f} {fig[name]['p99_ms']:>9.1f}")
    print(
        f"HTTP local tier adds {fig['added_p50_ms']:.1f} ms p50 ({fig['ratio_p50']:.3f}x); "
        f"same answer {fig['same_text']:.0%}, same confidence {fig['same_confidence']:.0%} "
        f"over {args.requests} requests ({args.max_tokens} tokens max)"
    )
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2))


if __name__ == "__main__":
    main()
