"""One exception tree for the whole gateway.

::

    HybridGateError
      InvalidRequest            (also openai.BadRequestError: bad messages/params)
      PolicyError               (a policy file or object is invalid)
      RoutingError
      BackendError
        LocalModelError         (also openai.InternalServerError: 500, or 503/504 below)
          ModelLoadError
          LocalOutOfMemory      (503)
          Overloaded            (503: the local queue is full)
          BatcherTimeout        (504)
        CloudError              (also the matching openai.* error)
          RateLimited           (openai.RateLimitError, 429)
          CloudTimeout          (openai.APITimeoutError)
          CloudConnectionError  (openai.APIConnectionError)
          CloudAuthError        (openai.AuthenticationError, 401/403)
          CloudBadRequest       (openai.BadRequestError, other 4xx)
          CloudServerError      (openai.InternalServerError, 5xx)
      BudgetExceeded
      NotFittedError
      LedgerError               (the ledger file cannot be opened/written; names the path)

Cloud errors subclass both our tree and the ``openai`` SDK's exception of the same
meaning, so an app's existing ``except openai.RateLimitError`` keeps working after it
swaps ``OpenAI()`` for ``HybridClient()``.

The classes with no ``openai`` base (``HybridGateError``, ``PolicyError``, ``RoutingError``,
``BackendError``, ``CloudError``, ``BudgetExceeded``, ``NotFittedError``, ``LedgerError``) are
defined in ``router._errors`` and re-exported here, the same objects: importing
``router.policy`` or ``router.ledger`` then costs no ``openai``/``httpx`` import.
"""

from __future__ import annotations

import httpx
import openai

from router._errors import (
    BackendError,
    BudgetExceeded,
    CloudError,
    HybridGateError,
    LedgerError,
    NotFittedError,
    PolicyError,
    RoutingError,
)

_PLACEHOLDER_URL = "https://hybridgate.invalid/v1/chat/completions"


def _request(url: str | None = None) -> httpx.Request:
    return httpx.Request("POST", url or _PLACEHOLDER_URL)


def _response(
    status: int, url: str | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, request=_request(url), headers=headers or {})


class InvalidRequest(HybridGateError, openai.BadRequestError):
    """The request itself is malformed (empty messages, unknown parameter, bad role...)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        openai.BadRequestError.__init__(
            self, message, response=_response(400), body={"message": message, "param": param}
        )
        self.param = param


class LocalModelError(BackendError, openai.InternalServerError):
    """The local model could not answer (also ``openai.InternalServerError``, so a caller whose
    request was pinned to the local model handles it like any server error)."""

    status: int = 500

    def __init__(self, message: str = "the local model could not answer") -> None:
        openai.InternalServerError.__init__(
            self, message, response=_response(self.status), body={"message": message}
        )
        self.status_code = self.status


class ModelLoadError(LocalModelError):
    """The local model weights are missing or corrupt; the message says how to fix it."""


class LocalOutOfMemory(LocalModelError):
    """The local device ran out of memory."""

    status = 503


class Overloaded(LocalModelError):
    """The local request queue is full: back off or route elsewhere."""

    status = 503

    def __init__(
        self, message: str = "the local queue is full", *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        """Seconds until the local queue is expected to have room (a server's Retry-After)."""


class BatcherTimeout(LocalModelError):
    """A queued local request waited longer than its timeout."""

    status = 504


class CloudBadRequest(CloudError, openai.BadRequestError):
    retryable = False

    def __init__(self, message: str, *, status_code: int = 400, body: object | None = None) -> None:
        openai.BadRequestError.__init__(self, message, response=_response(status_code), body=body)
        self.status_code = status_code


class CloudAuthError(CloudError, openai.AuthenticationError):
    retryable = False

    def __init__(self, message: str, *, status_code: int = 401, body: object | None = None) -> None:
        openai.AuthenticationError.__init__(
            self, message, response=_response(status_code), body=body
        )
        self.status_code = status_code


class RateLimited(CloudError, openai.RateLimitError):
    retryable = True

    def __init__(
        self, message: str, *, retry_after: float | None = None, body: object | None = None
    ) -> None:
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        openai.RateLimitError.__init__(
            self, message, response=_response(429, headers=headers), body=body
        )
        self.status_code = 429
        self.retry_after = retry_after


class CloudServerError(CloudError, openai.InternalServerError):
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 500,
        retry_after: float | None = None,
        body: object | None = None,
    ) -> None:
        openai.InternalServerError.__init__(
            self, message, response=_response(status_code), body=body
        )
        self.status_code = status_code
        self.retry_after = retry_after


class CloudTimeout(CloudError, openai.APITimeoutError):
    retryable = True

    def __init__(self, message: str = "Request timed out.") -> None:
        openai.APITimeoutError.__init__(self, request=_request())
        self.message = message
        self.args = (message,)


class CloudConnectionError(CloudError, openai.APIConnectionError):
    retryable = True

    def __init__(self, message: str = "Connection error.") -> None:
        openai.APIConnectionError.__init__(self, message=message, request=_request())


__all__ = [
    "BackendError",
    "BatcherTimeout",
    "BudgetExceeded",
    "CloudAuthError",
    "CloudBadRequest",
    "CloudConnectionError",
    "CloudError",
    "CloudServerError",
    "CloudTimeout",
    "HybridGateError",
    "InvalidRequest",
    "LedgerError",
    "LocalModelError",
    "LocalOutOfMemory",
    "ModelLoadError",
    "NotFittedError",
    "Overloaded",
    "PolicyError",
    "RateLimited",
    "RoutingError",
]
