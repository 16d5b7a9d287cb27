"""Publishing a promoted adapter to the engine that serves the local tier (``local.api_base``).

vLLM loads LoRA adapters at runtime (``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1``):
``POST /v1/load_lora_adapter {"lora_name", "lora_path"}`` and ``POST /v1/unload_lora_adapter``.
A publication is the blue/green switch that API allows:

1. load the version under its own name, ``hybridgate-v0003`` (the old one keeps serving);
2. check that ``GET /v1/models`` lists it;
3. record it in the registry's ``published.json`` - gateways following ``local.adapter: current``
   switch their requests to the new name within a poll (``adapter_watch``);
4. after a drain period, unload the previous name.

Rollback is publishing the previous version again (``--version``). llama.cpp's ``llama-server``
loads adapters only at start (``--lora FILE``): export a GGUF LoRA
(``hybridgate adapters export --format gguf``) and restart it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from router.errors import ModelLoadError

PUBLISHED_FILE = "published.json"
"""In the adapter registry's root: which version each engine serves, keyed by ``api_base``."""
NAME_PREFIX = "hybridgate-"
DRAIN_S = 10.0
"""Seconds between switching traffic and unloading the old adapter: a gateway polls the
record every 2 s, and requests already sent to the old name must still finish."""


class PublishError(ModelLoadError):
    """The engine did not take the adapter (what it serves and what gateways send is
    unchanged), or the publication record is unreadable: a local-model load failure, so a
    gateway falls back to the cloud where it may."""


def served_name(version: str) -> str:
    """The name an adapter version is served under on an engine: ``hybridgate-v0003``."""
    return f"{NAME_PREFIX}{version}"


@dataclass(frozen=True)
class Publication:
    """What one engine serves, as ``published.json`` records it."""

    api_base: str
    version: str
    name: str
    path: str
    """The adapter directory on this host (its answer sets), not the engine's copy."""
    previous: str | None
    """The version served before (the rollback target)."""
    at: float


def _registry_root(root: str | Path | None) -> Path:
    from local_models.registry import default_root

    return Path(root) if root is not None else default_root()


def _key(api_base: str) -> str:
    return api_base.rstrip("/")


