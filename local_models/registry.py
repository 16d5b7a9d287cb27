"""Versioned adapter store with an atomically switched ``CURRENT`` pointer.

Layout under the root (default ``$HYBRIDGATE_HOME/adapters``)::

    v0001/  adapter_config.json  adapter_model.safetensors  metadata.json
    v0002/  ...
    CURRENT        "v0002"  (replaced with os.replace: readers see the old or the new value)
    history.json   versions that were current, oldest first (rollback pops from it)

A version directory is complete before it gets its name (copied to a temp dir, then
renamed), so ``CURRENT`` never names a half-written adapter.

It lives in ``local_models`` because serving reads it (``local.adapter: current``, the gateway's
adapter watcher) and ``training`` writes it (``distill_and_promote``); ``training`` re-exports
``AdapterRegistry``, ``AdapterInfo``, ``RegistryError`` and ``AdapterMetadataError``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_models._home import write_private
from local_models.adapter_checks import WEIGHTS_SHA256_KEY, check_files, weights_sha256
from local_models.adapter_checks import smoke_test as run_smoke_test
from local_models.answer_sets import ADAPTER_METADATA_FILE
from local_models.errors import AdapterMetadataError, RegistryError

_VERSION_RE = re.compile(r"^v(\d{4,})$")
CURRENT_FILE = "CURRENT"
HISTORY_FILE = "history.json"
METADATA_FILE = ADAPTER_METADATA_FILE


def default_root() -> Path:
    """``data_home() / "adapters"`` (``$HYBRIDGATE_HOME/adapters``, else the user data dir's)."""
    from local_models._home import data_home

    return data_home() / "adapters"


@dataclass(frozen=True)
class AdapterInfo:
    """One registered adapter version and its metadata."""

    version: str
    path: Path
    metadata: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.metadata.get("metrics") or {})


