"""Engine behaviour on a tiny random Llama: batching equivalence, stops, limits, logprobs."""

from __future__ import annotations

import math

import pytest

from local_models import GenerationRequest
from local_models.errors import InvalidRequest

PROMPTS = [
    "Hi",
    "What is the capital of France? Answer in one word please.",
    "Write a long poem about the sea, the wind, the sky and all the ships that sail on it.",
    "2+2=",
]


def user(text: str) -> tuple[dict, ...]:
    return ({"role": "user", "content": text},)


def test_batched_greedy_equals_unbatched_for_different_prompt_lengths(make_engine):
    engine = make_engine()
    reqs = [GenerationRequest(messages=user(p), max_tokens=12 + i) for i, p in enumerate(PROMPTS)]
    alone = [engine.generate([r])[0] for r in reqs]
    together = engine.generate(reqs)
    assert len({engine.count_prompt_tokens(r.messages) for r in reqs}) == len(reqs)
    for a, b in zip(alone, together, strict=True):
        assert b.text == a.text
        assert b.completion_tokens == a.completion_tokens
        assert b.token_logprobs == pytest.approx(a.token_logprobs, abs=1e-4)


def test_each_request_honours_its_own_max_tokens(make_engine):
    engine = make_engine()
    full = engine.generate([GenerationRequest(messages=user(PROMPTS[1]), max_tokens=30)])[0]
    assume_no_eos = full.finish_reason == "length"
    reqs = [GenerationRequest(messages=user(PROMPTS[1]), max_tokens=n) for n in (1, 5, 30)]
    results = engine.generate(reqs)
    for req, res in zip(reqs, results, strict=True):
        assert res.completion_tokens <= req.max_tokens
        assert full.text.startswith(res.text)
        if assume_no_eos:
            assert res.completion_tokens == req.max_tokens
            assert res.finish_reason == "length"


def test_logprobs_are_nonpositive_and_one_per_completion_token(make_engine):
    engine = make_engine()
    results = engine.generate(
        [GenerationRequest(messages=user(p), max_tokens=8) for p in PROMPTS]
        + [GenerationRequest(messages=user("x"), max_tokens=8, temperature=1.0, seed=3)]
    )
    for res in results:
        assert len(res.token_logprobs) == res.completion_tokens > 0
        assert all(lp <= 0.0 and math.isfinite(lp) for lp in res.token_logprobs)
        assert res.prompt_tokens > 0


def _token_boundaries(tokenizer, text_ids):
    return {
        len(tokenizer.decode(text_ids[:k], skip_special_tokens=True))
        for k in range(len(text_ids) + 1)
    }


def test_stop_string_spanning_tokens_truncates_and_reports_stop(make_engine, tokenizer):
    engine = make_engine()
    full = engine.generate([GenerationRequest(messages=user(PROMPTS[2]), max_tokens=24)])[0]
    text = full.text
    ids = tokenizer(text, add_special_tokens=False).input_ids
    bounds = _token_boundaries(tokenizer, ids)
    # a stop string that starts mid-token and crosses at least one token boundary
    start = next(i for i in range(1, len(text) - 6) if i not in bounds)
    stop = text[start : start + 6]
    assert any(start < b < start + 6 for b in bounds)
    res = engine.generate(
        [GenerationRequest(messages=user(PROMPTS[2]), max_tokens=24, stop=(stop,))]
    )[0]
    assert res.finish_reason == "stop"
    assert res.text == text[: text.find(stop)]
    assert stop not in res.text


def test_stream_deltas_concatenate_to_final_text_and_hold_back_stop_prefix(make_engine):
    engine = make_engine()
    full = engine.generate([GenerationRequest(messages=user(PROMPTS[0]), max_tokens=20)])[0]
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 4]
    pieces: list[str] = []
    req = GenerationRequest(messages=user(PROMPTS[0]), max_tokens=20, stop=(stop,))
    [res] = engine.generate([req], on_delta=lambda i, t: pieces.append(t))
    assert "".join(pieces) == res.text
    assert stop not in "".join(pieces)


def test_seeded_sampling_is_reproducible_and_differs_from_greedy_sometimes(make_engine):
    engine = make_engine()
    req = GenerationRequest(messages=user("tell"), max_tokens=10, temperature=1.5, seed=11)
    a, b = engine.generate([req])[0], engine.generate([req])[0]
    assert a.text == b.text
    others = {
        engine.generate(
            [GenerationRequest(messages=user("tell"), max_tokens=10, temperature=1.5, seed=s)]
        )[0].text
        for s in range(4)
    }
    assert len(others) > 1


def test_allowed_answers_constrains_output(make_engine):
    engine = make_engine()
    answers = ("refund_request", "card_lost", "balance")
    req = GenerationRequest(messages=user("Which intent?"), max_tokens=20, allowed_answers=answers)
    res, free = engine.generate([req, GenerationRequest(messages=user("hi"), max_tokens=4)])
    assert res.text in answers
    assert res.finish_reason == "stop"
    assert res.closed_answer and not free.closed_answer  # the cascade scores labels apart


