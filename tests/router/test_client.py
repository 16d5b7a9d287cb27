"""The drop-in client end to end, through real HTTP to the replay cloud."""

from __future__ import annotations

import asyncio
import threading

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from router import AsyncHybridClient, HybridClient
from router._gateway.retry import RetryConfig
from router._transports.base import MockTransport
from router.devtools.replay import ReplayCloud
from router.errors import CloudServerError, InvalidRequest
from router.ledger import Ledger
from router.ledger.pricing import PriceBook
from router.policy import policy_from_dict
from router.types import BackendResult

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def replay():
    with ReplayCloud({QUESTION: ANSWER, "Say hi": "hi there"}, default_answer=None) as cloud:
        yield cloud


def make_policy(replay, mode="cloud", **extra):
    data = {
        "name": "test",
        "mode": mode,
        "cloud": {
            "model": MODEL,
            "api_base": replay.base_url,
            "timeout_s": 2,
            "connect_timeout_s": 1,
        },
        "local": {"usd_per_hour": 3.6},
        "cache": {"enabled": False},
        "shadow": {"rate": 0.0},
    }
    for key, value in extra.items():
        section, _, field = key.partition("__")
        data.setdefault(section, {})[field] = value
    return policy_from_dict(data)


def make_client(
    replay, tmp_path, *, mode="cloud", local=None, cls=HybridClient, retries=2, **extra
):
    return cls(
        policy=make_policy(replay, mode, **extra),
        ledger=Ledger(tmp_path / "ledger.sqlite"),
        local=local,
        retry=RetryConfig(max_retries=retries, base_s=0.01, max_s=0.2),
        seed=0,
    )


def ask(content=QUESTION, **kw):
    return {"messages": [{"role": "user", "content": content}], "temperature": 0, **kw}


def local_answer(text="Paris.", logprobs=(-0.01, -0.02), seconds=0.5):
    return MockTransport(
        lambda r: BackendResult(
            text=text,
            prompt_tokens=12,
            completion_tokens=len(logprobs),
            model="smollm2",
            compute_seconds=seconds,
            token_logprobs=list(logprobs),
            adapter_version="v0001",
        ),
        name="local",
    )


def test_sync_cloud_roundtrip_returns_openai_types_and_ledgers_cost(replay, tmp_path):
    client = make_client(replay, tmp_path)
    reply = client.chat.completions.create(**ask())
    assert isinstance(reply, ChatCompletion)
    assert reply.choices[0].message.content == ANSWER
    assert reply.route.route == "cloud" and reply.route.reason == "policy:cloud"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    expected = PriceBook().cloud_cost(
        MODEL, reply.usage.prompt_tokens, reply.usage.completion_tokens
    )
    assert reply.route.cost_usd == pytest.approx(expected)
    assert reply.route.baseline_cost_usd == pytest.approx(expected)
    [row] = client.ledger.rows()
    assert row.request_id == reply.route.request_id
    assert row.route == "cloud" and row.error_type is None
    assert row.cost_usd == pytest.approx(expected)
    assert row.answer == ANSWER and row.messages[0]["content"] == QUESTION
    assert row.policy_version == client.policy.version


async def test_async_cloud_roundtrip(replay, tmp_path):
    client = make_client(replay, tmp_path, cls=AsyncHybridClient)
    replies = await asyncio.gather(*[client.chat.completions.create(**ask()) for _ in range(5)])
    assert {r.choices[0].message.content for r in replies} == {ANSWER}
    assert client.ledger.count() == 5


def test_stream_yields_chunks_and_usage_last(replay, tmp_path):
    client = make_client(replay, tmp_path)
    chunks = list(
        client.chat.completions.create(**ask(), stream=True, stream_options={"include_usage": True})
    )
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert chunks[-1].usage.completion_tokens > 0 and chunks[-1].choices == []
    assert chunks[-1].route.route == "cloud"
    [row] = client.ledger.rows()
    assert row.stream and row.answer == ANSWER and row.completion_tokens > 0


async def test_async_stream(replay, tmp_path):
    client = make_client(replay, tmp_path, cls=AsyncHybridClient)
    stream = await client.chat.completions.create(**ask(), stream=True)
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == ANSWER
    assert client.ledger.rows()[0].route == "cloud"


