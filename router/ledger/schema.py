"""What a ledger row is, and the versioned schema steps that create and migrate the file.

Rows are ``LedgerEntry`` dataclasses (one per gateway call) and ``Label``s (shadow verdicts);
``MIGRATIONS`` is append-only. Standard library only.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from router.ledger.redact import _from_json


@dataclass
class LedgerEntry:
    """One gateway call, as recorded.

    >>> ledger.record(LedgerEntry(request_id="r1", ts=time.time(), route="local"))
    >>> ledger.rows(route="local")[0].request_id
    'r1'
    """

    request_id: str
    ts: float
    """Unix time the request started."""
    route: str
    """``local``, ``cloud``, ``cache`` or ``none`` (failed before routing)."""
    reason: str = ""
    score: float | None = None
    confidence: float | None = None
    escalated: bool = False
    model: str = ""
    """Model that answered (or was last tried)."""
    requested_model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0
    """What the all-cloud baseline would have paid for this request."""
    latency_ms: float = 0.0
    cache_hit: bool = False
    error_type: str | None = None
    error_message: str | None = None
    policy_version: str = ""
    adapter_version: str | None = None
    user: str | None = None
    stream: bool = False
    messages: list[dict] | None = None
    """Stored only when the ledger has ``store_content=True``; secrets scrubbed."""
    answer: str | None = None
    tags: dict[str, str] | None = None
    tenant: str | None = None
    """The authenticated tenant (``hybridgate serve --keys``); None in-process."""
    attempts: list[dict] | None = None
    """An N-tier cascade's tries in order, one ``{tier, model, confidence, usd, kept}`` each
    (``error`` for a failed try, ``answer`` when content is stored): which tier answered and
    what each cost. None for a request that never reached a cheaper cloud tier."""


@dataclass
class Label:
    """A shadow-evaluation verdict on one request: was the local answer acceptable?

    >>> ledger.add_label("r1", judge="exact_match", label=1.0, local_answer="42")
    >>> entry, label = ledger.labelled()[0]
    >>> label.label
    1.0
    """

    request_id: str
    judge: str
    """Which judge produced the label (``exact_match``, ``llm:gpt-4o`` ...)."""
    label: float
    """1.0 = local answer acceptable, 0.0 = not; fractions for graded judges."""
    local_answer: str | None
    local_confidence: float | None
    local_cost_usd: float
    ts: float


_ENTRY_COLUMNS: tuple[str, ...] = (
    "request_id",
    "ts",
    "route",
    "reason",
    "score",
    "confidence",
    "escalated",
    "model",
    "requested_model",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "baseline_cost_usd",
    "latency_ms",
    "cache_hit",
    "error_type",
    "error_message",
    "policy_version",
    "adapter_version",
    "user",
    "stream",
    "messages",
    "answer",
    "tags",
    "tenant",
    "attempts",
)
_INSERT_SQL = "INSERT INTO requests ({}) VALUES ({})".format(
    ", ".join(f'"{c}"' for c in _ENTRY_COLUMNS), ", ".join("?" * len(_ENTRY_COLUMNS))
)
ADDED_COLUMNS: dict[str, int] = {"tenant": 3, "attempts": 4}
"""Entry columns added by a later migration -> its version: older files lack them until then."""


def select_columns(missing: frozenset[str] = frozenset()) -> str:
    """The SELECT list of an entry; columns an older (read-only) file lacks read as NULL."""
    return ", ".join("NULL" if c in missing else f'r."{c}"' for c in _ENTRY_COLUMNS)


_SELECT_COLUMNS = select_columns()
_LABEL_COLUMNS = (
    "request_id",
    "judge",
    "label",
    "local_answer",
    "local_confidence",
    "local_cost_usd",
    "ts",
)


def _row_to_entry(row: tuple[Any, ...]) -> LedgerEntry:
    values = dict(zip(_ENTRY_COLUMNS, row, strict=True))
    for flag in ("escalated", "cache_hit", "stream"):
        values[flag] = bool(values[flag])
    values["messages"] = _from_json(values["messages"])
    values["tags"] = _from_json(values["tags"])
    values["attempts"] = _from_json(values["attempts"])
    return LedgerEntry(**values)


# --------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    """One schema step; ``version`` is the schema version after it runs."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="requests (one row per gateway call) and labels (shadow evaluation)",
        statements=(
            """CREATE TABLE requests (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                request_id TEXT NOT NULL,
                ts REAL NOT NULL,
                route TEXT NOT NULL,
                reason TEXT NOT NULL DEFAULT '',
                score REAL,
                confidence REAL,
                escalated INTEGER NOT NULL DEFAULT 0,
                model TEXT NOT NULL DEFAULT '',
                requested_model TEXT NOT NULL DEFAULT '',
                prompt_tokens INTEGER NOT NULL DEFAULT 0,
                completion_tokens INTEGER NOT NULL DEFAULT 0,
                cost_usd REAL NOT NULL DEFAULT 0,
                baseline_cost_usd REAL NOT NULL DEFAULT 0,
                latency_ms REAL NOT NULL DEFAULT 0,
                cache_hit INTEGER NOT NULL DEFAULT 0,
                error_type TEXT,
                error_message TEXT,
                policy_version TEXT NOT NULL DEFAULT '',
                adapter_version TEXT,
                user TEXT,
                stream INTEGER NOT NULL DEFAULT 0,
                messages TEXT,
                answer TEXT,
                tags TEXT
            )""",
            "CREATE INDEX requests_ts ON requests (ts)",
            "CREATE INDEX requests_route_ts ON requests (route, ts)",
            "CREATE INDEX requests_request_id ON requests (request_id)",
            """CREATE TABLE labels (
                request_id TEXT PRIMARY KEY,
                judge TEXT NOT NULL,
                label REAL NOT NULL,
                local_answer TEXT,
                local_confidence REAL,
                local_cost_usd REAL NOT NULL DEFAULT 0,
                ts REAL NOT NULL
            )""",
        ),
    ),
    Migration(
        version=2,
        description="events: counted happenings that are not requests (shadow jobs dropped)",
        statements=(
            """CREATE TABLE events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                ts REAL NOT NULL,
                kind TEXT NOT NULL,
                request_id TEXT
            )""",
            "CREATE INDEX events_kind_ts ON events (kind, ts)",
        ),
    ),
    Migration(
        version=3,
        description="requests.tenant: who a served request was for (budget scope, reports)",
        statements=(
            "ALTER TABLE requests ADD COLUMN tenant TEXT",
            "CREATE INDEX requests_tenant_ts ON requests (tenant, ts)",
        ),
    ),
    Migration(
        version=4,
        description="requests.attempts: each tier an N-tier cascade asked (JSON), for tune/report",
        statements=("ALTER TABLE requests ADD COLUMN attempts TEXT",),
    ),
)
"""Ordered schema steps. Append new ones (version = previous + 1); never edit old ones."""

