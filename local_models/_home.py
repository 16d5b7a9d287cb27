"""Where hybridgate's files live, and how the user's files are kept private: the one rule.

``router._paths`` builds every router-side location on these; ``local_models`` uses them for
converted models and the adapter registry. Standard library plus a lazy ``platformdirs`` only.

Folders created here are 0700 and files 0600, whatever the umask: a ledger, cache or adapter
trained on the user's traffic must not be readable by other accounts on a shared machine.
Folders that already existed are left as the user made them; files we own are tightened.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

APP_NAME = "hybridgate"
"""The platformdirs application name."""
ENV_HOME = "HYBRIDGATE_HOME"
"""Names one folder for everything (data and caches); unset, the platform's folders are used."""
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


def write_private(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically as a 0600 file in a private folder (a reader sees
    the old file or the new one, never half of one, even after a crash); return the path."""
    import tempfile

    path = Path(path)
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())  # the adapters' CURRENT pointer must survive a power cut
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def tighten(path: str | Path) -> None:
    """chmod 0600 a file this user owns (best effort: others' files are left alone)."""
    with contextlib.suppress(OSError):
        st = os.stat(path)
        if st.st_uid == getattr(os, "getuid", lambda: st.st_uid)() and st.st_mode & 0o077:
            os.chmod(path, FILE_MODE)
