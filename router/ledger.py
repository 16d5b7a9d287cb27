"""The SQLite cost ledger: one row per gateway call, plus shadow-evaluation labels.

Why SQLite in WAL mode: the gateway writes from many threads and processes while
``hybridgate report`` reads; WAL lets readers run beside the writer, and
``synchronous=NORMAL`` skips the per-commit fsync (a crash can lose the last few rows,
never corrupt the file), which keeps a write well under a millisecond.

This module imports only the standard library and ``platformdirs`` so the CLI ``report``
path starts fast; never import torch, transformers or litellm here.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_HOME = "HYBRIDGATE_HOME"
"""Environment variable naming hybridgate's data folder (ledger, cache, adapters)."""

LEDGER_FILENAME = "ledger.sqlite"
BUSY_TIMEOUT_MS = 5000
"""How long a writer waits for another process's lock before failing."""


def default_ledger_path() -> Path:
    """Where the ledger lives when no path is given.

    Returns:
        ``$HYBRIDGATE_HOME/ledger.sqlite`` when that variable is set, else
        ``user_data_dir("hybridgate")/ledger.sqlite`` (platformdirs).
    """
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser() / LEDGER_FILENAME
    from platformdirs import user_data_dir

    return Path(user_data_dir("hybridgate")) / LEDGER_FILENAME


# --------------------------------------------------------------------------- secrets

_REDACTED = "[REDACTED]"
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # OpenAI / Anthropic / most "sk-" style keys (sk-..., sk-proj-..., sk-ant-...).
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"), _REDACTED),
    # Authorization headers.
    (re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/=\-]{8,}"), "Bearer " + _REDACTED),
    # key=value / "key": "value" pairs whose name says secret.
    (
        re.compile(
            r"(?i)((?:api[_-]?key|apikey|x-api-key|access[_-]?token|auth[_-]?token|"
            r"secret(?:[_-]?key)?|password)[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;]{4,})"
        ),
        r"\1" + _REDACTED,
    ),
    # AWS access key ids and Google API keys.
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), _REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"), _REDACTED),
)
_SECRET_HINT = re.compile(r"(?i)sk-|bearer|key|token|secret|password|AKIA|AIza")


def scrub_secrets(text: str) -> str:
    """Replace anything that looks like an API key or bearer token with ``[REDACTED]``.

    Args:
        text: Free text (a message, an answer, an error message).

    Returns:
        The text with secrets replaced; unchanged when nothing matched.
    """
    if not _SECRET_HINT.search(text):  # fast path: most rows hold no secret-like words
        return text
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _scrub_obj(value: Any) -> Any:
    """Scrub every string inside a JSON-like structure (before encoding, so JSON stays valid)."""
    if isinstance(value, str):
        return scrub_secrets(value)
    if isinstance(value, dict):
        return {str(k): _scrub_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_obj(v) for v in value]
    return value