@pytest.mark.parametrize("fault", ["500", "429", "drop", "malformed"])
def test_transient_fault_is_retried(replay, tmp_path, fault):
    client = make_client(replay, tmp_path)
    seen = replay.requests_seen
    replay.inject(fault, times=1, retry_after=0.05 if fault == "429" else None)
    reply = client.chat.completions.create(**ask())
    assert reply.choices[0].message.content == ANSWER
    assert replay.requests_seen - seen == 2
    assert client.ledger.rows()[0].error_type is None


@pytest.mark.parametrize(
    "fault, exc_type",
    [
        ("500", openai.InternalServerError),
        ("429", openai.RateLimitError),
        ("drop", openai.APIConnectionError),
        ("malformed", openai.InternalServerError),
    ],
)
def test_persistent_fault_raises_openai_type_after_retries(replay, tmp_path, fault, exc_type):
    client = make_client(replay, tmp_path, retries=2)
    seen = replay.requests_seen
    replay.inject(fault, times=3, retry_after=0.01 if fault == "429" else None)
    with pytest.raises(exc_type):
        client.chat.completions.create(**ask())
    assert replay.requests_seen - seen == 3
    [row] = client.ledger.rows()
    assert row.error_type is not None and row.route == "cloud"


def test_auth_error_is_not_retried(replay, tmp_path):
    client = make_client(replay, tmp_path)
    seen = replay.requests_seen
    replay.inject("401", times=1)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**ask())
    assert replay.requests_seen - seen == 1
    assert client.ledger.rows()[0].error_type == "CloudAuthError"


def test_hang_times_out_as_openai_timeout(replay, tmp_path):
    client = make_client(replay, tmp_path, retries=0)
    replay.inject("hang", times=1)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(**ask())
    assert client.ledger.rows()[0].error_type == "CloudTimeout"


def test_async_persistent_fault(replay, tmp_path):
    client = make_client(replay, tmp_path, cls=AsyncHybridClient, retries=1)
    replay.inject("500", times=2)
    with pytest.raises(CloudServerError):
        asyncio.run(client.chat.completions.create(**ask()))
    assert client.ledger.rows()[0].error_type == "CloudServerError"


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "model": "no-such-model-xyz"}, "model"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "logit_bias": {}}, "logit_bias"),
        ({"messages": [{"role": "user", "content": "hi"}], "temprature": 0}, "temprature"),
        ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}, "top_logprobs"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "structured_outputs": {"json": {}}},
            "structured_outputs",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "guided_choice": []}, "guided_choice"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "seed": 1, "extra_body": {"seed": 2}},
            "seed",
        ),
        # local-only extensions on a request the policy sends to the cloud
        ({"messages": [{"role": "user", "content": "hi"}], "logprobs": True}, "logprobs"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "guided_choice": ["a", "b"]},
            "structured_outputs",
        ),
    ],
)
def test_bad_input_gives_clear_error_and_a_ledger_row(replay, tmp_path, kwargs, param):
    client = make_client(replay, tmp_path)
    with pytest.raises(InvalidRequest) as info:
        client.chat.completions.create(**kwargs)
    assert info.value.param == param
    assert isinstance(info.value, openai.BadRequestError)
    assert param.split("[")[0].split(".")[0] in str(info.value)
    [row] = client.ledger.rows()
    assert row.route == "none" and row.error_type == "InvalidRequest"


def test_logprobs_and_closed_choices_reach_the_local_model(replay, tmp_path):
    local = local_answer(logprobs=(-0.01, -0.02))
    client = make_client(replay, tmp_path, mode="local", local=local)
    seen = replay.requests_seen
    reply = client.chat.completions.create(
        **ask(), logprobs=True, extra_body={"structured_outputs": {"choice": ["Paris.", "Lyon"]}}
    )
    assert [t.logprob for t in reply.choices[0].logprobs.content] == [-0.01, -0.02]
    assert local.calls[0].allowed_answers == ("Paris.", "Lyon")
    plain = client.chat.completions.create(**ask())
    assert plain.choices[0].logprobs is None
    assert replay.requests_seen == seen


def test_local_mode_costs_compute_time_and_baseline_is_cloud_price(replay, tmp_path):
    client = make_client(replay, tmp_path, mode="local", local=local_answer(seconds=0.5))
    reply = client.chat.completions.create(**ask())
    assert reply.route.route == "local"
    assert reply.route.cost_usd == pytest.approx(0.5 * 3.6 / 3600)
    assert reply.route.baseline_cost_usd == pytest.approx(PriceBook().cloud_cost(MODEL, 12, 2))
    assert client.ledger.rows()[0].adapter_version == "v0001"


