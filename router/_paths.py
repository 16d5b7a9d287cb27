"""Files that hold the user's data (prompts, answers, adapters) are private to the user.

Folders hybridgate creates are 0700 and files 0600, whatever the umask: a ledger or cache on a
shared machine must not be readable by other accounts. Folders that already existed are left as
the user made them; files we own are tightened. Standard library only (the CLI imports this).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


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
