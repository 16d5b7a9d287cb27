"""LocalTransport: ChatRequest/BackendResult translation and error mapping."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from local_models import DynamicBatcher, GenerationRequest
from router._transports.base import Transport
from router._transports.local import LocalTransport
from router.errors import InvalidRequest, LocalOutOfMemory, Overloaded
from router.types import BackendResult, ChatRequest, StreamDelta

MSGS = ({"role": "user", "content": "Say something"},)


@pytest.fixture
def transport(make_engine):
    t = LocalTransport(make_engine(adapter_path=None), model_name="tiny-llama")
    yield t
    t.close()


def test_complete_matches_engine_and_fills_backend_result(transport):
    assert isinstance(transport, Transport) and transport.name == "local"
    res = transport.complete(ChatRequest(messages=MSGS, model="m", max_tokens=7, temperature=None))
    direct = transport.engine.generate([GenerationRequest(messages=MSGS, max_tokens=7)])[0]
    assert isinstance(res, BackendResult)
    assert (res.text, res.completion_tokens, res.prompt_tokens) == (
        direct.text,
        direct.completion_tokens,
        direct.prompt_tokens,
    )
    assert res.model == "tiny-llama"
    assert len(res.token_logprobs) == res.completion_tokens
    assert res.compute_seconds > 0


def test_default_max_tokens_is_256(transport, monkeypatch):
    seen = []
    monkeypatch.setattr(transport.batcher, "submit", lambda r: seen.append(r) or _done(r))
    transport.complete(ChatRequest(messages=MSGS, model="m"))
    assert seen[0].max_tokens == 256 and seen[0].temperature == 0.0


def _done(req):
    from local_models import GenerationResult

    f: Future = Future()
    f.set_result(GenerationResult("ok", "stop", 1, 1, [-0.1], 0.01, None))
    return f


def test_tools_and_response_format_never_reach_the_model(transport):
    for extra in ({"tools": ({"type": "function"},)}, {"response_format": {"type": "json_object"}}):
        with pytest.raises(InvalidRequest, match="cloud"):
            transport.complete(ChatRequest(messages=MSGS, model="m", **extra))


def test_stream_yields_text_then_result(transport):
    deltas = list(transport.stream(ChatRequest(messages=MSGS, model="m", max_tokens=9)))
    assert all(isinstance(d, StreamDelta) for d in deltas)
    assert deltas[-1].result is not None
    assert "".join(d.text for d in deltas[:-1]) == deltas[-1].result.text


async def test_async_paths(transport):
    req = ChatRequest(messages=MSGS, model="m", max_tokens=6)
    res = await transport.acomplete(req)
    deltas = [d async for d in transport.astream(req)]
    assert deltas[-1].result.text == res.text == "".join(d.text for d in deltas[:-1])


def test_oom_is_translated_with_cause(transport, monkeypatch):
    import torch

    def boom(requests, on_delta=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(transport.engine, "generate", boom)
    with pytest.raises(LocalOutOfMemory) as info:
        transport.complete(ChatRequest(messages=MSGS, model="m", max_tokens=3))
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)


def test_overloaded_passes_through(make_engine):
    batcher = DynamicBatcher(make_engine(), max_batch_size=1, max_wait_ms=0, max_queue=1)
    t = LocalTransport(batcher, model_name="x")

    def full(req, on_delta=None):
        raise Overloaded("local queue full")

    batcher.submit = full
    with pytest.raises(Overloaded):
        t.complete(ChatRequest(messages=MSGS, model="m"))
    t.close()
