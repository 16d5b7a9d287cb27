"""The ``Ledger``: an append-only SQLite file (or PostgreSQL database), safe across threads and
processes.

Why SQLite in WAL mode: the gateway writes from many threads and processes while
``hybridgate report`` reads; WAL lets readers run beside the writer, and
``synchronous=NORMAL`` skips the per-commit fsync (a crash can lose the last few rows,
never corrupt the file), which keeps a write well under a millisecond. A write that fails
(the file locked past the busy timeout, a full disk) never reaches the caller: the row is
queued, written in the background, and spilled to a file at close if it still cannot be.

Standard library only, so the CLI ``report`` path starts fast.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any

from router._paths import default_ledger_path
from router.ledger.postgres import display, is_url
from router.ledger.redact import _safe_text, _to_json, redact_values
from router.ledger.schema import (
    _ENTRY_COLUMNS,
    _INSERT_SQL,
    _LABEL_COLUMNS,
    _SELECT_COLUMNS,
    ADDED_COLUMNS,
    EVENT_SHADOW_DROPPED,
    Label,
    LedgerEntry,
    _row_to_entry,
    migrate,
    select_columns,
)

BUSY_TIMEOUT_MS = 5000
"""How long a writer waits for another process's lock before queueing the row instead."""
MAX_PENDING_ROWS = 100_000
"""Rows kept in memory while the file is locked; beyond that they go straight to the spill file."""

log = logging.getLogger("hybridgate.ledger")


# --------------------------------------------------------------------------- opening


def _ledger_error(path: Any, problem: str) -> Exception:
    from router._errors import LedgerError

    return LedgerError(f"ledger {path}: {problem}", path=str(path))


def _describe(exc: sqlite3.Error) -> str:
    """SQLite's terse messages, said so a user knows what to do."""
    text = str(exc)
    if "readonly" in text:
        return (
            "is read-only; hybridgate needs to write it (give write access, or pass "
            "another --ledger / HYBRIDGATE_LEDGER)"
        )
    if "not a database" in text or "malformed" in text:
        return "is not a readable SQLite database (truncated or corrupt?)"
    if "locked" in text:
        return "is locked by another process"
    if "unable to open" in text:
        return "cannot be opened (does its folder exist, and may this user write it?)"
    return text


def _tables(conn: Any) -> set[str]:
    if hasattr(conn, "tables"):  # PostgreSQL (postgres.PgConnection)
        return conn.tables()
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return {r[0] for r in rows}


def _read_version(conn: sqlite3.Connection) -> int:
    """The schema version without writing anything (read-only opens)."""
    if "schema_version" not in _tables(conn):
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _check_columns(conn: sqlite3.Connection, version: int) -> frozenset[str]:
    """Refuse a table that is not a hybridgate ledger at ``version``; return the columns it
    lacks only because a later migration adds them (read as NULL from a read-only file)."""
    if hasattr(conn, "columns"):  # PostgreSQL (postgres.PgConnection)
        have = conn.columns("requests")
    else:
        have = {r[1] for r in conn.execute('PRAGMA table_info("requests")').fetchall()}
    later = {c for c, v in ADDED_COLUMNS.items() if v > version}
    missing = [c for c in _ENTRY_COLUMNS if c not in have and c not in later]
    if missing:
        raise sqlite3.DatabaseError(
            f"its requests table lacks columns {', '.join(missing)}: not a hybridgate ledger"
        )
    return frozenset(later - have)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """Open ``path`` for reading without creating or changing any file.

    ``mode=ro`` reads a WAL ledger through its ``-shm`` index. A cleanly closed ledger has none,
    and a user who may not write its folder (a read-only mount, another user's data) cannot
    create one, so SQLite refuses with "attempt to write a readonly database". With no ``-wal``
    content there is nothing that index would add, so such a file is opened ``immutable``.
    """
    uri = path.resolve().as_uri()
    kw: dict[str, Any] = {"uri": True, "check_same_thread": False, "isolation_level": None}
    conn = sqlite3.connect(f"{uri}?mode=ro", **kw)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise  # rows live in the WAL: an immutable read would silently miss them
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", **kw)


