"""Broken adapter metadata on the serving path (issue #9 item 14).

A torn ``metadata.json`` used to reach the caller as a raw ``JSONDecodeError`` naming no file.
Now the registry raises ``AdapterMetadataError`` (a ``ModelLoadError``) naming the file, so the
gateway handles it like any local failure: the cloud answers, the ledger says why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from router import HybridClient
from router.devtools.replay import ReplayCloud
from router.errors import ModelLoadError
from router.ledger import Ledger
from router.policy import policy_from_dict

QUESTION = "How do I activate my card?"


def _broken_registry(home: Path) -> Path:
    from local_models.registry import AdapterRegistry

    src = home / "adapter"
    src.mkdir(parents=True)
    (src / "adapter_config.json").write_text("{}")
    (src / "adapter_model.safetensors").write_bytes(b"w")
    reg = AdapterRegistry(home / "adapters")
    version = reg.register(src, {})
    # Point CURRENT at it by hand: ``promote`` would also load the weights, which are fake.
    (home / "adapters" / "CURRENT").write_text(version)
    meta = home / "adapters" / "v0001" / "metadata.json"
    meta.write_text('{"answer_sets": {"": ["a"')
    return meta


def _client(cloud: ReplayCloud, home: Path, mode: str) -> HybridClient:
    policy = policy_from_dict(
        {
            "name": "t",
            "mode": mode,
            "cloud": {
                "model": "gpt-4o-mini",
                "api_base": cloud.base_url,
                "timeout_s": 5,
                "connect_timeout_s": 1,
            },
            "local": {"adapter": "current"},
            "cache": {"enabled": False},
            "shadow": {"rate": 0.0},
        }
    )
    return HybridClient(policy=policy, ledger=Ledger(home / "l.sqlite"))


def _ask(client: HybridClient):
    return client.chat.completions.create(
        messages=[{"role": "user", "content": QUESTION}], temperature=0
    )


def test_local_only_request_with_broken_adapter_metadata_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import AdapterMetadataError

    monkeypatch.setenv("HYBRIDGATE_HOME", str(tmp_path))
    meta = _broken_registry(tmp_path)
    with (
        ReplayCloud({QUESTION: "Use the app."}) as cloud,
        _client(cloud, tmp_path, "local") as client,
        pytest.raises(AdapterMetadataError) as info,
    ):
        _ask(client)
    assert isinstance(info.value, ModelLoadError)  # what local-failure handlers catch
    assert str(meta) in str(info.value) and "invalid JSON" in str(info.value)
    with Ledger(tmp_path / "l.sqlite") as led:  # the failed call still has its row
        assert [r.error_type for r in led.rows()] == ["AdapterMetadataError"]


def test_cascade_request_with_broken_adapter_metadata_falls_back_to_cloud(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYBRIDGATE_HOME", str(tmp_path))
    _broken_registry(tmp_path)
    with ReplayCloud({QUESTION: "Use the app."}) as cloud, _client(cloud, tmp_path, "cascade") as c:
        reply = _ask(c)
    assert reply.choices[0].message.content == "Use the app."
    assert reply.route.route == "cloud"
    assert reply.route.reason == "fallback:AdapterMetadataError"


def test_registry_errors_name_the_broken_file(tmp_path: Path) -> None:
    from training import AdapterMetadataError, AdapterRegistry, RegistryError

    meta = _broken_registry(tmp_path)
    reg = AdapterRegistry(tmp_path / "adapters")
    for call in (reg.list, reg.current, reg.current_path, lambda: reg.show("v0001")):
        with pytest.raises(AdapterMetadataError, match="invalid JSON") as info:
            call()
        assert str(meta) in str(info.value)
        assert isinstance(info.value, RegistryError | ModelLoadError)
    (meta).write_text("[1, 2]")
    with pytest.raises(AdapterMetadataError, match="expected a JSON object"):
        reg.list()


def test_registry_names_a_broken_history_or_current_pointer(tmp_path: Path) -> None:
    from training import AdapterMetadataError, AdapterRegistry

    meta = _broken_registry(tmp_path)
    meta.write_text("{}")
    root = tmp_path / "adapters"
    reg = AdapterRegistry(root)
    (root / "history.json").write_text('["v0001"')
    with pytest.raises(AdapterMetadataError, match="history.json: broken promotion history"):
        reg.rollback()
    (root / "CURRENT").write_text("v0042")
    with pytest.raises(AdapterMetadataError, match="CURRENT: names adapter 'v0042'"):
        reg.current()
