"""The cloud backend: one litellm call per request, every failure translated to router.errors.

This is the only module that imports litellm, and it does so lazily (``import litellm`` costs
seconds). It makes exactly one attempt: retries and backoff live once, in the client above.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, NoReturn

import httpx
import openai

from router._defaults import CLOUD_CONNECT_TIMEOUT_S, CLOUD_TIMEOUT_S
from router.errors import (
    CloudAuthError,
    CloudBadRequest,
    CloudConnectionError,
    CloudError,
    CloudServerError,
    CloudTimeout,
    RateLimited,
)
from router.types import BackendResult, ChatRequest, StreamDelta

PLACEHOLDER_API_KEY = "sk-no-key"
"""Sent to a custom ``api_base`` with no key: a missing key otherwise fails like a retryable error."""
MALFORMED_STATUS = 502
"""Status given to a response that arrived but could not be parsed (a bad gateway, retryable)."""
_FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter"}
_MAX_CHAIN = 16

_litellm: Any = None


def usual_key_env(model: str) -> str:
    """The variable a provider's key is usually in: ``openai/gpt-4o`` -> ``OPENAI_API_KEY``."""
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    return f"{provider.upper().replace('-', '_')}_API_KEY"


def _load_litellm() -> Any:
    """Import litellm once, offline: local cost map, no retries, no debug banners."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        try:
            import litellm
        except ImportError as exc:  # pragma: no cover - litellm is a core dependency
            raise CloudConnectionError(
                "the cloud backend needs litellm: pip install 'litellm==1.106.2'"
            ) from exc
        # litellm prints a "Give Feedback" banner to stdout on every mapped error otherwise.
        litellm.suppress_debug_info = True
        _litellm = litellm
    return _litellm


# -- error translation ---------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes/contexts, outermost first (litellm wraps openai wraps httpx)."""
    out: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(out) < _MAX_CHAIN:
        seen.add(id(current))
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(
        exc, (openai.APITimeoutError, httpx.TimeoutException, TimeoutError, asyncio.TimeoutError)
    )


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, (httpx.TransportError, ConnectionError)):
        return True
    return isinstance(exc, openai.APIConnectionError) and not _is_timeout(exc)


def _is_malformed(exc: BaseException) -> bool:
    return isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError))


