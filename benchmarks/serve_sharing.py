"""Four app processes through one ``hybridgate serve`` vs four in-process ``HybridClient``s.

The batching win of a server: in-process, each app worker loads its own local model and runs its
own batcher, so four workers never batch together; through one server, one model serves them
all. Both set-ups send the same local-only requests (policy ``mode: local``, cache off), each app
with ``--threads`` callers at once. Reported: total peak RSS (VmHWM summed over every process)
and local completion tokens per second over the whole run.

    python benchmarks/serve_sharing.py --apps 4 --threads 8 --requests 48 --max-tokens 24
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "help, lost my card",
    "How long does it take for deliver to the US?",
    "I transfered my balance a while back.  Why doesn't my account reflect this?",
    "Can I change my PIN at an ATM?",
]


def _peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def _app(args: argparse.Namespace) -> None:
    """One app process: ``--requests`` calls from ``--threads`` threads; prints one JSON line."""
    if args.url:
        import openai

        client = openai.OpenAI(base_url=args.url, api_key="x", max_retries=0, timeout=600)
        create = client.chat.completions.create
    else:
        from router import HybridClient
        from router.policy import policy_from_dict

        policy = policy_from_dict({"mode": "local", "cache": {"enabled": False}})
        hybrid = HybridClient(policy=policy, ledger=Path(args.work) / f"{os.getpid()}.sqlite")
        hybrid.gateway.local()  # load before the clock starts, like a warm app worker
        create = hybrid.chat.completions.create
    print("ready", flush=True)
    sys.stdin.readline()  # all apps start together

    def one(i: int) -> int:
        reply = create(
            model="hybridgate/local" if args.url else None,
            messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            max_tokens=args.max_tokens,
            temperature=0,
        )
        return reply.usage.completion_tokens

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        tokens = sum(pool.map(one, range(args.requests)))
    wall = time.perf_counter() - t0
    print(json.dumps({"tokens": tokens, "wall_s": wall, "rss_gib": _peak_rss_gib()}), flush=True)


def _run_apps(args: argparse.Namespace, url: str | None, work: str) -> list[dict]:
    cmd = [
        sys.executable,
        __file__,
        "--role",
        "app",
        "--work",
        work,
        "--threads",
        str(args.threads),
        "--requests",
        str(args.requests),
        "--max-tokens",
        str(args.max_tokens),
    ]
    if url:
        cmd += ["--url", url]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    apps = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(args.apps)
    ]
    for app in apps:
        assert app.stdout.readline().strip() == "ready"
    for app in apps:
        app.stdin.write("go\n")
        app.stdin.flush()
    out = [json.loads(app.stdout.readline()) for app in apps]
    for app in apps:
        app.wait(timeout=60)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--role", default="bench")
    ap.add_argument("--apps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--requests", type=int, default=48, help="per app")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--url")
    ap.add_argument("--work")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.role == "app":
        _app(args)
        return

    from benchmarks.serve_overhead import _free_port, _hybridgate, _wait

    work = tempfile.mkdtemp(prefix="serve-sharing-")
    atexit.register(shutil.rmtree, work, True)
    inproc = _run_apps(args, None, work)

    port = _free_port()
    policy = Path(work) / "policy.yaml"
    policy.write_text(json.dumps({"mode": "local", "cache": {"enabled": False}}))
    server = subprocess.Popen(
        [
            *_hybridgate(),
            "serve",
            "--port",
            str(port),
            "--policy",
            str(policy),
            "--ledger",
            str(Path(work) / "server.sqlite"),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        _wait(f"http://127.0.0.1:{port}/readyz", server, timeout=600)
        served = _run_apps(args, f"http://127.0.0.1:{port}/v1", work)
        status = Path(f"/proc/{server.pid}/status").read_text()
        server_rss = int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1])
        server_rss /= 1024**2
    finally:
        server.terminate()
        server.wait(timeout=120)

    def summary(rows: list[dict], extra_rss: float = 0.0) -> dict:
        wall = max(r["wall_s"] for r in rows)
        return {
            "total_rss_gib": sum(r["rss_gib"] for r in rows) + extra_rss,
            "tokens": sum(r["tokens"] for r in rows),
            "tok_per_s": sum(r["tokens"] for r in rows) / wall,
            "wall_s": wall,
        }

    result = {
        "in_process": summary(inproc),
        "one_server": summary(served, server_rss),
        "server_rss_gib": server_rss,
        "apps": args.apps,
        "threads": args.threads,
        "requests_per_app": args.requests,
        "max_tokens": args.max_tokens,
    }
    a, b = result["in_process"], result["one_server"]
    print(
        f"{args.apps} apps x {args.threads} threads x {args.requests} requests, "
        f"max_tokens {args.max_tokens}, local only"
    )
    print(f"{'':22}{'total RSS GiB':>14}{'tok/s':>9}{'wall s':>9}")
    print(
        f"{'in-process clients':22}{a['total_rss_gib']:>14.2f}{a['tok_per_s']:>9.1f}{a['wall_s']:>9.1f}"
    )
    print(
        f"{'one hybridgate serve':22}{b['total_rss_gib']:>14.2f}{b['tok_per_s']:>9.1f}{b['wall_s']:>9.1f}"
    )
    print(
        f"RSS {b['total_rss_gib'] / a['total_rss_gib']:.2f}x, tok/s {b['tok_per_s'] / a['tok_per_s']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
