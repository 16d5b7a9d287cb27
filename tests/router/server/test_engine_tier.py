"""The local tier on an OpenAI-compatible engine (``local.api_base``).

The engine is ``hybridgate serve`` itself (real HTTP, a real model's logprobs and constrained
decoding), or the vLLM-shaped stand-in in ``fake_vllm.py`` for the runtime-LoRA endpoints.
"""

from __future__ import annotations

import json
import math
import shutil

import openai
import pytest

from router.client import HybridClient
from router.errors import LocalModelError
from router.ledger import Ledger
from router.policy.io import policy_from_dict
from tests.router.server.conftest import ANSWERS, MODEL
from tests.router.server.fake_vllm import BASE, FakeVLLM

SYSTEM = "Classify the message. Reply with the label only."
LABELS = ["refund_request", "card_lost"]


def _engine(make_engine, **config):
    from router._transports.local import LocalTransport

    return LocalTransport(make_engine(**config), model_name=BASE, max_new_tokens=8)


def _outer(tmp_path, replay, api_base: str, **local) -> HybridClient:
    spec = {
        "mode": "cascade",
        "thresholds": {"cascade": 0.0},  # keep every local answer: the test reads it
        "cloud": {"model": MODEL, "api_base": replay.base_url, "max_retries": 0},
        "local": {"api_base": api_base, "max_new_tokens": 8, **local},
        "cache": {"enabled": False},
    }
    return HybridClient(policy=policy_from_dict(spec), ledger=tmp_path / "outer.sqlite")


def _wait_ready(base_url: str) -> None:
    import time

    import httpx

    deadline = time.monotonic() + 30
    while httpx.get(base_url.removesuffix("/v1") + "/readyz").status_code != 200:
        assert time.monotonic() < deadline, "engine stand-in never became ready"
        time.sleep(0.05)


def _rows(path) -> list:
    with Ledger(path) as ledger:
        return ledger.rows()


def test_local_tier_on_hybridgate_serve_uses_the_engines_logprobs(
    start_server, make_engine, replay, tmp_path
):
    from router.scoring.confidence import confidence

    local = _engine(make_engine)
    srv = start_server(local=local)
    messages = [{"role": "user", "content": "What is 2+2?"}]
    direct = openai.OpenAI(base_url=srv.base_url, api_key="x").chat.completions.create(
        model=BASE, messages=messages, logprobs=True, temperature=0, max_tokens=8
    )
    scores = [t.logprob for t in direct.choices[0].logprobs.content]
    assert len(scores) == direct.usage.completion_tokens > 0
    assert all(t.top_logprobs == [] for t in direct.choices[0].logprobs.content)

    with _outer(tmp_path, replay, srv.base_url) as client:
        out = client.chat.completions.create(messages=messages, temperature=0)
        streamed = list(
            client.chat.completions.create(
                messages=messages, temperature=0, stream=True, metadata={"route": "local"}
            )
        )
    local.close()
    assert out.route.route == "local"
    assert out.choices[0].message.content == direct.choices[0].message.content
    assert out.route.confidence == pytest.approx(confidence(scores))
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == direct.choices[0].message.content
    outer_rows = _rows(tmp_path / "outer.sqlite")
    assert [r.route for r in outer_rows] == ["local", "local"]
    assert all(r.cost_usd > 0 and r.model == BASE for r in outer_rows)  # engine seconds x $/h
    # the engine ledgers its own three answers (rows == requests on both sides)
    assert len(_rows(tmp_path / "ledger.sqlite")) == 3


def test_engine_outage_falls_back_to_the_cloud_and_fails_forced_local(
    start_server, make_engine, replay, tmp_path
):
    local = _engine(make_engine)
    srv = start_server(local=local)
    srv.stop()  # the engine host is gone
    local.close()
    question = "What is 2+2?"
    with _outer(tmp_path, replay, srv.base_url) as client:
        out = client.chat.completions.create(messages=[{"role": "user", "content": question}])
        with pytest.raises(LocalModelError, match="local engine at .* is unreachable"):
            client.chat.completions.create(
                messages=[{"role": "user", "content": question}], metadata={"route": "local"}
            )
    assert out.route.route == "cloud" and out.route.escalated
    assert out.choices[0].message.content == ANSWERS[question]
    rows = _rows(tmp_path / "outer.sqlite")
    assert len(rows) == 2 and rows[1].error_type == "LocalModelError"
    assert replay.requests_seen == 1  # the forced-local prompt never reached the cloud


