"""Both cloud transports (litellm, and OpenAI's protocol over httpx): one try per request, every
failure as a typed router error. Tests that take ``transport`` or ``make`` run against both."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from router._transports.base import Transport
from router._transports.cloud import CloudTransport, parse_retry_after, translate_error
from router._transports.openai_http import OpenAIHTTPTransport
from router.devtools.replay import ReplayCloud, count_prompt_tokens, count_text_tokens
from router.errors import (
    BackendError,
    CloudAuthError,
    CloudBadRequest,
    CloudConnectionError,
    CloudError,
    CloudServerError,
    CloudTimeout,
    RateLimited,
)
from router.types import BackendResult, ChatRequest, StreamDelta

MODEL = "gpt-4-1106-preview"
CARD_PROMPT = "I am still waiting on my card?"
CARD_ANSWER = "card_arrival"
LONG_PROMPT = "Tell me a story."
LONG_ANSWER = "Once upon a time there was a small model that learned from a large one."
TIMEOUT_S = 0.5


@pytest.fixture
def replay_cloud() -> Iterator[ReplayCloud]:
    with ReplayCloud({CARD_PROMPT: CARD_ANSWER, LONG_PROMPT: LONG_ANSWER}) as cloud:
        yield cloud


KINDS = {"litellm": CloudTransport, "openai": OpenAIHTTPTransport}


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest, litellm_module: Any) -> str:
    return request.param


@pytest.fixture
def make(kind: str) -> Callable[..., Any]:
    """Build the transport under test: ``make(model=..., api_base=...)``."""
    return KINDS[kind]


@pytest.fixture
def transport(replay_cloud: ReplayCloud, make: Callable[..., Any]) -> CloudTransport:
    return make(model=MODEL, api_base=replay_cloud.base_url, timeout_s=TIMEOUT_S)


def _request(prompt: str = CARD_PROMPT, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": prompt},), model=MODEL, **kw)


def _usage_of(prompt: str, answer: str) -> tuple[int, int]:
    return count_prompt_tokens([{"role": "user", "content": prompt}]), count_text_tokens(answer)


# -- happy paths over real HTTP ------------------------------------------------------------


def test_is_a_transport(transport: CloudTransport) -> None:
    assert isinstance(transport, Transport)
    assert transport.name == "cloud"


def test_complete_returns_answer_usage_and_cost(
    transport: CloudTransport, replay_cloud: ReplayCloud, kind: str
) -> None:
    result = transport.complete(_request())
    assert result.text == CARD_ANSWER
    assert result.finish_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens) == _usage_of(CARD_PROMPT, CARD_ANSWER)
    assert result.model == MODEL
    if kind == "litellm":  # litellm knows the price; the gateway prices both with its PriceBook
        assert result.cost_usd is not None and result.cost_usd > 0
    assert result.compute_seconds == 0
    assert replay_cloud.requests_seen == 1


async def test_acomplete_matches_complete(transport: CloudTransport) -> None:
    result = await transport.acomplete(_request(LONG_PROMPT))
    assert result.text == LONG_ANSWER
    assert (result.prompt_tokens, result.completion_tokens) == _usage_of(LONG_PROMPT, LONG_ANSWER)


def test_request_fields_reach_the_server(transport: CloudTransport) -> None:
    result = transport.complete(_request(LONG_PROMPT, max_tokens=4, temperature=0, seed=1))
    assert result.finish_reason == "length"
    assert result.completion_tokens == 4
    stopped = transport.complete(_request(LONG_PROMPT, stop=("small",)))
    assert stopped.text == "Once upon a time there was a "


def _check_stream(deltas: list[StreamDelta], answer: str, prompt: str) -> BackendResult:
    assert all(d.result is None for d in deltas[:-1])
    assert "".join(d.text for d in deltas[:-1]) == answer
    assert len(deltas) > 2
    final = deltas[-1].result
    assert final is not None
    assert final.text == answer
    assert (final.prompt_tokens, final.completion_tokens) == _usage_of(prompt, answer)
    return final


def test_stream_yields_text_then_result_with_usage(transport: CloudTransport, kind: str) -> None:
    final = _check_stream(list(transport.stream(_request(LONG_PROMPT))), LONG_ANSWER, LONG_PROMPT)
    if kind == "litellm":
        assert final.cost_usd is not None and final.cost_usd > 0


async def test_astream_yields_text_then_result_with_usage(transport: CloudTransport) -> None:
    deltas = [d async for d in transport.astream(_request(LONG_PROMPT))]
    _check_stream(deltas, LONG_ANSWER, LONG_PROMPT)


def test_api_base_without_key_sends_placeholder(make: Callable[..., Any]) -> None:
    with ReplayCloud({CARD_PROMPT: CARD_ANSWER}, require_api_key="sk-no-key") as cloud:
        transport = make(model=MODEL, api_base=cloud.base_url)
        assert transport.complete(_request()).text == CARD_ANSWER


def test_api_key_is_sent_and_never_shown(make: Callable[..., Any]) -> None:
    with ReplayCloud({CARD_PROMPT: CARD_ANSWER}, require_api_key="sk-secret-123") as cloud:
        good = make(model=MODEL, api_base=cloud.base_url, api_key="sk-secret-123")
        assert good.complete(_request()).text == CARD_ANSWER
        assert "sk-secret-123" not in repr(good)
        bad = make(model=MODEL, api_base=cloud.base_url, api_key="sk-wrong")
        with pytest.raises(CloudAuthError) as info:
            bad.complete(_request())
        assert "sk-wrong" not in str(info.value)


def test_constructor_rejects_bad_config(make: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="model"):
        make(model=" ")
    with pytest.raises(ValueError, match="timeout"):
        make(model=MODEL, timeout_s=0)


# -- faults over real HTTP: one try, the right type ----------------------------------------

FAULT_CASES = [
    ("500", CloudServerError, 500),
    ("429", RateLimited, 429),
    ("401", CloudAuthError, 401),
    ("malformed", CloudServerError, 502),
    ("drop", CloudConnectionError, None),
    ("hang", CloudTimeout, None),
]


def _assert_fault(
    replay_cloud: ReplayCloud,
    fault: str,
    error: type[CloudError],
    status: int | None,
    call: Callable[[], Any],
) -> CloudError:
    replay_cloud.inject(fault, times=3)  # extra faults would be consumed by any retry
    start = time.perf_counter()
    with pytest.raises(error) as info:
        call()
    elapsed = time.perf_counter() - start
    assert replay_cloud.requests_seen == 1, "the transport must make exactly one try"
    assert isinstance(info.value, BackendError)
    assert info.value.__cause__ is not None
    if status is not None:
        assert info.value.status_code == status
    if fault == "hang":
        assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 2.0
    return info.value


@pytest.mark.parametrize(("fault", "error", "status"), FAULT_CASES)
def test_fault_sync(transport, replay_cloud, fault, error, status) -> None:  # noqa: ANN001
    _assert_fault(replay_cloud, fault, error, status, lambda: transport.complete(_request()))


@pytest.mark.parametrize(("fault", "error", "status"), FAULT_CASES)
async def test_fault_async(transport, replay_cloud, fault, error, status) -> None:  # noqa: ANN001
    replay_cloud.inject(fault, times=3)
    start = time.perf_counter()
    with pytest.raises(error) as info:
        await transport.acomplete(_request())
    assert replay_cloud.requests_seen == 1
    if status is not None:
        assert info.value.status_code == status
    if fault == "hang":
        assert time.perf_counter() - start < TIMEOUT_S + 2.0


@pytest.mark.parametrize(("fault", "error", "status"), FAULT_CASES)
def test_fault_stream(transport, replay_cloud, fault, error, status) -> None:  # noqa: ANN001
    _assert_fault(replay_cloud, fault, error, status, lambda: list(transport.stream(_request())))


def test_rate_limit_carries_retry_after(
    transport: CloudTransport, replay_cloud: ReplayCloud
) -> None:
    replay_cloud.inject("429", retry_after=7)
    with pytest.raises(RateLimited) as info:
        transport.complete(_request())
    assert info.value.retry_after == 7.0
    assert info.value.retryable
    assert isinstance(info.value, openai.RateLimitError)


def test_connection_refused_is_connection_error(make: Callable[..., Any]) -> None:
    cloud = ReplayCloud().start()
    base_url = cloud.base_url
    cloud.stop()  # nothing listens on this port any more
    with pytest.raises(CloudConnectionError):
        make(model=MODEL, api_base=base_url, timeout_s=2).complete(_request())


def test_unknown_prompt_is_bad_request_404(transport: CloudTransport) -> None:
    with pytest.raises(CloudBadRequest) as info:
        transport.complete(_request("never recorded"))
    assert info.value.status_code == 404
    assert not info.value.retryable


# -- table-driven mapping of every litellm exception class ---------------------------------


def _resp(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, headers=headers or {}, request=httpx.Request("POST", "https://x.invalid")
    )


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__cause__ = inner
    return outer


def _mapping_table(le: Any) -> list[tuple[str, Callable[[], BaseException], type, int | None]]:
    """(litellm class name, factory, expected router error, expected status)."""
    a = {"message": "boom", "model": MODEL, "llm_provider": "openai"}
    return [
        ("RateLimitError", lambda: le.RateLimitError(**a, response=_resp(429)), RateLimited, 429),
        ("Timeout", lambda: le.Timeout(**a), CloudTimeout, None),
        ("APIConnectionError", lambda: le.APIConnectionError(**a), CloudConnectionError, None),
        ("AuthenticationError", lambda: le.AuthenticationError(**a), CloudAuthError, 401),
        (
            "PermissionDeniedError",
            lambda: le.PermissionDeniedError(**a, response=_resp(403)),
            CloudAuthError,
            403,
        ),
        ("NotFoundError", lambda: le.NotFoundError(**a), CloudBadRequest, 404),
        ("BadRequestError", lambda: le.BadRequestError(**a), CloudBadRequest, 400),
        ("ImageFetchError", lambda: le.ImageFetchError("bad image"), CloudBadRequest, 400),
        (
            "UnprocessableEntityError",
            lambda: le.UnprocessableEntityError(**a, response=_resp(422)),
            CloudBadRequest,
            422,
        ),
        (
            "ContextWindowExceededError",
            lambda: le.ContextWindowExceededError(**a),
            CloudBadRequest,
            400,
        ),
        (
            "ContentPolicyViolationError",
            lambda: le.ContentPolicyViolationError(**a),
            CloudBadRequest,
            400,
        ),
        ("PaymentRequiredError", lambda: le.PaymentRequiredError(**a), CloudBadRequest, 402),
        (
            "RejectedRequestError",
            lambda: le.RejectedRequestError(**a, request_data={}),
            CloudBadRequest,
            400,
        ),
        (
            "UnsupportedParamsError",
            lambda: le.UnsupportedParamsError("no seed"),
            CloudBadRequest,
            400,
        ),
        ("InvalidRequestError", lambda: le.InvalidRequestError(**a), CloudBadRequest, 400),
        (
            "LiteLLMUnknownProvider",
            lambda: le.LiteLLMUnknownProvider(model="x"),
            CloudBadRequest,
            400,
        ),
        ("VectorStoreSearchError", lambda: le.VectorStoreSearchError([]), CloudBadRequest, 400),
        ("InternalServerError", lambda: le.InternalServerError(**a), CloudServerError, 500),
        ("ServiceUnavailableError", lambda: le.ServiceUnavailableError(**a), CloudServerError, 503),
        ("BadGatewayError", lambda: le.BadGatewayError(**a), CloudServerError, 502),
        ("APIError", lambda: le.APIError(status_code=504, **a), CloudServerError, 504),
        ("MockException", lambda: le.MockException(status_code=500, **a), CloudServerError, 500),
        (
            "APIResponseValidationError",
            lambda: le.APIResponseValidationError(**a),
            CloudServerError,
            502,
        ),
        (
            "JSONSchemaValidationError",
            lambda: le.JSONSchemaValidationError(MODEL, "openai", "{}", "{}"),
            CloudServerError,
            502,
        ),
        (
            "MidStreamFallbackError",
            lambda: _chained(le.MidStreamFallbackError(**a), json.JSONDecodeError("bad", "{", 0)),
            CloudServerError,
            502,
        ),
        ("OpenAIError", lambda: le.OpenAIError(ValueError("odd")), CloudServerError, 502),
    ]


def _litellm_error_classes(le: Any) -> set[str]:
    return {
        name
        for name, cls in inspect.getmembers(le, inspect.isclass)
        if cls.__module__ == le.__name__ and issubclass(cls, openai.OpenAIError)
    }


def test_every_litellm_exception_class_has_a_mapping(litellm_module: Any) -> None:
    table = _mapping_table(litellm_module.exceptions)
    assert _litellm_error_classes(litellm_module.exceptions) <= {row[0] for row in table}


def test_mapping_table(litellm_module: Any) -> None:
    le = litellm_module.exceptions
    for name, factory, expected, status in _mapping_table(le):
        exc = factory()
        assert type(exc).__name__ == name
        mapped = translate_error(exc)
        assert type(mapped) is expected, f"{name} -> {type(mapped).__name__}"
        if status is not None:
            assert mapped.status_code == status, name


LOWER_LAYER = [
    (httpx.ConnectError("refused"), CloudConnectionError),
    (httpx.RemoteProtocolError("disconnected"), CloudConnectionError),
    (httpx.ReadError("reset"), CloudConnectionError),
    (httpx.ReadTimeout("slow"), CloudTimeout),
    (httpx.ConnectTimeout("slow"), CloudTimeout),
    (ConnectionRefusedError(111, "refused"), CloudConnectionError),
    (TimeoutError("slow"), CloudTimeout),
    (json.JSONDecodeError("bad", "{", 0), CloudServerError),
    (openai.APIConnectionError(request=httpx.Request("POST", "https://x")), CloudConnectionError),
    (openai.APITimeoutError(request=httpx.Request("POST", "https://x")), CloudTimeout),
    (openai.RateLimitError("slow down", response=_resp(429), body=None), RateLimited),
    (openai.AuthenticationError("no", response=_resp(401), body=None), CloudAuthError),
    (openai.PermissionDeniedError("no", response=_resp(403), body=None), CloudAuthError),
    (openai.NotFoundError("no", response=_resp(404), body=None), CloudBadRequest),
    (openai.ConflictError("no", response=_resp(409), body=None), CloudBadRequest),
    (openai.InternalServerError("no", response=_resp(500), body=None), CloudServerError),
]


@pytest.mark.parametrize(("exc", "expected"), LOWER_LAYER, ids=lambda v: type(v).__name__)
def test_lower_layer_errors_map(exc: BaseException, expected: type) -> None:
    assert type(translate_error(exc)) is expected


def test_litellm_wrapping_a_dropped_connection_is_connection_error(litellm_module: Any) -> None:
    # litellm reports a dropped connection as InternalServerError(500); the cause decides.
    outer = litellm_module.exceptions.InternalServerError("Connection error.", "openai", MODEL)
    exc = _chained(outer, httpx.RemoteProtocolError("Server disconnected"))
    assert type(translate_error(exc)) is CloudConnectionError


def test_litellm_relabelled_401_is_auth_error(litellm_module: Any) -> None:
    # litellm raises BadRequestError for a 401 from an OpenAI-compatible base; the status wins.
    inner = openai.AuthenticationError("bad key", response=_resp(401), body=None)
    outer = _chained(litellm_module.exceptions.BadRequestError("bad key", MODEL, "openai"), inner)
    mapped = translate_error(outer)
    assert type(mapped) is CloudAuthError and mapped.status_code == 401


def test_retry_after_read_from_wrapped_response(litellm_module: Any) -> None:
    inner = openai.RateLimitError("slow", response=_resp(429, {"retry-after": "12"}), body=None)
    outer = _chained(litellm_module.exceptions.RateLimitError("slow", "openai", MODEL), inner)
    assert translate_error(outer).retry_after == 12.0
    server = openai.InternalServerError(
        "busy", response=_resp(503, {"retry-after": "3"}), body=None
    )
    assert translate_error(server).retry_after == 3.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "5"}, 5.0),
        ({"Retry-After": "0.25"}, 0.25),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 GMT
    assert parse_retry_after(headers, now=now) == seconds


def test_programming_errors_are_not_masked(
    replay_cloud: ReplayCloud, litellm_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug (here: unusable messages) must surface as itself, not as a retryable cloud error.
    transport = CloudTransport(model=MODEL, api_base=replay_cloud.base_url, timeout_s=TIMEOUT_S)
    build = transport._kwargs
    monkeypatch.setattr(
        transport,
        "_kwargs",
        lambda request, *, stream: {**build(request, stream=stream), "messages": object()},
    )
    with pytest.raises(TypeError):
        transport.complete(_request())


def test_tool_calls_and_finish_reason_are_read(litellm_module: Any) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q": "card"}'},
    }
    response = litellm_module.ModelResponse(
        model=MODEL,
        choices=[
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            }
        ],
        usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
    )
    result = CloudTransport(model=MODEL)._result(response)
    assert result.finish_reason == "tool_calls"
    assert result.text == ""
    assert result.tool_calls[0]["function"] == call["function"]
    assert (result.prompt_tokens, result.completion_tokens) == (9, 4)


def test_importing_cloud_and_replay_does_not_import_litellm() -> None:
    code = (
        "import sys, router._transports.cloud, router.devtools.replay, router.devtools.data; "
        "sys.exit('litellm' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- OpenAI's protocol over httpx: what only that transport does ------------------------------


def _sse(*events: Any) -> list[str]:
    return [f"data: {json.dumps(e)}" if not isinstance(e, str) else e for e in events]


def test_sse_answer_merges_text_tool_calls_and_usage() -> None:
    from router._transports.openai_http import SSEAnswer

    answer = SSEAnswer(MODEL)
    lines = _sse(
        {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"delta": {"content": "Hel"}}]},
        {"choices": [{"delta": {"content": "lo"}}]},
        {
            "choices": [
                {"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f"}}]}}
            ]
        },
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}}]},
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
        "",
        ": keep-alive comment",
        "data: [DONE]",
    )
    assert "".join(answer.feed(line) for line in lines) == "Hello"
    result = answer.result(_request())
    assert (result.text, result.finish_reason) == ("Hello", "tool_calls")
    assert (result.prompt_tokens, result.completion_tokens) == (5, 2)
    assert result.tool_calls == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]


def test_sse_answer_without_finish_is_a_cut_stream_and_error_events_raise() -> None:
    from router._transports.openai_http import SSEAnswer

    cut = SSEAnswer(MODEL)
    cut.feed('data: {"choices": [{"delta": {"content": "partial"}}]}')
    with pytest.raises(CloudConnectionError, match="finish chunk"):
        cut.result(_request())
    with pytest.raises(CloudServerError, match="quota gone"):
        SSEAnswer(MODEL).feed('data: {"error": {"message": "quota gone"}}')


def test_auto_transport_is_openai_for_openai_models_and_litellm_for_others(tmp_path) -> None:
    from router import HybridClient
    from router.policy.io import policy_from_dict

    def cloud_of(model: str, transport: str = "auto") -> Any:
        policy = policy_from_dict(
            {
                "mode": "cloud",
                "cloud": {
                    "model": model,
                    "transport": transport,
                    "prices": {model: {"input_per_mtok": 1, "output_per_mtok": 1}},
                },
            }
        )
        client = HybridClient(policy=policy, ledger=tmp_path / "l.sqlite", api_key="k", cache=False)
        try:
            return type(client._gateway.cloud)
        finally:
            client.close()

    assert cloud_of("gpt-4o-mini") is OpenAIHTTPTransport
    assert cloud_of("openai/gpt-4o") is OpenAIHTTPTransport
    assert cloud_of("anthropic/claude-3-5-haiku") is CloudTransport
    assert cloud_of("gpt-4o-mini", transport="litellm") is CloudTransport
