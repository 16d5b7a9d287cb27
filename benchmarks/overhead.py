"""Gateway overhead: HybridClient vs bare calls to the same replay server.

Two anchors: a bare ``litellm.completion`` (what the cloud backend cost before
``cloud.transport: auto``) and a bare ``httpx`` POST of the same request (the protocol the
default OpenAI-protocol transport speaks); "added" is measured over the httpx anchor.

Both run in this process, interleaved request by request (so drift hits both equally), against the
replay cloud on loopback with zero injected latency. The difference of the medians is what
hybridgate adds per request: validation, routing decision, pricing, response building and the
synchronous SQLite ledger write. The ledger write alone is timed separately.

    python benchmarks/overhead.py --requests 300
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on the last line"
    )
    args = parser.parse_args()

    import litellm

    from router import HybridClient
    from router._gateway.retry import RetryConfig
    from router.devtools.replay import ReplayCloud
    from router.ledger import Ledger, LedgerEntry
    from router.policy import policy_from_dict

    question = "What is the capital of France?"
    messages = [{"role": "user", "content": question}]
    home = Path(tempfile.mkdtemp(prefix="hg-overhead-"))
    atexit.register(shutil.rmtree, home, True)
    with ReplayCloud({question: "Paris."}) as cloud:
        policy = policy_from_dict(
            {
                "mode": "cloud",
                "cloud": {"model": "gpt-4o-mini", "api_base": cloud.base_url},
                "cache": {"enabled": False},
            }
        )
        client = HybridClient(
            policy=policy, ledger=Ledger(home / "ledger.sqlite"), retry=RetryConfig(max_retries=0)
        )

        def bare() -> None:
            litellm.completion(
                model="gpt-4o-mini",
                messages=messages,
                api_base=cloud.base_url,
                api_key="sk-no-key",
                temperature=0,
                num_retries=0,
                max_retries=0,
            )

        def gateway() -> None:
            client.chat.completions.create(messages=messages, temperature=0)

        import httpx

        pool = httpx.Client()

        def bare_http() -> None:
            r = pool.post(
                f"{cloud.base_url}/chat/completions",
                json={"model": "gpt-4o-mini", "messages": messages, "temperature": 0},
                headers={"Authorization": "Bearer sk-no-key"},
            )
            json.loads(r.content)

        for _ in range(20):  # warm-up: imports, connection pools, SQLite pages
            bare()
            bare_http()
            gateway()
        times: dict = {bare: [], bare_http: [], gateway: []}
        for i in range(args.requests):
            order = (bare, bare_http, gateway) if i % 2 == 0 else (gateway, bare_http, bare)
            for fn in order:
                t0 = time.perf_counter()
                fn()
                times[fn].append((time.perf_counter() - t0) * 1000)
        t_bare, t_http, t_gw = times[bare], times[bare_http], times[gateway]
        client.close()
        pool.close()

    ledger = Ledger(home / "writes.sqlite")
    t_write: list[float] = []
    for i in range(2000):
        entry = LedgerEntry(
            request_id=f"r{i}",
            ts=time.time(),
            route="cloud",
            model="gpt-4o-mini",
            prompt_tokens=20,
            completion_tokens=5,
            cost_usd=1e-5,
            baseline_cost_usd=1e-5,
            messages=messages,
            answer="Paris.",
        )
        t0 = time.perf_counter()
        ledger.record(entry)
        t_write.append((time.perf_counter() - t0) * 1000)
    ledger.close()

    result = {
        "requests_each": args.requests,
        "bare_litellm_p50_ms": statistics.median(t_bare),
        "bare_litellm_p99_ms": pct(t_bare, 0.99),
        "bare_httpx_p50_ms": statistics.median(t_http),
        "bare_httpx_p99_ms": pct(t_http, 0.99),
        "hybridclient_p50_ms": statistics.median(t_gw),
        "hybridclient_p99_ms": pct(t_gw, 0.99),
        "added_p50_ms": statistics.median(t_gw) - statistics.median(t_http),
        "litellm_minus_httpx_p50_ms": statistics.median(t_bare) - statistics.median(t_http),
        "ledger_write_p50_ms": statistics.median(t_write),
        "ledger_write_p99_ms": pct(t_write, 0.99),
    }
    print(f"{'':24}{'p50 ms':>10}{'p99 ms':>10}")
    print(
        f"{'bare litellm.completion':24}{result['bare_litellm_p50_ms']:>10.2f}{result['bare_litellm_p99_ms']:>10.2f}"
    )
    print(
        f"{'bare httpx POST':24}{result['bare_httpx_p50_ms']:>10.2f}{result['bare_httpx_p99_ms']:>10.2f}"
    )
    print(
        f"{'HybridClient':24}{result['hybridclient_p50_ms']:>10.2f}{result['hybridclient_p99_ms']:>10.2f}"
    )
    print(
        f"{'ledger write (alone)':24}{result['ledger_write_p50_ms']:>10.3f}{result['ledger_write_p99_ms']:>10.3f}"
    )
    print(
        f"added by the gateway over bare httpx at p50: {result['added_p50_ms']:.2f} ms; litellm "
        f"costs {result['litellm_minus_httpx_p50_ms']:.2f} ms more than httpx "
        f"({args.requests} requests each, interleaved)"
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
