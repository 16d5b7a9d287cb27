"""Where hybridgate keeps the user's data, and how those files are kept private.

One home for locations on the router side: every default path (data home, ledger, response
cache, tuned policy and its status file, demo home) is derived here, so the CLI, the gateway and
the ledger cannot drift apart on leaf names. Standard library plus a lazy ``platformdirs``
import only: ``import router.cli`` and ``hybridgate report`` import this.

Layout (``$HYBRIDGATE_HOME`` when set, else the platform's folders)::

    data home   ($HYBRIDGATE_HOME | user_data_dir)   ledger.sqlite, policy.yaml,
                                                     policy.status.json, demo/, adapters/
    cache home  ($HYBRIDGATE_HOME | user_cache_dir)  cache/ (responses), models/

``local_models`` (a leaf that may not import ``router``) resolves ``adapters/`` and ``models/``
itself with the same rule.

Folders hybridgate creates are 0700 and files 0600, whatever the umask: a ledger or cache on a
shared machine must not be readable by other accounts. Folders that already existed are left as
the user made them; files we own are tightened.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

APP_NAME = "hybridgate"
"""The platformdirs application name."""
ENV_HOME = "HYBRIDGATE_HOME"
"""Names one folder for everything (data and caches); unset, the platform's folders are used."""
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

DIR_MODE = 0o700
FILE_MODE = 0o600


def data_home() -> Path:
    """``$HYBRIDGATE_HOME``, else platformdirs' ``user_data_dir("hybridgate")``: files to keep."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser()
    import platformdirs  # attribute looked up per call: tests and users may patch it

    return Path(platformdirs.user_data_dir(APP_NAME))


def cache_home() -> Path:
    """``$HYBRIDGATE_HOME``, else platformdirs' ``user_cache_dir("hybridgate")``: files that
    can be rebuilt, where the platform expects caches (so cleaners may empty them)."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


def default_ledger_path() -> Path:
    """The library's ledger when none is given: ``data_home() / "ledger.sqlite"``."""
    return data_home() / LEDGER_FILENAME


def ledger_path(explicit: str | Path | None = None) -> Path:
    """The CLI's ledger: ``explicit`` (``--ledger``), else ``$HYBRIDGATE_LEDGER``, else
    :func:`default_ledger_path`."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_LEDGER)
    return Path(env).expanduser() if env else default_ledger_path()


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


def private_dir(path: str | Path) -> Path:
    """Create ``path`` and any missing parents as 0700 folders; return it."""
    path = Path(path).expanduser()
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it first
            folder.mkdir(mode=DIR_MODE)
        with contextlib.suppress(OSError):
            os.chmod(folder, DIR_MODE)  # mkdir's mode is masked by the umask
    return path


def private_file(path: str | Path) -> Path:
    """Make sure ``path`` exists as a 0600 file (created empty if missing); return it."""
    path = Path(path)
    private_dir(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, FILE_MODE)
    os.close(fd)
    tighten(path)
    return path


def tighten(path: str | Path) -> None:
    """chmod 0600 a file this user owns (best effort: others' files are left alone)."""
    with contextlib.suppress(OSError):
        st = os.stat(path)
        if st.st_uid == getattr(os, "getuid", lambda: st.st_uid)() and st.st_mode & 0o077:
            os.chmod(path, FILE_MODE)
