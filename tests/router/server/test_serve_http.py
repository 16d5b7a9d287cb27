"""``hybridgate serve`` over real HTTP, through the ``openai`` SDK a user's app already has."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from router._transports.base import MockTransport
from router.ledger import Ledger
from router.types import BackendResult

MODEL = "gpt-4-1106-preview"  # the replay cloud's model (conftest)

Q = [{"role": "user", "content": "What is 2+2?"}]


def _sdk(srv, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key=key, max_retries=0)


def _rows(srv) -> list:
    srv.server.gateway.ledger.flush()
    return Ledger(srv.server.gateway.ledger.path, read_only=True).rows()


def test_sync_completion_with_route_headers_and_body(start_server) -> None:
    srv = start_server()
    raw = _sdk(srv).chat.completions.with_raw_response.create(model=MODEL, messages=Q)
    reply = raw.parse()
    assert reply.choices[0].message.content == "4"
    assert reply.usage.total_tokens > 0
    assert raw.headers["x-hybridgate-route"] == "cloud"
    assert raw.headers["x-hybridgate-reason"] == "policy:cloud"
    assert float(raw.headers["x-hybridgate-cost-usd"]) > 0
    assert raw.headers["x-hybridgate-baseline-usd"] == raw.headers["x-hybridgate-cost-usd"]
    body = json.loads(raw.http_response.content)
    assert body["route"]["route"] == "cloud" and body["object"] == "chat.completion"
    rows = _rows(srv)
    assert [r.route for r in rows] == ["cloud"]
    assert rows[0].request_id == raw.headers["x-request-id"]


async def test_async_stream_with_usage_and_done(start_server) -> None:
    srv = start_server()
    client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="none", max_retries=0)
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a story."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    assert text == "Once upon a time there was a small model."
    assert usage is not None and usage.completion_tokens > 0
    await client.close()
    raw = httpx.post(
        f"{srv.base_url}/chat/completions",
        json={"messages": Q, "stream": True},
    )
    assert raw.headers["x-hybridgate-route"] == "cloud"
    assert raw.text.rstrip().endswith("data: [DONE]")
    assert [r.route for r in _rows(srv)] == ["cloud", "cloud"]


def test_bad_input_is_openai_400_with_param_and_a_row(start_server) -> None:
    srv = start_server()
    with pytest.raises(openai.BadRequestError) as info:
        _sdk(srv).chat.completions.create(model=MODEL, messages=[])
    assert info.value.status_code == 400
    assert info.value.body["param"] == "messages"
    bad_json = httpx.post(f"{srv.base_url}/chat/completions", content=b"{nope")
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
    rows = _rows(srv)
    assert len(rows) == 1 and rows[0].error_type == "InvalidRequest"


def test_a_full_local_queue_is_429_with_its_wait_for_forced_local_and_cloud_otherwise(
    start_server,
) -> None:
    from router.errors import Overloaded

    def full(request):
        raise Overloaded("local queue would wait ~13.2 s for a slot", retry_after_s=3.2)

    srv = start_server({"mode": "cascade"}, local=MockTransport(full, name="local"))
    with pytest.raises(openai.RateLimitError) as info:
        _sdk(srv).chat.completions.create(model=MODEL, messages=Q, metadata={"route": "local"})
    assert info.value.response.headers["retry-after"] == "4"  # ceil(3.2): when to come back
    assert info.value.body["code"] == "local_queue_full"
    reply = _sdk(srv).chat.completions.with_raw_response.create(model=MODEL, messages=Q)
    assert reply.headers["x-hybridgate-route"] == "cloud"  # cloud-eligible: overflow upstream
    assert reply.headers["x-hybridgate-reason"] == "fallback:Overloaded"
    assert [(r.route, r.error_type) for r in _rows(srv)] == [
        ("local", "Overloaded"),
        ("cloud", None),
    ]


def test_upstream_429_and_500_reach_the_sdk_as_it_expects(start_server, replay) -> None:
    srv = start_server()
    replay.inject("429", retry_after=3)
    with pytest.raises(openai.RateLimitError) as info:
        _sdk(srv).chat.completions.create(model=MODEL, messages=Q)
    assert info.value.response.headers["retry-after"] == "3"
    replay.inject("500")
    with pytest.raises(openai.InternalServerError) as err:
        _sdk(srv).chat.completions.create(model=MODEL, messages=Q)
    assert err.value.status_code == 502
    assert [r.error_type for r in _rows(srv)] == ["RateLimited", "CloudServerError"]


def test_models_health_ready_and_metrics(start_server) -> None:
    srv = start_server()
    ids = [m.id for m in _sdk(srv).models.list()]
    assert MODEL in ids and "hybridgate" in ids and "hybridgate/local" in ids
    base = srv.base_url.removesuffix("/v1")
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz").status_code == 200  # cloud mode needs no model
    _sdk(srv).chat.completions.create(model=MODEL, messages=Q)
    text = httpx.get(f"{base}/metrics").text
    assert 'hybridgate_requests_total{reason="policy:cloud",route="cloud",status="ok"} 1.0' in text
    assert "hybridgate_baseline_cost_usd_total" in text
    assert "hybridgate_request_duration_seconds_bucket" in text


def test_a_redis_outage_is_a_metric_not_a_failed_request(start_server) -> None:
    from tests.services import free_port

    srv = start_server({"cache": {"enabled": True, "url": f"redis://127.0.0.1:{free_port()}/0"}})
    reply = _sdk(srv).chat.completions.create(model=MODEL, messages=Q, temperature=0)
    assert reply.choices[0].message.content == "4"  # cacheable, so the cache was asked
    text = httpx.get(srv.base_url.removesuffix("/v1") + "/metrics").text
    assert "hybridgate_cache_store_errors_total 1.0" in text


def _keys(tmp_path, text: str):
    from router.server.keys import KeyRing

    path = tmp_path / "keys.yaml"
    path.write_text(text)
    return KeyRing.load(path)


def test_keys_401_tenant_column_and_report_by_tenant(start_server, tmp_path) -> None:
    from router.ledger.reports import summarize
    from router.server.keys import hash_key

    keys = _keys(
        tmp_path,
        f"sk-team-a-123456: team-a\n'{hash_key('sk-team-b-654321')}':\n  tenant: team-b\n",
    )
    srv = start_server(keys=keys)
    with pytest.raises(openai.AuthenticationError) as info:
        _sdk(srv, "sk-wrong-000000").chat.completions.create(model=MODEL, messages=Q)
    assert info.value.body["code"] == "invalid_api_key"
    assert httpx.get(f"{srv.base_url}/models").status_code == 401
    _sdk(srv, "sk-team-a-123456").chat.completions.create(model=MODEL, messages=Q)
    _sdk(srv, "sk-team-b-654321").chat.completions.create(model=MODEL, messages=Q)
    rows = _rows(srv)
    assert sorted(r.tenant for r in rows) == ["team-a", "team-b"]
    assert [g.key for g in summarize(rows, by="tenant").groups] == ["team-a", "team-b"]


def test_key_limits_models_routes_and_budget(start_server, tmp_path) -> None:
    keys = _keys(
        tmp_path,
        "sk-local-only-1: {tenant: private, routes: [local]}\n"
        f"sk-one-model-1: {{tenant: narrow, models: [{MODEL}]}}\n"
        "sk-no-budget-1: {tenant: broke, daily_usd: 0}\n",
    )
    local = MockTransport(lambda r: BackendResult(text="local says 4"), name="local")
    srv = start_server({"budget": {"on_exceeded": "fail"}}, keys=keys, local=local)
    reply = _sdk(srv, "sk-local-only-1").chat.completions.create(model=MODEL, messages=Q)
    assert reply.choices[0].message.content == "local says 4"  # pinned local: never the cloud
    with pytest.raises(openai.PermissionDeniedError):
        _sdk(srv, "sk-local-only-1").chat.completions.create(
            model=MODEL, messages=Q, metadata={"route": "cloud"}
        )
    with pytest.raises(openai.PermissionDeniedError):
        _sdk(srv, "sk-one-model-1").chat.completions.create(model="gpt-4o", messages=Q)
    with pytest.raises(openai.RateLimitError) as info:
        _sdk(srv, "sk-no-budget-1").chat.completions.create(model=MODEL, messages=Q)
    assert info.value.body["code"] == "insufficient_quota"
    assert "broke" in info.value.body["message"]


def test_route_alias_forces_local(start_server) -> None:
    local = MockTransport(lambda r: BackendResult(text="from local"), name="local")
    srv = start_server(local=local)
    raw = _sdk(srv).chat.completions.with_raw_response.create(model="hybridgate/local", messages=Q)
    assert raw.parse().choices[0].message.content == "from local"
    assert raw.headers["x-hybridgate-route"] == "local"


def test_client_leaving_mid_stream_is_recorded(start_server) -> None:
    import asyncio
    import time

    from router.types import StreamDelta

    class Slow(MockTransport):
        async def astream(self, request):
            yield StreamDelta(text="first ")
            await asyncio.sleep(5)  # the client leaves while this waits
            yield StreamDelta(text="second")
            yield StreamDelta(result=BackendResult(text="first second"))

    srv = start_server(
        {"mode": "local"}, local=Slow(lambda r: BackendResult(text="x"), name="local")
    )
    t0 = time.monotonic()
    with httpx.stream(
        "POST", f"{srv.base_url}/chat/completions", json={"messages": Q, "stream": True}
    ) as response:
        for line in response.iter_lines():
            if "first" in line:
                break  # leave after the first content chunk
    rows: list = []
    while not rows and time.monotonic() - t0 < 4:
        rows = _rows(srv)
        time.sleep(0.05)
    assert len(rows) == 1, "the row is written when the client leaves, not when the answer ends"
    assert rows[0].error_type in ("ConnectionAbortedError", "CancelledError")
    metrics = httpx.get(srv.base_url.removesuffix("/v1") + "/metrics").text
    assert "hybridgate_client_disconnects_total 1.0" in metrics
    assert "hybridgate_requests_in_flight 0.0" in metrics
