"""A local OpenAI-compatible server that replays recorded cloud answers, with injectable faults.

Why: tests, benchmarks and demos need a cloud that is free, offline, deterministic and able to
fail on demand (429, 5xx, hangs, dropped connections, garbage bodies), reached over real HTTP so
the real client stack (litellm -> openai -> httpx) runs end to end. Stdlib only: no extra deps.

Token counts are real: cl100k_base via tiktoken, loaded from the files litellm bundles (offline).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import select
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from router._text import content_text, last_user_text

DEFAULT_MODEL = "gpt-4-1106-preview"
FAULTS = ("500", "429", "hang", "drop", "malformed", "401")
"""Faults :meth:`ReplayCloud.inject` accepts."""
DEFAULT_RETRY_AFTER_S = 1.0
"""Retry-After sent with an injected 429 when the caller gives none."""
MAX_HANG_S = 300.0
"""An injected hang ends after this long even if the client never gives up."""
_POLL_INTERVAL_S = 0.05  # how often the server loop checks for shutdown (stop() latency)
_TOKENS_PER_MESSAGE = 3  # OpenAI chat format: <|start|>{role}\n{content}<|end|>\n
_TOKENS_PER_NAME = 1
_REPLY_PRIMING_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>

_encoding_lock = threading.Lock()
_encoding: Any = None


def _tiktoken_dir() -> Path:
    """Where litellm bundles tiktoken's BPE files, found without importing litellm (~6 s)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("litellm is not installed; it bundles the tokenizer files replay uses")
    return Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"


