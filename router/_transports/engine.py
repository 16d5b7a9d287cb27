"""The local tier on an inference engine that speaks OpenAI's API (``local.api_base``).

When one box is not enough, the student runs on an engine the team already operates - vLLM
(``--enable-lora``), llama.cpp's ``llama-server``, Ollama, or another ``hybridgate serve`` - and
this transport reaches it over HTTP with the same contract as the in-process ``LocalTransport``:
``name = "local"``, every failure a ``router.errors.LocalModelError`` (so a cloud-eligible
request falls back to the cloud and a forced-local one fails; never a cloud error), and a
``BackendResult`` carrying what the cascade needs:

- **confidence** from the ``logprobs`` the engine returns (asked for on every request);
- **closed answer sets** (the adapter's labels per traffic class) sent in the engine's own
  structured-output dialect (``local.engine``): vLLM's ``structured_outputs={"choice": [...]}``
  (which ``hybridgate serve`` also reads), a GBNF ``grammar`` for llama.cpp; an engine with
  neither (``openai``) refuses those requests, since the adapter's gate measured constrained
  accuracy;
- **the served adapter**: the name the engine serves the promoted LoRA under
  (``hybridgate adapters publish`` loads it and records the name); ``swap_adapter`` switches
  to it, so the gateway's adapter watcher follows publications as it follows promotions.

Local cost is this request's wall seconds x ``local.usd_per_hour`` (the engine's own batching
is invisible from here: price the engine host per concurrent request).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import httpx

from router._transports.openai_http import OpenAIHTTPTransport, SSEAnswer
from router.errors import (
    BatcherTimeout,
    CloudError,
    LocalModelError,
    ModelLoadError,
    Overloaded,
)
from router.types import BackendResult, ChatRequest

ENGINES = ("vllm", "llama.cpp", "openai")
"""Structured-output dialects: vLLM's (and ``hybridgate serve``'s), llama.cpp's, none."""


def gbnf_choice(choices: Sequence[str]) -> str:
    """A GBNF grammar (llama.cpp) whose only sentences are ``choices``."""

    def literal(text: str) -> str:
        escaped = (
            text.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\r", "\\r")
            .replace("\t", "\\t")
        )
        return f'"{escaped}"'

    return "root ::= " + " | ".join(literal(c) for c in choices)


def constraint(engine: str, choices: Sequence[str]) -> dict[str, Any]:
    """The body fields that restrict an answer to ``choices`` in ``engine``'s dialect.

    Raises:
        LocalModelError: The engine has no structured output (``openai``).
    """
    if engine == "vllm":
        return {"structured_outputs": {"choice": list(choices)}}
    if engine == "llama.cpp":
        return {"grammar": gbnf_choice(choices)}
    raise LocalModelError(
        f"local.engine {engine!r} has no structured output, so a closed answer set "
        f"({len(choices)} answers) cannot be enforced there; set local.engine to 'vllm' or "
        "'llama.cpp' (the adapter's promotion gate measured constrained answers)"
    )


