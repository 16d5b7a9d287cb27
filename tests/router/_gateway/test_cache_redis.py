"""The response cache on a real Redis: shared entries, TTL, JSON only, outage, single flight."""

from __future__ import annotations

import dataclasses
import logging
import threading

import pytest

from router._gateway import cache_redis
from router._gateway.cache import ResponseCache
from router.errors import PolicyError
from router.policy import CacheSettings
from router.types import BackendResult, ChatRequest, Tenant
from tests.services import free_port

MODEL = "smollm2-135m"


def _req(**overrides: object) -> ChatRequest:
    base = ChatRequest(
        messages=({"role": "user", "content": "What is 2+2?"},),
        model="gpt-4o-mini",
        temperature=0.0,
        max_tokens=32,
    )
    return dataclasses.replace(base, **overrides)


def _put(cache: ResponseCache, req: ChatRequest, text: str = "4") -> bool:
    result = BackendResult(text=text, prompt_tokens=9, completion_tokens=1, model=MODEL)
    return cache.put(req, result, model=MODEL, adapter_version="a1")


def _get(cache: ResponseCache, req: ChatRequest):
    return cache.get(req, model=MODEL, adapter_version="a1")


def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def test_two_gateways_share_entries_under_the_disk_caches_keys(redis_url, tmp_path) -> None:
    one = ResponseCache(CacheSettings(url=redis_url))
    two = ResponseCache(CacheSettings(url=redis_url))
    disk = ResponseCache(directory=tmp_path / "disk")
    assert one.shared and not disk.shared
    assert _get(two, _req()) is None
    assert _put(one, _req())
    hit = _get(two, _req(request_id="other"))
    assert hit is not None and hit.text == "4" and hit.prompt_tokens == 9
    # same key recipe as the disk cache: the Redis key is its sha256 under a prefix, value JSON
    key = disk.key(_req(), model=MODEL, adapter_version="a1")
    raw = _redis(redis_url).get(cache_redis.PREFIX + key)
    assert raw is not None and raw.startswith("{") and '"text":"4"' in raw
    # everything that changes the answer changes the key; tenants never share entries
    assert _get(two, _req(max_tokens=33)) is None
    assert _get(two, _req(tenant=Tenant("team-b"))) is None
    assert two.stats()["entries"] == 1 and two.stats()["size_bytes"] > 0
    assert two.clear() == 1 and _get(one, _req()) is None


def test_entries_expire_with_the_policy_ttl(redis_url) -> None:
    cache = ResponseCache(CacheSettings(url=redis_url, ttl_s=0.2))
    assert _put(cache, _req())
    key = cache.key(_req(), model=MODEL, adapter_version="a1")
    ttl_ms = _redis(redis_url).pttl(cache_redis.PREFIX + key)
    assert 0 < ttl_ms <= 200


def test_a_value_that_is_not_json_is_a_miss(redis_url) -> None:
    cache = ResponseCache(CacheSettings(url=redis_url))
    key = cache.key(_req(), model=MODEL, adapter_version="a1")
    _redis(redis_url).set(cache_redis.PREFIX + key, b"\x80\x04\x95pickle")
    assert _get(cache, _req()) is None


def test_policy_refuses_a_password_in_the_url_and_bad_schemes() -> None:
    with pytest.raises(PolicyError, match="cache.url.*password_env"):
        CacheSettings(url="redis://:hunter2@127.0.0.1:6379/0")
    with pytest.raises(PolicyError, match="cache.url"):
        CacheSettings(url="http://127.0.0.1:6379")
    with pytest.raises(PolicyError, match="MISSING_REDIS_PASSWORD"):
        ResponseCache(
            CacheSettings(url="redis://127.0.0.1:1/0", password_env="MISSING_REDIS_PASSWORD")
        )