def _read_json(path: Path, what: str) -> Any:
    """Parse a registry JSON file; a torn or hand-edited one names itself instead of a raw
    ``JSONDecodeError`` (which says neither which file nor what it was for)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise AdapterMetadataError(f"{path}: cannot read {what}: {exc}") from None
    except ValueError as exc:
        raise AdapterMetadataError(f"{path}: broken {what}: invalid JSON ({exc})") from None


def read_metadata(meta_file: str | Path) -> dict[str, Any]:
    """One adapter version's ``metadata.json`` as a dict.

    Raises:
        AdapterMetadataError: The file is unreadable, not JSON, or not a JSON object; the
            message names the file (also a ``ModelLoadError``, so serving falls back cleanly).
    """
    path = Path(meta_file)
    meta = _read_json(path, "adapter metadata")
    if not isinstance(meta, dict):
        raise AdapterMetadataError(
            f"{path}: broken adapter metadata: expected a JSON object, got {type(meta).__name__}"
        )
    return meta


class AdapterRegistry:
    """Register, list, promote and roll back LoRA adapter versions.

    >>> reg = AdapterRegistry("~/.hybridgate/adapters")
    >>> v = reg.register("runs/tonight", {"metrics": {"agreement": 0.8}})
    >>> reg.promote(v); reg.current().version
    'v0001'
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()

    def _versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        names = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)]
        return sorted(names, key=lambda n: int(n[1:]))

    def _info(self, version: str) -> AdapterInfo:
        path = self.root / version
        meta_file = path / METADATA_FILE
        if not _VERSION_RE.match(version) or not meta_file.is_file():
            known = ", ".join(self._versions()) or "none"
            raise RegistryError(f"unknown adapter version {version!r} (registered: {known})")
        return AdapterInfo(version=version, path=path, metadata=read_metadata(meta_file))

    def list(self) -> list[AdapterInfo]:
        """All registered versions, oldest first."""
        return [self._info(v) for v in self._versions()]

    def show(self, version: str) -> AdapterInfo:
        """One version's info. Raises ``RegistryError`` when unknown."""
        return self._info(version)

    def current(self) -> AdapterInfo | None:
        """The promoted version, or None before the first promotion."""
        f = self.root / CURRENT_FILE
        if not f.is_file():
            return None
        try:
            version = f.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AdapterMetadataError(
                f"{f}: cannot read the current-adapter pointer: {exc}"
            ) from None
        if not _VERSION_RE.match(version) or not (self.root / version / METADATA_FILE).is_file():
            known = ", ".join(self._versions()) or "none"
            raise AdapterMetadataError(
                f"{f}: names adapter {version!r}, which is not registered (registered: {known}); "
                "run hybridgate adapters promote VERSION"
            )
        return self._info(version)

    def current_path(self) -> Path | None:
        """Directory of the current adapter (what the local backend loads), or None."""
        info = self.current()
        return info.path if info else None

    def history(self) -> list[str]:
        """Versions that were current, oldest first (the last is the current one)."""
        f = self.root / HISTORY_FILE
        if not f.is_file():
            return []
        history = _read_json(f, "promotion history")
        if not isinstance(history, list) or not all(isinstance(v, str) for v in history):
            raise AdapterMetadataError(
                f"{f}: broken promotion history: expected a JSON list of version names"
            )
        return history

    def register(self, adapter_dir: str | Path, metadata: dict[str, Any]) -> str:
        """Copy an adapter in as the next version; does not promote it.

        Args:
            adapter_dir: a directory with PEFT files (``adapter_config.json`` + safetensors).
            metadata: JSON-serializable facts (base model hash, data window, n_train,
                metrics, config); ``version``, ``created`` and ``adapter_sha256`` (the
                weights' hash, which ``promote`` checks) are added.

        Returns:
            The new version name, e.g. ``"v0003"``.

        Raises:
            RegistryError: the directory is not a PEFT adapter or metadata is not JSON.
        """
        src = Path(adapter_dir)
        if not (src / "adapter_config.json").is_file() or not any(src.glob("*.safetensors")):
            raise RegistryError(
                f"{src} is not a PEFT adapter (adapter_config.json + *.safetensors)"
            )
        try:
            json.dumps(metadata)
        except TypeError as exc:
            raise RegistryError(f"adapter metadata must be JSON-serializable: {exc}") from exc
        from local_models._home import private_dir, tighten

        private_dir(self.root)  # adapters are trained on the user's traffic: 0700 / 0600
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))  # mkdtemp: 0700
        try:
            for f in src.iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
                    tighten(tmp / f.name)
            while True:
                versions = self._versions()
                n = int(versions[-1][1:]) + 1 if versions else 1
                version = f"v{n:04d}"
                meta = {
                    **metadata,
                    "version": version,
                    "created": time.time(),
                    WEIGHTS_SHA256_KEY: weights_sha256(tmp),
                }
                (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2))
                tighten(tmp / METADATA_FILE)
                try:
                    os.rename(tmp, self.root / version)  # fails if a racing writer took it
                    return version
                except OSError:
                    if not (self.root / version).exists():
                        raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def promote(self, version: str, *, smoke_test: bool = True) -> AdapterInfo:
        """Check ``version``, then make it current (atomic pointer switch) and append it to
        the history.

        The files are always checked (weights parse, are finite and are the bytes registered;
        ``local_models.adapter_checks.check_files``); ``smoke_test`` also loads the adapter onto
        its base model and runs a forward pass (``adapter_checks.smoke_test``, seconds). Pass False only
        when the caller has just run these very files (the nightly gate evaluated them).

        Raises:
            RegistryError: unknown version, or a check failed (``CURRENT`` is left as it was).
        """
        info = self._info(version)
        check_files(info.path, info.metadata)
        if smoke_test:
            run_smoke_test(info.path, info.metadata)
        hist = self.history()
        if not hist or hist[-1] != version:
            hist.append(version)
        write_private(self.root / HISTORY_FILE, json.dumps(hist))
        write_private(self.root / CURRENT_FILE, version)
        return info

    def rollback(self) -> AdapterInfo:
        """Switch back to the previously current version.

        Raises:
            RegistryError: there is no earlier version to return to.
        """
        hist = self.history()
        if len(hist) < 2:
            raise RegistryError("nothing to roll back to: fewer than two promotions in history")
        previous = hist[-2]
        info = self._info(previous)
        write_private(self.root / CURRENT_FILE, previous)
        write_private(self.root / HISTORY_FILE, json.dumps(hist[:-1]))
        return info


__all__ = ["AdapterInfo", "AdapterRegistry", "default_root", "read_metadata"]
