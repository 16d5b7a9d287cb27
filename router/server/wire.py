"""OpenAI's wire format for what the server sends back: error bodies, status codes, SSE lines.

Statuses are chosen for how the ``openai`` SDKs react to them: they retry 408/409/429/5xx and
honour ``Retry-After``, and raise ``BadRequestError`` (400), ``AuthenticationError`` (401),
``PermissionDeniedError`` (403), ``NotFoundError`` (404), ``RateLimitError`` (429) or
``InternalServerError`` (5xx) otherwise. An upstream 401 (the *server's* provider key is wrong)
is not the caller's 401: it is a 502, so no client thinks its own key was refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from router import errors as e


@dataclass
class ApiError(Exception):
    """An error to send as ``{"error": {...}}`` with this status."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        return json.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        ).encode()


def _retry_after(seconds: float | None, default: float | None = None) -> dict[str, str]:
    value = seconds if seconds is not None else default
    return {"retry-after": str(max(1, round(value)))} if value is not None else {}


def from_exception(exc: BaseException, redact: Any = str) -> ApiError:
    """The ``ApiError`` a gateway exception is sent as (messages pass through ``redact``)."""
    if isinstance(exc, ApiError):
        return exc
    message = redact(str(exc)) or type(exc).__name__
    if isinstance(exc, e.InvalidRequest):
        return ApiError(400, message, param=exc.param)
    if isinstance(exc, e.BudgetExceeded):
        return ApiError(429, message, "insufficient_quota", "insufficient_quota")
    if isinstance(exc, e.Overloaded):  # forced-local and the local queue is full
        wait = exc.retry_after_s if exc.retry_after_s is not None else 1.0
        return ApiError(
            429,
            message,
            "rate_limit_error",
            "local_queue_full",
            headers={"retry-after": str(max(1, math.ceil(wait)))},
        )
    if isinstance(exc, e.RateLimited):
        return ApiError(
            429,
            message,
            "rate_limit_error",
            "rate_limit_exceeded",
            headers=_retry_after(exc.retry_after),
        )
    if isinstance(exc, (e.CloudTimeout, e.BatcherTimeout)):
        return ApiError(504, message, "timeout", "upstream_timeout")
    if isinstance(exc, e.CloudAuthError):
        return ApiError(
            502,
            f"the upstream provider refused the server's credentials: {message}",
            "upstream_error",
            "upstream_auth",
        )
    if isinstance(exc, e.CloudConnectionError):
        return ApiError(502, message, "upstream_error", "upstream_connection")
    if isinstance(exc, e.CloudBadRequest):
        status = exc.status_code if isinstance(exc.status_code, int) else 400
        return ApiError(status, message, "invalid_request_error", "upstream_rejected")
    if isinstance(exc, e.CloudServerError):
        return ApiError(
            502,
            message,
            "upstream_error",
            "upstream_server_error",
            headers=_retry_after(exc.retry_after),
        )
    if isinstance(exc, e.LocalModelError):
        status = getattr(exc, "status", 500)
        return ApiError(status, message, "server_error", "local_model_error")
    # Anything else is our bug or an unreadable ledger: say so without internals.
    return ApiError(
        500, f"internal error ({type(exc).__name__}); see the server log", "server_error"
    )


def sse(payload: str) -> bytes:
    """One server-sent event line pair, as OpenAI frames stream chunks."""
    return b"data: " + payload.encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


__all__ = ["SSE_DONE", "ApiError", "from_exception", "sse"]