def _safe_text(text: str | None) -> str | None:
    """Make text storable: scrub secrets and replace unencodable characters (lone surrogates)."""
    if text is None:
        return None
    if not isinstance(text, str):
        text = str(text)
    text = scrub_secrets(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _to_json(value: Any) -> str | None:
    """Encode scrubbed JSON; never raises (falls back to a JSON string of the repr)."""
    if value is None:
        return None
    try:
        return json.dumps(_scrub_obj(value), ensure_ascii=True, default=str)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(scrub_secrets(repr(value)), ensure_ascii=True)


def _from_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


# --------------------------------------------------------------------------- rows


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
)
_INSERT_SQL = "INSERT INTO requests ({}) VALUES ({})".format(
    ", ".join(f'"{c}"' for c in _ENTRY_COLUMNS), ", ".join("?" * len(_ENTRY_COLUMNS))
)
_SELECT_COLUMNS = ", ".join(f'r."{c}"' for c in _ENTRY_COLUMNS)
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
)
"""Ordered schema steps. Append new ones (version = previous + 1); never edit old ones."""


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
            from router.errors import HybridGateError

            raise HybridGateError(
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


# --------------------------------------------------------------------------- ledger


class Ledger:
    """Append-only record of every gateway call, safe to share across threads.

    >>> with Ledger("/tmp/ledger.sqlite") as ledger:
    ...     ledger.record(LedgerEntry(request_id="r1", ts=time.time(), route="cloud"))
    ...     ledger.cloud_spend(since=0)
    """

    def __init__(self, path: str | Path | None = None, *, store_content: bool = True) -> None:
        """Open (creating and migrating if needed) the ledger.

        Args:
            path: SQLite file; default :func:`default_ledger_path`. Parent folders are created.
                ``":memory:"`` gives a throwaway in-memory ledger.
            store_content: Keep messages and answers (secrets scrubbed). ``False`` stores NULL
                there, for deployments that must not retain prompts.
        """
        self.path = Path(path) if path is not None and str(path) != ":memory:" else path
        if self.path is None:
            self.path = default_ledger_path()
        self.store_content = store_content
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection guarded by a lock: SQLite serialises writers anyway, and a single
        # connection keeps per-write cost to one statement + commit.
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=5.0
        )
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if isinstance(self.path, Path):
            self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._lock:
            self.version = migrate(self._conn)  # schema version of the open file

    # -- writing -------------------------------------------------------------------

    def record(self, entry: LedgerEntry) -> None:
        """Append one call. Content is scrubbed of secrets; bad content never raises.

        Args:
            entry: The call to record.
        """
        content = self.store_content
        params = (
            str(entry.request_id),
            float(entry.ts),
            str(entry.route),
            _safe_text(entry.reason) or "",
            entry.score,
            entry.confidence,
            int(bool(entry.escalated)),
            _safe_text(entry.model) or "",
            _safe_text(entry.requested_model) or "",
            int(entry.prompt_tokens or 0),
            int(entry.completion_tokens or 0),
            float(entry.cost_usd or 0.0),
            float(entry.baseline_cost_usd or 0.0),
            float(entry.latency_ms or 0.0),
            int(bool(entry.cache_hit)),
            _safe_text(entry.error_type),
            _safe_text(entry.error_message),
            _safe_text(entry.policy_version) or "",
            _safe_text(entry.adapter_version),
            _safe_text(entry.user),
            int(bool(entry.stream)),
            _to_json(entry.messages) if content else None,
            _safe_text(entry.answer) if content else None,
            _to_json(entry.tags),
        )
        with self._lock:
            self._conn.execute(_INSERT_SQL, params)

    def add_label(
        self,
        request_id: str,
        *,
        judge: str,
        label: float,
        local_answer: str | None,
        local_confidence: float | None = None,
        local_cost_usd: float = 0.0,
        ts: float | None = None,
    ) -> None:
        """Store (or replace) the shadow-evaluation label of one request.

        Args:
            request_id: The request the label is about.
            judge: Which judge decided.
            label: 1.0 acceptable .. 0.0 not.
            local_answer: What the local model said (scrubbed; NULL if ``store_content=False``).
            local_confidence: The local answer's confidence, if computed.
            local_cost_usd: What producing the local answer cost.
            ts: When labelled; default now.
        """
        params = (
            str(request_id),
            str(judge),
            float(label),
            _safe_text(local_answer) if self.store_content else None,
            local_confidence,
            float(local_cost_usd),
            time.time() if ts is None else float(ts),
        )
        sql = "INSERT OR REPLACE INTO labels ({}) VALUES ({})".format(
            ", ".join(_LABEL_COLUMNS), ", ".join("?" * len(_LABEL_COLUMNS))
        )
        with self._lock:
            self._conn.execute(sql, params)

    # -- reading -------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def rows(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        route: str | None = None,
        limit: int | None = None,
    ) -> list[LedgerEntry]:
        """Recorded calls, oldest first.

        Args:
            since: Keep rows with ``ts >= since``.
            until: Keep rows with ``ts < until``.
            route: Keep only this route.
            limit: At most this many rows (the oldest ones).

        Returns:
            The matching entries.
        """
        where, params = [], []
        if since is not None:
            where.append("r.ts >= ?")
            params.append(float(since))
        if until is not None:
            where.append("r.ts < ?")
            params.append(float(until))
        if route is not None:
            where.append("r.route = ?")
            params.append(route)
        sql = f"SELECT {_SELECT_COLUMNS} FROM requests r"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.ts, r.id"
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            sql += " LIMIT ?"
            params.append(int(limit))
        return [_row_to_entry(row) for row in self._query(sql, tuple(params))]

    def labelled(self) -> list[tuple[LedgerEntry, Label]]:
        """Requests that carry a shadow label, each with its label (latest row per request).

        Returns:
            ``(entry, label)`` pairs, oldest request first.
        """
        label_cols = ", ".join(f"l.{c}" for c in _LABEL_COLUMNS)
        sql = (
            f"SELECT {_SELECT_COLUMNS}, {label_cols} FROM labels l "
            "JOIN requests r ON r.id = "
            "(SELECT MAX(id) FROM requests WHERE request_id = l.request_id) "
            "ORDER BY r.ts, r.id"
        )
        n = len(_ENTRY_COLUMNS)
        out = []
        for row in self._query(sql):
            entry = _row_to_entry(row[:n])
            out.append((entry, Label(**dict(zip(_LABEL_COLUMNS, row[n:], strict=True)))))
        return out

    def cloud_spend(self, *, since: float) -> float:
        """USD spent on the cloud since ``since`` (for the daily budget).

        Args:
            since: Unix time; rows with ``ts >= since`` count.

        Returns:
            Sum of ``cost_usd`` over cloud rows.
        """
        row = self._query(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE route = 'cloud' AND ts >= ?",
            (float(since),),
        )
        return float(row[0][0])

    def count(self) -> int:
        """Number of recorded calls."""
        return int(self._query("SELECT COUNT(*) FROM requests")[0][0])

    def close(self) -> None:
        """Close the connection; further calls raise ``sqlite3.ProgrammingError``."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger(path={str(self.path)!r}, store_content={self.store_content})"


__all__ = [
    "MIGRATIONS",
    "Label",
    "Ledger",
    "LedgerEntry",
    "Migration",
    "default_ledger_path",
    "migrate",
    "schema_version",
    "scrub_secrets",
]
