"""Bundled routing policies, shipped as package data.

Each ``*.yaml`` here is a commented, loadable ``RoutingPolicy``; the comments are the user-facing
documentation of every knob. Load one with ``router.policy.load_policy("default")``.

>>> from policies import policy_path
>>> policy_path("cost-saver").name
'cost-saver.yaml'
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from router.errors import PolicyError

BUNDLED_POLICIES: tuple[str, ...] = ("default", "cost-saver", "quality-first")
"""Names accepted by ``policy_path`` and ``router.policy.load_policy``."""


def policy_path(name: str) -> Path:
    """Return the file path of a bundled policy.

    Args:
        name: One of ``BUNDLED_POLICIES`` (without the ``.yaml`` suffix).

    Returns:
        Path of the YAML file inside the installed ``policies`` package.

    Raises:
        PolicyError: ``name`` is not a bundled policy.
    """
    if name not in BUNDLED_POLICIES:
        close = difflib.get_close_matches(str(name), BUNDLED_POLICIES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PolicyError(
            f"unknown bundled policy {name!r}{hint} (bundled: {', '.join(BUNDLED_POLICIES)})"
        )
    return Path(str(resources.files(__name__).joinpath(f"{name}.yaml")))


__all__ = ["BUNDLED_POLICIES", "policy_path"]