def test_published_adapters_answer_set_is_decoded_on_the_engine(
    start_server, make_engine, make_adapter, replay, tmp_path
):
    from local_models.registry import default_root
    from router.publication import Publication, _record

    served = make_adapter("served", seed=3)
    local = _engine(make_engine, adapter_path=served, adapter_version="v0001")
    srv = start_server({"mode": "local"}, local=local)
    _wait_ready(srv.base_url)  # the engine lists its adapter's name once the model is loaded
    # this host's copy of v0001 carries the answer sets; the engine's copy has none, so a
    # label-only answer shows the constraint travelled with the request
    mine = tmp_path / "v0001"
    shutil.copytree(served, mine)
    (mine / "metadata.json").write_text(json.dumps({"answer_sets": {SYSTEM: LABELS}}))
    default_root().mkdir(parents=True, exist_ok=True)
    _record(Publication(srv.base_url, "v0001", "hybridgate-v0001", str(mine), None, 0.0), None)

    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "lost it"}]
    with _outer(tmp_path, replay, srv.base_url, adapter="current") as client:
        out = client.chat.completions.create(
            messages=messages, temperature=0, metadata={"route": "local"}
        )
        free = client.chat.completions.create(
            messages=[{"role": "user", "content": "lost it"}], temperature=0
        )
    local.close()
    assert out.route.route == "local"
    assert out.choices[0].message.content in LABELS
    assert free.choices[0].message.content not in LABELS  # other classes decode freely
    rows = _rows(tmp_path / "outer.sqlite")
    assert rows[0].adapter_version == "v0001"


def test_closed_answer_sets_in_each_engines_dialect(tmp_path):
    from router._transports.engine import EngineTransport, gbnf_choice
    from router.types import ChatRequest

    adapter = tmp_path / "v0002"
    adapter.mkdir()
    (adapter / "metadata.json").write_text(json.dumps({"answer_sets": {SYSTEM: LABELS}}))
    request = ChatRequest(
        messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}),
        model="x",
    )
    bodies = {}
    for kind in ("vllm", "llama.cpp"):
        t = EngineTransport(model=BASE, api_base="http://127.0.0.1:9/v1", engine=kind)
        t.swap_adapter(str(adapter), version="v0002")
        bodies[kind] = json.loads(t.body(request, stream=False))
    assert bodies["vllm"]["structured_outputs"] == {"choice": LABELS}
    assert bodies["vllm"]["model"] == "hybridgate-v0002" and bodies["vllm"]["logprobs"] is True
    assert bodies["llama.cpp"]["grammar"] == 'root ::= "refund_request" | "card_lost"'
    assert gbnf_choice(['say "hi"\n']) == 'root ::= "say \\"hi\\"\\n"'
    plain = EngineTransport(model=BASE, api_base="http://127.0.0.1:9/v1", engine="openai")
    plain.swap_adapter(str(adapter), version="v0002")
    with pytest.raises(LocalModelError, match="no structured output"):
        plain.body(request, stream=False)


def _register(root, make_adapter, n: int) -> list[str]:
    from local_models.registry import AdapterRegistry

    registry = AdapterRegistry(root)
    versions = []
    for i in range(n):
        versions.append(registry.register(make_adapter(f"a{i}", seed=i), {"base_model": BASE}))
    registry.promote(versions[-1], smoke_test=False)
    return versions


