"""``router._paths``: the one home of default locations, with the leaf names every caller uses."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from router import _paths


def test_everything_lives_under_hybridgate_home_when_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from router._gateway.cache import default_cache_dir
    from router.ledger import default_ledger_path
    from router.ledger.reports import serving_status_path

    monkeypatch.setenv("HYBRIDGATE_HOME", str(tmp_path))
    assert _paths.data_home() == _paths.cache_home() == tmp_path
    # The callers that used to resolve it themselves give the same answers.
    assert default_ledger_path() == _paths.default_ledger_path() == tmp_path / "ledger.sqlite"
    assert default_cache_dir() == _paths.cache_dir() == tmp_path / "cache"
    assert _paths.policy_path() == tmp_path / "policy.yaml"
    assert serving_status_path(_paths.policy_path()) == tmp_path / "policy.status.json"
    assert _paths.demo_home() == tmp_path / "demo"


def test_without_hybridgate_home_data_and_caches_go_to_the_platform_folders(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HYBRIDGATE_HOME", raising=False)
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda app: str(tmp_path / "data" / app))
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app: str(tmp_path / "cache" / app))
    assert _paths.default_ledger_path() == tmp_path / "data" / "hybridgate" / "ledger.sqlite"
    assert _paths.policy_path() == tmp_path / "data" / "hybridgate" / "policy.yaml"
    # One leaf name for the response cache, whichever root it is under (was "responses" here).
    assert _paths.cache_dir() == tmp_path / "cache" / "hybridgate" / "cache"


def test_cli_ledger_and_policy_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HYBRIDGATE_HOME", str(tmp_path))
    assert _paths.ledger_path(None) == tmp_path / "ledger.sqlite"
    monkeypatch.setenv("HYBRIDGATE_LEDGER", str(tmp_path / "env.sqlite"))
    assert _paths.ledger_path(None) == tmp_path / "env.sqlite"
    assert _paths.ledger_path(tmp_path / "flag.sqlite") == tmp_path / "flag.sqlite"
    assert _paths.policy_source(None) == "default"
    monkeypatch.setenv("HYBRIDGATE_POLICY", "cost-saver")
    assert _paths.policy_source(None) == "cost-saver"
    assert _paths.policy_source("quality-first") == "quality-first"


def test_status_file_sits_beside_any_policy_file(tmp_path: Path) -> None:
    assert _paths.serving_status_path(tmp_path / "x" / "tuned.yaml") == (
        tmp_path / "x" / "tuned.status.json"
    )
