"""The adapter registry (``local_models.registry``): versions, atomic promotion, rollback."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from local_models.errors import RegistryError
from local_models.registry import AdapterRegistry
from tests.local_models.helpers import fake_adapter


def _tag(adapter_dir: Path) -> str:
    return json.loads((adapter_dir / "adapter_config.json").read_text())["tag"]


def test_register_promote_list_show(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    assert reg.current() is None and reg.current_path() is None and reg.list() == []
    v1 = reg.register(
        fake_adapter(tmp_path / "a", "one"), {"n_train": 10, "metrics": {"agreement": 0.5}}
    )
    v2 = reg.register(fake_adapter(tmp_path / "b", "two"), {"n_train": 20})
    assert (v1, v2) == ("v0001", "v0002")
    assert reg.current() is None  # registering does not promote
    reg.promote(v1, smoke_test=False)
    assert reg.current().version == "v0001"
    assert reg.show("v0001").metrics == {"agreement": 0.5}
    info = reg.show(v2)
    assert info.metadata["version"] == "v0002" and info.metadata["n_train"] == 20
    assert _tag(info.path) == "two"
    assert [i.version for i in reg.list()] == ["v0001", "v0002"]


def test_rollback_restores_the_previous_adapter(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    v1 = reg.register(fake_adapter(tmp_path / "a", "one"), {})
    v2 = reg.register(fake_adapter(tmp_path / "b", "two"), {})
    with pytest.raises(RegistryError, match="roll back"):
        reg.rollback()
    reg.promote(v1, smoke_test=False)
    reg.promote(v2, smoke_test=False)
    assert _tag(reg.current_path()) == "two"
    assert reg.rollback().version == v1
    assert _tag(reg.current_path()) == "one"
    assert reg.history() == [v1]


def test_unknown_version_and_non_adapter_dirs_are_named(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    with pytest.raises(RegistryError, match="v0042"):
        reg.promote("v0042")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="not a PEFT adapter"):
        reg.register(tmp_path / "empty", {})


def test_default_root_follows_hybridgate_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYBRIDGATE_HOME", str(tmp_path))
    assert AdapterRegistry().root == tmp_path / "adapters"


def test_current_is_always_valid_while_switching(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    versions = [reg.register(fake_adapter(tmp_path / f"a{i}", str(i)), {}) for i in range(3)]
    reg.promote(versions[0], smoke_test=False)
    stop = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                info = AdapterRegistry(reg.root).current()
                assert info is not None and (info.path / "adapter_config.json").is_file()
                seen.append(info.version)
            except BaseException as exc:  # noqa: BLE001 - report any failure to the test
                errors.append(exc)
                return

    t = threading.Thread(target=reader)
    t.start()
    for i in range(300):
        reg.promote(versions[i % 3], smoke_test=False)
    stop.set()
    t.join()
    assert not errors and seen and set(seen) <= set(versions)


def test_failed_pointer_write_leaves_current_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    v1 = reg.register(fake_adapter(tmp_path / "a", "one"), {})
    v2 = reg.register(fake_adapter(tmp_path / "b", "two"), {})
    reg.promote(v1, smoke_test=False)

    def failing_replace(src, dst):  # noqa: ANN001
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        reg.promote(v2, smoke_test=False)
    monkeypatch.undo()
    assert reg.current().version == v1
    assert not [p for p in reg.root.iterdir() if p.name.startswith("CURRENT.")]  # no temp litter