def test_publish_switches_gateways_then_unloads_the_old_adapter(make_adapter, replay, tmp_path):
    from router.publication import publish, published

    root = tmp_path / "adapters"
    v1, v2 = _register(root, make_adapter, 2)
    engine = FakeVLLM()
    url = engine.start()
    try:
        slept: list[float] = []
        first = publish(url, version=v1, root=root, sleep=slept.append)
        assert engine.loras == {"hybridgate-v0001": str(root / v1)} and slept == []
        second = publish(url, root=root, drain_s=7, sleep=slept.append)  # current = v2
        assert (second.name, second.previous) == ("hybridgate-v0002", v1)
        assert slept == [7] and list(engine.loras) == ["hybridgate-v0002"]  # old one unloaded
        assert published(url, root) == second
        back = publish(url, version=first.version, root=root, sleep=slept.append)  # rollback
        assert list(engine.loras) == ["hybridgate-v0001"] and back.previous == v2
        # a publication interrupted after loading is finished by running it again
        engine.loras["hybridgate-v0002"] = str(root / v2)
        publish(url, version=v2, root=root, sleep=slept.append)
        assert list(engine.loras) == ["hybridgate-v0002"]
    finally:
        engine.stop()


def test_publish_to_an_engine_without_runtime_lora_changes_nothing(make_adapter, tmp_path):
    from router.publication import PublishError, publish, published

    root = tmp_path / "adapters"
    _register(root, make_adapter, 1)
    engine = FakeVLLM(runtime_lora=False)
    url = engine.start()
    try:
        with pytest.raises(PublishError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            publish(url, root=root)
        assert published(url, root) is None
    finally:
        engine.stop()


def test_engine_path_gets_a_peft_copy_for_a_remote_engine(make_adapter, tmp_path):
    from peft import PeftConfig

    from router.publication import publish

    root = tmp_path / "adapters"
    _register(root, make_adapter, 1)
    shared = tmp_path / "shared-volume"
    engine = FakeVLLM()
    url = engine.start()
    try:
        record = publish(url, root=root, engine_path=str(shared))
    finally:
        engine.stop()
    copy = shared / record.name
    assert engine.loras[record.name] == str(copy)
    assert PeftConfig.from_pretrained(str(copy)).base_model_name_or_path == BASE


def test_gateway_follows_publications_on_a_vllm_engine(make_adapter, replay, tmp_path):
    from local_models.registry import default_root
    from router.publication import publish

    root = default_root()
    v1, v2 = _register(root, make_adapter, 2)
    for version in (v1, v2):
        (root / version / "metadata.json").write_text(
            json.dumps(
                {
                    **json.loads((root / version / "metadata.json").read_text()),
                    "answer_sets": {SYSTEM: LABELS},
                }
            )
        )
    engine = FakeVLLM()
    url = engine.start()
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "refund?"}]
    try:
        publish(url, version=v1, root=root, sleep=lambda s: None)
        with _outer(tmp_path, replay, url, adapter="current") as client:
            first = client.chat.completions.create(messages=messages)
            publish(url, version=v2, root=root, sleep=lambda s: None)
            watcher = client._gateway.adapter_watcher
            watcher._last_check = float("-inf")  # poll now, not in 2 s
            client._gateway.local()
            watcher.wait(10)
            second = client.chat.completions.create(messages=messages)
    finally:
        engine.stop()
    sent = [b["model"] for b in engine.chat_bodies]
    assert sent == ["hybridgate-v0001", "hybridgate-v0002"]
    assert all(b["structured_outputs"] == {"choice": LABELS} for b in engine.chat_bodies)
    assert first.route.route == second.route.route == "local"
    assert first.route.confidence == pytest.approx(math.exp(-0.5))  # closed: label probability
    rows = _rows(tmp_path / "outer.sqlite")
    assert [r.adapter_version for r in rows] == [v1, v2]