def test_prompt_longer_than_context_is_a_clear_error(make_engine):
    engine = make_engine(max_context_tokens=16)
    with pytest.raises(InvalidRequest, match="context limit"):
        engine.generate([GenerationRequest(messages=user("word " * 40))])


def test_completion_is_clamped_to_context_window(make_engine):
    engine = make_engine(max_context_tokens=20)
    req = GenerationRequest(messages=user("hi"), max_tokens=100)
    res = engine.generate([req])[0]
    assert res.prompt_tokens + res.completion_tokens <= 20


def test_malformed_messages_are_rejected(make_engine):
    engine = make_engine()
    with pytest.raises(InvalidRequest, match="content"):
        engine.generate([GenerationRequest(messages=({"role": "user", "content": 3},))])


def test_default_system_prompt_is_not_injected(make_engine):
    engine = make_engine()
    rendered = engine.render_prompt(user("hello"))
    assert "SmolLM" not in rendered
    assert rendered.startswith("<|im_start|>user\nhello")
    with_system = engine.render_prompt(
        ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"})
    )
    assert "Be brief." in with_system


def test_request_validation_names_the_problem():
    with pytest.raises(ValueError, match="max_tokens"):
        GenerationRequest(messages=user("x"), max_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        GenerationRequest(messages=user("x"), top_p=0)


def test_adapter_answer_sets_constrain_their_traffic_class_only(make_engine, make_adapter):
    import json
    from pathlib import Path

    labels = ["refund_request", "card_lost", "balance"]
    system = "Reply with the intent label only."
    path = make_adapter("labelled", seed=3)
    (Path(path) / "metadata.json").write_text(json.dumps({"answer_sets": {system: labels}}))
    engine = make_engine()
    assert engine.answer_sets == {}
    engine.swap_adapter(path, version="v0002")
    assert engine.answer_sets == {system: tuple(labels)}
    labelled = (
        {"role": "system", "content": system},
        {"role": "user", "content": "I lost my card"},
    )
    free = user("I lost my card")
    outs = engine.generate(
        [
            GenerationRequest(messages=labelled, max_tokens=20),
            GenerationRequest(messages=free, max_tokens=20),
        ]
    )
    assert outs[0].text in labels and outs[0].finish_reason == "stop"
    assert outs[1].text not in labels  # random weights ramble when unconstrained


def test_batch_compute_time_is_shared_not_duplicated(make_engine):
    import time

    engine = make_engine()
    reqs = [GenerationRequest(messages=user(f"tell me {i}"), max_tokens=6) for i in range(4)]
    t0 = time.perf_counter()
    outs = engine.generate(reqs)
    wall = time.perf_counter() - t0
    assert all(o.compute_seconds > 0 for o in outs)
    assert sum(o.compute_seconds for o in outs) <= wall


SUPPORT_SYSTEM = "You are the support bot of a bank. Reply with the intent label only, please."


def support(text: str) -> tuple[dict, ...]:
    return ({"role": "system", "content": SUPPORT_SYSTEM}, {"role": "user", "content": text})


def _same(a, b):
    assert [x.text for x in a] == [y.text for y in b]
    assert [x.prompt_tokens for x in a] == [y.prompt_tokens for y in b]
    for x, y in zip(a, b, strict=True):
        assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=1e-4)


def test_shared_system_prompt_prefix_cache_gives_the_same_answers(make_engine):
    texts = ["I lost my card", "Where is my refund? It has been a week.", "balance?"]
    batch1 = [GenerationRequest(messages=support(t), max_tokens=8) for t in texts]
    batch2 = [GenerationRequest(messages=support(t + " Thanks"), max_tokens=8) for t in texts]
    cached, plain = make_engine(), make_engine(prefix_cache=False)
    # the first batch prefills the prefix, the second reuses it, and so does a lone request
    # (under continuous batching newcomers often arrive one at a time)
    for batch in (batch1, batch2, batch1[:1]):
        _same(cached.generate(batch), plain.generate(batch))
    lone = [cached.encode(batch1[0])]
    assert 0 < cached.shared_prefix_len(lone, cached._prefixes) < len(lone[0])
    mixed = [batch1[0], GenerationRequest(messages=user("Hi"), max_tokens=8)]  # nothing shared
    _same(cached.generate(mixed), plain.generate(mixed))


def test_adapter_swap_drops_prefix_kv_computed_by_the_old_weights(make_engine, make_adapter):
    batch = [GenerationRequest(messages=support(t), max_tokens=8) for t in ("card", "refund")]
    engine = make_engine()
    engine.generate(batch)  # caches the prefix under the base weights
    path = make_adapter("swap", seed=5)
    engine.swap_adapter(path, version="v0002")
    fresh = make_engine(adapter_path=path, prefix_cache=False)
    _same(engine.generate(batch), fresh.generate(batch))
