"""Turn ``create(**kwargs)`` into a validated ``ChatRequest``, or raise ``InvalidRequest``.

Every check names the offending parameter, so a user sees ``messages[2].role`` rather than a
stack trace from deep inside a backend.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any

from router._text import content_text, last_user_text
from router.errors import InvalidRequest
from router.types import ChatRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})

SUPPORTED = frozenset(
    {
        "messages",
        "model",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "stream",
        "stream_options",
        "user",
        "timeout",
        "tools",
        "tool_choice",
        "response_format",
        "metadata",
        "n",
        "logprobs",
        "top_logprobs",
        "structured_outputs",
        "guided_choice",
        "extra_body",
    }
)

# Parameters of the OpenAI API that hybridgate does not implement. Named so the error says
# "not supported" rather than "unknown" (a typo).
NOT_SUPPORTED = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "modalities",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "reasoning_effort",
        "service_tier",
        "store",
        "web_search_options",
        "extra_headers",
        "extra_query",
    }
)


def _fail(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _number(value: Any, name: str, lo: float, hi: float, *, lo_open: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _fail(f"{name} must be a number, got {value!r}", name)
    if value < lo or value > hi or (lo_open and value == lo):
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise _fail(f"{name} must be in {bound}, got {value!r}", name)
    return float(value)


def _utf8(text: str, where: str) -> str:
    """Text must be encodable as UTF-8: a lone surrogate is bad input, not a server error."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail(
            f"{where} contains an unpaired surrogate (U+{ord(text[exc.start]):04X} at "
            f"position {exc.start}); send valid Unicode text",
            where,
        ) from None
    return text


def _content(message: Mapping[str, Any], where: str) -> str | None:
    content = message.get("content")
    if content is None:
        if message.get("role") == "assistant" and message.get("tool_calls"):
            return None
        raise _fail(f"{where}.content is missing", f"{where}.content")
    if isinstance(content, str):
        return _utf8(content, f"{where}.content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            if not (isinstance(part, Mapping) and part.get("type") == "text"):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise _fail(
                    f"{where}.content[{j}] is a {kind!r} part; only text parts are supported",
                    f"{where}.content",
                )
            if not isinstance(part.get("text"), str):
                raise _fail(f"{where}.content[{j}].text must be a string", f"{where}.content")
            _utf8(part["text"], f"{where}.content[{j}].text")
        return content_text(content)  # text parts joined with "", as the OpenAI API reads them
    raise _fail(
        f"{where}.content must be a string or a list of text parts, got {type(content).__name__}",
        f"{where}.content",
    )


def validate_messages(messages: Any) -> tuple[dict[str, Any], ...]:
    """Check roles and content; return normalized copies (text parts joined into a string)."""
    if messages is None:
        raise _fail("messages is required", "messages")
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise _fail(
            f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}",
            "messages",
        )
    if not messages:
        raise _fail("messages must not be empty", "messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise _fail(f"{where} must be a dict, got {type(message).__name__}", where)
        role = message.get("role")
        if role not in ROLES:
            raise _fail(
                f"{where}.role must be one of {sorted(ROLES)}, got {role!r}", f"{where}.role"
            )
        clean: dict[str, Any] = {"role": role, "content": _content(message, where)}
        for key in ("name", "tool_calls", "tool_call_id"):
            if key in message:
                clean[key] = message[key]
        out.append(clean)
    if not any(m["role"] in ("user", "tool") for m in out):
        raise _fail("messages must contain at least one 'user' message", "messages")
    return tuple(out)


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) and s for s in value):
        raise _fail("stop must be a non-empty string or a list of non-empty strings", "stop")
    if len(value) > 4:
        raise _fail(f"stop takes at most 4 sequences, got {len(value)}", "stop")
    return tuple(_utf8(s, "stop") for s in value)