class EngineTransport(OpenAIHTTPTransport):
    """The local tier over HTTP: OpenAI's protocol plus logprobs and answer-set constraints.

    >>> t = EngineTransport(model="smollm2-135m-instruct", api_base="http://gpu1:8000/v1")
    >>> t.swap_adapter("/srv/adapters/v0003", version="v0003", served="hybridgate-v0003")

    Args:
        model: The base model's name on the engine (``local.model``).
        api_base: The engine's base URL, ending in ``/v1``.
        api_key: Bearer key for the engine (``local.api_key_env``); never logged.
        engine: Structured-output dialect, one of :data:`ENGINES`.
        max_new_tokens: Cap on one answer's length (``local.max_new_tokens``).
        served: ``(adapter path, version, served name)`` to start on; None -> the base model.
        timeout_s: Seconds one request may take when it brings no deadline of its own.
        connect_timeout_s: Seconds to connect.
    """

    name = "local"

    def __init__(
        self,
        *,
        model: str,
        api_base: str,
        api_key: str | None = None,
        engine: str = "vllm",
        max_new_tokens: int = 256,
        served: tuple[str | None, str, str] | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        super().__init__(
            model=model,
            api_base=api_base,
            api_key=api_key,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
        )
        self.base_model = model
        self.engine_kind = engine
        self.max_new_tokens = max_new_tokens
        self.adapter_version: str | None = None
        """The adapter version served now (``None``: the base model); on every ledger row."""
        self.answer_sets: Mapping[str, tuple[str, ...]] = {}
        if served is not None:
            self.swap_adapter(served[0], version=served[1], served=served[2])

    def __repr__(self) -> str:
        return (
            f"EngineTransport(model={self.model!r}, api_base={self.api_base!r}, "
            f"engine={self.engine_kind!r}, adapter_version={self.adapter_version!r})"
        )

    def swap_adapter(self, path: str | None, *, version: str, served: str | None = None) -> None:
        """Send new requests to the engine's ``served`` name for adapter ``version`` (default
        the name ``hybridgate adapters publish`` loads it under, ``hybridgate-<version>``).

        The engine already serves it (``hybridgate adapters publish`` loaded it first); this
        only switches the name and reads the adapter's answer sets from ``path``.

        Raises:
            ModelLoadError: The adapter's metadata cannot be read (the old name keeps serving).
        """
        from local_models.answer_sets import read_answer_sets
        from local_models.errors import LocalModelError as LeafError

        try:
            sets = read_answer_sets(Path(path)) if path else {}
        except LeafError as exc:
            raise ModelLoadError(str(exc)) from exc
        from router.publication import served_name

        self.answer_sets = sets
        self.model = served or served_name(version)
        self.adapter_version = version

    # -- the request ------------------------------------------------------------------------
    def choices_for(self, request: ChatRequest) -> tuple[str, ...] | None:
        """The closed answer set this request decodes to: its own, else its traffic class's."""
        if request.allowed_answers:
            return request.allowed_answers
        if not self.answer_sets:
            return None
        from local_models.answer_sets import traffic_class

        return self.answer_sets.get(traffic_class(request.messages))

    def body(self, request: ChatRequest, *, stream: bool) -> bytes:
        """OpenAI's body plus ``logprobs`` and the engine's answer-set constraint.

        Raises:
            InvalidRequest: ``tools`` or ``response_format`` (the local tier answers text).
            LocalModelError: A closed answer set on an engine without structured output.
        """
        from router.errors import InvalidRequest

        if request.tools or request.response_format:
            raise InvalidRequest(
                "the local model does not support tools or response_format, and this request "
                "is pinned to it (or was routed to it); send it to the cloud instead",
                param="tools" if request.tools else "response_format",
            )
        body = json.loads(super().body(request, stream=stream))
        body["max_tokens"] = min(request.max_tokens or self.max_new_tokens, self.max_new_tokens)
        body.setdefault("temperature", 0.0)  # the in-process tier's default: greedy
        body["logprobs"] = True
        choices = self.choices_for(request)
        if choices:
            body.update(constraint(self.engine_kind, choices))
        return json.dumps(body, ensure_ascii=False).encode()

    # -- errors: the engine is the local tier, so its failures are local ones ------------------
    def _status_error(self, status: int, content: bytes, headers: httpx.Headers) -> Any:
        from router._transports.cloud import parse_retry_after

        message = content.decode("utf-8", "replace")[:500]
        try:
            error = json.loads(content).get("error")
            message = str(error.get("message") if isinstance(error, dict) else error) or message
        except (ValueError, AttributeError):
            pass
        message = self._redact(f"local engine at {self.api_base} answered {status}: {message}")
        if status in (429, 503):
            return Overloaded(message, retry_after_s=parse_retry_after(headers))
        return LocalModelError(message)

    def _transport_error(self, exc: httpx.HTTPError) -> Any:
        detail = self._redact(str(exc) or type(exc).__name__)
        if isinstance(exc, httpx.TimeoutException):
            return BatcherTimeout(f"local engine at {self.api_base} timed out ({detail})")
        return LocalModelError(f"local engine at {self.api_base} is unreachable: {detail}")

    def _local(self, exc: CloudError) -> LocalModelError:
        """A cloud-typed failure from the shared parsing code (a malformed answer or stream)."""
        err = LocalModelError(f"local engine at {self.api_base}: {exc}")
        err.__cause__ = exc
        return err

    # -- the answer -------------------------------------------------------------------------
    def _finish(
        self, result: BackendResult, request: ChatRequest, scores: Any, seconds: float
    ) -> BackendResult:
        """Add what only the local tier reports: logprobs, compute time, adapter, constraint."""
        values: list[float] = []
        tokens: list[str] = []
        for item in (scores or {}).get("content") or []:
            if isinstance(item, dict) and isinstance(item.get("logprob"), int | float):
                values.append(min(float(item["logprob"]), 0.0))
                tokens.append(str(item.get("token", "")))
        result.token_logprobs = values
        result.tokens = tokens if request.logprobs else None
        result.compute_seconds = seconds
        result.adapter_version = self.adapter_version
        result.closed_answer = bool(self.choices_for(request))
        result.model = self.base_model
        return result

    def _read(self, content: bytes, request: ChatRequest, seconds: float) -> BackendResult:
        try:
            result = self._result(content, request)
        except CloudError as exc:
            raise self._local(exc) from exc
        choice = json.loads(content)["choices"][0]
        return self._finish(result, request, choice.get("logprobs"), seconds)

    def _streamed(self, events: SSEAnswer, request: ChatRequest, seconds: float) -> BackendResult:
        try:
            result = events.result(request)
        except CloudError as exc:
            raise self._local(exc) from exc
        return self._finish(result, request, events.logprobs, seconds)

    def _reraise(self, exc: CloudError) -> NoReturn:
        raise self._local(exc) from exc


__all__ = ["ENGINES", "EngineTransport", "constraint", "gbnf_choice"]
