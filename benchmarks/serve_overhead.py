"""What ``hybridgate serve`` adds to a request, next to the LiteLLM proxy, in the same run.

Three paths to the same upstream (the replay cloud, its own process, TCP_NODELAY), each
called with the ``openai`` SDK, interleaved request by request so machine noise hits all alike:

- direct:      app -> upstream
- hybridgate:  app -> ``hybridgate serve`` (cloud policy, cache off) -> upstream
- litellm:     app -> ``litellm --config`` proxy 1.106.2 (one worker, no database, master key)
               -> upstream (skipped when no ``litellm`` proxy executable is given or found)

Reported: p50/p99 of each path and the p50/p99 each proxy adds over direct. Every server runs in
its own process; the server's ledger is checked afterwards: rows == requests.

    python benchmarks/serve_overhead.py --requests 300 \
        --litellm /path/to/venv-with-litellm[proxy]/bin/litellm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.ledger.reports import percentile  # noqa: E402

MODEL = "gpt-4-1106-preview"
PROMPTS = [  # Banking77 texts the replay cloud has answers for
    "help, lost my card",
    "How long does it take for deliver to the US?",
    "I transfered my balance a while back.  Why doesn't my account reflect this?",
]
MASTER_KEY = "sk-bench-master-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before serving")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


def stop_all(procs: list[subprocess.Popen], timeout: float = 30.0) -> None:
    """SIGTERM every process still running, then wait (kill what does not stop in time)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def _hybridgate() -> list[str]:
    return [sys.executable, "-m", "router.cli"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="timed requests per path")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--litellm", default=shutil.which("litellm"), help="litellm proxy executable")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="serve-overhead-"))
    procs: list[subprocess.Popen] = []
    env = {**os.environ, "HYBRIDGATE_HOME": str(work / "home"), "PYTHONPATH": str(ROOT)}
    try:
        up_port, hg_port, ll_port = _free_port(), _free_port(), _free_port()
        upstream = f"http://127.0.0.1:{up_port}/v1"
        procs.append(
            subprocess.Popen(
                [*_hybridgate(), "replay-cloud", "--port", str(up_port)],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
        _wait(f"{upstream}/models", procs[-1])

        policy = work / "policy.yaml"
        policy.write_text(
            json.dumps(
                {
                    "mode": "cloud",
                    "cloud": {"model": MODEL, "api_base": upstream, "max_retries": 0},
                    "cache": {"enabled": False},
                    "shadow": {"rate": 0},
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
                    str(hg_port),
                    "--policy",
                    str(policy),
                    "--ledger",
                    str(ledger),
                ],
                env=env,
            )
        )
        _wait(f"http://127.0.0.1:{hg_port}/healthz", procs[-1])

        paths = {
            "direct": openai.OpenAI(base_url=upstream, api_key="x", max_retries=0),
            "hybridgate": openai.OpenAI(
                base_url=f"http://127.0.0.1:{hg_port}/v1", api_key="x", max_retries=0
            ),
        }
        if args.litellm:
            config = work / "litellm.yaml"
            config.write_text(
                "model_list:\n"
                f"  - model_name: {MODEL}\n"
                "    litellm_params:\n"
                f"      model: openai/{MODEL}\n"
                f"      api_base: {upstream}\n"
                "      api_key: sk-upstream\n"
                "general_settings:\n"
                f"  master_key: {MASTER_KEY}\n"
                "litellm_settings:\n"
                "  num_retries: 0\n"
            )
            procs.append(
                subprocess.Popen(
                    [
                        args.litellm,
                        "--config",
                        str(config),
                        "--port",
                        str(ll_port),
                        "--num_workers",
                        "1",
                    ],
                    env={**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            _wait(f"http://127.0.0.1:{ll_port}/health/liveliness", procs[-1], timeout=300)
            paths["litellm"] = openai.OpenAI(
                base_url=f"http://127.0.0.1:{ll_port}/v1", api_key=MASTER_KEY, max_retries=0
            )
        else:
            print("litellm proxy: not found (pass --litellm PATH); measuring without the anchor")

        times: dict[str, list[float]] = {name: [] for name in paths}
        for i in range(args.warmup + args.requests):
            messages = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
            for name, client in paths.items():
                t0 = time.perf_counter()
                reply = client.chat.completions.create(model=MODEL, messages=messages)
                elapsed = (time.perf_counter() - t0) * 1000
                assert reply.choices[0].message.content, name
                if i >= args.warmup:
                    times[name].append(elapsed)

        figures: dict[str, dict[str, float]] = {}
        direct = times["direct"]
        for name, values in times.items():
            row = {"p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99)}
            if name != "direct":
                row["added_p50_ms"] = row["p50_ms"] - percentile(direct, 50)
                row["added_p99_ms"] = row["p99_ms"] - percentile(direct, 99)
            figures[name] = row
        procs[1].terminate()  # SIGTERM: graceful shutdown flushes the ledger
        procs[1].wait(timeout=60)
        from router.ledger import Ledger

        rows = Ledger(ledger, read_only=True).count()
        sent = args.warmup + args.requests
        print(f"{args.requests} interleaved requests per path (+{args.warmup} warm-up), openai SDK")
        print(f"{'path':<12}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}")
        for name, row in figures.items():
            added = (
                f"{row['added_p50_ms']:>11.2f}{row['added_p99_ms']:>11.2f}"
                if "added_p50_ms" in row
                else f"{'-':>11}{'-':>11}"
            )
            print(f"{name:<12}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{added}")
        if "litellm" in figures:
            ratio = figures["litellm"]["added_p50_ms"] / max(
                figures["hybridgate"]["added_p50_ms"], 1e-9
            )
            print(f"LiteLLM proxy adds {ratio:.1f}x what hybridgate serve adds (p50)")
        print(f"hybridgate ledger rows: {rows} for {sent} requests")
        if args.json:
            args.json.write_text(
                json.dumps({"figures": figures, "rows": rows, "sent": sent}, indent=2)
            )
        assert rows == sent, "rows != requests"
    finally:
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
