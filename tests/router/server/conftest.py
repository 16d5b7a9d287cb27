"""A real ``hybridgate serve`` on a loopback port (uvicorn in a thread) over the replay cloud."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from router.devtools.replay import ReplayCloud

MODEL = "gpt-4-1106-preview"
ANSWERS = {"What is 2+2?": "4", "Tell me a story.": "Once upon a time there was a small model."}


class Running:
    def __init__(self, server: Any, uv: Any, thread: threading.Thread) -> None:
        self.server, self.uv, self.thread = server, uv, thread
        port = uv.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def stop(self) -> None:
        self.uv.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def replay() -> Iterator[ReplayCloud]:
    with ReplayCloud(ANSWERS, model=MODEL) as cloud:
        yield cloud


@pytest.fixture
def start_server(tmp_path, replay) -> Iterator[Callable[..., Running]]:
    import uvicorn

    from router.client import HybridClient
    from router.policy.io import policy_from_dict
    from router.server.app import GatewayServer

    started: list[Running] = []

    def start(
        policy: dict | None = None, *, keys: Any = None, local: Any = None, tracing: Any = None
    ) -> Running:
        spec = {
            "mode": "cloud",
            "cloud": {"model": MODEL, "api_base": replay.base_url, "max_retries": 0},
            "cache": {"enabled": False},
        }
        for section, values in (policy or {}).items():
            spec[section] = (
                {**spec.get(section, {}), **values} if isinstance(values, dict) else values
            )
        client = HybridClient(
            policy=policy_from_dict(spec), ledger=tmp_path / "ledger.sqlite", local=local
        )
        server = GatewayServer(client, keys=keys, tracing=tracing)
        config = uvicorn.Config(server.app, host="127.0.0.1", port=0, log_level="warning")
        uv = uvicorn.Server(config)
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not uv.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        running = Running(server, uv, thread)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