def _attempts(attempts: list[dict] | None, content: bool) -> list[dict] | None:
    """A row's tier tries as stored: a tier's answer text only where content is kept."""
    if not attempts:
        return None
    if content:
        return [dict(a) for a in attempts]
    return [{k: v for k, v in a.items() if k != "answer"} for a in attempts]


def _flush_at_exit(ref: weakref.ReferenceType[Ledger]) -> None:
    """At interpreter exit, write (or spill) rows still queued by an unclosed ledger."""
    ledger = ref()
    if ledger is not None and not ledger._closed:
        ledger.close(flush_timeout=2.0)


# --------------------------------------------------------------------------- ledger


class Ledger:
    """Append-only record of every gateway call, safe to share across threads.

    >>> with Ledger("/tmp/ledger.sqlite") as ledger:
    ...     ledger.record(LedgerEntry(request_id="r1", ts=time.time(), route="cloud"))
    ...     ledger.cloud_spend(since=0)
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        store_content: bool = True,
        read_only: bool = False,
        redact: tuple[str, ...] = (),
    ) -> None:
        """Open (creating and migrating if needed) the ledger.

        Args:
            path: SQLite file; default :func:`default_ledger_path`. Missing parent folders are
                created 0700 and the file 0600. ``":memory:"`` gives a throwaway ledger.
            store_content: Keep messages and answers (secrets scrubbed). ``False`` stores NULL
                there, for deployments that must not retain prompts.
            read_only: Open for reading only (``report`` on a file it may not write); nothing
                is created or migrated, and writing raises ``LedgerError``.
            redact: Secret values (e.g. the configured API key) scrubbed from every stored
                string, whatever their shape.

        Raises:
            LedgerError: The file cannot be opened or written, is not a hybridgate ledger, or
                was written by a newer hybridgate; the message names the path.
        """
        self.url = str(path) if is_url(str(path)) else None
        """The PostgreSQL URL when the ledger is a database (``postgres.py``), else None."""
        if self.url is not None:
            self.path: Any = self.url
            self.where = display(self.url)
        else:
            self.path = Path(path) if path is not None and str(path) != ":memory:" else path
            if self.path is None:
                self.path = default_ledger_path()
            self.where = str(self.path)
        """Where, for messages and logs (a URL without its password)."""
        self._errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        if self.url is not None:
            from router.ledger import postgres

            self._errors = (sqlite3.Error, *postgres.errors())
        self.store_content = store_content
        self.read_only = read_only
        self._columns = _SELECT_COLUMNS
        """The SELECT list for entries (older read-only files lack newer columns)."""
        self._redact = tuple(v for v in redact if v and len(v) >= 4)
        # One connection guarded by a lock: SQLite serialises writers anyway, and a single
        # connection keeps per-write cost to one statement + commit.
        self._lock = threading.Lock()
        # Rows whose write failed (another process held the lock past the busy timeout, a full
        # disk): kept in order and written by a background flusher, so the caller still gets its
        # answer and rows == requests. What is still unwritten at close goes to a spill file
        # that the next open ingests.
        self._pending: deque[tuple[Any, ...]] = deque()
        self._pending_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._closed = False
        try:
            self._conn = self._connect_postgres() if self.url else self._connect()
        except self._errors as exc:
            raise _ledger_error(self.where, _describe(exc)) from None
        except OSError as exc:
            raise _ledger_error(self.where, exc.strerror or str(exc)) from None
        if not read_only and (self.url or isinstance(self.path, Path)):
            self._ingest_spill()
            atexit.register(_flush_at_exit, weakref.ref(self))

    def _connect_postgres(self) -> Any:
        """The same checks and migrations as a SQLite file, on a PostgreSQL database."""
        from router.ledger.postgres import PgConnection

        conn = PgConnection(self.url, read_only=self.read_only)  # type: ignore[arg-type]
        tables = conn.tables()
        if self.read_only and "requests" not in tables:
            conn.close()
            raise _ledger_error(self.where, "is not a hybridgate ledger (no requests table)")
        if not self.read_only:
            foreign = tables - {"requests", "labels", "events", "schema_version"}
            if tables and "schema_version" not in tables:
                conn.close()
                raise _ledger_error(
                    self.where,
                    f"is not a hybridgate ledger (it holds tables {', '.join(sorted(foreign))})",
                )
            with self._lock:
                try:
                    migrate(conn)  # under an advisory lock: gateways may start together
                except Exception as exc:
                    if type(exc).__name__ != "LedgerError":
                        raise
                    conn.close()
                    raise _ledger_error(self.where, str(exc)) from None
        self.version = _read_version(conn)
        self._columns = select_columns(_check_columns(conn, self.version))
        return conn

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            if not isinstance(self.path, Path) or not self.path.is_file():
                raise OSError(2, "no such file")
            conn = _connect_read_only(self.path)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if "requests" not in _tables(conn):
                conn.close()
                raise _ledger_error(self.where, "is not a hybridgate ledger (no requests table)")
            self.version = _read_version(conn)
            self._columns = select_columns(_check_columns(conn, self.version))
            return conn
        if isinstance(self.path, Path):
            from router._paths import private_file, tighten

            if self.path.exists():
                for suffix in ("", "-wal", "-shm"):
                    tighten(f"{self.path}{suffix}")
            else:
                private_file(self.path)  # SQLite gives -wal/-shm the main file's mode
        conn = sqlite3.connect(
            str(self.path),
            check_same_thread=False,
            isolation_level=None,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        tables = _tables(conn)
        if tables and "schema_version" not in tables:
            conn.close()
            raise _ledger_error(
                self.path,
                f"is not a hybridgate ledger (it holds tables {', '.join(sorted(tables))})",
            )
        if "requests" in tables:  # before WAL or a migration touches someone else's file
            _check_columns(conn, _read_version(conn))
        if isinstance(self.path, Path):
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        with self._lock:
            try:
                self.version = migrate(conn)  # schema version of the open file
            except Exception as exc:
                if type(exc).__name__ != "LedgerError":
                    raise
                conn.close()
                raise _ledger_error(self.where, str(exc)) from None
            # A write that changes nothing: a read-only file fails here, at construction,
            # rather than on the first paid request.
            conn.execute("UPDATE schema_version SET version = version")
        _check_columns(conn, self.version)
        return conn

    # -- writing -------------------------------------------------------------------

    def _scrub(self, text: str | None) -> str | None:
        text = _safe_text(text)
        if text is None or not self._redact:
            return text
        return redact_values(text, self._redact)

    def _entry_params(self, entry: LedgerEntry) -> tuple[Any, ...]:
        content = self.store_content
        scrub = self._scrub

        def as_json(value: Any) -> str | None:
            text = _to_json(value)
            return redact_values(text, self._redact) if text and self._redact else text

        return (
            str(entry.request_id),
            float(entry.ts),
            str(entry.route),
            scrub(entry.reason) or "",
            entry.score,
            entry.confidence,
            int(bool(entry.escalated)),
            scrub(entry.model) or "",
            scrub(entry.requested_model) or "",
            int(entry.prompt_tokens or 0),
            int(entry.completion_tokens or 0),
            float(entry.cost_usd or 0.0),
            float(entry.baseline_cost_usd or 0.0),
            float(entry.latency_ms or 0.0),
            int(bool(entry.cache_hit)),
            scrub(entry.error_type),
            scrub(entry.error_message),
            scrub(entry.policy_version) or "",
            scrub(entry.adapter_version),
            scrub(entry.user),
            int(bool(entry.stream)),
            as_json(entry.messages) if content else None,
            scrub(entry.answer) if content else None,
            as_json(entry.tags),
            scrub(entry.tenant),
            as_json(_attempts(entry.attempts, content)),
        )

    def record(self, entry: LedgerEntry) -> None:
        """Append one call. Never raises for storage trouble: the row is written later instead.

        Content is scrubbed of secrets. If the write fails (the file is locked by another
        process past the busy timeout, the disk is full), the row joins an in-order queue that a
        background thread keeps retrying; :meth:`close` flushes it, spilling what still cannot
        be written to ``<ledger>.pending.jsonl`` for the next open to ingest.

        Args:
            entry: The call to record.

        Raises:
            LedgerError: The ledger was opened ``read_only``.
        """
        if self.read_only or self._closed:
            why = "is closed" if self._closed else "was opened read-only"
            raise _ledger_error(self.where, f"{why}; cannot record")
        params = self._entry_params(entry)
        with self._pending_lock:
            behind = bool(self._pending)
            if behind:  # keep order: once behind, stay behind until the queue drains
                self._defer(params)
                return
        try:
            with self._lock:
                self._conn.execute(_INSERT_SQL, params)
        except self._errors as exc:
            log.warning(
                "ledger %s: write failed (%s); the row is queued and retried", self.where, exc
            )
            with self._pending_lock:
                self._defer(params)

    @property
    def pending(self) -> int:
        """Rows recorded but not yet written (the file was locked or failing)."""
        with self._pending_lock:
            return len(self._pending)

    def _defer(self, params: tuple[Any, ...]) -> None:
        """Queue a row (caller holds ``_pending_lock``) and make sure a flusher runs."""
        if len(self._pending) >= MAX_PENDING_ROWS:
            self._spill([params])  # memory is bounded; the row still survives on disk
            return
        self._pending.append(params)
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(
                target=self._flush_loop, name="hybridgate-ledger-flush", daemon=True
            )
            self._flusher.start()

    def _flush_once(self) -> bool:
        """Write the queued rows in one transaction; True when the queue is empty after.

        The connection lock is held from snapshot to pop, so two flushers (the background
        thread and :meth:`flush`) never write the same rows twice.
        """
        with self._lock:
            with self._pending_lock:
                batch = list(self._pending)
            if not batch:
                return True
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(_INSERT_SQL, batch)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except self._errors:
                return False
            with self._pending_lock:
                for _ in batch:
                    self._pending.popleft()
                return not self._pending

    def _flush_loop(self) -> None:
        delay = 0.05
        while not self._flush_once():
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def flush(self, timeout: float = 10.0) -> bool:
        """Try to write every queued row within ``timeout`` seconds; True when none is left."""
        end = time.monotonic() + timeout
        while not self._flush_once():
            if time.monotonic() >= end:
                return False
            time.sleep(0.05)
        return True

    def _spill_path(self) -> Path:
        if self.url is not None:  # a database has no folder: keep its spill in the data home
            import hashlib

            from router._paths import data_home

            digest = hashlib.sha256(self.where.encode()).hexdigest()[:16]
            return data_home() / f"ledger-{digest}.pending.jsonl"
        return Path(f"{self.path}.pending.jsonl")

    def _spill(self, rows: list[tuple[Any, ...]]) -> None:
        """Append rows to the private spill file (the last resort when SQLite will not take them)."""
        from router._paths import private_file

        try:
            target = private_file(self._spill_path())
            with open(target, "a", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(list(row), ensure_ascii=True) + "\n")
        except OSError as exc:
            log.error("ledger %s: %d row(s) could not be saved: %s", self.where, len(rows), exc)
            return
        log.warning("ledger %s: %d row(s) saved to %s", self.where, len(rows), target)

    def _ingest_spill(self) -> None:
        """Write rows an earlier process spilled; claim the file by renaming it first."""
        spill = self._spill_path()
        if not spill.exists():
            return
        claimed = spill.with_name(f"{spill.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            spill.rename(claimed)
        except OSError:
            return  # another process claimed it
        rows = []
        for line in claimed.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn last line from a crash mid-spill
            if isinstance(row, list) and 0 < len(row) <= len(_ENTRY_COLUMNS):
                # columns are only ever appended: an older spill lacks the newest ones
                rows.append(tuple(row) + (None,) * (len(_ENTRY_COLUMNS) - len(row)))
        with self._pending_lock:
            self._pending.extendleft(reversed(rows))
        if self.flush(timeout=BUSY_TIMEOUT_MS / 1000):
            claimed.unlink(missing_ok=True)
        else:  # still locked: keep them queued; the flusher (or close) takes over
            claimed.unlink(missing_ok=True)
            with self._pending_lock:
                if self._pending and (self._flusher is None or not self._flusher.is_alive()):
                    self._flusher = threading.Thread(
                        target=self._flush_loop, name="hybridgate-ledger-flush", daemon=True
                    )
                    self._flusher.start()

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
            self._scrub(local_answer) if self.store_content else None,
            local_confidence,
            float(local_cost_usd),
            time.time() if ts is None else float(ts),
        )
        sql = "INSERT OR REPLACE INTO labels ({}) VALUES ({})".format(
            ", ".join(_LABEL_COLUMNS), ", ".join("?" * len(_LABEL_COLUMNS))
        )
        with self._lock:
            self._conn.execute(sql, params)

    def record_event(
        self, kind: str, *, request_id: str | None = None, ts: float | None = None
    ) -> None:
        """Count one happening that is not a request (e.g. :data:`EVENT_SHADOW_DROPPED`).

        Events live in their own table, so request totals and costs in reports are unchanged;
        ``count_events`` sums them per window. A failed write is logged, never raised: losing a
        count must not fail the request that caused it.

        Args:
            kind: What happened.
            request_id: The request it concerns, if any.
            ts: When; default now.

        Raises:
            LedgerError: The ledger was opened ``read_only``.
        """
        if self.read_only:
            raise _ledger_error(self.where, "opened read-only; cannot record")
        params = (time.time() if ts is None else float(ts), str(kind), request_id)
        try:
            with self._lock:
                self._conn.execute(
                    "INSERT INTO events (ts, kind, request_id) VALUES (?, ?, ?)", params
                )
        except self._errors as exc:
            log.warning("ledger %s: could not record event %s (%s)", self.where, kind, exc)

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
        sql = f"SELECT {self._columns} FROM requests r"
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
            f"SELECT {self._columns}, {label_cols} FROM labels l "
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

    def cloud_spend(self, *, since: float, tenant: str | None = None) -> float:
        """USD spent on the cloud since ``since`` (for the daily budget).

        Args:
            since: Unix time; rows with ``ts >= since`` count.
            tenant: Count only this tenant's rows (its own budget); None -> every row.

        Returns:
            Sum of ``cost_usd`` over cloud rows, and over local rows whose cascade also asked
            cloud tiers (``attempts``: an explored request).
        """
        if tenant is None:
            row = self._query(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM requests "
                "WHERE (route = 'cloud' OR attempts IS NOT NULL) AND ts >= ?",
                (float(since),),
            )
        else:
            row = self._query(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM requests "
                "WHERE tenant = ? AND (route = 'cloud' OR attempts IS NOT NULL) AND ts >= ?",
                (tenant, float(since)),
            )
        return float(row[0][0])

    def count(self) -> int:
        """Number of recorded calls."""
        return int(self._query("SELECT COUNT(*) FROM requests")[0][0])

    def count_events(
        self, kind: str, *, since: float | None = None, until: float | None = None
    ) -> int:
        """How many ``kind`` events happened in ``[since, until)``.

        A read-only ledger from before schema 2 has no events table: that reads as 0.
        """
        sql, params = "SELECT COUNT(*) FROM events WHERE kind = ?", [str(kind)]
        if since is not None:
            sql += " AND ts >= ?"
            params.append(float(since))
        if until is not None:
            sql += " AND ts < ?"
            params.append(float(until))
        try:
            return int(self._query(sql, tuple(params))[0][0])
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise

    def shadow_summary(
        self, *, since: float | None = None, until: float | None = None
    ) -> dict[str, int]:
        """Shadow-labelling health for ``hybridgate report``: jobs dropped at the queue cap.

        Dropped jobs are labels the router never gets to learn from; a non-zero count says to
        raise ``shadow.max_pending`` or ``shadow.workers``.
        """
        return {"dropped": self.count_events(EVENT_SHADOW_DROPPED, since=since, until=until)}

    def close(self, *, flush_timeout: float = 10.0) -> None:
        """Write queued rows (spilling what cannot be written), then close the connection."""
        if self._closed:
            return
        if not self.flush(timeout=flush_timeout):
            with self._pending_lock:
                rows = list(self._pending)
                self._pending.clear()
            if rows:
                self._spill(rows)
        with self._lock:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger(path={self.where!r}, store_content={self.store_content})"


__all__ = ["BUSY_TIMEOUT_MS", "MAX_PENDING_ROWS", "Ledger"]