def test_an_unreachable_redis_is_a_miss_with_one_warning_then_a_backoff(caplog) -> None:
    cache = ResponseCache(CacheSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    with caplog.at_level(logging.WARNING, logger="router._gateway.cache_redis"):
        assert _get(cache, _req()) is None
        assert _put(cache, _req()) is False  # inside the back-off: not even tried
        assert _get(cache, _req()) is None
    assert cache.store_errors == 1
    warnings = [r for r in caplog.records if "serving without the cache" in r.getMessage()]
    assert len(warnings) == 1 and "127.0.0.1" in warnings[0].getMessage()


def _client(url: str, replay, tmp_path, name: str, *, cls=None):
    from router.client import HybridClient
    from router.policy.io import policy_from_dict

    cls = cls or HybridClient
    policy = policy_from_dict(
        {
            "mode": "cloud",
            "cloud": {"model": replay.model, "api_base": replay.base_url, "max_retries": 0},
            "cache": {"url": url},
        }
    )
    return cls(policy=policy, ledger=tmp_path / f"{name}.sqlite")


@pytest.fixture
def replay():
    from router.devtools.replay import ReplayCloud

    with ReplayCloud({"What is 2+2?": "4"}, model="gpt-4-1106-preview", latency_ms=400) as cloud:
        yield cloud


def _ask(client) -> object:
    return client.chat.completions.create(
        messages=[{"role": "user", "content": "What is 2+2?"}], temperature=0
    )


def test_identical_misses_on_two_gateways_make_one_upstream_call(redis_url, replay, tmp_path):
    """Two clients (two gateways, nothing shared but Redis), three identical requests each at
    once: one goes upstream, the other five wait for its answer; every request has its row."""
    clients = [_client(redis_url, replay, tmp_path, f"g{i}") for i in range(2)]
    replies: list = []
    threads = [threading.Thread(target=lambda c=c: replies.append(_ask(c))) for c in clients * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert replay.requests_seen == 1
    assert [r.choices[0].message.content for r in replies] == ["4"] * 6
    reasons = sorted(r.route.reason for r in replies)
    assert reasons.count("policy:cloud") == 1
    assert set(reasons) - {"policy:cloud"} == {"cache_hit:coalesced"}
    rows = []
    for c in clients:
        c.gateway.ledger.flush()
        rows += c.gateway.ledger.rows()
    assert len(rows) == 6 and sum(r.cost_usd > 0 for r in rows) == 1
    assert not _redis(redis_url).keys(cache_redis.FLIGHT_PREFIX + "*")  # the claim is released
    for c in clients:
        c.close()


async def test_async_gateways_share_one_flight_too(redis_url, replay, tmp_path) -> None:
    import asyncio

    from router.client import AsyncHybridClient

    clients = [
        _client(redis_url, replay, tmp_path, f"a{i}", cls=AsyncHybridClient) for i in range(2)
    ]
    replies = await asyncio.gather(
        *(
            c.chat.completions.create(
                messages=[{"role": "user", "content": "What is 2+2?"}], temperature=0
            )
            for c in clients * 2
        )
    )
    assert replay.requests_seen == 1
    assert sorted(r.route.reason for r in replies).count("cache_hit:coalesced") == 3
    for c in clients:
        c.close()


def test_a_failed_leader_releases_its_claim_and_the_next_request_answers(
    redis_url, replay, tmp_path
) -> None:
    client = _client(redis_url, replay, tmp_path, "g")
    replay.inject("500")
    with pytest.raises(Exception):  # noqa: B017 - whatever the upstream 500 maps to
        _ask(client)
    assert not _redis(redis_url).keys(cache_redis.FLIGHT_PREFIX + "*")
    assert _ask(client).choices[0].message.content == "4"
    client.close()


def test_requests_succeed_when_redis_dies_mid_run(replay, tmp_path) -> None:
    from tests.services import redis_server

    server = redis_server(tmp_path / "redis")
    try:
        client = _client(server.url, replay, tmp_path, "g")
        assert _ask(client).route.route == "cloud"
        assert _ask(client).route.route == "cache"
        server.stop()
        reply = _ask(client)  # a miss now: answered upstream, never an error
        assert reply.route.route == "cloud" and reply.choices[0].message.content == "4"
        assert client.gateway.cache.store_errors >= 1
        client.gateway.ledger.flush()
        assert [r.error_type for r in client.gateway.ledger.rows()] == [None] * 3
        client.close()
    finally:
        server.stop()