def read_publications(root: str | Path | None = None) -> dict[str, Publication]:
    """Every engine's record; ``{}`` before the first publication.

    Raises:
        PublishError: The file exists but is not the JSON we wrote (named in the message).
    """
    path = _registry_root(root) / PUBLISHED_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {key: Publication(**value) for key, value in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise PublishError(f"{path}: unreadable publication record ({exc})") from None


def published(api_base: str, root: str | Path | None = None) -> Publication | None:
    """What ``api_base`` serves now, or None before its first publication."""
    return read_publications(root).get(_key(api_base))


def _record(publication: Publication, root: str | Path | None) -> None:
    """Write the record atomically (temp file + rename), private to the user."""
    reg = _registry_root(root)
    reg.mkdir(mode=0o700, parents=True, exist_ok=True)
    records = read_publications(reg)
    records[publication.api_base] = publication
    tmp = reg / f".{PUBLISHED_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({k: asdict(v) for k, v in records.items()}, f, indent=2)
    os.replace(tmp, reg / PUBLISHED_FILE)


class VLLMAdmin:
    """vLLM's runtime LoRA endpoints, over httpx. Never logs or shows the key."""

    def __init__(self, api_base: str, *, api_key: str | None = None, timeout_s: float = 120.0):
        self.api_base = _key(api_base)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s

    def _post(self, endpoint: str, body: dict[str, Any]) -> tuple[int, str]:
        import httpx

        try:
            response = httpx.post(
                f"{self.api_base}/{endpoint}",
                json=body,
                headers=self._headers,
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise PublishError(f"engine at {self.api_base} is unreachable: {exc}") from None
        return response.status_code, response.text[:500]

    def load(self, name: str, path: str) -> None:
        """Load the adapter at ``path`` (a path the engine can read) under ``name``."""
        status, text = self._post("load_lora_adapter", {"lora_name": name, "lora_path": path})
        if status == 400 and "already" in text.lower():
            return  # loaded by an earlier, interrupted publication: the same files
        if status >= 400:
            hint = (
                " (start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=1)"
                if status in (404, 405)
                else ""
            )
            raise PublishError(
                f"engine at {self.api_base} refused to load {name!r} from {path!r}: "
                f"HTTP {status} {text}{hint}"
            )

    def unload(self, name: str) -> None:
        """Unload ``name``; one the engine no longer has is not an error."""
        status, text = self._post("unload_lora_adapter", {"lora_name": name})
        if status >= 400 and status != 404 and "not" not in text.lower():
            raise PublishError(f"engine at {self.api_base} refused to unload {name!r}: {text}")

    def models(self) -> set[str]:
        """The names ``GET /v1/models`` lists (the base model and every loaded adapter)."""
        import httpx

        try:
            response = httpx.get(
                f"{self.api_base}/models", headers=self._headers, timeout=self.timeout_s
            )
            response.raise_for_status()
            return {str(m.get("id")) for m in response.json().get("data") or []}
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise PublishError(f"engine at {self.api_base}: GET /models failed: {exc}") from None


def publish(
    api_base: str,
    *,
    version: str | None = None,
    root: str | Path | None = None,
    api_key: str | None = None,
    engine_path: str | None = None,
    drain_s: float = DRAIN_S,
    sleep: Any = time.sleep,
) -> Publication:
    """Load ``version`` (default: the registry's current) on the engine, switch gateways to
    it, then unload the version it replaces.

    Args:
        api_base: The engine's base URL (``local.api_base``).
        version: The registered version to serve; the previous one is the rollback target.
        root: The adapter registry (default: the data home's).
        api_key: The engine's key, if it wants one.
        engine_path: Where the engine reads the adapter from, when it is not this host's
            registry path (a shared volume: the PEFT export is written there first).
        drain_s: Seconds between the switch and unloading the old adapter.
        sleep: ``time.sleep`` (tests pass a fake).

    Returns:
        The new record.

    Raises:
        PublishError: The engine refused; gateways keep sending the old name.
    """
    from local_models.adapter_export import export_peft
    from local_models.errors import LocalModelError
    from local_models.registry import AdapterRegistry

    registry = AdapterRegistry(root)
    try:
        info = registry.show(version) if version else registry.current()
    except LocalModelError as exc:
        raise PublishError(str(exc)) from None
    if info is None:
        raise PublishError("no adapter is promoted yet: run hybridgate distill first")
    name = served_name(info.version)
    lora_path = str(info.path)
    if engine_path:
        target = Path(engine_path) / name
        if not target.exists():
            base = str(info.metadata.get("base_model") or "base")
            try:
                export_peft(info.path, target, base_model=base)
            except LocalModelError as exc:
                raise PublishError(str(exc)) from None
        lora_path = str(target)
    admin = VLLMAdmin(api_base, api_key=api_key)
    old = published(api_base, registry.root)
    admin.load(name, lora_path)
    if name not in admin.models():
        raise PublishError(f"engine at {admin.api_base} accepted {name!r} but does not list it")
    record = Publication(
        api_base=admin.api_base,
        version=info.version,
        name=name,
        path=str(info.path),
        previous=(
            None if old is None else old.version if old.version != info.version else old.previous
        ),
        at=time.time(),
    )
    _record(record, registry.root)
    if old is not None and old.name != name:
        sleep(drain_s)
        admin.unload(old.name)
    return record


__all__ = [
    "DRAIN_S",
    "PUBLISHED_FILE",
    "PublishError",
    "Publication",
    "VLLMAdmin",
    "publish",
    "published",
    "read_publications",
    "served_name",
]