def test_cascade_keeps_confident_local_answer(replay, tmp_path):
    client = make_client(replay, tmp_path, mode="cascade", local=local_answer(logprobs=[-0.01] * 4))
    reply = client.chat.completions.create(**ask())
    assert reply.route.route == "local" and reply.choices[0].message.content == "Paris."
    assert reply.route.confidence > 0.9


def test_cascade_escalates_low_confidence_and_pays_both(replay, tmp_path):
    local = local_answer(text="Lyon?", logprobs=[-3.0, -2.5, -4.0], seconds=1.0)
    client = make_client(replay, tmp_path, mode="cascade", local=local)
    reply = client.chat.completions.create(**ask())
    assert reply.route.route == "cloud" and reply.route.escalated
    assert reply.choices[0].message.content == ANSWER
    cloud_cost = PriceBook().cloud_cost(
        MODEL, reply.usage.prompt_tokens, reply.usage.completion_tokens
    )
    assert reply.route.cost_usd == pytest.approx(cloud_cost + 1.0 * 3.6 / 3600)
    assert client.ledger.rows()[0].reason == "escalated:low_confidence"


def test_local_failure_falls_back_to_cloud_when_the_decision_was_free(replay, tmp_path):
    from router.errors import Overloaded

    def boom(request):
        raise Overloaded("queue full")

    client = make_client(replay, tmp_path, mode="cascade", local=MockTransport(boom, name="local"))
    reply = client.chat.completions.create(**ask())
    assert reply.route.route == "cloud" and reply.route.reason == "fallback:Overloaded"


def test_cache_hit_is_free_and_ledgered(replay, tmp_path):
    client = make_client(replay, tmp_path, cache__enabled=True)
    first = client.chat.completions.create(**ask())
    second = client.chat.completions.create(**ask())
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.route.route == "cache" and second.route.cost_usd == 0
    assert second.route.baseline_cost_usd == pytest.approx(first.route.baseline_cost_usd)
    assert [r.route for r in client.ledger.rows()] == ["cloud", "cache"]
    other_tenant = client.chat.completions.create(**ask(), user="tenant-b")
    assert other_tenant.route.route == "cloud"


def test_shadow_labelling_never_blocks_the_caller(replay, tmp_path):
    release = threading.Event()
    answered = threading.Event()

    def slow_local(request):
        release.wait(10)
        answered.set()
        return BackendResult(text=ANSWER, completion_tokens=3, token_logprobs=[-0.1] * 3)

    client = make_client(
        replay, tmp_path, local=MockTransport(slow_local, name="local"), shadow__rate=1.0
    )
    reply = client.chat.completions.create(**ask())
    assert reply.route.route == "cloud"
    assert not answered.is_set()  # the caller got its answer while the shadow job still waits
    release.set()
    client.shadow.drain(timeout=10)
    [(entry, label)] = client.ledger.labelled()
    assert entry.request_id == reply.route.request_id
    assert label.label == 1.0 and label.local_answer == ANSWER


def test_shadow_workers_answer_in_parallel_so_the_local_batcher_can_batch_them(replay, tmp_path):
    both_in = threading.Barrier(2, timeout=5)  # breaks (-> no label) unless two run at once

    def local(request):
        both_in.wait()
        return BackendResult(text=ANSWER, completion_tokens=3, token_logprobs=[-0.1] * 3)

    client = make_client(
        replay,
        tmp_path,
        local=MockTransport(local, name="local"),
        shadow__rate=1.0,
        shadow__workers=2,
    )
    client.chat.completions.create(**ask())
    client.chat.completions.create(**ask("Say hi"))
    client.shadow.drain(timeout=10)
    assert len(client.ledger.labelled()) == 2


