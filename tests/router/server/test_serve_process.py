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


def _start(tmp_path: Path, cloud: ReplayCloud, *extra: str) -> tuple[subprocess.Popen, str, Path]:
    """``hybridgate serve`` over ``cloud`` in a process; returns it once /healthz answers."""
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
    cmd = [sys.executable, "-m", "router.cli", "serve", "--port", str(port)]
    cmd += ["--policy", str(policy), "--ledger", str(ledger), *extra]
    proc = subprocess.Popen(cmd, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base, ledger
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError("server did not start")
        time.sleep(0.1)


def _workers(pid: int) -> list[int]:
    """uvicorn's worker processes under ``pid`` (from /proc; not multiprocessing's tracker)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
                out.append(int(entry.name))
    return out


def test_sigterm_finishes_in_flight_requests_and_flushes_the_ledger(tmp_path) -> None:
    with ReplayCloud({"slow question": "slow answer"}, model=MODEL, latency_ms=1500) as cloud:
        proc, base, ledger = _start(tmp_path, cloud)
        try:
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


def test_workers_share_one_port_and_one_ledger(tmp_path) -> None:
    """``--workers 2``: two worker processes on one port write one ledger; SIGTERM stops both."""
    if not Path("/proc/self/stat").exists():
        import pytest

        pytest.skip("needs /proc to see the worker processes")
    n = 24
    answers = {f"question {i}": f"answer {i}" for i in range(n)}
    with ReplayCloud(answers, model=MODEL, latency_ms=200) as cloud:
        proc, base, ledger = _start(tmp_path, cloud, "--workers", "2")
        try:
            workers = _workers(proc.pid)
            deadline = time.monotonic() + 60
            while len(workers) < 2 and time.monotonic() < deadline:  # spawned after /healthz
                time.sleep(0.1)
                workers = _workers(proc.pid)
            assert len(workers) == 2
            statuses: list[int] = []
            ids: list[str] = []

            def ask(i: int) -> None:
                body = {"messages": [{"role": "user", "content": f"question {i}"}]}
                with httpx.Client(timeout=30) as http:  # a connection each: both workers accept
                    r = http.post(f"{base}/v1/chat/completions", json=body)
                statuses.append(r.status_code)
                ids.append(r.headers["x-request-id"])
                assert r.json()["choices"][0]["message"]["content"] == f"answer {i}"

            callers = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
            for t in callers:
                t.start()
            for t in callers:
                t.join(timeout=60)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
            assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert statuses == [200] * n
    rows = Ledger(ledger, read_only=True).rows()
    assert sorted(r.request_id for r in rows) == sorted(ids)  # every request, once
    assert {(r.route, r.error_type) for r in rows} == {("cloud", None)}
