"""Build the ``openai`` package's own response types from a backend result."""

from __future__ import annotations

import time
from collections.abc import Iterator

from openai.types.chat.chat_completion import Choice, ChoiceLogprobs
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.chat.chat_completion_message import ChatCompletionMessage
from openai.types.chat.chat_completion_token_logprob import ChatCompletionTokenLogprob
from openai.types.completion_usage import CompletionUsage

from router.types import (
    BackendResult,
    ChatRequest,
    HybridChatCompletion,
    HybridChatCompletionChunk,
    RouteInfo,
)


def _usage(result: BackendResult) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )


def logprobs(request: ChatRequest, result: BackendResult) -> ChoiceLogprobs | None:
    """OpenAI's ``choices[0].logprobs`` when the request asked for it (local answers only)."""
    if not request.logprobs:
        return None
    values = result.token_logprobs or []
    tokens = result.tokens or [""] * len(values)
    return ChoiceLogprobs(
        content=[
            ChatCompletionTokenLogprob(
                token=token, logprob=value, bytes=list(token.encode()), top_logprobs=[]
            )
            for token, value in zip(tokens, values, strict=False)
        ]
    )


def completion(
    request: ChatRequest, result: BackendResult, info: RouteInfo
) -> HybridChatCompletion:
    message = ChatCompletionMessage(
        role="assistant",
        content=result.text if not result.tool_calls else (result.text or None),
        tool_calls=result.tool_calls or None,
    )
    return HybridChatCompletion(
        id=f"chatcmpl-{request.request_id}",
        object="chat.completion",
        created=int(time.time()),
        model=result.model or request.model,
        choices=[
            Choice(
                index=0,
                finish_reason=result.finish_reason,
                message=message,
                logprobs=logprobs(request, result),
            )
        ],
        usage=_usage(result),
        route=info,
    )


def chunk(
    cid: str, created: int, model: str, *, content: str | None = None, role: str | None = None
) -> HybridChatCompletionChunk:
    return HybridChatCompletionChunk(
        id=cid,
        object="chat.completion.chunk",
        created=created,
        model=model,
        choices=[ChunkChoice(index=0, delta=ChoiceDelta(role=role, content=content or ""))],
    )


def final_chunk(
    cid: str, created: int, request: ChatRequest, result: BackendResult, info: RouteInfo
) -> Iterator[HybridChatCompletionChunk]:
    """The finish-reason chunk, then (when asked) the usage chunk; the last one carries ``route``.
    Asked-for logprobs ride on the finish chunk, all tokens at once (a client concatenates
    ``logprobs.content`` over chunks, so one chunk carrying them all reads the same)."""
    model = result.model or request.model
    scores = logprobs(request, result)
    finish = HybridChatCompletionChunk(
        id=cid,
        object="chat.completion.chunk",
        created=created,
        model=model,
        choices=[
            ChunkChoice(
                index=0,
                delta=ChoiceDelta(),
                finish_reason=result.finish_reason,
                logprobs=scores.model_dump() if scores is not None else None,
            )
        ],
        route=None if request.include_usage else info,
    )
    yield finish
    if request.include_usage:
        yield HybridChatCompletionChunk(
            id=cid,
            object="chat.completion.chunk",
            created=created,
            model=model,
            choices=[],
            usage=_usage(result),
            route=info,
        )
