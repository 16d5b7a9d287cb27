"""DynamicBatcher: per-caller results under concurrency, streaming, queue limits, adapter swaps."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from local_models import DynamicBatcher, GenerationRequest, GenerationResult
from local_models.errors import LocalModelError, ModelLoadError, Overloaded

PROMPTS = [f"Question number {i}: " + "why " * (i % 5) for i in range(12)]


def user(text: str) -> tuple[dict, ...]:
    return ({"role": "user", "content": text},)


def _reqs(n=12, max_tokens=10):
    return [GenerationRequest(messages=user(PROMPTS[i]), max_tokens=max_tokens) for i in range(n)]


def test_concurrent_callers_each_get_their_own_unbatched_answer(make_engine):
    engine = make_engine()
    reqs = _reqs()
    expected = [engine.generate([r])[0].text for r in reqs]
    with (
        DynamicBatcher(engine, max_batch_size=4, max_wait_ms=20, max_queue=64) as batcher,
        ThreadPoolExecutor(max_workers=12) as pool,
    ):
        got = list(pool.map(lambda r: batcher.submit(r).result(timeout=60).text, reqs))
    assert got == expected


async def test_async_submit_and_astream(make_engine):
    engine = make_engine()
    reqs = _reqs(6)
    expected = [engine.generate([r])[0].text for r in reqs]
    with DynamicBatcher(engine, max_batch_size=8, max_wait_ms=10, max_queue=64) as batcher:
        results = await asyncio.gather(*(batcher.asubmit(r) for r in reqs))
        assert [r.text for r in results] == expected
        pieces = [p async for p in batcher.astream(reqs[2])]
    assert isinstance(pieces[-1], GenerationResult)
    assert "".join(pieces[:-1]) == pieces[-1].text == expected[2]


def test_sync_stream_yields_deltas_then_result(make_engine):
    engine = make_engine()
    req = _reqs(1, max_tokens=15)[0]
    expected = engine.generate([req])[0]
    with DynamicBatcher(engine, max_batch_size=2, max_wait_ms=1, max_queue=8) as batcher:
        pieces = list(batcher.stream(req))
    assert all(isinstance(p, str) for p in pieces[:-1]) and len(pieces) > 2
    assert "".join(pieces[:-1]) == expected.text == pieces[-1].text


def _blocked_first(batcher):
    """Submit one request and wait until the model thread took it (and blocks on the held
    model lock), so what is submitted next waits in the queue."""
    first = batcher.submit(_reqs(1)[0])
    deadline = time.time() + 10
    while batcher.queue_depth and time.time() < deadline:
        time.sleep(0.01)
    return first


def test_full_queue_rejects_immediately_with_overloaded(make_engine):
    engine = make_engine()
    batcher = DynamicBatcher(engine, max_batch_size=1, max_wait_ms=0, max_queue=2)
    engine.model_lock.acquire()  # hold the model: the first request blocks inside generate
    try:
        first = _blocked_first(batcher)
        queued = [batcher.submit(r) for r in _reqs(2)]
        start = time.perf_counter()
        with pytest.raises(Overloaded, match="queue full"):
            batcher.submit(_reqs(1)[0])
        assert time.perf_counter() - start < 1.0
    finally:
        engine.model_lock.release()
    assert first.result(timeout=30).completion_tokens > 0
    assert all(f.result(timeout=30).text for f in queued)
    batcher.close()
    with pytest.raises(LocalModelError, match="closed"):
        batcher.submit(_reqs(1)[0])


def test_queue_bounded_by_expected_wait_refuses_at_once_with_a_retry_after(make_engine):
    """With a measured capacity of 5 rows/s and a 0.5 s bound, two requests may wait (0.4 s),
    a third would wait 0.6 s and is refused at once, saying when to retry."""
    engine = make_engine()
    batcher = DynamicBatcher(
        engine, max_batch_size=1, max_wait_ms=0, max_queue=64, max_queue_wait_s=0.5
    )
    batcher._saturated.add(rows=10, seconds=2.0)  # what the model thread measures under load
    engine.model_lock.acquire()  # hold the model: the first request blocks inside generate
    try:
        first = _blocked_first(batcher)
        queued = [batcher.submit(r) for r in _reqs(2)]  # waits 0.2 s, then 0.4 s: admitted
        assert batcher.expected_wait_s() == pytest.approx(0.6)
        start = time.perf_counter()
        with pytest.raises(
            Overloaded, match=r"wait ~0.6 s for a slot \(the bound is 0.5 s\)"
        ) as refused:
            batcher.submit(_reqs(1)[0])
        assert time.perf_counter() - start < 1.0
        assert refused.value.retry_after_s == pytest.approx(0.1)
    finally:
        engine.model_lock.release()
    assert first.result(timeout=30).completion_tokens > 0
    assert all(f.result(timeout=30).text for f in queued)
    batcher.close()


def test_a_burst_admitted_before_capacity_was_known_is_shed_to_the_bound(make_engine):
    """The first burst queues up to max_queue; once capacity is measured (5 rows/s, bound 0.5 s:
    two may wait), the newest beyond that are refused at once, each with its own retry time."""
    engine = make_engine()
    batcher = DynamicBatcher(
        engine, max_batch_size=1, max_wait_ms=0, max_queue=64, max_queue_wait_s=0.5
    )
    engine.model_lock.acquire()
    try:
        first = _blocked_first(batcher)
        queued = [batcher.submit(r) for r in _reqs(6)]  # capacity unknown: all admitted
        assert batcher.queue_depth == 6
        batcher._saturated.add(rows=10, seconds=2.0)
        batcher._shed()
        assert batcher.queue_depth == 2
        for position, future in enumerate(queued[2:], start=2):
            with pytest.raises(Overloaded, match="bound is 0.5 s") as refused:
                future.result(timeout=1)
            assert refused.value.retry_after_s == pytest.approx((position + 1) * 0.2 - 0.5)
    finally:
        engine.model_lock.release()
    assert first.result(timeout=30).text and all(f.result(timeout=30).text for f in queued[:2])
    batcher.close()


def test_background_work_waits_its_turn_instead_of_being_refused_or_shed(make_engine):
    engine = make_engine()
    batcher = DynamicBatcher(
        engine, max_batch_size=1, max_wait_ms=0, max_queue=64, max_queue_wait_s=0.5
    )
    batcher._saturated.add(rows=10, seconds=2.0)  # 0.2 s a row: two may wait
    label = GenerationRequest(messages=user(PROMPTS[0]), max_tokens=4, background=True)
    engine.model_lock.acquire()
    try:
        first = _blocked_first(batcher)
        labels = [batcher.submit(label) for _ in range(4)]  # 0.2 .. 0.8 s: all admitted
        with pytest.raises(Overloaded):
            batcher.submit(_reqs(1)[0])  # traffic behind them would wait 1.0 s
        batcher._shed()
        assert batcher.queue_depth == 4
    finally:
        engine.model_lock.release()
    assert first.result(timeout=30).text and all(f.result(timeout=30).text for f in labels)
    batcher.close()


def test_capacity_is_measured_only_while_requests_wait(make_engine):
    engine = make_engine()
    with DynamicBatcher(engine, max_batch_size=2, max_wait_ms=0, max_queue=64) as batcher:
        for r in _reqs(3):  # one at a time: nobody waits, so nothing is measured
            batcher.submit(r).result(timeout=30)
        assert batcher._saturated.rows == 0
        futures = [batcher.submit(r) for r in _reqs(12)]  # 12 for 2 slots: most wait
        assert all(f.result(timeout=60).text for f in futures)
        assert batcher._saturated.rows > 0 and batcher._saturated.seconds > 0


def test_one_bad_request_does_not_fail_its_batch_neighbours(make_engine):
    engine = make_engine(max_context_tokens=24)
    good = GenerationRequest(messages=user("hi"), max_tokens=4)
    bad = GenerationRequest(messages=user("word " * 50), max_tokens=4)
    with DynamicBatcher(engine, max_batch_size=4, max_wait_ms=50, max_queue=8) as batcher:
        f_good, f_bad = batcher.submit(good), batcher.submit(bad)
        assert f_good.result(timeout=30).completion_tokens > 0
        with pytest.raises(Exception, match="context limit"):
            f_bad.result(timeout=30)


def test_adapter_swap_under_load_keeps_each_request_on_one_adapter(make_engine, make_adapter):
    path_a, path_b = make_adapter("a", seed=1), make_adapter("b", seed=2)
    reqs = _reqs(12, max_tokens=12)
    ref_a = [r.text for r in make_engine(adapter_path=path_a, adapter_version="A").generate(reqs)]
    ref_b = [r.text for r in make_engine(adapter_path=path_b, adapter_version="B").generate(reqs)]
    assert ref_a != ref_b  # the adapters really change the answers
    engine = make_engine(adapter_path=path_a, adapter_version="A")
    with DynamicBatcher(engine, max_batch_size=3, max_wait_ms=1, max_queue=64) as batcher:
        before = [batcher.submit(r) for r in reqs]
        swapper = threading.Thread(
            target=engine.swap_adapter, args=(path_b,), kwargs={"version": "B"}
        )
        swapper.start()
        during = [batcher.submit(r) for r in reqs]
        swapper.join(timeout=60)
        after = [batcher.submit(r) for r in reqs]
        for futures in (before, during, after):
            for i, fut in enumerate(futures):
                res = fut.result(timeout=60)
                assert res.adapter_version in ("A", "B")
                assert res.text == (ref_a if res.adapter_version == "A" else ref_b)[i]
        assert {f.result().adapter_version for f in after} == {"B"}


def test_failed_swap_raises_and_keeps_old_adapter(make_engine, make_adapter, tmp_path):
    path_a = make_adapter("a", seed=1)
    engine = make_engine(adapter_path=path_a, adapter_version="A")
    req = _reqs(1)[0]
    before = engine.generate([req])[0]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text("{not json")
    (tmp_path / "broken" / "adapter_model.safetensors").write_bytes(b"garbage")
    for bad in (tmp_path / "missing", tmp_path / "broken"):
        with pytest.raises(ModelLoadError):
            engine.swap_adapter(str(bad), version="X")
    after = engine.generate([req])[0]
    assert engine.adapter_version == after.adapter_version == "A"
    assert after.text == before.text


def _first_delta(batcher, req):
    """Submit ``req`` and return its future once its first text piece was decoded."""
    started = threading.Event()
    future = batcher.submit(req, on_delta=lambda _text: started.set())
    assert started.wait(timeout=60)
    return future


def test_requests_join_a_running_batch_and_get_their_own_answer(make_engine):
    # Continuous batching: newcomers are spliced into a batch that is mid-generation (their
    # KV cache left-padded to the running one's length); each must still get exactly the answer
    # it gets alone.
    engine = make_engine()
    long = GenerationRequest(messages=user(PROMPTS[4]), max_tokens=40)
    late = [GenerationRequest(messages=user(PROMPTS[i]), max_tokens=12) for i in (0, 1, 7, 9)]
    system = {"role": "system", "content": "You are a support bot. Answer with one label."}
    shared = [  # a second group sharing a system prompt (goes through the prefix cache)
        GenerationRequest(messages=(system, *user(PROMPTS[i])), max_tokens=8) for i in (2, 3)
    ]
    expected = [engine.generate([r])[0].text for r in [long, *late, *shared]]
    with DynamicBatcher(engine, max_batch_size=8, max_wait_ms=0, max_queue=16) as batcher:
        first = _first_delta(batcher, long)
        joined = [batcher.submit(r) for r in late]
        in_pairs = [batcher.submit(r) for r in shared]
        got = [f.result(timeout=60).text for f in [first, *joined, *in_pairs]]
    assert got == expected


def test_a_short_request_does_not_wait_for_a_long_generation(make_engine, monkeypatch):

    engine = make_engine()
    long = GenerationRequest(messages=user(PROMPTS[4]), max_tokens=150)
    short = GenerationRequest(messages=user(PROMPTS[1]), max_tokens=5)
    assert engine.generate([long])[0].completion_tokens == 150  # it really runs that long
    finished: list[str] = []
    with DynamicBatcher(engine, max_batch_size=4, max_wait_ms=0, max_queue=8) as batcher:
        f_long = _first_delta(batcher, long)
        f_short = batcher.submit(short)
        f_short.add_done_callback(lambda _f: finished.append("short"))
        f_long.add_done_callback(lambda _f: finished.append("long"))
        assert f_short.result(timeout=60).text == engine.generate([short])[0].text
        assert f_long.result(timeout=60).completion_tokens == 150
    assert finished == ["short", "long"]


def test_a_cancelled_request_leaves_the_batch_and_frees_its_slot(make_engine, monkeypatch):
    from local_models.running_batch import RunningBatch

    steps = []
    step = RunningBatch.step

    def counting(self):
        steps.append(len(self.rows))
        return step(self)

    monkeypatch.setattr(RunningBatch, "step", counting)
    engine = make_engine()
    long = GenerationRequest(messages=user(PROMPTS[4]), max_tokens=150)
    short = GenerationRequest(messages=user(PROMPTS[1]), max_tokens=5)
    with DynamicBatcher(engine, max_batch_size=1, max_wait_ms=0, max_queue=8) as batcher:
        gone = _first_delta(batcher, long)
        assert gone.cancel()  # e.g. the HTTP client hung up, or its timeout passed
        assert batcher.submit(short).result(timeout=60).completion_tokens == 5
        stream = batcher.stream(long)
        next(stream)
        stream.close()  # a consumer that stops reading a stream cancels it too
        assert batcher.submit(short).result(timeout=60).completion_tokens == 5
    # With one slot, the short requests could only run once the long rows were gone: far
    # fewer decode steps than two full 150-token generations.
    assert len(steps) < 150


def test_a_broken_stream_consumer_does_not_fail_its_neighbours(make_engine):
    engine = make_engine()
    reqs = _reqs(3, max_tokens=10)
    expected = [engine.generate([r])[0].text for r in reqs[1:]]

    def explode(_text: str) -> None:
        raise RuntimeError("consumer went away")

    with DynamicBatcher(engine, max_batch_size=4, max_wait_ms=50, max_queue=8) as batcher:
        broken = batcher.submit(reqs[0], on_delta=explode)
        others = [batcher.submit(r) for r in reqs[1:]]
        assert [f.result(timeout=60).text for f in others] == expected
    assert broken.cancelled()
