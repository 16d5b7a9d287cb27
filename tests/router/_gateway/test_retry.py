"""Backoff, jitter, Retry-After and which errors are retried."""

from __future__ import annotations

import pytest

from router._gateway.retry import Retrier, RetryConfig
from router.errors import CloudAuthError, CloudServerError, CloudTimeout, RateLimited


def flaky(errors):
    calls = {"n": 0}

    def fn():
        calls["n"] += 1
        if errors:
            raise errors.pop(0)
        return "ok"

    return fn, calls


def test_retries_transient_errors_with_growing_jittered_backoff():
    waits: list[float] = []
    retrier = Retrier(RetryConfig(max_retries=3, base_s=1.0, max_s=100), sleep=waits.append, seed=1)
    fn, calls = flaky([CloudServerError("x"), CloudTimeout(), CloudServerError("y")])
    assert retrier.call(fn) == "ok" and calls["n"] == 4
    assert len(waits) == 3
    for attempt, wait in enumerate(waits):
        assert 0 <= wait <= 1.0 * 2**attempt  # full jitter below the doubling ceiling


def test_honours_retry_after_capped_by_max():
    waits: list[float] = []
    retrier = Retrier(RetryConfig(max_retries=2, max_s=5), sleep=waits.append)
    fn, _ = flaky([RateLimited("slow down", retry_after=2.5), RateLimited("again", retry_after=60)])
    assert retrier.call(fn) == "ok"
    assert waits == [2.5, 5]


def test_client_errors_are_not_retried():
    retrier = Retrier(RetryConfig(max_retries=5), sleep=lambda s: None)
    fn, calls = flaky([CloudAuthError("bad key")])
    with pytest.raises(CloudAuthError):
        retrier.call(fn)
    assert calls["n"] == 1


def test_gives_up_after_max_retries_with_the_last_error():
    retrier = Retrier(RetryConfig(max_retries=2), sleep=lambda s: None)
    fn, calls = flaky([CloudServerError("a"), CloudServerError("b"), CloudServerError("c")])
    with pytest.raises(CloudServerError, match="c"):
        retrier.call(fn)
    assert calls["n"] == 3


def test_no_wait_past_the_callers_deadline():
    import time

    waits: list[float] = []
    retrier = Retrier(RetryConfig(max_retries=3), sleep=waits.append)
    fn, calls = flaky([RateLimited("x", retry_after=10)])
    with pytest.raises(RateLimited):
        retrier.call(fn, deadline=time.monotonic() + 1)
    assert waits == [] and calls["n"] == 1


async def test_async_retries():
    waits: list[float] = []

    async def asleep(s):
        waits.append(s)

    retrier = Retrier(RetryConfig(max_retries=1, base_s=0.1), asleep=asleep)
    errors = [CloudServerError("x")]

    async def fn():
        if errors:
            raise errors.pop()
        return "ok"

    assert await retrier.acall(fn) == "ok" and len(waits) == 1


def test_retry_settings_come_from_the_policy_cloud_section():
    from router.policy import CloudConfig

    assert RetryConfig.from_policy(CloudConfig()) == RetryConfig()  # one set of defaults
    cloud = CloudConfig(max_retries=1, backoff_base_s=0.25, backoff_max_s=4)
    assert RetryConfig.from_policy(cloud) == RetryConfig(max_retries=1, base_s=0.25, max_s=4.0)