def test_llm_judge_labels_through_the_cloud_and_is_costed(tmp_path):
    with ReplayCloud({QUESTION: ANSWER}, default_answer="yes") as cloud:
        client = make_client(
            cloud,
            tmp_path,
            local=local_answer("Paris is the capital."),
            shadow__rate=1.0,
            shadow__judge="llm",
        )
        reply = client.chat.completions.create(**ask())
        client.shadow.drain(timeout=10)
    [(entry, label)] = client.ledger.labelled()
    assert entry.request_id == reply.route.request_id
    assert label.judge == "llm" and label.label == 1.0
    judge_rows = [r for r in client.ledger.rows() if r.reason == "judge"]
    assert len(judge_rows) == 1 and judge_rows[0].cost_usd > 0
    assert judge_rows[0].baseline_cost_usd == 0  # judging is hybridgate's overhead


def test_audits_ask_the_cloud_about_kept_local_answers_and_label_them(tmp_path):
    """The labels on what the local tier keeps: a paid cloud call in the background, its own
    row (overhead: baseline 0) holding the prompt and the cloud's answer, and the label."""
    from router.tuning.retune import labelled_from_ledger

    with ReplayCloud({QUESTION: ANSWER}, default_answer=None) as cloud:
        client = make_client(
            cloud,
            tmp_path,
            mode="cascade",
            local=local_answer("Paris.", logprobs=[-0.01] * 4),
            shadow__audit_rate=1.0,
        )
        reply = client.chat.completions.create(**ask())
        client.shadow.drain(timeout=10)
        assert cloud.requests_seen == 1
    assert reply.route.route == "local" and reply.choices[0].message.content == "Paris."
    [audit] = [r for r in client.ledger.rows() if r.reason == "audit"]
    assert audit.route == "cloud" and audit.cost_usd > 0 and audit.baseline_cost_usd == 0
    assert audit.tags == {"audit_of": reply.route.request_id, "audit_rate": "1.0"}
    assert audit.answer == ANSWER and audit.messages[0]["content"] == QUESTION
    [(entry, label)] = client.ledger.labelled()
    assert entry.request_id == audit.request_id
    assert label.local_answer == "Paris." and label.local_confidence is not None
    assert labelled_from_ledger(client.ledger).w.tolist() == [1.0]  # 1 / audit_rate


def test_a_request_pinned_local_is_never_audited(tmp_path):
    with ReplayCloud({QUESTION: ANSWER}, default_answer=None) as cloud:
        client = make_client(
            cloud, tmp_path, mode="cascade", local=local_answer(), shadow__audit_rate=1.0
        )
        reply = client.chat.completions.create(**ask(), metadata={"route": "local"})
        client.shadow.drain(timeout=10)
        assert cloud.requests_seen == 0
    assert reply.route.route == "local"
    assert [r.reason for r in client.ledger.rows()] == [reply.route.reason]
    assert client.ledger.labelled() == []


def test_unknown_shadow_judge_is_a_policy_error(replay):
    from router.errors import PolicyError

    with pytest.raises(PolicyError, match="judge"):
        make_policy(replay, shadow__judge="fuzzy")


def test_the_policy_builds_the_local_transport_and_the_cache(replay, tmp_path, monkeypatch):
    """client.py copies no fields: the local section builds the engine config (its
    ``max_new_tokens`` reaching the transport), and the cache gets the cache section itself."""
    import router._transports.local as local_transport

    built = {}

    def from_config(config, *, max_new_tokens):
        built.update(config=config, max_new_tokens=max_new_tokens)
        return local_answer()

    monkeypatch.setattr(local_transport.LocalTransport, "from_config", from_config)
    policy = make_policy(replay, "local").replace(
        **{"local.max_new_tokens": 40, "local.max_batch_size": 4, "cache.enabled": True}
    )
    with HybridClient(policy=policy, ledger=Ledger(tmp_path / "l.sqlite")) as client:
        client.chat.completions.create(**ask())
        assert client._gateway.cache.config is policy.cache
    assert built["max_new_tokens"] == 40
    assert built["config"] == policy.local.engine_config()


def test_closing_a_client_lets_its_local_model_go(replay, tmp_path):
    # A closed client that stays in scope (the demo's phase-1 client did) must not keep the
    # local model's memory alive, and must say it is closed if used again.
    import gc
    import weakref

    local = local_answer()
    gone = weakref.ref(local)
    client = make_client(replay, tmp_path, mode="local", local=local)
    del local
    assert client.chat.completions.create(**ask()).route.route == "local"
    client.close()
    gc.collect()
    assert gone() is None
    with pytest.raises(Exception, match="client is closed"):
        client.chat.completions.create(**ask())
