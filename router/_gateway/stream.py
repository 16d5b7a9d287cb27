"""Streams: the objects ``create(stream=True)`` returns, and the one chunk assembler.

``HybridStream`` / ``AsyncHybridStream`` make rows == requests for every stream.

Like ``openai.Stream`` / ``openai.AsyncStream`` they iterate chunks and have ``close()`` and
context-manager forms. What they add: a stream that is dropped or closed before its first chunk
was read still ends its request — the upstream connection is released and the ledger row is
written (a plain generator that never started runs no ``finally``). A stream closed part-way
is recorded by the generator itself ("stream closed by the caller").
"""

from __future__ import annotations

import contextlib
import time
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
        routed: tuple[str, str] = ("", ""),
    ) -> None:
        self._chunks = chunks
        self._on_unread = on_unread
        self._upstream = upstream
        self.routed = routed
        """``(route, reason)`` known before the first chunk (a server sends them as headers);
        cost and the rest arrive on the last chunk's ``route``."""
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


class StreamAssembler:
    """Turns backend deltas into OpenAI chunks and a final result, for sync and async alike.

    Like openai-python's ``ChatCompletionStreamState``: the emitters only loop and yield; what a
    chunk holds, how text accumulates and when the answer is complete live here once.
    """

    def __init__(self, request: Any, result: Any) -> None:
        from router._gateway.responses import chunk

        self._chunk = chunk
        self.request = request
        self.result = result
        self.cid = f"chatcmpl-{request.request_id}"
        self.created = int(time.time())
        self.parts: list[str] = []
        self.compute_seconds: float | None = None

    def first(self) -> Any:
        """The role chunk every stream opens with."""
        return self._chunk(self.cid, self.created, self.request.model, role="assistant")

    def feed(self, delta: Any) -> Any | None:
        """Fold one delta in; return the chunk to send, if any."""
        if delta.result is not None:
            self.result = delta.result
            self.compute_seconds = delta.result.compute_seconds
            return None
        if not delta.text:
            return None
        self.parts.append(delta.text)
        return self._chunk(self.cid, self.created, self.request.model, content=delta.text)

    def answer(self) -> Any:
        """The complete result (text joined from the deltas when the backend sent no result)."""
        if self.result.text == "" and self.parts:
            self.result.text = "".join(self.parts)
        return self.result

    def last(self, info: Any) -> list[Any]:
        """The finish chunk and, when asked for, the usage chunk (the last one carries route)."""
        from router._gateway.responses import final_chunk

        return list(final_chunk(self.cid, self.created, self.request, self.result, info))