EVENT_SHADOW_DROPPED = "shadow_dropped"
"""Event kind: a shadow-labelling job was dropped because ``shadow.max_pending`` were queued."""


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in ``conn``'s database (0 for a fresh file)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...] | None = None) -> int:
    """Bring the database up to the newest schema, one transaction per step.

    Args:
        conn: An open connection (autocommit mode: ``isolation_level=None``).
        migrations: Steps to apply; defaults to :data:`MIGRATIONS`.

    Returns:
        The schema version after migrating.

    Raises:
        HybridGateError: The file was written by a newer hybridgate (unknown version).
    """
    steps = MIGRATIONS if migrations is None else migrations
    conn.execute("BEGIN IMMEDIATE")  # one process migrates; others wait, then see it done
    try:
        current = schema_version(conn)
        newest = steps[-1].version if steps else 0
        if current > newest:
            from router._errors import LedgerError

            raise LedgerError(
                f"ledger schema version {current} is newer than this hybridgate "
                f"understands ({newest}); upgrade hybridgate or use another --ledger path"
            )
        for step in steps:
            if step.version <= current:
                continue
            for statement in step.statements:
                conn.execute(statement)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (step.version,))
            current = step.version
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return current


__all__ = [
    "EVENT_SHADOW_DROPPED",
    "MIGRATIONS",
    "Label",
    "LedgerEntry",
    "Migration",
    "migrate",
    "schema_version",
]