def _status_code(chain: list[BaseException]) -> int | None:
    """The HTTP status: the innermost openai status error's, else the first int on the chain.

    litellm relabels some statuses (a 401 arrives as ``litellm.BadRequestError``), so the
    status the server actually sent, kept on the wrapped openai error, wins.
    """
    for exc in reversed(chain):
        if isinstance(exc, openai.APIStatusError) and isinstance(exc.status_code, int):
            return exc.status_code
    for exc in chain:
        code = getattr(exc, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def _headers_of(exc: BaseException) -> list[Mapping[str, str]]:
    found: list[Mapping[str, str]] = []
    for attr in ("litellm_response_headers", "headers"):
        value = getattr(exc, attr, None)
        if isinstance(value, (Mapping, httpx.Headers)) and value:
            found.append(value)
    response = getattr(exc, "response", None)
    if isinstance(response, httpx.Response) and response.headers:
        found.append(response.headers)
    return found


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date).

    Args:
        headers: Response headers (any case-insensitive or lower-case mapping).
        now: Current epoch seconds, for HTTP-date values (tests pin it).

    Returns:
        Non-negative seconds, or ``None`` when no usable header is present.
    """
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    if "retry-after-ms" in lower:
        try:
            return max(0.0, float(lower["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _retry_after(chain: list[BaseException]) -> float | None:
    for exc in chain:
        for headers in _headers_of(exc):
            seconds = parse_retry_after(headers)
            if seconds is not None:
                return seconds
    return None


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc) or type(exc).__name__


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


def _leaks(exc: BaseException, secrets: tuple[str, ...]) -> bool:
    """Whether any error on the chain quotes a secret (providers echo a wrong key in 401s)."""
    return any(s and s in str(e) + _message(e) for e in _chain(exc) for s in secrets)


def translate_error(exc: BaseException, *, secrets: tuple[str, ...] = ()) -> CloudError:
    """Map a litellm/openai/httpx exception to the most specific ``router.errors`` type.

    Raise the result ``from exc``. Order matters: litellm reports dropped connections and
    garbage bodies as ``InternalServerError(500)``, so the cause chain is checked before the
    status code.

    Args:
        exc: The exception litellm (or the HTTP stack under it) raised.

    Returns:
        ``CloudTimeout``, ``CloudConnectionError``, ``RateLimited`` (with ``retry_after``),
        ``CloudAuthError`` (401/403), ``CloudServerError`` (5xx; malformed responses as 502) or
        ``CloudBadRequest`` (404 and other 4xx).
    """
    if isinstance(exc, CloudError):
        return exc
    chain = _chain(exc)
    message = _redact(_message(exc), secrets)
    status = _status_code(chain)
    if status == 429:
        return RateLimited(message, retry_after=_retry_after(chain))
    if any(_is_timeout(e) for e in chain) or status == 408:
        return CloudTimeout(message)
    if any(_is_connection_error(e) for e in chain):
        return CloudConnectionError(message)
    if any(_is_malformed(e) for e in chain):
        return CloudServerError(message, status_code=MALFORMED_STATUS)
    if status is not None and status >= 400:
        retry_after = _retry_after(chain) if status >= 500 else None
        return error_for_status(status, message, retry_after=retry_after)
    # No status and no known cause: the provider answered with something we cannot use.
    return CloudServerError(message, status_code=MALFORMED_STATUS)


def error_for_status(status: int, message: str, *, retry_after: float | None = None) -> CloudError:
    """The ``router.errors`` type of an HTTP error status (shared by both cloud transports)."""
    if status == 429:
        return RateLimited(message, retry_after=retry_after)
    if status == 408:
        return CloudTimeout(message)
    if status in (401, 403):
        return CloudAuthError(message, status_code=status)
    if status >= 500:
        return CloudServerError(message, status_code=status, retry_after=retry_after)
    return CloudBadRequest(message, status_code=status)


def _is_translatable(exc: BaseException) -> bool:
    """Errors from the HTTP/provider stack; plain bugs (TypeError...) propagate unchanged."""
    return isinstance(
        exc, (openai.OpenAIError, httpx.HTTPError, OSError, json.JSONDecodeError, TimeoutError)
    ) or type(exc).__module__.startswith(("litellm", "aiohttp", "httpcore"))


def _check_finished(response: Any) -> None:
    """A stream whose server never sent a finish reason was cut, however cleanly it closed.

    litellm's stream wrapper fills in ``finish_reason="stop"`` for the caller when the body just
    ends (a close-delimited response dropped mid-answer); what the server really sent is kept
    in ``received_finish_reason``.
    """
    if getattr(response, "received_finish_reason", "unknown") is None:
        raise CloudConnectionError(
            "cloud stream ended before its finish chunk (connection closed mid-answer); "
            "the partial answer was discarded"
        )


# -- the transport -------------------------------------------------------------------------


def check_settings(model: str, timeout_s: float, connect_timeout_s: float) -> None:
    """What both cloud transports refuse at construction: an empty model, a timeout <= 0."""
    if not model or not model.strip():
        raise ValueError("model must be a non-empty model name")
    if timeout_s <= 0 or connect_timeout_s <= 0:
        raise ValueError(
            f"timeouts must be > 0, got timeout_s={timeout_s}, "
            f"connect_timeout_s={connect_timeout_s}"
        )


def count_tokens(result: BackendResult, messages: list[dict[str, Any]], model: str) -> None:
    """Fill token counts the provider did not report, with the model's tokenizer."""
    litellm = _load_litellm()
    model = result.model or model
    result.prompt_tokens = int(litellm.token_counter(model=model, messages=messages))
    result.completion_tokens = int(litellm.token_counter(model=model, text=result.text))


def finish_reason(value: Any) -> str:
    """OpenAI's finish reasons; the legacy ``function_call`` reads as ``tool_calls``."""
    if value == "function_call":
        return "tool_calls"
    return value if value in _FINISH_REASONS else "stop"