def test_cli_exports_and_publishes_the_current_adapter(make_adapter, tiny_model_dir, tmp_path):
    import gguf
    from typer.testing import CliRunner

    from router.cli import app

    root = tmp_path / "adapters"
    [version] = _register(root, make_adapter, 1)
    runner = CliRunner()
    peft_dir, gguf_file = tmp_path / "peft", tmp_path / "a.gguf"
    result = runner.invoke(app, ["adapters", "export", str(peft_dir), "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert (peft_dir / "adapter_model.safetensors").is_file()
    args = ["adapters", "export", str(gguf_file), "--format", "gguf", "--root", str(root)]
    result = runner.invoke(app, [*args, "--base", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert gguf.GGUFReader(str(gguf_file)).fields["adapter.type"].contents() == "lora"
    result = runner.invoke(app, args)  # the make_adapter base path is not a model directory
    assert result.exit_code == 2 and "pass --base DIR" in result.output

    engine = FakeVLLM()
    url = engine.start()
    try:
        result = runner.invoke(app, ["adapters", "publish", "--to", url, "--root", str(root)])
    finally:
        engine.stop()
    assert result.exit_code == 0, result.output
    assert f"serves {version} as 'hybridgate-{version}'" in result.output
    result = runner.invoke(app, ["adapters", "publish", "--to", url, "--root", str(root)])
    assert result.exit_code == 2 and "unreachable" in result.output


def test_a_full_engine_sends_cascades_to_the_cloud_and_forced_local_gets_retry_after(
    replay, tmp_path
):
    from router.errors import Overloaded

    engine = FakeVLLM()
    url = engine.start()
    engine.overloaded = True
    question = "What is 2+2?"
    try:
        with _outer(tmp_path, replay, url) as client:
            out = client.chat.completions.create(messages=[{"role": "user", "content": question}])
            with pytest.raises(Overloaded) as info:
                client.chat.completions.create(
                    messages=[{"role": "user", "content": question}], metadata={"route": "local"}
                )
    finally:
        engine.stop()
    assert out.route.route == "cloud" and out.choices[0].message.content == ANSWERS[question]
    assert info.value.retry_after_s == 3
    rows = _rows(tmp_path / "outer.sqlite")
    assert [r.route for r in rows] == ["cloud", "local"]
    assert rows[0].escalated and rows[1].error_type == "Overloaded"


def test_doctor_says_whether_the_engine_answers_and_what_it_serves(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from router.cli import app
    from router.publication import Publication, _record

    monkeypatch.setenv("HYBRIDGATE_HOME", str(tmp_path / "home"))
    engine = FakeVLLM()
    url = engine.start()
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"local": {"api_base": url, "engine": "vllm"}}))
    _record(Publication(url.rstrip("/"), "v7", "hybridgate-v7", "/a/v7", None, 0.0), None)
    args = ["doctor", "--policy", str(policy), "--ledger", str(tmp_path / "l.sqlite")]
    try:
        up = CliRunner().invoke(app, args)
    finally:
        engine.stop()
    down = CliRunner().invoke(app, args)
    assert up.exit_code == 0, up.output
    assert f"vllm engine at {url} (reachable, serves {BASE}" in up.output
    assert "published v7 as hybridgate-v7" in up.output
    assert down.exit_code == 0 and "NOT reachable" in down.output


def test_an_unreadable_engine_answer_is_a_local_failure_sync_async_and_streamed(replay, tmp_path):
    import asyncio

    from router import AsyncHybridClient

    engine = FakeVLLM()
    url = engine.start()
    engine.garbage = True
    ask = {"messages": [{"role": "user", "content": "What is 2+2?"}]}
    spec = {
        "mode": "cascade",
        "cloud": {"model": MODEL, "api_base": replay.base_url, "max_retries": 0},
        "local": {"api_base": url, "max_new_tokens": 8},
        "cache": {"enabled": False},
    }
    try:
        with _outer(tmp_path, replay, url) as client:
            fell_back = client.chat.completions.create(**ask)
            with pytest.raises(LocalModelError, match="local engine at"):
                client.chat.completions.create(**ask, metadata={"route": "local"})
            with pytest.raises(LocalModelError, match="local engine at"):
                list(
                    client.chat.completions.create(**ask, metadata={"route": "local"}, stream=True)
                )

        async def streamed():
            async with AsyncHybridClient(
                policy=policy_from_dict(spec), ledger=tmp_path / "a.sqlite"
            ) as client:
                stream = await client.chat.completions.create(
                    **ask, metadata={"route": "local"}, stream=True
                )
                return [chunk async for chunk in stream]

        with pytest.raises(LocalModelError, match="local engine at"):
            asyncio.run(streamed())
    finally:
        engine.stop()
    assert fell_back.route.route == "cloud" and fell_back.route.reason == "fallback:LocalModelError"
