"""The stream objects ``create(stream=True)`` returns, so rows == requests for every stream.

Like ``openai.Stream`` / ``openai.AsyncStream`` they iterate chunks and have ``close()`` and
context-manager forms. What they add: a stream that is dropped or closed before its first chunk
was read still ends its request — the upstream connection is released and the ledger row is
written (a plain generator that never started runs no ``finally``). A stream closed part-way
is recorded by the generator itself ("stream closed by the caller").
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any


class HybridStream:
    """Iterator of ``ChatCompletionChunk`` (sync)."""

    def __init__(self, chunks: Iterator[Any], *, on_unread: Callable[[], None]) -> None:
        self._chunks = chunks
        self._on_unread = on_unread
        self._started = False
        self._closed = False

    def __iter__(self) -> HybridStream:
        return self

    def __next__(self) -> Any:
        self._started = True
        return next(self._chunks)

    def close(self) -> None:
        """Stop the stream: release the upstream connection and record the request."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            self._on_unread()
        close = getattr(self._chunks, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> HybridStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class AsyncHybridStream:
    """Async iterator of ``ChatCompletionChunk``."""

    def __init__(
        self,
        chunks: AsyncIterator[Any],
        *,
        on_unread: Callable[[], None],
        upstream: Any = None,
    ) -> None:
        self._chunks = chunks
        self._on_unread = on_unread
        self._upstream = upstream
        self._started = False
        self._closed = False

    def __aiter__(self) -> AsyncHybridStream:
        return self

    async def __anext__(self) -> Any:
        self._started = True
        return await self._chunks.__anext__()

    def _record_unread(self) -> bool:
        if self._closed:
            return False
        self._closed = True
        if not self._started:
            self._on_unread()
        return True

    async def close(self) -> None:
        """Stop the stream: release the upstream connection and record the request."""
        if not self._record_unread():
            return
        for it in (self._chunks, self._upstream if not self._started else None):
            aclose = getattr(it, "aclose", None)
            if callable(aclose):
                with contextlib.suppress(Exception):
                    await aclose()

    async def __aenter__(self) -> AsyncHybridStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self) -> None:
        # No awaiting here: write the row of a never-read stream; a started one is finalized
        # by the event loop's async-generator hooks, which run its own "closed" handling.
        with contextlib.suppress(Exception):
            self._record_unread()
