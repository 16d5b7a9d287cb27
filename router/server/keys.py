"""API keys for ``hybridgate serve --keys FILE``: who is calling, and what they may do.

The file is YAML, one entry per key; a key may be written as itself or as ``sha256:<hex>`` of
it (so the file need not hold usable secrets)::

    sk-hg-team-a-0123456789: team-a             # key -> tenant
    "sha256:5e884898da2804...":                  # hashed key, with limits
      tenant: team-b
      daily_usd: 5                               # this tenant's own daily cloud budget
      models: [gpt-4o-mini, hybridgate]          # names it may ask for (default: any)
      routes: [local]                            # local only: nothing of it reaches the cloud

Presented keys are hashed and looked up by hash; a key never appears in a log, a ledger row or
an error message. ``hybridgate serve --hash-key KEY`` prints the hashed form.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router._errors import PolicyError
from router.types import Tenant

ROUTES = ("local", "cloud")
_FIELDS = {"tenant", "daily_usd", "models", "routes"}


def hash_key(key: str) -> str:
    """The form a key is stored and looked up in: ``sha256:<64 hex>``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Grant:
    """What one key may do."""

    tenant: Tenant
    models: frozenset[str] | None = None
    """Model names (or aliases) it may request; None -> any."""
    routes: frozenset[str] | None = None
    """``local`` and/or ``cloud``; None -> both (the policy decides)."""

    @property
    def pinned_route(self) -> str | None:
        """The one route this key is limited to, if it is limited to one."""
        if self.routes is not None and len(self.routes) == 1:
            return next(iter(self.routes))
        return None


class KeyRing:
    """Keys -> grants. ``KeyRing.load(path)``; ``ring.lookup(presented)`` -> Grant or None."""

    def __init__(self, grants: Mapping[str, Grant]) -> None:
        self._by_hash = dict(grants)

    def __len__(self) -> int:
        return len(self._by_hash)

    @property
    def tenants(self) -> list[str]:
        return sorted({g.tenant.name for g in self._by_hash.values()})

    def lookup(self, presented: str | None) -> Grant | None:
        if not presented:
            return None
        digest = hash_key(presented)
        for stored, grant in self._by_hash.items():  # constant-time compare per entry
            if hmac.compare_digest(stored, digest):
                return grant
        return None

    @classmethod
    def load(cls, path: str | Path) -> KeyRing:
        """Read and check a keys file.

        Raises:
            PolicyError: naming the file and the entry that is wrong.
        """
        import yaml

        path = Path(path).expanduser()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read the keys file ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, Mapping) or not data:
            raise PolicyError(f"{path}: expected a mapping of API key -> tenant (see --help)")
        grants: dict[str, Grant] = {}
        for n, (key, spec) in enumerate(data.items(), start=1):
            where = f"{path}: entry {n}"
            if not isinstance(key, str) or len(key) < 8:
                raise PolicyError(f"{where}: a key must be a string of at least 8 characters")
            stored = key if key.startswith("sha256:") else hash_key(key)
            if key.startswith("sha256:") and len(key) != 7 + 64:
                raise PolicyError(f"{where}: 'sha256:' must be followed by 64 hex digits")
            if stored in grants:
                raise PolicyError(f"{where}: the same key appears twice")
            grants[stored] = _grant(spec, where)
        return cls(grants)


def _grant(spec: Any, where: str) -> Grant:
    if isinstance(spec, str):
        spec = {"tenant": spec}
    if not isinstance(spec, Mapping):
        raise PolicyError(f"{where}: expected a tenant name or a mapping with 'tenant'")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise PolicyError(
            f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
            f"allowed: {', '.join(sorted(_FIELDS))}"
        )
    tenant = spec.get("tenant")
    if not isinstance(tenant, str) or not tenant.strip():
        raise PolicyError(f"{where}: 'tenant' must be a non-empty name")
    daily = spec.get("daily_usd")
    if daily is not None and (
        isinstance(daily, bool) or not isinstance(daily, (int, float)) or daily < 0
    ):
        raise PolicyError(f"{where}: daily_usd must be a number >= 0, got {daily!r}")
    models = _names(spec.get("models"), f"{where}: models")
    routes = _names(spec.get("routes"), f"{where}: routes")
    if routes is not None and not routes <= set(ROUTES):
        raise PolicyError(
            f"{where}: routes may only hold 'local' and 'cloud', got {sorted(routes)}"
        )
    return Grant(
        Tenant(tenant.strip(), float(daily) if daily is not None else None), models, routes
    )


def _names(value: Any, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where} must be a non-empty list of names")
    return frozenset(value)


__all__ = ["Grant", "KeyRing", "hash_key"]
