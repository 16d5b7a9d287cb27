"""Retries with exponential backoff and full jitter, honouring ``Retry-After``.

Only errors whose class says ``retryable = True`` are retried (429, 5xx, timeouts, connection
errors); any other 4xx fails at once. This is the one place retries happen.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from router import _defaults
from router.errors import BackendError

if TYPE_CHECKING:
    from router.policy import CloudConfig

T = TypeVar("T")


@dataclass(frozen=True)
class RetryConfig:
    """How hard to retry a failing cloud call.

    >>> RetryConfig.from_policy(load_policy("default").cloud)
    RetryConfig(max_retries=3, base_s=0.5, max_s=20.0)
    >>> Retrier(RetryConfig(max_retries=0))  # fail at once
    """

    max_retries: int = _defaults.CLOUD_MAX_RETRIES
    """Extra attempts after the first; 0 disables retries."""
    base_s: float = _defaults.BACKOFF_BASE_S
    """First backoff ceiling; doubles each attempt (full jitter picks uniformly below it)."""
    max_s: float = _defaults.BACKOFF_MAX_S
    """Cap on any single wait, ``Retry-After`` included."""

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_s < 0 or self.max_s < 0:
            raise ValueError("RetryConfig values must be >= 0")

    @classmethod
    def from_policy(cls, cloud: CloudConfig) -> RetryConfig:
        """The retry settings of a policy's ``cloud:`` section (``max_retries``,
        ``backoff_base_s``, ``backoff_max_s``): the one place those keys are read."""
        return cls(
            max_retries=cloud.max_retries, base_s=cloud.backoff_base_s, max_s=cloud.backoff_max_s
        )


def backoff_delay(
    attempt: int, error: BaseException, config: RetryConfig, rng: random.Random
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (attempt counts from 0)."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None and retry_after >= 0:
        return min(float(retry_after), config.max_s)
    return rng.uniform(0, min(config.max_s, config.base_s * (2**attempt)))


def should_retry(error: BaseException, attempt: int, config: RetryConfig) -> bool:
    """Retry only errors marked ``retryable`` (429, 5xx, timeouts), ``max_retries`` times."""
    return isinstance(error, BackendError) and error.retryable and attempt < config.max_retries


class Retrier:
    """Runs a callable again on retryable backend errors, with backoff, inside a deadline.

    It keeps no count across calls and reports none: the ledger row does not say how many
    attempts a call took.

    >>> retrier = Retrier(RetryConfig(max_retries=2), seed=0)
    >>> retrier.call(lambda: cloud.complete(request), deadline=time.monotonic() + 30)
    """

    def __init__(
        self,
        config: RetryConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        seed: int | None = None,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self._asleep = asleep
        self._rng = random.Random(seed)

    def call(self, fn: Callable[[], T], *, deadline: float | None = None) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except BackendError as exc:
                delay = backoff_delay(attempt, exc, self.config, self._rng)
                if not should_retry(exc, attempt, self.config) or _past(deadline, delay):
                    raise
            self._sleep(delay)
            attempt += 1

    async def acall(self, fn: Callable[[], Awaitable[T]], *, deadline: float | None = None) -> T:
        attempt = 0
        while True:
            try:
                return await fn()
            except BackendError as exc:
                delay = backoff_delay(attempt, exc, self.config, self._rng)
                if not should_retry(exc, attempt, self.config) or _past(deadline, delay):
                    raise
            await self._asleep(delay)
            attempt += 1


def _past(deadline: float | None, delay: float) -> bool:
    """A wait that would end after the caller's overall timeout is not worth starting."""
    return deadline is not None and time.monotonic() + delay >= deadline
