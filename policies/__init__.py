"""Bundled routing policies, shipped as package data.

Each ``*.yaml`` here is a commented, loadable ``RoutingPolicy``; the comments are the user-facing
documentation of every knob. Load one with ``router.policy.load_policy("default")``.

This package only locates files and imports nothing from ``router`` (the package graph points
one way: ``router`` imports ``policies``). An unknown name raises its own
:class:`UnknownPolicyError`, a plain ``ValueError`` that ``router.policy`` turns into a
``PolicyError``.

>>> from policies import policy_path
>>> policy_path("cost-saver").name
'cost-saver.yaml'
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

BUNDLED_POLICIES: tuple[str, ...] = ("default", "cost-saver", "quality-first")
"""Names accepted by ``policy_path`` and ``router.policy.load_policy``."""


class UnknownPolicyError(ValueError):
    """``policy_path`` was given a name that is not in ``BUNDLED_POLICIES``."""


def policy_path(name: str) -> Path:
    """Return the file path of a bundled policy.

    Args:
        name: One of ``BUNDLED_POLICIES`` (without the ``.yaml`` suffix).

    Returns:
        Path of the YAML file inside the installed ``policies`` package.

    Raises:
        UnknownPolicyError: ``name`` is not a bundled policy (the message suggests the closest).
    """
    if name not in BUNDLED_POLICIES:
        close = difflib.get_close_matches(str(name), BUNDLED_POLICIES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownPolicyError(
            f"unknown bundled policy {name!r}{hint} (bundled: {', '.join(BUNDLED_POLICIES)})"
        )
    return Path(str(resources.files(__name__).joinpath(f"{name}.yaml")))


__all__ = ["BUNDLED_POLICIES", "UnknownPolicyError", "policy_path"]
