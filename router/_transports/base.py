"""The one interface every backend implements; the client never branches on backend type."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Protocol, runtime_checkable

from router.types import BackendResult, ChatRequest, StreamDelta


@runtime_checkable
class Transport(Protocol):
    """Answers one validated request. Raises ``router.errors.BackendError`` subclasses only.

    Retries, ledger writes and routing happen above, in the client; a transport does one try.
    """

    name: str
    """``"local"`` or ``"cloud"``; recorded as the route."""

    def complete(self, request: ChatRequest) -> BackendResult: ...

    async def acomplete(self, request: ChatRequest) -> BackendResult: ...

    def stream(self, request: ChatRequest) -> Iterator[StreamDelta]: ...

    def astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]: ...


class MockTransport:
    """Wraps a plain function ``ChatRequest -> BackendResult`` (tests, examples).

    >>> t = MockTransport(lambda r: BackendResult(text="hi"), name="local")
    >>> t.complete(req).text
    'hi'
    """

    def __init__(self, handler, *, name: str = "cloud") -> None:  # noqa: ANN001 - any callable
        self.handler = handler
        self.name = name
        self.calls: list[ChatRequest] = []

    def complete(self, request: ChatRequest) -> BackendResult:
        self.calls.append(request)
        return self.handler(request)

    async def acomplete(self, request: ChatRequest) -> BackendResult:
        return self.complete(request)

    def stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        result = self.complete(request)
        for word in result.text.split(" "):
            yield StreamDelta(text=word + " " if word != result.text.split(" ")[-1] else word)
        yield StreamDelta(result=result)

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        for delta in self.stream(request):
            yield delta
