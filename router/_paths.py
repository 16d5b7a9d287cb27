"""Where hybridgate keeps the user's data, and how those files are kept private.

One home for locations on the router side: every default path (data home, ledger, response
cache, tuned policy and its status file, demo home) is derived here, so the CLI, the gateway and
the ledger cannot drift apart on leaf names. Standard library plus a lazy ``platformdirs``
import only: ``import router.cli`` and ``hybridgate report`` import this.

Layout (``$HYBRIDGATE_HOME`` when set, else the platform's folders)::

    data home   ($HYBRIDGATE_HOME | user_data_dir)   ledger.sqlite, policy.yaml,
                                                     policy.status.json, demo/, simulate/,
                                                     adapters/
    cache home  ($HYBRIDGATE_HOME | user_cache_dir)  cache/ (responses), models/

The rule itself (``data_home``, ``cache_home``) and the 0700/0600 helpers live in the leaf
``local_models._home`` and are re-exported here, so ``local_models`` (models, adapters) and the
router resolve the same folders.
"""

from __future__ import annotations

import os
from pathlib import Path

from local_models._home import (
    APP_NAME,
    DIR_MODE,
    ENV_HOME,
    FILE_MODE,
    cache_home,
    data_home,
    private_dir,
    private_file,
    tighten,
    write_private,
)

ENV_LEDGER = "HYBRIDGATE_LEDGER"
"""Ledger path for the CLI when ``--ledger`` is not given."""
ENV_POLICY = "HYBRIDGATE_POLICY"
"""Policy name or YAML path for the CLI when ``--policy`` is not given."""
DEFAULT_POLICY = "default"
"""The bundled policy used when neither ``--policy`` nor ``$HYBRIDGATE_POLICY`` names one."""

LEDGER_FILENAME = "ledger.sqlite"
CACHE_DIRNAME = "cache"
POLICY_FILENAME = "policy.yaml"
STATUS_SUFFIX = ".status.json"
DEMO_DIRNAME = "demo"
SIMULATE_DIRNAME = "simulate"


def default_ledger_path() -> Path:
    """The library's ledger when none is given: ``data_home() / "ledger.sqlite"``."""
    return data_home() / LEDGER_FILENAME


def ledger_path(explicit: str | Path | None = None) -> Path | str:
    """The CLI's ledger: ``explicit`` (``--ledger``), else ``$HYBRIDGATE_LEDGER``, else
    :func:`default_ledger_path`. A ``postgresql://`` URL is returned as it is (a database)."""
    from router.ledger.postgres import is_url

    chosen = str(explicit) if explicit else os.environ.get(ENV_LEDGER)
    if not chosen:
        return default_ledger_path()
    return chosen if is_url(chosen) else Path(chosen).expanduser()


def ledger_exists(location: Path | str) -> bool:
    """Whether there is a ledger to read: a file, or a database URL (checked when opened)."""
    return isinstance(location, str) or location.exists()


def policy_source(explicit: str | None = None) -> str:
    """The CLI's policy: ``explicit`` (``--policy``), else ``$HYBRIDGATE_POLICY``, else
    ``"default"``. A name or a path, as ``router.policy.load_policy`` takes it."""
    return explicit or os.environ.get(ENV_POLICY) or DEFAULT_POLICY


def cache_dir() -> Path:
    """The response cache's folder when ``cache.directory`` is not set: ``cache_home()/cache``."""
    return cache_home() / CACHE_DIRNAME


def policy_path() -> Path:
    """Where ``tune`` and ``distill`` write the tuned policy, and ``report`` reads its status."""
    return data_home() / POLICY_FILENAME


def serving_status_path(policy: str | Path) -> Path:
    """The serving status written beside a tuned policy (``policy.yaml`` ->
    ``policy.status.json``): why the adapter serves what it serves."""
    p = Path(policy)
    return p.with_name(p.stem + STATUS_SUFFIX)


def demo_home() -> Path:
    """The demo's own ledger, adapters and policy, apart from real traffic: ``data_home()/demo``."""
    return data_home() / DEMO_DIRNAME


def simulate_home() -> Path:
    """``hybridgate simulate``'s ledger, adapters and policy: ``data_home()/simulate``."""
    return data_home() / SIMULATE_DIRNAME


__all__ = [
    "APP_NAME",
    "DIR_MODE",
    "ENV_HOME",
    "FILE_MODE",
    "cache_dir",
    "cache_home",
    "data_home",
    "default_ledger_path",
    "demo_home",
    "ledger_path",
    "policy_path",
    "policy_source",
    "private_dir",
    "private_file",
    "serving_status_path",
    "simulate_home",
    "tighten",
    "write_private",
]