def _tool_calls(message: Any) -> list[dict[str, Any]] | None:
    calls = getattr(message, "tool_calls", None)
    if not calls:
        return None
    return [c.model_dump() if hasattr(c, "model_dump") else dict(c) for c in calls]


def token_logprobs(scores: Any) -> list[float] | None:
    """The chosen tokens' logprobs from OpenAI's ``choices[0].logprobs`` (dicts or SDK objects);
    None when the answer carries none (not asked for, or a provider that does not return them)."""
    content = (
        scores.get("content") if isinstance(scores, dict) else getattr(scores, "content", None)
    )
    if not content:
        return None
    values = []
    for item in content:
        value = item.get("logprob") if isinstance(item, dict) else getattr(item, "logprob", None)
        if isinstance(value, int | float):
            values.append(min(float(value), 0.0))
    return values or None


class CloudTransport:
    """Sends a request to a cloud model through litellm; one try, typed errors.

    >>> t = CloudTransport(model="openai/gpt-4o-mini")           # key from OPENAI_API_KEY
    >>> t = CloudTransport(model="gpt-4-1106-preview", api_base=replay.base_url)
    >>> t.complete(ChatRequest(messages=({"role": "user", "content": "hi"},), model="x")).text

    Args:
        model: litellm model name (``"openai/gpt-4o-mini"``, ``"anthropic/claude-..."``). With
            ``api_base`` and no ``provider/`` prefix it is sent as an OpenAI-compatible model.
        api_base: Base URL of an OpenAI-compatible server (e.g. the replay cloud).
        api_key: Provider key; never logged or shown in ``repr``. Defaults to the provider's
            environment variable, or a placeholder when ``api_base`` is set.
        timeout_s: Total seconds one request may take (also the per-read limit).
        connect_timeout_s: Seconds to establish the connection.

    Raises:
        ValueError: Empty model or non-positive timeouts.
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
        if api_base and "/" not in model:
            model = f"openai/{model}"
        self.model = model
        self.api_base = api_base
        if not api_key and api_base:
            # The provider's usual variable still applies behind a custom base URL (a proxy);
            # only without it is a placeholder sent, so a keyless local server answers.
            api_key = os.environ.get(usual_key_env(model)) or PLACEHOLDER_API_KEY
        self._api_key = api_key or None
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)

    def redactions(self) -> tuple[str, ...]:
        """Secret values to scrub from rows, logs and errors (the key, whatever its shape)."""
        key = self._api_key
        return (key,) if key and key != PLACEHOLDER_API_KEY else ()

    def _raise(self, exc: BaseException) -> NoReturn:
        """Raise the translated error; drop the cause chain if it quotes the key."""
        if not _is_translatable(exc):
            raise exc
        secrets = self.redactions()
        err = translate_error(exc, secrets=secrets)
        if not _leaks(exc, secrets):
            raise err from exc
        try:
            raise err from None
        finally:
            err.__context__ = None  # the original quotes the key: keep no reference to it

    def __repr__(self) -> str:
        return (
            f"CloudTransport(model={self.model!r}, api_base={self.api_base!r}, "
            f"timeout_s={self.timeout_s}, api_key={'set' if self._api_key else 'unset'})"
        )

    # -- request building --

    def _kwargs(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        total = request.timeout if request.timeout is not None else self.timeout_s
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            "timeout": httpx.Timeout(total, connect=min(self.connect_timeout_s, total)),
            "num_retries": 0,
            "max_retries": 0,
        }
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self._api_key:
            kwargs["api_key"] = self._api_key
        optional = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "stop": list(request.stop) or None,
            "seed": request.seed,
            "user": request.user,
            "tools": [dict(t) for t in request.tools] if request.tools else None,
            "tool_choice": request.tool_choice,
            "response_format": request.response_format,
            "logprobs": True if request.logprobs else None,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        if stream:
            kwargs["stream"] = True
            kwargs["stream_options"] = {"include_usage": True}
        return kwargs

    # -- response reading --

    def _result(self, response: Any, messages: list[dict[str, Any]] | None = None) -> BackendResult:
        try:
            choice = response.choices[0]
            message = choice.message
            usage = getattr(response, "usage", None)
            hidden = getattr(response, "_hidden_params", None) or {}
            cost = hidden.get("response_cost")
            result = BackendResult(
                text=message.content or "",
                finish_reason=finish_reason(choice.finish_reason),
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                model=str(getattr(response, "model", None) or self.model),
                compute_seconds=0.0,
                cost_usd=float(cost) if cost is not None else None,
                tool_calls=_tool_calls(message),
                token_logprobs=token_logprobs(getattr(choice, "logprobs", None)),
            )
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise CloudServerError(
                f"cloud response could not be read: {exc}", status_code=MALFORMED_STATUS
            ) from exc
        if messages is not None and not (result.prompt_tokens or result.completion_tokens):
            count_tokens(result, messages, self.model)  # no usage sent: a $0 row would be wrong
        return result

    def _stream_result(self, chunks: list[Any], messages: list[dict[str, Any]]) -> BackendResult:
        """Assemble the final result from the chunks; count tokens if no usage was sent."""
        litellm = _load_litellm()
        built = litellm.stream_chunk_builder(chunks, messages=messages) if chunks else None
        if built is None or not built.choices:
            raise CloudServerError(
                "cloud stream ended without any answer", status_code=MALFORMED_STATUS
            )
        result = self._result(built, messages)
        result.cost_usd = None
        try:
            cost = litellm.completion_cost(completion_response=built)
            result.cost_usd = float(cost) if cost else None
        except Exception:  # noqa: BLE001 - unknown model price: cost stays unknown
            result.cost_usd = None
        return result

    @staticmethod
    def _delta_text(chunk: Any) -> str:
        choices = getattr(chunk, "choices", None) or []
        if not choices:
            return ""
        delta = getattr(choices[0], "delta", None)
        return (getattr(delta, "content", None) or "") if delta is not None else ""

    # -- Transport protocol --

    def complete(self, request: ChatRequest) -> BackendResult:
        """Answer ``request`` with one cloud call.

        Args:
            request: The validated request.

        Returns:
            The answer with token usage and the provider's price (``cost_usd``) when known.

        Raises:
            CloudError: A subclass naming what failed (see :func:`translate_error`).
        """
        litellm = _load_litellm()
        try:
            kwargs = self._kwargs(request, stream=False)
            response = litellm.completion(**kwargs)
        except Exception as exc:
            self._raise(exc)
        return self._result(response, kwargs["messages"])

    async def acomplete(self, request: ChatRequest) -> BackendResult:
        """Async :meth:`complete`."""
        litellm = _load_litellm()
        try:
            kwargs = self._kwargs(request, stream=False)
            response = await litellm.acompletion(**kwargs)
        except Exception as exc:
            self._raise(exc)
        return self._result(response, kwargs["messages"])

    def stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        """Stream ``request``: text deltas, then one delta carrying the full result.

        Raises:
            CloudError: On failure, also mid-stream.
        """
        litellm = _load_litellm()
        kwargs = self._kwargs(request, stream=True)
        chunks: list[Any] = []
        try:
            response = litellm.completion(**kwargs)
            for chunk in response:
                chunks.append(chunk)
                text = self._delta_text(chunk)
                if text:
                    yield StreamDelta(text=text)
        except Exception as exc:
            self._raise(exc)
        _check_finished(response)
        yield StreamDelta(result=self._stream_result(chunks, kwargs["messages"]))

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """Async :meth:`stream`."""
        litellm = _load_litellm()
        kwargs = self._kwargs(request, stream=True)
        chunks: list[Any] = []
        try:
            response = await litellm.acompletion(**kwargs)
            async for chunk in response:
                chunks.append(chunk)
                text = self._delta_text(chunk)
                if text:
                    yield StreamDelta(text=text)
        except Exception as exc:
            self._raise(exc)
        _check_finished(response)
        yield StreamDelta(result=self._stream_result(chunks, kwargs["messages"]))


__all__ = [
    "CloudTransport",
    "token_logprobs",
    "check_settings",
    "count_tokens",
    "error_for_status",
    "finish_reason",
    "parse_retry_after",
    "translate_error",
]
