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


@pytest.mark.parametrize(("asked", "generated"), [(None, 12), (5, 5), (12, 12), (500, 12)])
def test_max_new_tokens_is_the_length_and_the_cap(make_engine, monkeypatch, asked, generated):
    """``local.max_new_tokens``: the answer length without max_tokens, the cap above it."""
    t = LocalTransport(make_engine(adapter_path=None), model_name="tiny", max_new_tokens=12)
    seen = []
    monkeypatch.setattr(t.batcher, "submit", lambda r: seen.append(r) or _done(r))
    monkeypatch.setattr(t.batcher, "stream", lambda r: seen.append(r) or iter([_done(r).result()]))
    try:
        t.complete(ChatRequest(messages=MSGS, model="m", max_tokens=asked))
        list(t.stream(ChatRequest(messages=MSGS, model="m", max_tokens=asked)))
    finally:
        t.close()
    assert [r.max_tokens for r in seen] == [generated, generated]


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

    from local_models.running_batch import RunningBatch

    def boom(self, requests, encoded, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(RunningBatch, "add", boom)  # the prefill runs out of memory
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


# ----------------------------------------------------------------------------- error boundary

# Every error local_models raises, and the router.errors type the transport turns it into. A new
# local error without an entry here fails the first test (as httpx's test_exceptions.py does).
EXPECTED = {
    "LocalModelError": "LocalModelError",
    "ModelLoadError": "ModelLoadError",
    "InvalidRequest": "InvalidRequest",
    "Overloaded": "Overloaded",
    "BatcherClosed": "LocalModelError",
    "RegistryError": "ModelLoadError",
    "AdapterMetadataError": "ModelLoadError",
}


def test_every_local_models_error_has_a_translation():
    from local_models import errors as local

    assert set(EXPECTED) == set(local.__all__)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_local_models_errors_become_router_errors_chained(name):
    from local_models import errors as local
    from router import errors
    from router._transports.local import translate

    exc = getattr(local, name)("the local thing broke")
    translated = translate(exc)
    assert isinstance(translated, getattr(errors, EXPECTED[name]))
    assert isinstance(translated, errors.HybridGateError)
    assert translated.__cause__ is exc
    assert str(translated) == "the local thing broke"


def test_translation_keeps_the_parameter_and_the_public_adapter_metadata_name():
    from local_models import errors as local
    from router._transports.local import translate

    bad = translate(local.InvalidRequest("too long", param="messages"))
    assert isinstance(bad, InvalidRequest) and bad.param == "messages"
    meta = translate(local.AdapterMetadataError("metadata.json: broken"))
    # still what `except training.AdapterMetadataError` around a client call catches
    assert isinstance(meta, local.AdapterMetadataError)
    assert type(meta).__name__ == "AdapterMetadataError"  # the ledger's error_type


def test_queue_full_from_the_batcher_reaches_the_caller_as_router_overloaded(make_engine):
    from local_models import errors as local

    batcher = DynamicBatcher(make_engine(), max_batch_size=1, max_wait_ms=0, max_queue=1)
    t = LocalTransport(batcher, model_name="x")

    def full(req, on_delta=None):
        raise local.Overloaded("local queue full")

    batcher.submit = full
    with pytest.raises(Overloaded) as info:
        t.complete(ChatRequest(messages=MSGS, model="m"))
    assert isinstance(info.value.__cause__, local.Overloaded)
    t.close()


def test_a_prompt_over_the_context_is_a_router_invalid_request(make_engine):
    t = LocalTransport(make_engine(max_context_tokens=16), model_name="x")
    with pytest.raises(InvalidRequest, match="context limit") as info:
        t.complete(ChatRequest(messages=({"role": "user", "content": "word " * 40},), model="m"))
    assert info.value.param == "messages"
    t.close()


def test_building_the_transport_raises_router_model_load_error(tmp_path):
    from local_models import LocalModelConfig
    from local_models import errors as local
    from router.errors import ModelLoadError

    config = LocalModelConfig(model=str(tmp_path), precision="fp32", device="cpu")
    with pytest.raises(ModelLoadError, match="not a model directory") as info:
        LocalTransport.from_config(config)
    assert isinstance(info.value.__cause__, local.ModelLoadError)


def test_a_pinned_local_request_sees_router_model_load_error_when_the_model_is_missing(tmp_path):
    """The client builds the local transport on first use: a load failure must reach the
    caller as ``router.errors.ModelLoadError`` (an ``openai.InternalServerError``)."""
    import openai

    from router import HybridClient
    from router.errors import ModelLoadError
    from router.ledger import Ledger
    from router.policy import policy_from_dict

    policy = policy_from_dict(
        {
            "mode": "local",
            "cloud": {"model": "gpt-4o-mini"},
            "local": {"model": str(tmp_path), "adapter": None},
            "cache": {"enabled": False},
        }
    )
    with HybridClient(policy=policy, ledger=Ledger(tmp_path / "l.sqlite")) as client:
        with pytest.raises(ModelLoadError, match="not a model directory") as info:
            client.chat.completions.create(messages=list(MSGS), temperature=0)
        assert isinstance(info.value, openai.InternalServerError)
        assert [r.error_type for r in client.ledger.rows()] == ["ModelLoadError"]


@pytest.mark.parametrize("is_async", [False, True])
def test_the_request_timeout_bounds_a_local_answer_sync_and_async(transport, is_async):
    import asyncio

    from router.errors import BatcherTimeout

    slow = ChatRequest(messages=MSGS, model="m", max_tokens=200, temperature=None, timeout=0.001)
    with pytest.raises(BatcherTimeout):
        if is_async:
            asyncio.run(transport.acomplete(slow))
        else:
            transport.complete(slow)