def build_request(kwargs: Mapping[str, Any], *, default_model: str) -> ChatRequest:
    """Validate ``create()`` keyword arguments into a ``ChatRequest``.

    Raises:
        InvalidRequest: naming the first bad or unsupported parameter.
    """
    kwargs = _merged_extra_body(kwargs)
    for key in kwargs:
        if key in NOT_SUPPORTED:
            raise _fail(f"parameter {key!r} is not supported by hybridgate", key)
        if key not in SUPPORTED:
            raise _fail(f"unknown parameter {key!r}", key)

    model = kwargs.get("model") or default_model
    if not isinstance(model, str):
        raise _fail(f"model must be a string, got {type(model).__name__}", "model")

    n = kwargs.get("n")
    if n not in (None, 1):
        raise _fail(f"only n=1 is supported, got n={n!r}", "n")

    max_tokens = kwargs.get("max_completion_tokens", kwargs.get("max_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise _fail(f"max_tokens must be a positive integer, got {max_tokens!r}", "max_tokens")

    seed = kwargs.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _fail(f"seed must be an integer, got {seed!r}", "seed")

    stream = kwargs.get("stream") or False
    if not isinstance(stream, bool):
        raise _fail(f"stream must be true or false, got {stream!r}", "stream")
    options = kwargs.get("stream_options") or {}
    if not isinstance(options, Mapping) or set(options) - {"include_usage"}:
        raise _fail("stream_options accepts only {'include_usage': bool}", "stream_options")
    if options and not stream:
        raise _fail("stream_options is only allowed with stream=True", "stream_options")

    user = kwargs.get("user")
    if user is not None and not isinstance(user, str):
        raise _fail("user must be a string", "user")
    if user is not None:
        _utf8(user, "user")

    metadata = kwargs.get("metadata") or {}
    if not isinstance(metadata, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _fail("metadata must be a dict of string keys and string values", "metadata")
    for k, v in metadata.items():
        _utf8(k, "metadata")
        _utf8(v, f"metadata[{k!r}]")

    tools = kwargs.get("tools")
    if tools is not None and (not isinstance(tools, (list, tuple)) or not tools):
        raise _fail("tools must be a non-empty list", "tools")
    response_format = kwargs.get("response_format")
    if response_format is not None and not isinstance(response_format, Mapping):
        raise _fail(
            "response_format must be a dict such as {'type': 'json_object'}", "response_format"
        )

    timeout = _number(kwargs.get("timeout"), "timeout", 0.0, 86400.0, lo_open=True)

    logprobs = kwargs.get("logprobs") or False
    if not isinstance(logprobs, bool):
        raise _fail(f"logprobs must be true or false, got {logprobs!r}", "logprobs")
    top = kwargs.get("top_logprobs")
    if top not in (None, 0):
        raise _fail(
            f"top_logprobs={top!r} is not supported; hybridgate returns the chosen token's "
            "logprob only (top_logprobs 0)",
            "top_logprobs",
        )

    return ChatRequest(
        messages=validate_messages(kwargs.get("messages")),
        model=model,
        temperature=_number(kwargs.get("temperature"), "temperature", 0.0, 2.0),
        top_p=_number(kwargs.get("top_p"), "top_p", 0.0, 1.0, lo_open=True),
        max_tokens=max_tokens,
        stop=_stop(kwargs.get("stop")),
        seed=seed,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        user=user,
        timeout=timeout,
        tools=tuple(tools) if tools else None,
        tool_choice=kwargs.get("tool_choice"),
        response_format=dict(response_format) if response_format else None,
        metadata=dict(metadata),
        request_id=uuid.uuid4().hex,
        logprobs=logprobs,
        allowed_answers=_choices(kwargs),
    )


def _merged_extra_body(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """``extra_body`` keys join the request, as the openai SDK sends them (top-level JSON)."""
    extra = kwargs.get("extra_body")
    if extra is None:
        return kwargs
    if not isinstance(extra, Mapping):
        raise _fail("extra_body must be a dict", "extra_body")
    both = sorted(set(extra) & (set(kwargs) - {"extra_body"}))
    if both:
        raise _fail(f"{both[0]!r} is given both directly and in extra_body", both[0])
    merged = {k: v for k, v in kwargs.items() if k != "extra_body"}
    merged.update(extra)
    return merged


def _choices(kwargs: Mapping[str, Any]) -> tuple[str, ...] | None:
    """vLLM's closed answer sets: ``structured_outputs={"choice": [...]}`` (vLLM >= 0.10) or
    the older ``guided_choice=[...]``; other structured-output kinds are refused."""
    if "structured_outputs" in kwargs and "guided_choice" in kwargs:
        raise _fail("give structured_outputs or guided_choice, not both", "guided_choice")
    if "guided_choice" in kwargs:
        choices, param = kwargs["guided_choice"], "guided_choice"
    elif "structured_outputs" in kwargs:
        spec, param = kwargs["structured_outputs"], "structured_outputs"
        if not isinstance(spec, Mapping) or set(spec) != {"choice"}:
            raise _fail(
                "structured_outputs supports only {'choice': [...]} (a closed answer set); "
                "send JSON schemas as response_format to the cloud",
                param,
            )
        choices = spec["choice"]
    else:
        return None
    if (
        not isinstance(choices, (list, tuple))
        or not choices
        or not all(isinstance(c, str) and c for c in choices)
    ):
        raise _fail(f"{param} choices must be a non-empty list of non-empty strings", param)
    return tuple(_utf8(c, param) for c in choices)


def prompt_text(request: ChatRequest) -> str:
    """The text the difficulty classifier scores: the last user message with text (the same
    rule ``hybridgate tune`` fits on, ``router._text.last_user_text``)."""
    return last_user_text(request.messages)
