"""The response cache: key completeness, tenants, TTL, corruption, and no pickle."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sqlite3
import time
from pathlib import Path

import pytest

from router._gateway.cache import ResponseCache
from router.errors import PolicyError
from router.policy import CacheSettings
from router.types import BackendResult, ChatRequest

MODEL = "smollm2-135m"


def _req(**overrides: object) -> ChatRequest:
    base = ChatRequest(
        messages=({"role": "user", "content": "What is 2+2?"},),
        model="gpt-4o-mini",
        temperature=0.0,
        max_tokens=32,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def cache(tmp_path: Path) -> ResponseCache:
    with ResponseCache(directory=tmp_path / "cache") as c:
        yield c


def _put(cache: ResponseCache, req: ChatRequest, text: str = "4", adapter: str | None = "a1"):
    result = BackendResult(text=text, prompt_tokens=9, completion_tokens=1, model=MODEL)
    return cache.put(req, result, model=MODEL, adapter_version=adapter)


def test_hit_returns_the_stored_answer(cache: ResponseCache) -> None:
    assert cache.get(_req(), model=MODEL, adapter_version="a1") is None
    assert _put(cache, _req()) is True
    hit = cache.get(_req(request_id="another-id"), model=MODEL, adapter_version="a1")
    assert hit is not None and hit.text == "4"
    result = hit.to_result()
    assert (result.text, result.prompt_tokens, result.completion_tokens) == ("4", 9, 1)
    assert result.cost_usd == 0.0 and result.compute_seconds == 0.0
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 1


CHANGES = {
    "messages": {"messages": ({"role": "user", "content": "What is 2+3?"},)},
    "system_message": {
        "messages": (
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "What is 2+2?"},
        )
    },
    "temperature": {"temperature": 0.7},
    "top_p": {"top_p": 0.5},
    "max_tokens": {"max_tokens": 33},
    "stop": {"stop": ("\n",)},
    "seed": {"seed": 7},
    "tools": {"tools": ({"type": "function", "function": {"name": "calc"}},)},
    "tool_choice": {"tool_choice": "none"},
    "response_format": {"response_format": {"type": "json_object"}},
    "user": {"user": "tenant-b"},
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_changing_any_answer_parameter_changes_the_key(cache: ResponseCache, name: str) -> None:
    base = cache.key(_req(), model=MODEL, adapter_version="a1")
    changed = cache.key(_req(**CHANGES[name]), model=MODEL, adapter_version="a1")
    assert changed != base


@pytest.mark.parametrize("name", sorted(set(CHANGES) - {"temperature"}))
def test_changed_request_misses(cache: ResponseCache, name: str) -> None:
    _put(cache, _req())
    assert cache.get(_req(**CHANGES[name]), model=MODEL, adapter_version="a1") is None


@pytest.mark.parametrize(
    ("model", "adapter"), [("other-model", "a1"), (MODEL, "a2"), (MODEL, None)]
)
def test_other_model_or_adapter_misses(cache: ResponseCache, model: str, adapter: str | None):
    _put(cache, _req())
    assert cache.get(_req(), model=model, adapter_version=adapter) is None


def test_key_ignores_what_does_not_change_the_answer(cache: ResponseCache) -> None:
    base = cache.key(_req(), model=MODEL, adapter_version=None)
    same = _req(
        temperature=0,  # int vs float
        stream=True,
        request_id="r-9",
        metadata={"trace": "x"},
        timeout=3.0,
        model="alias-of-the-same-local-model",
    )
    assert cache.key(same, model=MODEL, adapter_version=None) == base
    assert len(base) == 64 and int(base, 16) >= 0


def test_tenants_never_see_each_other(cache: ResponseCache) -> None:
    _put(cache, _req(user="tenant-a"), text="answer for a")
    assert cache.get(_req(user="tenant-b"), model=MODEL, adapter_version="a1") is None
    assert cache.get(_req(), model=MODEL, adapter_version="a1") is None
    hit = cache.get(_req(user="tenant-a"), model=MODEL, adapter_version="a1")
    assert hit is not None and hit.text == "answer for a"


def test_sampled_requests_are_not_cached_by_default(tmp_path: Path) -> None:
    sampled = _req(temperature=0.8)
    with ResponseCache(directory=tmp_path / "a") as strict:
        assert not strict.cacheable(sampled)
        assert _put(strict, sampled) is False
        assert strict.cacheable(_req(temperature=None, seed=1))
    config = CacheSettings(cache_nondeterministic=True)
    with ResponseCache(config, directory=tmp_path / "b") as loose:
        assert _put(loose, sampled) is True
        assert loose.get(sampled, model=MODEL, adapter_version="a1").text == "4"


def test_disabled_cache_stores_nothing(tmp_path: Path) -> None:
    with ResponseCache(CacheSettings(enabled=False), directory=tmp_path / "off") as off:
        assert _put(off, _req()) is False
        assert off.get(_req(), model=MODEL, adapter_version="a1") is None
        assert off.stats()["entries"] == 0
    assert not (tmp_path / "off").exists()


def test_entries_expire_after_ttl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    with ResponseCache(CacheSettings(ttl_s=60), directory=tmp_path / "ttl") as c:
        _put(c, _req())
        clock[0] += 59
        assert c.get(_req(), model=MODEL, adapter_version="a1") is not None
        clock[0] += 2
        assert c.get(_req(), model=MODEL, adapter_version="a1") is None


def test_corrupt_database_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    directory = tmp_path / "corrupt"
    with ResponseCache(directory=directory) as c:
        _put(c, _req())
    (directory / "cache.db").write_bytes(os.urandom(8192))
    with pytest.warns(RuntimeWarning, match="corrupt"):
        c = ResponseCache(directory=directory)
    with c:
        assert c.get(_req(), model=MODEL, adapter_version="a1") is None
        assert _put(c, _req(), text="fresh") is True
        assert c.get(_req(), model=MODEL, adapter_version="a1").text == "fresh"


def test_values_on_disk_are_json_never_pickle(cache: ResponseCache) -> None:
    _put(cache, _req(), text="four")
    _put(cache, _req(user="t2"), text="x" * 200_000)  # large answers too
    conn = sqlite3.connect(cache.directory / "cache.db")
    rows = conn.execute("SELECT key, raw, mode, filename, value FROM Cache").fetchall()
    conn.close()
    assert len(rows) == 2
    for key, raw, _mode, filename, value in rows:
        assert isinstance(key, str) and raw == 1
        assert filename is None and isinstance(value, str)
        assert json.loads(value)["model"] == MODEL
    assert not [p for p in cache.directory.rglob("*") if p.suffix == ".val"]


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.mkdir, (str(self.marker),))


def test_planted_pickle_is_never_loaded(cache: ResponseCache, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _put(cache, _req())
    key = cache.key(_req(), model=MODEL, adapter_version="a1")
    conn = sqlite3.connect(cache.directory / "cache.db")
    conn.execute(
        "UPDATE Cache SET mode = 4, value = ? WHERE key = ?",
        (pickle.dumps(_Exploit(marker)), key),
    )
    conn.commit()
    conn.close()
    assert cache.get(_req(), model=MODEL, adapter_version="a1") is None
    assert not marker.exists()


def test_clear_and_stats(cache: ResponseCache) -> None:
    _put(cache, _req())
    _put(cache, _req(seed=1))
    cache.get(_req(), model=MODEL, adapter_version="a1")
    stats = cache.stats()
    assert stats["entries"] == 2 and stats["hits"] == 1 and stats["hit_rate"] == 1.0
    assert cache.clear() == 2
    assert cache.stats()["entries"] == 0 and cache.stats()["hits"] == 0
    assert cache.get(_req(), model=MODEL, adapter_version="a1") is None


@pytest.mark.parametrize(
    "kwargs", [{"ttl_s": 0}, {"ttl_s": -5}, {"size_limit_mb": 0}, {"size_limit_mb": 1.5}]
)
def test_invalid_config_names_the_field(kwargs: dict) -> None:
    field = next(iter(kwargs))
    with pytest.raises(PolicyError, match=f"cache.{field}"):
        CacheSettings(**kwargs)


def test_the_cache_takes_the_policy_section_itself() -> None:
    """One class per concept: the policy's ``cache:`` section is the cache's config, so its
    defaults are the cache's defaults (they once drifted apart in two classes)."""
    from router import _defaults
    from router.policy import load_policy

    settings = CacheSettings()
    assert (settings.ttl_s, settings.size_limit_mb) == (
        _defaults.CACHE_TTL_S,
        _defaults.CACHE_SIZE_LIMIT_MB,
    )
    policy = load_policy("cost-saver")
    with ResponseCache(policy.cache) as c:
        assert c.config is policy.cache
        assert c._store._settings()["size_limit"] == policy.cache.size_limit_mb * 2**20


def test_default_directory_lives_under_hybridgate_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HYBRIDGATE_HOME", str(tmp_path / "home"))
    with ResponseCache() as c:
        assert c.directory == tmp_path / "home" / "cache"
        _put(c, _req())
    assert (tmp_path / "home" / "cache" / "cache.db").is_file()
