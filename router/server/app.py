"""The HTTP surface of ``hybridgate serve``: OpenAI's chat-completions API over one ``Gateway``.

Why Starlette (under uvicorn) and not FastAPI: the gateway already validates every request in
one place (``router._gateway.validation``) and builds the ``openai`` package's own response
types, so FastAPI's pydantic request models would be a second, slower copy of the same rules.
Starlette is the ASGI toolkit FastAPI is built on: routing, streaming, lifespan, nothing more.

Endpoints stay thin (vLLM's habit): authenticate, read JSON, hand the gateway a dict, write
what it returns. Every request, failed ones included, gets its ledger row from the gateway; a
stream the client leaves early is closed here, so its row says so and its batch slot is freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from router.server.keys import Grant, KeyRing
from router.server.metrics import ServerMetrics
from router.server.tracing import NoTracing
from router.server.wire import SSE_DONE, ApiError, from_exception, sse

log = logging.getLogger("hybridgate.server")

AUTO_ALIASES = ("hybridgate", "hybridgate/auto")
"""Model names that mean "let the policy route it" (priced as the policy's cloud model)."""
ROUTE_ALIASES = {"hybridgate/local": "local", "hybridgate/cloud": "cloud"}
"""Model names that force a route for the request, like ``metadata={"route": ...}``."""


class GatewayServer:
    """What every connection shares: one client (one model, batcher, cache, ledger), keys and
    metrics. ``GatewayServer(client, keys=...).app`` is the ASGI application."""

    def __init__(
        self,
        client: Any,
        *,
        keys: KeyRing | None = None,
        preload: bool = True,
        tracing: Any = None,
    ) -> None:
        self.client = client
        self.gateway = client.gateway
        self.policy = client.policy
        self.keys = keys
        self.metrics = ServerMetrics()
        self.metrics.watch_cache(self.gateway.cache)
        self.tracing = tracing if tracing is not None else NoTracing()
        self.preload = preload and self.policy.mode != "cloud"
        self.load_error: str | None = None
        self._loader: asyncio.Future | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.render_metrics, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    # -- lifecycle ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.preload:  # load the model beside serving: /healthz answers, /readyz waits
            self._loader = asyncio.ensure_future(asyncio.to_thread(self._load_local))
        try:
            yield
        finally:
            # uvicorn has stopped accepting and let in-flight requests finish (bounded by its
            # graceful timeout); closing the client flushes every queued ledger row.
            await asyncio.to_thread(self.client.close)
            await asyncio.to_thread(self.tracing.shutdown)

    def _load_local(self) -> None:
        try:
            self.metrics.watch_local(self.gateway.local())
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and on every local call
            self.load_error = self.gateway.redact(f"{type(exc).__name__}: {exc}")
            log.error("local model failed to load: %s", self.load_error)

    @property
    def ready(self) -> bool:
        if not self.preload:
            return True
        return self.gateway._local is not None

    # -- endpoints -------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.ready:
            return JSONResponse({"status": "ready"})
        body = {"status": "loading" if self.load_error is None else "failed"}
        if self.load_error:
            body["error"] = self.load_error
        return JSONResponse(body, status_code=503)

    async def render_metrics(self, request: Request) -> Response:
        data = self.metrics.render(self.gateway.adapter_version)
        return Response(data, media_type=self.metrics.content_type)

    def _adapter_names(self) -> tuple[str, ...]:
        """The served adapter's engine name (``hybridgate-v0003``), as vLLM lists a LoRA: a
        gateway using this server as its local engine sends it (``local.api_base``)."""
        from router.publication import served_name

        version = self.gateway.adapter_version
        return (served_name(version),) if version else ()

    async def models(self, request: Request) -> Response:
        try:
            self._authenticate(request)
        except ApiError as err:
            return _error(err)
        created = int(time.time())
        local = self.policy.local
        entries = [
            {"id": self.policy.cloud.model, "owned_by": "hybridgate:cloud"},
            {
                "id": local.model,
                "owned_by": "hybridgate:local",
                "adapter": self.gateway.adapter_version,
            },
            *(
                {"id": name, "owned_by": "hybridgate:local", "parent": local.model}
                for name in self._adapter_names()
            ),
            *({"id": a, "owned_by": "hybridgate:routed"} for a in AUTO_ALIASES),
            *({"id": a, "owned_by": "hybridgate:routed"} for a in ROUTE_ALIASES),
        ]
        data = [{"object": "model", "created": created, **entry} for entry in entries]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(self, request: Request) -> Response:
        t0 = time.perf_counter()
        self.metrics.in_flight.inc()
        span = self.tracing.start(request.headers)
        try:
            grant = self._authenticate(request)
            body = await _json_body(request)
            kwargs = self._kwargs(body, grant)
            self.tracing.describe(span, body)
            tenant = grant.tenant if grant is not None else None
            result = await self.gateway.acreate(kwargs, tenant=tenant)
        except Exception as exc:  # noqa: BLE001 - every failure becomes OpenAI's error shape
            self.metrics.in_flight.dec()
            err = from_exception(exc, self.gateway.redact)
            if err.status >= 500 and not isinstance(exc, ApiError):
                log.warning("request failed: %s: %s", type(exc).__name__, err.message)
            self.metrics.failed(type(exc).__name__, err.status)
            self.tracing.fail(span, type(exc).__name__, err.status, err.message)
            return _error(err)
        if kwargs.get("stream"):
            return self._stream(result, t0, span)
        self.metrics.in_flight.dec()
        info = result.route
        self.metrics.answered(info, stream=False, seconds=time.perf_counter() - t0)
        if result.usage is not None:
            self.metrics.usage(
                info.route, result.usage.prompt_tokens, result.usage.completion_tokens
            )
        self.tracing.finish(
            span,
            info,
            response_id=result.id,
            response_model=result.model,
            finish_reasons=[c.finish_reason for c in result.choices if c.finish_reason],
            usage=result.usage,
        )
        return Response(
            result.model_dump_json(),
            media_type="application/json",
            headers=route_headers(info),
        )

    # -- pieces ------------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> Grant | None:
        if self.keys is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        grant = self.keys.lookup(presented.strip()) if scheme.lower() == "bearer" else None
        if grant is None:
            raise ApiError(
                401,
                "Incorrect API key provided."
                if presented
                else "Missing API key: send "
                "'Authorization: Bearer <key>' (the keys are in the server's --keys file).",
                code="invalid_api_key",
            )
        return grant

    def _kwargs(self, body: Any, grant: Grant | None) -> dict[str, Any]:
        """The body as ``create()`` keyword arguments, with aliases and the key's limits."""
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        kwargs = {k: v for k, v in body.items() if v is not None}  # null means "the default"
        model = kwargs.get("model")
        if grant is not None and grant.models is not None and model not in grant.models:
            raise ApiError(
                403,
                f"this API key may not use model {model!r}; it may use "
                f"{', '.join(sorted(grant.models))}",
                code="model_not_allowed",
                param="model",
            )
        forced = None
        if model in AUTO_ALIASES:
            kwargs.pop("model")
        elif (
            model in ROUTE_ALIASES
            or model == self.policy.local.model
            or model in self._adapter_names()
        ):
            forced = ROUTE_ALIASES.get(model, "local")
            kwargs.pop("model")
        metadata = kwargs.get("metadata")
        if forced is None and grant is None:
            return kwargs
        metadata = dict(metadata) if isinstance(metadata, dict) else {}
        asked = metadata.get("route", forced)
        if forced is not None and asked != forced:
            raise ApiError(
                400,
                f"model {model!r} routes to {forced}, but metadata.route asks for {asked!r}",
                param="metadata",
            )
        if grant is not None and grant.routes is not None:
            if asked is not None and asked not in grant.routes:
                raise ApiError(
                    403,
                    f"this API key may not route requests to {asked!r}",
                    code="route_not_allowed",
                    param="metadata",
                )
            asked = asked or grant.pinned_route
        if asked is not None:
            metadata["route"] = asked
            kwargs["metadata"] = metadata
        return kwargs

    def _stream(self, stream: Any, t0: float, span: Any) -> Response:
        route, reason = stream.routed
        headers = {"x-hybridgate-route": route, "x-hybridgate-reason": _latin1(reason)}
        adapter = self.gateway.adapter_version if route == "local" else None
        if adapter:
            headers["x-hybridgate-adapter"] = _latin1(adapter)
        started = [False]

        async def never_started() -> None:  # the client left before the first byte
            if not started[0]:
                self.metrics.in_flight.dec()
                self.metrics.disconnects.inc()
                self.tracing.finish(span, None, disconnected=True)
                await stream.close()

        return _ClosingStream(
            self._events(stream, route, t0, started, span),
            media_type="text/event-stream",
            headers=headers,
            on_close=never_started,
        )

    async def _events(
        self, stream: Any, route: str, t0: float, started: list[bool], span: Any
    ) -> AsyncIterator[bytes]:
        started[0] = True
        metrics = self.metrics
        info = usage = last = None
        reasons: list[str] = []
        first = True
        finished = failed = False
        try:
            async for chunk in stream:
                last = chunk
                reasons += [c.finish_reason for c in chunk.choices if c.finish_reason]
                usage = chunk.usage or usage
                if first and chunk.choices and chunk.choices[0].delta.content:
                    metrics.ttft.labels(route).observe(time.perf_counter() - t0)
                    first = False
                if chunk.route is not None:
                    info = chunk.route
                    yield sse(chunk.model_dump_json())
                else:
                    yield sse(chunk.model_dump_json(exclude={"route"}))
                if chunk.usage is not None and info is not None:
                    metrics.usage(
                        info.route, chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                    )
            yield SSE_DONE
            finished = True
            if info is not None:
                metrics.answered(info, stream=True, seconds=time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band, as OpenAI does
            finished = failed = True
            err = from_exception(exc, self.gateway.redact)
            metrics.failed(type(exc).__name__, err.status, route)
            self.tracing.fail(span, type(exc).__name__, err.status, err.message)
            yield sse(json.dumps(json.loads(err.body())))
        finally:
            metrics.in_flight.dec()
            if not finished:
                metrics.disconnects.inc()
            await stream.close()  # a client that left: row written, batch slot freed
            if not failed:
                self.tracing.finish(
                    span,
                    info,
                    response_id=getattr(last, "id", None),
                    response_model=getattr(last, "model", None),
                    finish_reasons=reasons,
                    usage=usage,
                    disconnected=not finished,
                )


class _ClosingStream(StreamingResponse):
    """A ``StreamingResponse`` that always closes its body iterator, also when the client
    disconnects mid-stream (Starlette otherwise leaves it suspended for the GC)."""

    def __init__(self, content: Any, *, on_close: Any, **kw: Any) -> None:
        super().__init__(content, **kw)
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._on_close()


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})", param=None) from None


def _error(err: ApiError) -> Response:
    return Response(
        err.body(), status_code=err.status, media_type="application/json", headers=err.headers
    )


def route_headers(info: Any) -> dict[str, str]:
    """Where a request was answered and what it cost, readable without parsing the body."""
    headers = {
        "x-hybridgate-route": info.route,
        "x-hybridgate-reason": _latin1(info.reason),
        "x-hybridgate-cost-usd": f"{info.cost_usd:.8f}",
        "x-hybridgate-baseline-usd": f"{info.baseline_cost_usd:.8f}",
        "x-request-id": info.request_id,
    }
    if info.adapter_version:
        headers["x-hybridgate-adapter"] = _latin1(info.adapter_version)
    return headers


def _latin1(value: str) -> str:
    """HTTP header values are Latin-1: a tag in another script is escaped, not a crash."""
    return value.encode("latin-1", "backslashreplace").decode("latin-1")


__all__ = ["AUTO_ALIASES", "ROUTE_ALIASES", "GatewayServer", "route_headers"]
