"""The replay cloud speaks OpenAI's chat protocol over real HTTP and fails on demand."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from router.devtools.data import DATA_FILES, data_path, load_banking77, load_gsm8k
from router.devtools.replay import FAULTS, ReplayCloud, count_prompt_tokens, count_text_tokens

MODEL = "gpt-4-1106-preview"
CARD_PROMPT = "I am still waiting on my card?"
CARD_ANSWER = "card_arrival"
LONG_PROMPT = "Tell me a story."
LONG_ANSWER = "Once upon a time there was a small model that learned from a large one."


@pytest.fixture
def replay_cloud() -> Iterator[ReplayCloud]:
    """A started replay cloud with two known prompts; stopped after the test."""
    with ReplayCloud({CARD_PROMPT: CARD_ANSWER, LONG_PROMPT: LONG_ANSWER}) as cloud:
        yield cloud


def _client(cloud: ReplayCloud, *, timeout: float = 5.0, key: str = "sk-test") -> openai.OpenAI:
    return openai.OpenAI(base_url=cloud.base_url, api_key=key, max_retries=0, timeout=timeout)


def _ask(client: openai.OpenAI, prompt: str = CARD_PROMPT, **kw):  # noqa: ANN202
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], **kw
    )


# -- answers and usage ---------------------------------------------------------------------


def test_answers_recorded_prompt_with_real_token_counts(replay_cloud: ReplayCloud) -> None:
    out = _ask(_client(replay_cloud))
    assert out.choices[0].message.content == CARD_ANSWER
    assert out.choices[0].finish_reason == "stop"
    assert out.model == MODEL
    messages = [{"role": "user", "content": CARD_PROMPT}]
    assert out.usage.prompt_tokens == count_prompt_tokens(messages)
    assert out.usage.completion_tokens == count_text_tokens(CARD_ANSWER)
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_token_counts_are_cl100k_with_chat_overhead() -> None:
    # "card_arrival" is card/_/arrival in cl100k_base; the 8-token prompt gets 3 per message,
    # 1 for the role and 3 for reply priming, as OpenAI bills chat messages.
    assert count_text_tokens("card_arrival") == 3
    assert count_prompt_tokens([{"role": "user", "content": CARD_PROMPT}]) == 15
    two = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": CARD_PROMPT}]
    assert count_prompt_tokens(two) > count_prompt_tokens(two[1:])


def test_lookup_uses_last_user_message_stripped(replay_cloud: ReplayCloud) -> None:
    out = _client(replay_cloud).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You label bank messages."},
            {"role": "user", "content": "something earlier"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": f"  {CARD_PROMPT}\n"},
        ],
    )
    assert out.choices[0].message.content == CARD_ANSWER


def test_unknown_prompt_is_openai_style_404(replay_cloud: ReplayCloud) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        _ask(_client(replay_cloud), "never recorded")
    error = info.value.body
    assert set(error) >= {"message", "type", "code"}
    assert "never recorded" in error["message"]


def test_default_answer_covers_unknown_prompts() -> None:
    with ReplayCloud({}, default_answer="I don't know.") as cloud:
        assert _ask(_client(cloud), "anything").choices[0].message.content == "I don't know."


def test_max_tokens_truncates_with_length_finish(replay_cloud: ReplayCloud) -> None:
    out = _ask(_client(replay_cloud), LONG_PROMPT, max_tokens=4)
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 4
    assert LONG_ANSWER.startswith(out.choices[0].message.content)


def test_stop_sequence_cuts_answer(replay_cloud: ReplayCloud) -> None:
    out = _ask(_client(replay_cloud), LONG_PROMPT, stop=["small"])
    assert out.choices[0].message.content == "Once upon a time there was a "


def test_models_endpoint_lists_model(replay_cloud: ReplayCloud) -> None:
    assert [m.id for m in _client(replay_cloud).models.list().data] == [MODEL]


def test_invalid_json_body_is_400_and_keeps_faults_queued(replay_cloud: ReplayCloud) -> None:
    replay_cloud.inject("500")
    resp = httpx.post(f"{replay_cloud.base_url}/chat/completions", content=b"{not json")
    assert resp.status_code == 400
    assert "not valid JSON" in resp.json()["error"]["message"]
    assert replay_cloud.faults_served == []
    with pytest.raises(openai.InternalServerError):
        _ask(_client(replay_cloud))


def test_missing_messages_is_400(replay_cloud: ReplayCloud) -> None:
    resp = httpx.post(f"{replay_cloud.base_url}/chat/completions", json={"model": MODEL})
    assert resp.status_code == 400
    assert "messages" in resp.json()["error"]["message"]


def test_require_api_key() -> None:
    with ReplayCloud({CARD_PROMPT: CARD_ANSWER}, require_api_key="sk-right") as cloud:
        with pytest.raises(openai.AuthenticationError):
            _ask(_client(cloud, key="sk-wrong"))
        assert _ask(_client(cloud, key="sk-right")).choices[0].message.content == CARD_ANSWER


def test_latency_delays_each_request() -> None:
    with ReplayCloud({CARD_PROMPT: CARD_ANSWER}, latency_ms=150) as cloud:
        client = _client(cloud)
        start = time.perf_counter()
        _ask(client)
        _ask(client)
        assert time.perf_counter() - start >= 0.3


# -- streaming -----------------------------------------------------------------------------


def test_stream_sends_pieces_then_usage(replay_cloud: ReplayCloud) -> None:
    chunks = list(
        _ask(
            _client(replay_cloud), LONG_PROMPT, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == LONG_ANSWER
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == count_text_tokens(LONG_ANSWER)


def test_stream_without_include_usage_has_no_usage(replay_cloud: ReplayCloud) -> None:
    chunks = list(_ask(_client(replay_cloud), stream=True))
    assert all(c.usage is None for c in chunks)


def test_stream_wire_format_is_sse_with_done(replay_cloud: ReplayCloud) -> None:
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": CARD_PROMPT}]}
    resp = httpx.post(f"{replay_cloud.base_url}/chat/completions", json=body)
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [line for line in resp.text.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][len("data: ") :])["object"] == "chat.completion.chunk"


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("500", openai.InternalServerError),
        ("429", openai.RateLimitError),
        ("401", openai.AuthenticationError),
        ("drop", openai.APIConnectionError),
    ],
)
def test_fault_is_served_once_then_recovers(
    replay_cloud: ReplayCloud, fault: str, error: type[Exception]
) -> None:
    client = _client(replay_cloud)
    replay_cloud.inject(fault)
    with pytest.raises(error):
        _ask(client)
    assert _ask(client).choices[0].message.content == CARD_ANSWER
    assert replay_cloud.faults_served == [fault]
    assert replay_cloud.requests_seen == 2


def test_429_sends_retry_after(replay_cloud: ReplayCloud) -> None:
    replay_cloud.inject("429", retry_after=2.5)
    with pytest.raises(openai.RateLimitError) as info:
        _ask(_client(replay_cloud))
    assert info.value.response.headers["retry-after"] == "2.5"


def test_malformed_is_200_with_invalid_json(replay_cloud: ReplayCloud) -> None:
    replay_cloud.inject("malformed")
    body = {"model": MODEL, "messages": [{"role": "user", "content": CARD_PROMPT}]}
    resp = httpx.post(f"{replay_cloud.base_url}/chat/completions", json=body)
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        resp.json()


def test_fault_times_counts_consecutive_requests(replay_cloud: ReplayCloud) -> None:
    client = _client(replay_cloud)
    replay_cloud.inject("500", times=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            _ask(client)
    assert _ask(client).choices[0].message.content == CARD_ANSWER
    assert replay_cloud.faults_served == ["500", "500"]


def test_hang_times_out_client_and_does_not_block_stop() -> None:
    cloud = ReplayCloud({CARD_PROMPT: CARD_ANSWER}).start()
    cloud.inject("hang", times=2)
    with pytest.raises(openai.APITimeoutError):
        _ask(_client(cloud, timeout=0.3))
    # A second hang still in flight when the server stops must not hold stop() up.
    errors: list[Exception] = []

    def call() -> None:
        try:
            _ask(_client(cloud))
        except openai.APIError as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    while cloud.requests_seen < 2:
        time.sleep(0.01)
    start = time.perf_counter()
    cloud.stop()
    assert time.perf_counter() - start < 2.0
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], openai.APIConnectionError)


def test_inject_rejects_unknown_fault(replay_cloud: ReplayCloud) -> None:
    with pytest.raises(ValueError, match="unknown fault 'teapot'"):
        replay_cloud.inject("teapot")
    with pytest.raises(ValueError, match="times"):
        replay_cloud.inject("500", times=0)
    assert set(FAULTS) == {"500", "429", "hang", "drop", "malformed", "401"}


def test_base_url_before_start_raises() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = ReplayCloud().base_url


# -- shipped data --------------------------------------------------------------------------


def test_banking77_slice_covers_all_intents() -> None:
    rows = load_banking77()
    assert 4000 <= len(rows) <= 5500
    assert len({r["category"] for r in rows}) == 77
    from router.devtools.data import demo_intents

    demo = set(demo_intents([r["category"] for r in rows]))
    assert len(demo) == 20
    assert sum(r["category"] in demo for r in rows) > 2500  # every row of the demo's intents
    assert all(r["text"].strip() and r["category"] for r in rows)


def test_gsm8k_slice_has_gpt4_answers_and_labels() -> None:
    rows = load_gsm8k()
    assert len(rows) == 300
    assert all(isinstance(r["weak_correct"], bool) for r in rows)
    assert all(isinstance(r["strong_correct"], bool) for r in rows)
    # GPT-4 beats Mixtral on GSM8K: the recorded labels must show it.
    assert sum(r["strong_correct"] for r in rows) > sum(r["weak_correct"] for r in rows)
    assert len({r["prompt"] for r in rows}) == 300


def test_data_files_ship_with_licences() -> None:
    for name in DATA_FILES:
        assert data_path(name).stat().st_size > 0
    folder = data_path(DATA_FILES[0]).parent
    for licence in ("LICENSE-banking77", "LICENSE-routellm", "LICENSE-gsm8k", "ATTRIBUTION.md"):
        assert (folder / licence).is_file(), licence
    with pytest.raises(FileNotFoundError, match="banking77.csv"):
        data_path("nope.csv")


def test_from_datasets_replays_gold_labels_and_gpt4_answers() -> None:
    bank, gsm = load_banking77()[0], load_gsm8k()[0]
    with ReplayCloud.from_datasets(answers={"extra": "yes"}) as cloud:
        client = _client(cloud)
        assert _ask(client, bank["text"]).choices[0].message.content == bank["category"]
        assert _ask(client, gsm["prompt"]).choices[0].message.content == gsm["answer"]
        assert _ask(client, "extra").choices[0].message.content == "yes"
