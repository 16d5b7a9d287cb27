"""OpenTelemetry spans from ``hybridgate serve``: exported over real OTLP/HTTP to a receiver."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from router._errors import PolicyError
from router.server import tracing as tracing_mod
from router.server.run import ServeConfig, check_bind
from router.server.tracing import Tracing

MODEL = "gpt-4-1106-preview"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver:
    """A minimal OTLP/HTTP collector: keeps every ``POST /v1/traces`` body."""

    def __init__(self) -> None:
        bodies = self.bodies = []
        paths = self.paths = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                paths.append(self.path)
                bodies.append(self.rfile.read(int(self.headers["content-length"])))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def spans(self) -> list:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        out = []
        for body in self.bodies:
            msg = ExportTraceServiceRequest.FromString(body)
            for rs in msg.resource_spans:
                service = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out += [(service, span) for span in ss.spans]
        return out


def _attrs(span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        kind = v.WhichOneof("value")
        out[a.key] = (
            [x.string_value for x in v.array_value.values]
            if kind == "array_value"
            else getattr(v, kind)
        )
    return out


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.httpd.shutdown()


def test_spans_follow_genai_conventions_and_join_the_callers_trace(start_server, receiver) -> None:
    srv = start_server(tracing=Tracing.build(receiver.url))
    sdk = openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0)
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    reply = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 2+2?"}],
        max_tokens=16,
        temperature=0.0,
        extra_headers={"traceparent": traceparent},
    )
    stream = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a story."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed_usage = None
    for chunk in stream:
        streamed_usage = chunk.usage or streamed_usage
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=MODEL, messages=[])
    srv.stop()  # the lifespan exit flushes the batch exporter

    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    spans = receiver.spans()
    assert len(spans) == 3
    by_id = {}
    for service, span in spans:
        assert service["service.name"] == "hybridgate"
        attrs = _attrs(span)
        assert attrs["gen_ai.operation.name"] == "chat"
        by_id[attrs.get("gen_ai.response.id", "failed")] = (span, attrs)
    assert "failed" in by_id and reply.id in by_id

    span, attrs = by_id.pop(reply.id)
    assert span.name == f"chat {MODEL}"
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT_ID
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.request.max_tokens"] == 16
    assert attrs["gen_ai.request.temperature"] == 0.0
    assert attrs["gen_ai.response.model"] == reply.model
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert attrs["hybridgate.route"] == "cloud"
    assert attrs["hybridgate.cost_usd"] == pytest.approx(reply.route["cost_usd"])

    fspan, fattrs = by_id.pop("failed")
    assert fattrs["error.type"] == "InvalidRequest"  # the gateway's error class
    assert fattrs["http.response.status_code"] == 400
    assert fspan.status.code == 2  # STATUS_CODE_ERROR

    ((sspan, sattrs),) = by_id.values()  # the stream
    assert sspan.trace_id.hex() != TRACE_ID  # no traceparent: a trace of its own
    assert sattrs["gen_ai.usage.output_tokens"] == streamed_usage.completion_tokens
    assert sattrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert "hybridgate.client_disconnected" not in sattrs
    # prompts and answers are the user's data: never exported
    raw = b"".join(receiver.bodies)
    assert b"2+2" not in raw and b"Once upon a time" not in raw


def test_an_endpoint_without_the_otel_extra_refuses_to_start(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("opentelemetry") else real(name, *a),
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    with pytest.raises(PolicyError, match=r"hybridgate\[otel\]"):
        check_bind(ServeConfig())


def test_endpoint_from_flag_then_standard_environment(monkeypatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing_mod.configured_endpoint(None) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tracing_mod.configured_endpoint(None) == "http://collector:4318"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/v1/traces")
    assert tracing_mod.configured_endpoint(None) == "http://traces:4318/v1/traces"
    assert tracing_mod.configured_endpoint("http://flag:4318") == "http://flag:4318"
    assert tracing_mod._traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert tracing_mod._traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
