"""Issue 9's gateway defects, each reproduced as a user would meet it and pinned down.

Wire-level items talk real HTTP: to the replay cloud, or to ``ScriptedServer`` below, a raw
socket server that can misbehave in ways a well-formed server cannot (a close-delimited stream
cut mid-answer, a 401 that quotes the key, a body without ``usage``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable

import openai
import pytest

from router import AsyncHybridClient, HybridClient
from router._gateway.retry import RetryConfig
from router._transports.base import MockTransport
from router.devtools.replay import ReplayCloud
from router.errors import InvalidRequest, LocalModelError, Overloaded
from router.ledger import Ledger, LedgerEntry
from router.policy import policy_from_dict
from router.types import BackendResult

MODEL = "gpt-4o-mini"
Q = "What is the capital of France?"
CLOUD_ANSWER = "The capital of France is Paris."


@pytest.fixture()
def replay():
    with ReplayCloud({Q: CLOUD_ANSWER}, default_answer="cloud says hi") as cloud:
        yield cloud


def policy(base_url: str, mode: str = "cloud", **sections):
    data = {
        "name": "t",
        "mode": mode,
        "cloud": {"model": MODEL, "api_base": base_url, "timeout_s": 5, "connect_timeout_s": 1},
        "cache": {"enabled": False},
        "shadow": {"rate": 0.0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return policy_from_dict(data)


def client(pol, tmp_path, *, local=None, cls=HybridClient, retries=0, max_wait=0.05, **kw):
    return cls(
        policy=pol,
        ledger=Ledger(tmp_path / "ledger.sqlite"),
        local=local,
        retry=RetryConfig(max_retries=retries, base_s=0.01, max_s=max_wait),
        seed=0,
        **kw,
    )


def ask(content: str = Q, **kw):
    return {"messages": [{"role": "user", "content": content}], "temperature": 0, **kw}


def local_says(text: str = "Paris.", version: str | None = "v0001"):
    class Local(MockTransport):
        adapter_version = version

    return Local(
        lambda r: BackendResult(
            text=text,
            prompt_tokens=5,
            completion_tokens=2,
            model="smollm2",
            compute_seconds=0.01,
            token_logprobs=[-0.01, -0.01],
            adapter_version=version,
        ),
        name="local",
    )


def failing_local(exc: Exception):
    def boom(request):
        raise exc

    return MockTransport(boom, name="local")


# -- a server that misbehaves on the wire ------------------------------------------------------


class ScriptedServer:
    """Accepts HTTP on loopback and answers each request with ``respond(body, headers, conn)``."""

    def __init__(self, respond: Callable[[dict, dict, socket.socket], None]) -> None:
        self.respond = respond
        self.seen: list[tuple[dict, dict]] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                got = conn.recv(65536)
                if not got:
                    return
                data += got
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                body += conn.recv(65536)
            payload = json.loads(body or b"{}")
            self.seen.append((payload, headers))
            self.respond(payload, headers, conn)


def sse(text: str, *, finish: str | None = None) -> bytes:
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def completion_body(content: str, *, usage: tuple[int, int] | None) -> dict:
    """A chat.completion body; ``usage=None`` leaves the usage block out, as some servers do."""
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }
    if usage is not None:
        body["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        }
    return body


def json_response(conn: socket.socket, status: int, body: dict) -> None:
    raw = json.dumps(body).encode()
    reason = {200: "OK", 401: "Unauthorized"}.get(status, "Error")
    conn.sendall(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n".encode()
        + raw
    )


# -- 1. a request pinned local never reaches the cloud -----------------------------------------

PINS = {
    "force_local_tag": (
        {"rules": {"force_local_tags": ["private"]}},
        "hybrid",
        {"kind": "private"},
    ),
    "metadata_route": ({}, "hybrid", {"route": "local"}),
    "mode_local": ({}, "local", {}),
    "spent_budget": ({"budget": {"daily_usd": 0.01, "on_exceeded": "local"}}, "route", {}),
}


@pytest.mark.parametrize("pin", sorted(PINS))
@pytest.mark.parametrize("failure", [Overloaded("queue full"), LocalModelError("bad adapter")])
def test_a_request_pinned_local_gets_the_local_error_and_never_reaches_the_cloud(
    replay, tmp_path, pin, failure
):
    sections, mode, metadata = PINS[pin]
    c = client(policy(replay.base_url, mode, **sections), tmp_path, local=failing_local(failure))
    if pin == "spent_budget":
        c.ledger.record(LedgerEntry(request_id="old", ts=time.time(), route="cloud", cost_usd=1.0))
    before = replay.requests_seen
    with pytest.raises(openai.InternalServerError) as raised:
        c.chat.completions.create(**ask(metadata=metadata))
    assert raised.value is not None and isinstance(raised.value, type(failure))
    assert replay.requests_seen == before  # the prompt did not leave the machine
    row = c.ledger.rows()[-1]
    assert (row.route, row.error_type) == ("local", type(failure).__name__)
    who = {
        "force_local_tag": "rule:forced_local(tag:private)",
        "metadata_route": "rule:forced_local(metadata.route)",
        "mode_local": "policy:local",
        "spent_budget": "budget:exhausted",
    }[pin]
    assert row.reason == who


async def test_async_pinned_local_failure_stays_local(replay, tmp_path):
    c = client(
        policy(replay.base_url, "local"),
        tmp_path,
        local=failing_local(Overloaded("full")),
        cls=AsyncHybridClient,
    )
    with pytest.raises(Overloaded):
        await c.chat.completions.create(**ask())
    assert replay.requests_seen == 0
    assert c.ledger.rows()[-1].reason == "policy:local"


def test_pinned_local_with_tools_stays_local(replay, tmp_path):
    c = client(policy(replay.base_url, "local"), tmp_path, local=local_says())
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    reply = c.chat.completions.create(**ask(tools=tools))
    assert reply.route.route == "local" and replay.requests_seen == 0


# -- 2. the cache is keyed by what produced the answer, looked up after the decision -----------


def test_a_local_answer_is_never_served_from_cache_to_a_request_forced_to_the_cloud(
    replay, tmp_path
):
    pol = policy(replay.base_url, "local", cache={"enabled": True})
    c = client(pol, tmp_path, local=local_says("small model says Paris"))
    assert c.chat.completions.create(**ask()).route.route == "local"
    forced = c.chat.completions.create(**ask(metadata={"route": "cloud"}))
    assert forced.route.route == "cloud"
    assert forced.choices[0].message.content == CLOUD_ANSWER
    # a mode: cloud client sharing the data dir (and so the cache) gets the cloud's answer too
    cloud_only = client(policy(replay.base_url, "cloud", cache={"enabled": True}), tmp_path)
    reply = cloud_only.chat.completions.create(**ask())
    assert reply.choices[0].message.content == CLOUD_ANSWER
    # ...and its answer, now cached, is a hit for the next cloud-routed request
    assert cloud_only.chat.completions.create(**ask()).route.reason == "cache_hit:cloud"


def test_a_fresh_gateway_after_a_promotion_does_not_replay_the_old_adapters_answers(
    replay, tmp_path
):
    # Before the promotion the gateway serves the base model (no adapter)...
    base = client(
        policy(replay.base_url, "local", cache={"enabled": True}),
        tmp_path,
        local=lambda: local_says("base model answer", None),
    )
    assert base.chat.completions.create(**ask()).choices[0].message.content == "base model answer"
    base.close()
    # ...then v0001 is promoted; a fresh gateway has not loaded its model yet when it looks up
    # the cache, and must already key by the adapter it will serve.
    v1 = tmp_path / "adapters" / "v0001"
    v1.mkdir(parents=True)
    new = client(
        policy(replay.base_url, "local", cache={"enabled": True}, local={"adapter": str(v1)}),
        tmp_path,
        local=lambda: local_says("v0001 answer", "v0001"),
    )
    reply = new.chat.completions.create(**ask())
    assert reply.choices[0].message.content == "v0001 answer" and reply.route.route == "local"


# -- 3. a stream cut before its finish chunk is an error, not a complete answer ----------------


def cut_after_two_chunks(body, headers, conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
    for piece in ("Hello", " wor"):
        conn.sendall(sse(piece))
        time.sleep(0.02)
    # close-delimited body: no finish_reason, no [DONE]; the socket just closes


@pytest.mark.parametrize("is_async", [False, True])
def test_a_stream_cut_before_its_finish_chunk_raises_and_is_not_cached(tmp_path, is_async):
    with ScriptedServer(cut_after_two_chunks) as server:
        pol = policy(server.base_url, "cloud", cache={"enabled": True})
        c = client(pol, tmp_path, cls=AsyncHybridClient if is_async else HybridClient)

        async def consume_async():
            return [x async for x in await c.chat.completions.create(**ask(stream=True))]

        def consume():
            if is_async:
                return asyncio.run(consume_async())
            return list(c.chat.completions.create(**ask(stream=True)))

        with pytest.raises(openai.APIConnectionError, match="finish chunk"):
            consume()
        row = c.ledger.rows()[-1]
        assert row.error_type == "CloudConnectionError" and row.route == "cloud"
        with pytest.raises(openai.APIConnectionError):  # asked again: not replayed from cache
            consume()
        assert len(server.seen) == 2


# -- 4. a locked ledger never throws away a paid answer ----------------------------------------


def test_a_locked_ledger_still_returns_the_paid_answer_and_the_row_lands(
    replay, tmp_path, monkeypatch
):
    from router.ledger import store as ledger_store

    monkeypatch.setattr(ledger_store, "BUSY_TIMEOUT_MS", 200)
    c = client(policy(replay.base_url), tmp_path)
    other = sqlite3.connect(tmp_path / "ledger.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    reply = c.chat.completions.create(**ask())
    assert reply.choices[0].message.content == CLOUD_ANSWER
    other.execute("ROLLBACK")
    other.close()
    c.close()
    with Ledger(tmp_path / "ledger.sqlite") as led:
        assert [r.request_id for r in led.rows()] == [reply.route.request_id]


# -- 5. a stream opened but never read still writes its row ------------------------------------


def test_a_stream_never_read_writes_its_row(replay, tmp_path):
    c = client(policy(replay.base_url), tmp_path)
    stream = c.chat.completions.create(**ask(stream=True))
    assert replay.requests_seen == 1  # opened eagerly, as openai's SDK does
    del stream
    gc.collect()
    rows = c.ledger.rows()
    assert len(rows) == 1 and rows[0].error_message == "stream closed before it was read"
    with c.chat.completions.create(**ask(stream=True)) as s2:  # closed by the context manager
        pass
    assert s2 is not None and c.ledger.count() == 2


async def test_an_async_stream_never_read_writes_its_row(replay, tmp_path):
    c = client(policy(replay.base_url), tmp_path, cls=AsyncHybridClient)
    stream = await c.chat.completions.create(**ask(stream=True))
    await stream.close()
    assert c.ledger.count() == 1


# -- 6 and 7. keys: the usual variable behind api_base; a quoted key is redacted ---------------


def test_api_base_uses_the_providers_usual_key_variable(tmp_path, monkeypatch):
    def ok(body, headers, conn):
        json_response(conn, 200, completion_body("hi", usage=(3, 1)))

    monkeypatch.setenv("OPENAI_API_KEY", "proxy-key-1234")
    with ScriptedServer(ok) as server:
        client(policy(server.base_url), tmp_path).chat.completions.create(**ask())
    assert server.seen[0][1]["authorization"] == "Bearer proxy-key-1234"


def test_a_key_quoted_by_the_provider_is_redacted_from_row_and_exception(tmp_path, monkeypatch):
    key = "plain-key-not-sk-shaped-42"

    def quote_key(body, headers, conn):
        given = headers.get("authorization", "").removeprefix("Bearer ")
        json_response(
            conn,
            401,
            {
                "error": {
                    "message": f"Incorrect API key provided: {given}.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )

    with ScriptedServer(quote_key) as server:
        c = client(policy(server.base_url), tmp_path, api_key=key)
        with pytest.raises(openai.AuthenticationError) as raised:
            c.chat.completions.create(**ask())
    err = raised.value
    text = f"{err} {err.args} {err.__cause__!r} {err.__context__!r}"
    assert key not in text and "[REDACTED]" in str(err)
    row = c.ledger.rows()[-1]
    assert key not in (row.error_message or "")


# -- 8 and 9. data files are private; store_content: false writes no answer text ---------------


def test_data_home_ledger_and_cache_are_private(replay, tmp_path, monkeypatch):
    home = tmp_path / "hg-home"
    monkeypatch.setenv("HYBRIDGATE_HOME", str(home))
    old = os.umask(0o022)
    try:
        c = HybridClient(
            policy=policy(replay.base_url, cache={"enabled": True}),
            retry=RetryConfig(max_retries=0),
        )
        c.chat.completions.create(**ask())
        c.close()
    finally:
        os.umask(old)
    assert home.stat().st_mode & 0o777 == 0o700
    for path in home.rglob("*"):
        want = 0o700 if path.is_dir() else 0o600
        assert path.stat().st_mode & 0o777 == want, path


def test_store_content_false_keeps_answer_text_out_of_every_file(replay, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HYBRIDGATE_HOME", str(home))
    pol = policy(replay.base_url, cache={"enabled": True})
    pol = policy_from_dict({**pol.to_dict(), "store_content": False})
    c = HybridClient(policy=pol, retry=RetryConfig(max_retries=0))
    c.chat.completions.create(**ask())
    c.close()
    for path in home.rglob("*"):
        if path.is_file():
            assert b"capital of France" not in path.read_bytes(), path


# -- 10. a lone surrogate is bad input ---------------------------------------------------------


def test_a_lone_surrogate_is_a_bad_request_with_no_cloud_call_and_one_row(replay, tmp_path):
    c = client(policy(replay.base_url), tmp_path, retries=3)
    with pytest.raises(InvalidRequest, match=r"messages\[0\]\.content.*surrogate") as raised:
        c.chat.completions.create(**ask("hi \ud800"))
    assert isinstance(raised.value, openai.BadRequestError)
    assert replay.requests_seen == 0
    assert [r.error_type for r in c.ledger.rows()] == ["InvalidRequest"]


# -- 11. timeout is a deadline for the whole call ----------------------------------------------


def test_timeout_is_a_deadline_for_the_whole_call_retries_included(replay, tmp_path):
    # A 429 asks us to wait 0.6 s; the retry then hangs. Per attempt, that is 0.6 s + a full
    # 1 s attempt; as a deadline, the retry only gets the 0.4 s that are left.
    replay.inject("429", retry_after=0.6)
    replay.inject("hang", times=10)
    c = client(policy(replay.base_url), tmp_path, retries=5, max_wait=1.0)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(**ask(timeout=1.0))
    took = time.monotonic() - t0
    assert took < 1.4, f"asked 1 s in all, took {took:.2f} s"
    assert c.ledger.rows()[-1].error_type == "CloudTimeout"


def test_the_policy_deadline_bounds_a_hanging_provider(replay, tmp_path):
    replay.inject("hang", times=10)
    pol = policy(
        replay.base_url, cloud={"timeout_s": 0.5, "connect_timeout_s": 0.5, "deadline_s": 1.2}
    )
    c = client(pol, tmp_path, retries=5)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(**ask())
    assert time.monotonic() - t0 < 1.8  # not 6 attempts x 0.5 s


# -- 12. a response without usage is priced from counted tokens --------------------------------


def test_a_response_without_usage_is_priced_from_counted_tokens(tmp_path):
    def no_usage(body, headers, conn):
        json_response(conn, 200, completion_body(CLOUD_ANSWER, usage=None))

    with ScriptedServer(no_usage) as server:
        c = client(policy(server.base_url), tmp_path)
        reply = c.chat.completions.create(**ask())
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    row = c.ledger.rows()[-1]
    assert row.cost_usd > 0 and row.baseline_cost_usd == pytest.approx(row.cost_usd)


# -- 13. a failed fallback is ledgered where it failed -----------------------------------------


def test_a_failed_fallback_is_ledgered_as_the_cloud_attempt_that_failed(replay, tmp_path):
    replay.inject("500", times=5)
    c = client(policy(replay.base_url, "cascade"), tmp_path, local=failing_local(Overloaded("x")))
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(**ask())
    row = c.ledger.rows()[-1]
    assert (row.route, row.reason, row.escalated) == ("cloud", "fallback:Overloaded", True)
    assert row.error_type == "CloudServerError"


# -- 16. identical concurrent misses share one upstream call -----------------------------------


def test_identical_concurrent_misses_are_coalesced_into_one_cloud_call(tmp_path):
    with ReplayCloud(default_answer="same answer", latency_ms=150) as slow:
        c = client(policy(slow.base_url, cache={"enabled": True}), tmp_path)
        prompts = [f"question {i}" for i in range(5)] * 6
        replies: list = []
        lock = threading.Lock()

        def send(p):
            r = c.chat.completions.create(**ask(p))
            with lock:
                replies.append(r)

        threads = [threading.Thread(target=send, args=(p,)) for p in prompts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert slow.requests_seen == 5
        assert len(replies) == 30 and c.ledger.count() == 30
        assert sum(r.route.route == "cloud" for r in replies) == 5


async def test_async_identical_concurrent_misses_are_coalesced(tmp_path):
    with ReplayCloud(default_answer="same answer", latency_ms=150) as slow:
        c = client(policy(slow.base_url, cache={"enabled": True}), tmp_path, cls=AsyncHybridClient)
        replies = await asyncio.gather(
            *(c.chat.completions.create(**ask(f"q{i % 4}")) for i in range(20))
        )
        assert slow.requests_seen == 4
        assert {r.choices[0].message.content for r in replies} == {"same answer"}
        assert c.ledger.count() == 20


# -- one plan for every call shape: streaming follows the same fallback rules -------------------


class _Sure:
    """A classifier that finds every request easy (routes it local, free to choose)."""

    def predict_proba(self, texts):
        return [[0.01, 0.99] for _ in texts]


@pytest.mark.parametrize("is_async", [False, True])
def test_a_streamed_local_failure_falls_back_when_free_and_stays_local_when_pinned(
    replay, tmp_path, is_async
):
    async def collect_async(c, **kw):
        return [x async for x in await c.chat.completions.create(**ask(stream=True, **kw))]

    def collect(c, **kw):
        if is_async:
            return asyncio.run(collect_async(c, **kw))
        return list(c.chat.completions.create(**ask(stream=True, **kw)))

    cls = AsyncHybridClient if is_async else HybridClient
    free = client(
        policy(replay.base_url, "route"),
        tmp_path,
        local=failing_local(Overloaded("full")),
        cls=cls,
        classifier=_Sure(),
    )
    chunks = collect(free)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == CLOUD_ANSWER
    assert free.ledger.rows()[-1].reason == "fallback:Overloaded"
    seen = replay.requests_seen
    with pytest.raises(Overloaded):
        collect(free, metadata={"route": "local"})
    assert replay.requests_seen == seen
    assert free.ledger.rows()[-1].reason == "rule:forced_local(metadata.route)"


def test_registered_adapters_are_private(tmp_path):
    from local_models.registry import AdapterRegistry

    src = tmp_path / "out"
    src.mkdir()
    (src / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (src / "adapter_model.safetensors").write_bytes(b"x")
    old = os.umask(0o022)
    try:
        reg = AdapterRegistry(tmp_path / "home" / "adapters")
        version = reg.register(src, metadata={})
    finally:
        os.umask(old)
    assert reg.root.stat().st_mode & 0o777 == 0o700
    for path in (reg.root / version).iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_a_repeated_fallback_warning_is_logged_once_per_window(caplog) -> None:
    """A full local queue under load falls back per request; the log gets one line, not 500."""
    import logging

    from router._gateway.core import _ThrottledLog

    throttled = _ThrottledLog(every_s=60)
    with caplog.at_level(logging.WARNING, logger="hybridgate"):
        for _ in range(500):
            throttled.warn("Overloaded", "local backend failed (%s)", "Overloaded")
        throttled.warn("ModelLoadError", "local backend failed (%s)", "ModelLoadError")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["local backend failed (Overloaded)", "local backend failed (ModelLoadError)"]
    throttled.every_s = 0  # the window passed: the next line says how many it folded
    with caplog.at_level(logging.WARNING, logger="hybridgate"):
        throttled.warn("Overloaded", "local backend failed (%s)", "Overloaded")
    assert caplog.records[-1].getMessage().endswith("(and 499 more in the last 0 s)")


def test_a_fitted_router_its_policy_and_status_are_private(tmp_path):
    from router.policy.io import save_policy
    from router.scoring.classifier import DifficultyClassifier
    from training.nightly import write_status

    clf = DifficultyClassifier().fit(["my card is lost", "what is 17 * 23?"] * 3, [1, 0] * 3)
    home = tmp_path / "home"
    old = os.umask(0o022)
    try:
        saved = clf.save(home / "tuned" / "classifier.json")
        save_policy(policy_from_dict({"mode": "hybrid"}), home / "tuned" / "policy.yaml")
        write_status(home / "tuned" / "policy.yaml", {"reason": "test"})
    finally:
        os.umask(old)
    assert DifficultyClassifier.load(saved).local_score("my card is lost") > 0.5
    assert sorted(p.name for p in (home / "tuned").iterdir()) == [
        "classifier.json",
        "policy.status.json",
        "policy.yaml",
    ]  # no temp files left behind
    for path in [home / "tuned", *(home / "tuned").iterdir()]:
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
