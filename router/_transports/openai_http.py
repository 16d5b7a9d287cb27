"""The cloud backend's fast path: OpenAI's chat-completions protocol over pooled httpx clients.

Why not litellm for everything: litellm translates ~100 provider APIs and pays for it on every
call (a median 9.6 ms per loopback call here against 3.3 ms for the same request over httpx,
``benchmarks/serve_overhead.py``). A provider that already speaks OpenAI's protocol (OpenAI
itself, vLLM, llama-server, LiteLLM's proxy, another ``hybridgate serve``) needs none of that, so
``cloud.transport: auto`` picks this transport for those and litellm for the rest.

Same contract as ``CloudTransport``: one try per call, every failure a typed ``router.errors``
error, the key never in a message. Streams are read as server-sent events; a stream that ends
without a finish reason was cut and is an error, never a short answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn

import httpx

from router._defaults import CLOUD_CONNECT_TIMEOUT_S, CLOUD_TIMEOUT_S
from router._transports.cloud import (
    MALFORMED_STATUS,
    PLACEHOLDER_API_KEY,
    check_settings,
    count_tokens,
    error_for_status,
    finish_reason,
    parse_retry_after,
    token_logprobs,
    usual_key_env,
)
from router.errors import CloudConnectionError, CloudError, CloudServerError, CloudTimeout
from router.types import BackendResult, ChatRequest, StreamDelta

OPENAI_BASE = "https://api.openai.com/v1"
POOL = httpx.Limits(max_connections=256, max_keepalive_connections=64)
"""Connections kept per client: a gateway under load reuses them instead of reconnecting."""


def speaks_openai(model: str) -> bool:
    """Whether ``model`` is reached with OpenAI's own wire protocol: a bare or ``openai/`` name
    (at OpenAI, or at a custom ``api_base``: an OpenAI-compatible server, as litellm reads it)."""
    provider = model.split("/", 1)[0] if "/" in model else None
    return provider in (None, "openai")


class OpenAIHTTPTransport:
    """Sends a request to an OpenAI-compatible ``/chat/completions``; one try, typed errors.

    >>> t = OpenAIHTTPTransport(model="gpt-4o-mini")              # key from OPENAI_API_KEY
    >>> t = OpenAIHTTPTransport(model="gpt-4-1106-preview", api_base=replay.base_url)

    Args:
        model: The model name to send (an ``openai/`` prefix is dropped).
        api_base: Base URL ending in ``/v1``; default OpenAI's.
        api_key: Bearer key; never logged or shown in ``repr``. Default: the provider's usual
            variable, or a placeholder for a custom ``api_base`` (a keyless local server).
        timeout_s: Total seconds one request may take (also the per-read limit).
        connect_timeout_s: Seconds to establish the connection.
    """

    name = "cloud"

    def __init__(
        self,
        *,
        model: str,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout_s: float = CLOUD_TIMEOUT_S,
        connect_timeout_s: float = CLOUD_CONNECT_TIMEOUT_S,
    ) -> None:
        check_settings(model, timeout_s, connect_timeout_s)
        self.model = model.removeprefix("openai/")
        self.api_base = (api_base or OPENAI_BASE).rstrip("/")
        if not api_key:
            api_key = os.environ.get(usual_key_env(model)) or (
                PLACEHOLDER_API_KEY if api_base else None
            )
        self._api_key = api_key or None
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self._url = f"{self.api_base}/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if self._api_key:
            self._headers["Authorization"] = f"Bearer {self._api_key}"
        self._sync: httpx.Client | None = None
        self._sync_lock = threading.Lock()
        # An httpx.AsyncClient's pooled connections belong to the event loop that opened them;
        # a caller who runs several loops (asyncio.run twice) gets one client per loop.
        self._async: weakref.WeakKeyDictionary[Any, httpx.AsyncClient] = weakref.WeakKeyDictionary()

    def redactions(self) -> tuple[str, ...]:
        """Secret values to scrub from rows, logs and errors."""
        key = self._api_key
        return (key,) if key and key != PLACEHOLDER_API_KEY else ()

    def __repr__(self) -> str:
        return (
            f"OpenAIHTTPTransport(model={self.model!r}, api_base={self.api_base!r}, "
            f"timeout_s={self.timeout_s}, api_key={'set' if self._api_key else 'unset'})"
        )

    # -- plumbing --

    def _client(self) -> httpx.Client:
        if self._sync is None:
            with self._sync_lock:
                if self._sync is None:
                    self._sync = httpx.Client(limits=POOL)
        return self._sync

    def _aclient(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            client = self._async[loop] = httpx.AsyncClient(limits=POOL)
        return client

    def _timeout(self, request: ChatRequest) -> httpx.Timeout:
        total = request.timeout if request.timeout is not None else self.timeout_s
        return httpx.Timeout(total, connect=min(self.connect_timeout_s, total))

    def body(self, request: ChatRequest, *, stream: bool) -> bytes:
        """The JSON body sent upstream: the request's own fields, nothing implied."""
        body: dict[str, Any] = {"model": self.model, "messages": list(request.messages)}
        optional = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "stop": list(request.stop) or None,
            "seed": request.seed,
            "user": request.user,
            "tools": list(request.tools) if request.tools else None,
            "tool_choice": request.tool_choice,
            "response_format": request.response_format,
            "logprobs": True if request.logprobs else None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return json.dumps(body, ensure_ascii=False).encode()

    def _redact(self, text: str) -> str:
        for secret in self.redactions():
            text = text.replace(secret, "[REDACTED]")
        return text

    def _raise_status(self, response: httpx.Response) -> NoReturn:
        """Raise the typed error of an error status, chained to httpx's (URL and status only)."""
        cause = httpx.HTTPStatusError(
            f"HTTP {response.status_code} from {self._url}",
            request=response.request,
            response=response,
        )
        raise self._status_error(response.status_code, response.content, response.headers) from (
            cause
        )

    def _status_error(self, status: int, content: bytes, headers: httpx.Headers) -> CloudError:
        message = content.decode("utf-8", "replace")[:1000]
        try:
            error = json.loads(content).get("error")
            message = str(error.get("message") if isinstance(error, dict) else error) or message
        except (ValueError, AttributeError):
            pass
        message = self._redact(f"Error code: {status} - {message}")
        return error_for_status(status, message, retry_after=parse_retry_after(headers))

    def _transport_error(self, exc: httpx.HTTPError) -> CloudError:
        message = self._redact(str(exc) or type(exc).__name__)
        if isinstance(exc, httpx.TimeoutException):
            return CloudTimeout(f"cloud request timed out ({message})")
        return CloudConnectionError(f"cloud connection failed: {message}")

    # -- response reading --

    def _result(self, content: bytes, request: ChatRequest) -> BackendResult:
        try:
            data = json.loads(content)
            choice = data["choices"][0]
            message = choice["message"]
            usage = data.get("usage") or {}
            result = BackendResult(
                text=message.get("content") or "",
                finish_reason=finish_reason(choice.get("finish_reason")),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                model=str(data.get("model") or self.model),
                tool_calls=message.get("tool_calls") or None,
                token_logprobs=token_logprobs(choice.get("logprobs")),
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise CloudServerError(
                f"cloud response could not be read: {type(exc).__name__}: {exc}",
                status_code=MALFORMED_STATUS,
            ) from exc
        if not (result.prompt_tokens or result.completion_tokens):
            count_tokens(result, list(request.messages), self.model)  # a $0 row would be wrong
        return result

    # -- what a subclass (the local engine tier) adds to an answer --

    def _read(self, content: bytes, request: ChatRequest, seconds: float) -> BackendResult:
        """The answer in a response body (``seconds``: the call's wall time)."""
        return self._result(content, request)

    def _streamed(self, events: SSEAnswer, request: ChatRequest, seconds: float) -> BackendResult:
        """The whole answer of a finished stream."""
        return events.result(request)

    def _reraise(self, exc: CloudError) -> NoReturn:
        """A stream's unreadable event or answer: raised as this transport's error type."""
        raise exc

    # -- Transport protocol --

    def complete(self, request: ChatRequest) -> BackendResult:
        """Answer ``request`` with one call. Raises ``CloudError`` subclasses only."""
        t0 = time.perf_counter()
        try:
            response = self._client().post(
                self._url,
                content=self.body(request, stream=False),
                headers=self._headers,
                timeout=self._timeout(request),
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            self._raise_status(response)
        return self._read(response.content, request, time.perf_counter() - t0)

    async def acomplete(self, request: ChatRequest) -> BackendResult:
        """Async :meth:`complete`."""
        t0 = time.perf_counter()
        try:
            response = await self._aclient().post(
                self._url,
                content=self.body(request, stream=False),
                headers=self._headers,
                timeout=self._timeout(request),
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            self._raise_status(response)
        return self._read(response.content, request, time.perf_counter() - t0)

    def stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        """Text deltas as they arrive, then one delta carrying the whole result."""
        t0 = time.perf_counter()
        events = SSEAnswer(self.model)
        try:
            with self._client().stream(
                "POST",
                self._url,
                content=self.body(request, stream=True),
                headers=self._headers,
                timeout=self._timeout(request),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_status(response)
                for line in response.iter_lines():
                    text = events.feed(line)
                    if text:
                        yield StreamDelta(text=text)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        except CloudError as exc:
            self._reraise(exc)
        yield StreamDelta(result=self._streamed(events, request, time.perf_counter() - t0))

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """Async :meth:`stream`."""
        t0 = time.perf_counter()
        events = SSEAnswer(self.model)
        try:
            async with self._aclient().stream(
                "POST",
                self._url,
                content=self.body(request, stream=True),
                headers=self._headers,
                timeout=self._timeout(request),
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._raise_status(response)
                async for line in response.aiter_lines():
                    text = events.feed(line)
                    if text:
                        yield StreamDelta(text=text)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        except CloudError as exc:
            self._reraise(exc)
        yield StreamDelta(result=self._streamed(events, request, time.perf_counter() - t0))

    def close(self) -> None:
        """Close the pooled connections (async clients close with their event loop)."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None


class SSEAnswer:
    """Accumulates one streamed chat completion from its ``data:`` lines (sync and async)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.parts: list[str] = []
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.logprobs: dict[str, list[Any]] = {"content": []}
        """``choices[0].logprobs`` over all chunks (an engine asked for them sends them)."""
        self.done = False

    def feed(self, line: str) -> str:
        """Read one line; return the text it adds (possibly empty)."""
        if not line.startswith("data:"):
            return ""  # blank separators, comments, event:/id: fields
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return ""
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise CloudServerError(
                f"cloud stream sent an unreadable event: {data[:200]!r}",
                status_code=MALFORMED_STATUS,
            ) from exc
        if not isinstance(event, dict):
            raise CloudServerError(
                "cloud stream sent a non-object event", status_code=MALFORMED_STATUS
            )
        if "error" in event:  # a provider error after the stream began
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise CloudServerError(f"cloud stream failed: {message}", status_code=MALFORMED_STATUS)
        self.model = str(event.get("model") or self.model)
        if event.get("usage"):
            self.usage = event["usage"]
        text = ""
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                text += delta["content"]
            for call in delta.get("tool_calls") or []:
                self._merge_tool_call(call)
            scores = choice.get("logprobs")
            if isinstance(scores, dict) and isinstance(scores.get("content"), list):
                self.logprobs["content"].extend(scores["content"])
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        if text:
            self.parts.append(text)
        return text

    def _merge_tool_call(self, piece: dict[str, Any]) -> None:
        """Tool calls stream as pieces keyed by ``index``: name once, arguments in fragments."""
        call = self.tool_calls.setdefault(
            int(piece.get("index", 0)),
            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if piece.get("id"):
            call["id"] = piece["id"]
        function = piece.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]

    def result(self, request: ChatRequest) -> BackendResult:
        """The whole answer; a stream without a finish reason was cut and is an error."""
        if self.finish is None:
            raise CloudConnectionError(
                "cloud stream ended before its finish chunk (connection closed mid-answer); "
                "the partial answer was discarded"
            )
        result = BackendResult(
            text="".join(self.parts),
            finish_reason=finish_reason(self.finish),
            prompt_tokens=int(self.usage.get("prompt_tokens") or 0),
            completion_tokens=int(self.usage.get("completion_tokens") or 0),
            model=self.model,
            tool_calls=[self.tool_calls[i] for i in sorted(self.tool_calls)] or None,
        )
        if not (result.prompt_tokens or result.completion_tokens):
            count_tokens(result, list(request.messages), self.model)
        return result


__all__ = ["OpenAIHTTPTransport", "SSEAnswer", "speaks_openai"]
