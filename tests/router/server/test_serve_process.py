"""``hybridgate serve`` as its users run it: a process, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from router.devtools.replay import ReplayCloud
from router.ledger import Ledger

MODEL = "gpt-4-1106-preview"
ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_in_flight_requests_and_flushes_the_ledger(tmp_path) -> None:
    with ReplayCloud({"slow question": "slow answer"}, model=MODEL, latency_ms=1500) as cloud:
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            json.dumps(
                {
                    "mode": "cloud",
                    "cloud": {"model": MODEL, "api_base": cloud.base_url, "max_retries": 0},
                    "cache": {"enabled": False},
                }
            )
        )
        ledger, port = tmp_path / "ledger.sqlite", _free_port()
        env = {**os.environ, "HYBRIDGATE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "router.cli",
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
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
                time.sleep(0.1)
            got: dict = {}

            def ask() -> None:
                body = {"messages": [{"role": "user", "content": "slow question"}]}
                got["response"] = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)

            caller = threading.Thread(target=ask)
            caller.start()
            time.sleep(0.5)  # the request is upstream now
            proc.send_signal(signal.SIGTERM)
            caller.join(timeout=30)
            # uvicorn re-raises the signal once its graceful shutdown is done
            assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        finally:
            if proc.poll() is None:
                proc.kill()
        response = got["response"]
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "slow answer"
        rows = Ledger(ledger, read_only=True).rows()
        assert [(r.route, r.error_type) for r in rows] == [("cloud", None)]