def _get_encoding() -> Any:
    """Load cl100k_base offline once, restoring ``TIKTOKEN_CACHE_DIR`` afterwards."""
    global _encoding
    with _encoding_lock:
        if _encoding is None:
            import tiktoken

            previous = os.environ.get("TIKTOKEN_CACHE_DIR")
            os.environ["TIKTOKEN_CACHE_DIR"] = str(_tiktoken_dir())
            try:
                _encoding = tiktoken.get_encoding("cl100k_base")
            finally:
                if previous is None:
                    os.environ.pop("TIKTOKEN_CACHE_DIR", None)
                else:
                    os.environ["TIKTOKEN_CACHE_DIR"] = previous
        return _encoding


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Count prompt tokens the way OpenAI bills chat messages (cl100k_base plus overheads).

    Args:
        messages: OpenAI-style chat messages.

    Returns:
        Tokens of every role and content, plus per-message and reply-priming overhead.
    """
    enc = _get_encoding()
    total = _REPLY_PRIMING_TOKENS
    for message in messages:
        total += _TOKENS_PER_MESSAGE
        total += len(enc.encode(str(message.get("role", ""))))
        total += len(enc.encode(content_text(message.get("content"))))
        if message.get("name"):
            total += _TOKENS_PER_NAME + len(enc.encode(str(message["name"])))
    return total


def count_text_tokens(text: str) -> int:
    """Count cl100k_base tokens of a completion text.

    Args:
        text: The generated text.

    Returns:
        Its token count.
    """
    return len(_get_encoding().encode(text))


@dataclass(frozen=True)
class _Fault:
    kind: str
    retry_after: float | None


class _ApiError(Exception):
    """An OpenAI-style error response to send: status, message, type, code."""

    def __init__(self, status: int, message: str, err_type: str, code: str | None) -> None:
        super().__init__(message)
        self.status, self.message, self.err_type, self.code = status, message, err_type, code


def _error_body(status: int, message: str, err_type: str, code: str | None) -> bytes:
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    return json.dumps(body).encode()


class ReplayCloud:
    """An OpenAI-compatible chat server answering from a prompt -> answer table.

    >>> with ReplayCloud({"Hi": "Hello!"}) as cloud:
    ...     openai.OpenAI(base_url=cloud.base_url, api_key="x").chat.completions.create(
    ...         model="gpt-4-1106-preview", messages=[{"role": "user", "content": "Hi"}])

    Args:
        answers: Maps the last user message (whitespace-stripped) to the answer to return.
        model: Model name reported by ``/v1/models`` and used when a request names none.
        latency_ms: Delay added to every chat request before it is answered.
        default_answer: Answer for unknown prompts; ``None`` makes them a 404 error.
        require_api_key: If set, requests must send ``Authorization: Bearer <key>`` or get 401.
        host: Interface to bind; loopback by default so nothing outside the machine reaches it.
        port: TCP port; 0 picks a free one (read it back from :attr:`base_url`).

    Raises:
        ValueError: A negative latency or port.
    """

    def __init__(
        self,
        answers: Mapping[str, str] | None = None,
        *,
        model: str = DEFAULT_MODEL,
        latency_ms: float = 0.0,
        default_answer: str | None = None,
        require_api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Mapping[str, Mapping[str, tuple[str, float]]] | None = None,
    ) -> None:
        if latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        self.answers: dict[str, str] = {k.strip(): v for k, v in (answers or {}).items()}
        self.models: dict[str, dict[str, tuple[str, float]]] = {
            model: {k.strip(): (str(a), float(c)) for k, (a, c) in table.items()}
            for model, table in (models or {}).items()
        }
        """Other models' answers (a cheaper cloud tier): ``{model: {prompt: (answer,
        confidence)}}``; a request naming such a model is answered from its table, with
        logprobs whose geometric mean is that confidence. Other prompts fall back to
        ``answers`` at confidence 1."""
        self.model = model
        self.latency_ms = float(latency_ms)
        self.default_answer = default_answer
        self._api_key = require_api_key
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._faults: deque[_Fault] = deque()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests_seen = 0
        """Chat-completion requests received (answered, failed or faulted)."""
        self.faults_served: list[str] = []
        """Injected faults in the order they were served."""

    @classmethod
    def from_datasets(cls, **kw: Any) -> ReplayCloud:
        """Build a replay cloud that knows the shipped Banking77 and GSM8K slices.

        Banking77 messages are answered with their gold intent label; GSM8K questions with
        GPT-4's recorded answer. Extra ``answers`` passed in ``kw`` are added on top.

        Args:
            **kw: Any keyword :class:`ReplayCloud` accepts.

        Returns:
            An unstarted :class:`ReplayCloud`.
        """
        from router.devtools.data import load_banking77, load_gsm8k

        answers = {row["text"]: row["category"] for row in load_banking77()}
        answers.update({row["prompt"]: row["answer"] for row in load_gsm8k()})
        answers.update(kw.pop("answers", None) or {})
        return cls(answers, **kw)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, for ``api_base``/``base_url`` of any OpenAI client."""
        if self._server is None:
            raise RuntimeError("ReplayCloud is not started; call start() or use it as a context")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ReplayCloud:
        """Bind the port and serve in a daemon thread.

        Returns:
            ``self``, so ``cloud = ReplayCloud(...).start()`` works.

        Raises:
            RuntimeError: Already started.
        """
        if self._server is not None:
            raise RuntimeError("ReplayCloud is already started")
        _get_encoding()  # load the tokenizer now, not inside the first timed request
        self._stopping.clear()
        self._server = _Server((self._host, self._port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name="replay-cloud",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; releases hanging requests so shutdown never waits on them."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> ReplayCloud:
        return self.start() if self._server is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Block until interrupted (Ctrl-C), then stop; for the CLI."""
        if self._server is None:
            self.start()
        try:
            while not self._stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # -- faults ----------------------------------------------------------------------------

    def inject(self, fault: str, *, times: int = 1, retry_after: float | None = None) -> None:
        """Make the next ``times`` chat requests fail with ``fault``.

        Args:
            fault: One of ``"500"``, ``"429"`` (sends Retry-After), ``"hang"`` (no answer until
                the client gives up or the server stops), ``"drop"`` (close the connection
                without a response), ``"malformed"`` (200 with an invalid JSON body),
                ``"401"``.
            times: How many consecutive requests get this fault.
            retry_after: Seconds for the Retry-After header (429 and 500); a 429 without it
                sends ``DEFAULT_RETRY_AFTER_S``.

        Raises:
            ValueError: Unknown fault or ``times < 1``.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose one of {', '.join(FAULTS)}")
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        if fault == "429" and retry_after is None:
            retry_after = DEFAULT_RETRY_AFTER_S
        with self._lock:
            self._faults.extend(_Fault(fault, retry_after) for _ in range(times))

    def clear_faults(self) -> None:
        """Drop every fault not yet served."""
        with self._lock:
            self._faults.clear()

    def _count_request(self) -> None:
        with self._lock:
            self.requests_seen += 1

    def _next_fault(self) -> _Fault | None:
        with self._lock:
            self.requests_seen += 1
            if not self._faults:
                return None
            fault = self._faults.popleft()
            self.faults_served.append(fault.kind)
            return fault

    # -- answering -------------------------------------------------------------------------

    def lookup_scored(self, messages: list[dict[str, Any]], model: str) -> tuple[str, float]:
        """``(answer, confidence)`` for ``model``: its own table first, then :meth:`lookup`."""
        table = self.models.get(model)
        if table:
            hit = table.get(last_user_text(messages).strip())
            if hit is not None:
                return hit
        return self.lookup(messages), 1.0

    def lookup(self, messages: list[dict[str, Any]]) -> str:
        """The recorded answer for a conversation, keyed by its last user message.

        Args:
            messages: The request's chat messages.

        Returns:
            The recorded answer, or ``default_answer`` for an unknown prompt.

        Raises:
            KeyError: Unknown prompt and no ``default_answer``.
        """
        key = last_user_text(messages).strip()
        if key in self.answers:
            return self.answers[key]
        if self.default_answer is not None:
            return self.default_answer
        raise KeyError(key)

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the server stops first; True if it stopped."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()


def _truncate(text: str, *, max_tokens: int | None, stop: list[str]) -> tuple[str, str]:
    """Apply ``stop`` sequences and ``max_tokens`` like a real provider would."""
    for seq in stop:
        if seq and seq in text:
            text = text[: text.index(seq)]
    if max_tokens is not None:
        enc = _get_encoding()
        tokens = enc.encode(text)
        if len(tokens) > max_tokens:
            return enc.decode(tokens[:max_tokens]), "length"
    return text, "stop"


def _logprobs(text: str, confidence: float) -> dict[str, Any]:
    """OpenAI's ``choices[0].logprobs`` for ``text``: every piece at ``log(confidence)``, so the
    geometric-mean token probability (hybridgate's confidence) is ``confidence``."""
    value = math.log(max(confidence, 1e-12))
    pieces = list(_stream_pieces(text)) or [""]
    return {
        "content": [
            {"token": p, "logprob": value, "bytes": None, "top_logprobs": []} for p in pieces
        ]
    }


def _stream_pieces(text: str) -> Iterator[str]:
    """Split an answer into word-sized pieces (keeping whitespace) for SSE chunks."""
    piece = ""
    for ch in text:
        if ch.isspace() and piece and not piece[-1].isspace():
            yield piece
            piece = ""
        piece += ch
    if piece:
        yield piece


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024
    """Listen backlog (the stdlib's is 5): hundreds of clients connecting at once must queue,
    not be reset, or a load test measures the replay cloud instead of what is in front of it."""


def _make_handler(cloud: ReplayCloud) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out separately: avoid 40 ms stalls
        server_version = "hybridgate-replay/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            """Silence per-request logging (it would also print Authorization-free noise)."""

        # -- plumbing --

        def _send_json(
            self, status: int, body: bytes, headers: Mapping[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _send_error(self, err: _ApiError, headers: Mapping[str, str] | None = None) -> None:
            body = _error_body(err.status, err.message, err.err_type, err.code)
            self._send_json(err.status, body, headers)

        def _read_body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"null")
            except json.JSONDecodeError as exc:
                raise _ApiError(
                    400, f"request body is not valid JSON: {exc}", "invalid_request_error", None
                ) from exc
            if not isinstance(body, dict):
                raise _ApiError(
                    400, "request body must be a JSON object", "invalid_request_error", None
                )
            return body

        def _check_auth(self) -> None:
            if cloud._api_key is None:
                return
            if self.headers.get("Authorization", "") != f"Bearer {cloud._api_key}":
                raise _ApiError(
                    401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
                )

        # -- routes --

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            try:
                self._check_auth()
                if self.path.rstrip("/") != "/v1/models":
                    raise _ApiError(404, f"unknown path {self.path}", "invalid_request_error", None)
                models = {
                    "object": "list",
                    "data": [
                        {"id": cloud.model, "object": "model", "created": 0, "owned_by": "replay"}
                    ],
                }
                self._send_json(200, json.dumps(models).encode())
            except _ApiError as err:
                self._send_error(err)

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._read_body_quietly()
                err = _ApiError(404, f"unknown path {self.path}", "invalid_request_error", None)
                self._send_error(err)
                return
            try:
                body = self._read_body()
            except _ApiError as err:
                cloud._count_request()  # a bad body is the caller's bug: keep faults queued
                self._send_error(err)
                return
            fault = cloud._next_fault()
            if fault is not None:
                self._serve_fault(fault, stream=bool(body.get("stream")))
                return
            if cloud._wait(cloud.latency_ms / 1000.0):
                self.close_connection = True
                return
            try:
                self._check_auth()
                self._answer(body)
            except _ApiError as err:
                self._send_error(err)

        def _read_body_quietly(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)

        def _serve_fault(self, fault: _Fault, *, stream: bool) -> None:
            kind = fault.kind
            retry = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            if kind == "500":
                self._send_error(
                    _ApiError(500, "The server had an error (injected).", "server_error", None),
                    retry,
                )
            elif kind == "429":
                self._send_error(
                    _ApiError(
                        429, "Rate limit reached (injected).", "requests", "rate_limit_exceeded"
                    ),
                    retry,
                )
            elif kind == "401":
                self._send_error(
                    _ApiError(
                        401,
                        "Incorrect API key (injected).",
                        "invalid_request_error",
                        "invalid_api_key",
                    )
                )
            elif kind == "malformed":
                if stream:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(b'data: {"id": "chatcmpl-broken", "choices": [{\n\n')
                    self.close_connection = True
                else:
                    self._send_json(200, b'{"id": "chatcmpl-broken", "choices": [{"mess')
            elif kind == "drop":
                self._drop()
            elif kind == "hang":
                self._hang()

        def _drop(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def _hang(self) -> None:
            """Send nothing until the client disconnects, the server stops, or MAX_HANG_S."""
            deadline = time.monotonic() + MAX_HANG_S
            while time.monotonic() < deadline and not cloud._stopping.is_set():
                try:
                    readable, _, _ = select.select([self.connection], [], [], 0.05)
                    if readable and not self.connection.recv(1, socket.MSG_PEEK):
                        break  # client gave up and closed its side
                except OSError:
                    break
            self._drop()

        def _answer(self, body: dict[str, Any]) -> None:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise _ApiError(
                    400, "'messages' must be a non-empty list", "invalid_request_error", None
                )
            model = str(body.get("model") or cloud.model)
            try:
                answer, conf = cloud.lookup_scored(messages, model)
            except KeyError as exc:
                raise _ApiError(
                    404,
                    f"replay cloud has no recorded answer for prompt {str(exc.args[0])[:80]!r}",
                    "invalid_request_error",
                    "answer_not_found",
                ) from exc
            max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
            stop = body.get("stop") or []
            stop = [stop] if isinstance(stop, str) else list(stop)
            text, finish = _truncate(answer, max_tokens=max_tokens, stop=stop)
            usage = {
                "prompt_tokens": count_prompt_tokens(messages),
                "completion_tokens": count_text_tokens(text),
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            base = {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_replay",
            }
            if body.get("stream"):
                options = body.get("stream_options") or {}
                self._stream(base, text, finish, usage if options.get("include_usage") else None)
                return
            completion = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": _logprobs(text, conf) if body.get("logprobs") else None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
            self._send_json(200, json.dumps(completion).encode())

        def _stream(
            self, base: dict[str, Any], text: str, finish: str, usage: dict[str, int] | None
        ) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

            def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
                choice = {"index": 0, "delta": delta, "logprobs": None}
                choice["finish_reason"] = finish_reason
                return {**base, "object": "chat.completion.chunk", "choices": [choice]}

            events = [chunk({"role": "assistant", "content": ""}, None)]
            events += [chunk({"content": piece}, None) for piece in _stream_pieces(text)]
            events.append(chunk({}, finish))
            if usage is not None:
                events.append(
                    {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                )
            try:
                for event in events:
                    self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away mid-stream

    return Handler


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str = DEFAULT_MODEL,
    latency_ms: float = 0.0,
    default_answer: str | None = None,
    require_api_key: str | None = None,
    answers_file: Path | None = None,
) -> None:
    """Run a replay cloud over the shipped data slices until Ctrl-C (``hybridgate replay-cloud``).

    Args:
        host: Interface to bind (keep loopback unless you mean to expose it).
        port: TCP port; 0 picks a free one (printed on start).
        model: Model name the server reports.
        latency_ms: Delay added to every chat request.
        default_answer: Answer for unknown prompts; ``None`` returns 404 for them.
        require_api_key: If set, clients must send this bearer key.
        answers_file: Optional JSON object ``{prompt: answer}`` added on top of the slices.

    Raises:
        ValueError: ``answers_file`` is not a JSON object of strings.
    """
    extra: dict[str, str] = {}
    if answers_file is not None:
        loaded = json.loads(Path(answers_file).read_text(encoding="utf-8"))
        if not isinstance(loaded, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()
        ):
            raise ValueError(f"{answers_file}: expected a JSON object mapping prompt -> answer")
        extra = loaded
    cloud = ReplayCloud.from_datasets(
        answers=extra,
        model=model,
        latency_ms=latency_ms,
        default_answer=default_answer,
        require_api_key=require_api_key,
        host=host,
        port=port,
    ).start()
    print(f"replay cloud serving {len(cloud.answers)} answers at {cloud.base_url}", flush=True)
    cloud.serve_forever()


__all__ = [
    "DEFAULT_MODEL",
    "FAULTS",
    "ReplayCloud",
    "count_prompt_tokens",
    "count_text_tokens",
    "serve",
]
