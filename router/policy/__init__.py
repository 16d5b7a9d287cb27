"""Routing policies: frozen, self-validating config objects loaded from YAML.

>>> from router.policy import load_policy
>>> policy = load_policy("default").replace(mode="route", **{"thresholds.route": 0.7})
>>> policy.thresholds.route, policy.version

A policy says *how* to route (mode, thresholds, budget, rules); ``router._gateway.decision`` says
*what happens* with it. Decision code receives a ``RoutingPolicy`` object, never a path or dict,
and nothing here reads environment variables. Errors name the file, line and field:

    policies/x.yaml:7: thresholds.route: must be a number between 0 and 1, got 'high'

Layout: ``fields`` (the validators), ``sections`` (one dataclass per YAML section, and
``RoutingPolicy``), ``io`` (plain data, YAML text and files). Importing this package costs
``yaml`` and the standard library only (no ``openai``/``httpx``; a test pins it), so the CLI's
``report`` path stays light.
"""

from __future__ import annotations

from router._errors import PolicyError
from router.policy.io import load_policy, parse_policy, policy_from_dict, save_policy
from router.policy.sections import (
    MODES,
    ON_EXCEEDED,
    BudgetConfig,
    CacheSettings,
    CloudConfig,
    CloudTier,
    DistillSettings,
    LocalConfig,
    ModelPrice,
    RoutingPolicy,
    RulesConfig,
    ShadowConfig,
    Thresholds,
)

__all__ = [
    "MODES",
    "ON_EXCEEDED",
    "BudgetConfig",
    "CacheSettings",
    "CloudConfig",
    "CloudTier",
    "DistillSettings",
    "LocalConfig",
    "ModelPrice",
    "PolicyError",
    "RoutingPolicy",
    "RulesConfig",
    "ShadowConfig",
    "Thresholds",
    "load_policy",
    "parse_policy",
    "policy_from_dict",
    "save_policy",
]
