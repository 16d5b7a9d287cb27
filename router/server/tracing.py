"""OpenTelemetry spans for ``hybridgate serve``, in the GenAI semantic conventions (``gen_ai.*``).

Off unless an OTLP endpoint is configured: ``--otlp-endpoint URL`` or the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` variables (OTLP over
HTTP/protobuf, the exporter's own defaults for headers and timeouts). The packages are the
optional ``otel`` extra; asking for spans without them is a startup error, not a silent no-op.

One span per chat request, named ``chat {model}`` as the conventions say, with the W3C
``traceparent`` of the caller as its parent, so the gateway shows up inside the app's trace.
Prompts and answers are never recorded (they are the user's data); what is recorded is what
the ledger holds: model, token counts, finish reasons, route, reason, cost, tenant.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from router._errors import PolicyError

SERVICE_NAME = "hybridgate"
_ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def configured_endpoint(flag: str | None) -> str | None:
    """The OTLP endpoint from ``--otlp-endpoint`` or the standard environment, if any."""
    if flag:
        return flag
    for name in _ENDPOINT_ENVS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def require_exporter(endpoint: str) -> None:
    """Refuse to start when spans are asked for and the ``otel`` extra is not installed."""
    import importlib.util

    try:
        found = importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
        found = found and importlib.util.find_spec("opentelemetry.sdk") is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise PolicyError(
            f"an OTLP endpoint is configured ({endpoint}) but OpenTelemetry is not installed: "
            "pip install 'hybridgate[otel]', or unset --otlp-endpoint / OTEL_EXPORTER_OTLP_ENDPOINT"
        )


def _traces_url(endpoint: str) -> str:
    """OTLP/HTTP posts spans to ``<base>/v1/traces``; a full traces URL is kept as given."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


class Tracing:
    """Starts and ends the request spans; ``Tracing.build(endpoint)`` or ``Tracing(exporter)``."""

    def __init__(self, exporter: Any, *, batch: bool = True) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        service = os.environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)
        # a provider of our own, not the global one: an embedding app keeps its own setup
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("hybridgate.server")
        self._propagate = propagate
        self._trace = trace

    @classmethod
    def build(cls, endpoint: str) -> Tracing:
        require_exporter(endpoint)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return cls(OTLPSpanExporter(endpoint=_traces_url(endpoint)))

    def start(self, headers: Mapping[str, str]) -> Any:
        """A span for one request, child of the caller's ``traceparent`` when it sent one."""
        from opentelemetry.trace import SpanKind

        return self.tracer.start_span(
            "chat",
            context=self._propagate.extract(headers),
            kind=SpanKind.SERVER,
            attributes={"gen_ai.operation.name": "chat"},
        )

    def describe(self, span: Any, body: dict[str, Any]) -> None:
        """Name ``span`` ``chat {model}`` and record the request's parameters."""
        attrs = _request_attributes(body)
        if "gen_ai.request.model" in attrs:
            span.update_name(f"chat {attrs['gen_ai.request.model']}")
        span.set_attributes(attrs)

    def finish(
        self,
        span: Any,
        info: Any,
        *,
        response_id: str | None = None,
        response_model: str | None = None,
        finish_reasons: list[str] | None = None,
        usage: Any = None,
        disconnected: bool = False,
    ) -> None:
        """End ``span`` with what the gateway did (``RouteInfo``) and the answer's metadata."""
        attrs: dict[str, Any] = {}
        if info is not None:
            attrs.update(
                {
                    "gen_ai.provider.name": "hybridgate.local"
                    if info.route == "local"
                    else "openai",
                    "hybridgate.route": info.route,
                    "hybridgate.reason": info.reason,
                    "hybridgate.cost_usd": float(info.cost_usd),
                    "hybridgate.baseline_cost_usd": float(info.baseline_cost_usd),
                    "hybridgate.escalated": bool(info.escalated),
                    "hybridgate.cache_hit": bool(info.cache_hit),
                    "hybridgate.request_id": info.request_id,
                }
            )
            if info.tenant:
                attrs["hybridgate.tenant"] = info.tenant
            if info.adapter_version:
                attrs["hybridgate.adapter"] = info.adapter_version
        if response_id:
            attrs["gen_ai.response.id"] = response_id
        if response_model:
            attrs["gen_ai.response.model"] = response_model
        if finish_reasons:
            attrs["gen_ai.response.finish_reasons"] = list(finish_reasons)
        if usage is not None:
            attrs["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attrs["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if disconnected:
            attrs["hybridgate.client_disconnected"] = True
        span.set_attributes(attrs)
        span.end()

    def fail(self, span: Any, error_type: str, status: int, message: str) -> None:
        """End ``span`` as failed (``error.type``; the message is already redacted)."""
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("error.type", error_type)
        span.set_attribute("http.response.status_code", status)
        span.set_status(Status(StatusCode.ERROR, message))
        span.end()

    def shutdown(self) -> None:
        """Export every span still queued (called when the server stops)."""
        self.provider.shutdown()


class NoTracing:
    """What the server calls when no OTLP endpoint is configured: nothing happens."""

    def start(self, headers: Mapping[str, str]) -> None:
        return None

    def describe(self, span: Any, body: dict[str, Any]) -> None:
        pass

    def finish(self, span: Any, info: Any, **answer: Any) -> None:
        pass

    def fail(self, span: Any, error_type: str, status: int, message: str) -> None:
        pass

    def shutdown(self) -> None:
        pass


def _request_attributes(request: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if isinstance(request.get("model"), str):
        attrs["gen_ai.request.model"] = request["model"]
    for key, name in (
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("max_completion_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("seed", "gen_ai.request.seed"),
        ("n", "gen_ai.request.choice.count"),
    ):
        value = request.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attrs[name] = value
    return attrs


__all__ = ["SERVICE_NAME", "NoTracing", "Tracing", "configured_endpoint", "require_exporter"]
