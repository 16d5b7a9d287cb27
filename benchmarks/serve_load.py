"""``hybridgate serve`` under load: many concurrent clients, half streaming, half not.

The server runs in its own process over the replay cloud (its own process too). ``--mode cloud``
sends everything upstream; ``--mode local`` answers every request with the real local model
(forced local: a full queue is a 429 with Retry-After, never the cloud); ``--mode cascade`` is
the local-heavy policy that may use the cloud: every request tries local first, low confidence
escalates, and a full local queue sends the overflow to the cloud. In cloud mode the same load
is also sent straight at the upstream, as the anchor. Clients do not wait out ``Retry-After``
(a worst case). Reported: throughput, p50/p99 latency of answered requests (and p50 of refused),
errors by status, rows == requests, where the ledger says each request went, and the server's
peak RSS (VmHWM).

    python benchmarks/serve_load.py --clients 500 --requests 2000 --mode cloud
    python benchmarks/serve_load.py --clients 64 --requests 256 --mode local --max-tokens 16
    python benchmarks/serve_load.py --clients 500 --requests 2000 --mode cascade --max-tokens 16
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serve_overhead import MODEL, PROMPTS, _free_port, _hybridgate, _wait, stop_all  # noqa: E402
from router.ledger.reports import percentile  # noqa: E402
from router.server.metrics import reason_kind  # noqa: E402


def _peak_rss_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


async def _load(base: str, clients: int, total: int, max_tokens: int) -> dict:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    statuses: collections.Counter = collections.Counter()
    latencies: list[float] = []  # answered (200, complete)
    refused: list[float] = []  # answered with an error status (e.g. 429 for a full queue)
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=300) as http:

        async def one(i: int) -> None:
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            t0 = time.perf_counter()
            try:
                if i % 2:
                    body["stream"] = True
                    async with http.stream("POST", "/chat/completions", json=body) as r:
                        text = b"".join([c async for c in r.aiter_bytes()])
                        ok = r.status_code == 200 and text.rstrip().endswith(b"[DONE]")
                        statuses[r.status_code if ok or r.status_code != 200 else "cut"] += 1
                else:
                    r = await http.post("/chat/completions", json=body)
                    statuses[r.status_code] += 1
                    ok = r.status_code == 200
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
                return
            (latencies if ok else refused).append((time.perf_counter() - t0) * 1000)

        async def worker() -> None:
            while not queue.empty():
                await one(queue.get_nowait())

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {
        "requests": total,
        "clients": clients,
        "wall_s": wall,
        "req_per_s": total / wall,
        "answered": len(latencies),
        "p50_ms": percentile(latencies, 50) if latencies else None,
        "p99_ms": percentile(latencies, 99) if latencies else None,
        "refused_p50_ms": percentile(refused, 50) if refused else None,
        "statuses": {str(k): v for k, v in statuses.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--mode", choices=("cloud", "local", "cascade"), default="cloud")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument(
        "--max-queue-wait",
        type=float,
        default=10.0,
        help="local.max_queue_wait_s for the server (0: none, the count-only queue)",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.max_queue_wait = args.max_queue_wait or None

    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the user's data home: its converted model
    procs: list[subprocess.Popen] = []
    try:
        up, port = _free_port(), _free_port()
        upstream = f"http://127.0.0.1:{up}/v1"
        procs.append(
            subprocess.Popen(
                [*_hybridgate(), "replay-cloud", "--port", str(up)],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
        _wait(f"{upstream}/models", procs[-1])
        policy = work / "policy.yaml"
        policy.write_text(
            json.dumps(
                {
                    "mode": args.mode,
                    "cloud": {"model": MODEL, "api_base": upstream, "max_retries": 0},
                    "cache": {"enabled": False},
                    "shadow": {"rate": 0},
                    "local": {"max_queue_wait_s": args.max_queue_wait},
                }
            )
        )
        ledger = work / "ledger.sqlite"
        procs.append(
            subprocess.Popen(
                [
                    *_hybridgate(),
                    "serve",
                    "--port",
                    str(port),
                    "--policy",
                    str(policy),
                    "--ledger",
                    str(ledger),
                ],
                env=env,
            )
        )
        _wait(f"http://127.0.0.1:{port}/readyz", procs[-1], timeout=600)  # 503 while loading
        result = asyncio.run(
            _load(f"http://127.0.0.1:{port}/v1", args.clients, args.requests, args.max_tokens)
        )
        if args.mode == "cloud":  # the anchor: the same load straight at the upstream
            result["direct"] = asyncio.run(
                _load(upstream, args.clients, args.requests, args.max_tokens)
            )
        result["server_peak_rss_gib"] = _peak_rss_gib(procs[1].pid)
        procs[1].terminate()
        procs[1].wait(timeout=120)
        from router.ledger import Ledger

        rows = Ledger(ledger, read_only=True).rows()
        result["ledger_rows"] = len(rows)
        where = collections.Counter(
            f"{r.route}:{reason_kind(r.reason)}" + (f":{r.error_type}" if r.error_type else "")
            for r in rows
        )
        result["ledger_routes"] = dict(where.most_common())
        result["mode"] = args.mode
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        stop_all(procs, timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
