"""The cost ledger: one row per gateway call, plus shadow labels and counted events.

- ``schema``: what a row is (``LedgerEntry``, ``Label``) and the versioned migrations;
- ``redact``: secrets scrubbed from everything stored;
- ``store``: the ``Ledger`` itself (SQLite WAL, write-behind when the file is locked);
- ``pricing`` and ``reports``: what rows cost, and the savings report built from them.

Everything here imports only the standard library (and ``platformdirs`` lazily) so the CLI
``report`` path starts fast; never import torch, transformers, openai or litellm here.
"""

from __future__ import annotations

from router._paths import default_ledger_path
from router.ledger.redact import redact_values, scrub_secrets
from router.ledger.schema import (
    EVENT_SHADOW_DROPPED,
    MIGRATIONS,
    Label,
    LedgerEntry,
    Migration,
    migrate,
    schema_version,
)
from router.ledger.store import Ledger

__all__ = [
    "EVENT_SHADOW_DROPPED",
    "MIGRATIONS",
    "Label",
    "Ledger",
    "LedgerEntry",
    "Migration",
    "default_ledger_path",
    "migrate",
    "redact_values",
    "schema_version",
    "scrub_secrets",
]
