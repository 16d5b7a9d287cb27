"""Router test fixtures: litellm imported once per session (the import takes seconds)."""

from __future__ import annotations

import os
from typing import Any

import pytest


@pytest.fixture(scope="session")
def litellm_module() -> Any:
    """litellm, imported once per session with the offline cost map."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from router._transports.cloud import _load_litellm

    return _load_litellm()
