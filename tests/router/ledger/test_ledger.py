"""The cost ledger: round-trips, filters, secrets, migrations, threads, labels, budget sums."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from router.errors import HybridGateError, LedgerError
from router.ledger import (
    MIGRATIONS,
    Ledger,
    LedgerEntry,
    Migration,
    default_ledger_path,
    scrub_secrets,
)
from router.ledger import schema as ledger_schema
from router.ledger import store as ledger_store


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    """The same behaviour on both stores: a SQLite file, and a real PostgreSQL database."""
    where = tmp_path / "ledger.sqlite"
    if request.param == "postgres":
        where = request.getfixturevalue("pg_url")
    with Ledger(where) as led:
        yield led


def _raw(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_record_round_trips_every_field(ledger: Ledger) -> None:
    entry = LedgerEntry(
        request_id="r1",
        ts=1_700_000_000.5,
        route="local",
        reason="score>=0.62",
        score=0.71,
        confidence=0.9,
        escalated=True,
        model="smollm2-135m",
        requested_model="gpt-4o-mini",
        prompt_tokens=12,
        completion_tokens=7,
        cost_usd=0.0001,
        baseline_cost_usd=0.002,
        latency_ms=35.5,
        cache_hit=True,
        error_type="BatcherTimeout",
        error_message="waited 2s",
        policy_version="p-3",
        adapter_version="a-7",
        user="tenant-a",
        stream=True,
        messages=[{"role": "user", "content": "héllo ✓"}],
        answer="hi",
        tags={"team": "support"},
    )
    ledger.record(entry)
    assert ledger.rows() == [entry]
    assert ledger.count() == 1


def test_default_path_honours_hybridgate_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "deep" / "home"
    monkeypatch.setenv("HYBRIDGATE_HOME", str(home))
    assert default_ledger_path() == home / "ledger.sqlite"
    with Ledger() as led:
        led.record(LedgerEntry(request_id="x", ts=1.0, route="cloud"))
    assert (home / "ledger.sqlite").is_file()


def test_default_path_falls_back_to_platformdirs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import platformdirs

    monkeypatch.delenv("HYBRIDGATE_HOME", raising=False)
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda app: str(tmp_path / app))
    assert default_ledger_path() == tmp_path / "hybridgate" / "ledger.sqlite"


def test_file_uses_wal_so_readers_do_not_block_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path) as led:
        led.record(LedgerEntry(request_id="a", ts=1.0, route="cloud"))
        assert _raw(path, "PRAGMA journal_mode") == [("wal",)]
        assert led._conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL


def test_rows_filters_by_time_route_and_limit(ledger: Ledger) -> None:
    for i, route in enumerate(["local", "cloud", "local", "cache", "cloud"]):
        ledger.record(LedgerEntry(request_id=f"r{i}", ts=100.0 + i, route=route))
    assert [e.request_id for e in ledger.rows(since=102)] == ["r2", "r3", "r4"]
    assert [e.request_id for e in ledger.rows(until=102)] == ["r0", "r1"]
    assert [e.request_id for e in ledger.rows(route="cloud")] == ["r1", "r4"]
    assert [e.request_id for e in ledger.rows(since=101, route="local")] == ["r2"]
    assert [e.request_id for e in ledger.rows(limit=2)] == ["r0", "r1"]
    with pytest.raises(ValueError, match="limit"):
        ledger.rows(limit=-1)


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-AbCdEf0123456789xyzXYZ",
        "sk-ant-api03-abcdefghijklmnopqrstuv",
        "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
        "api_key=abcd1234efgh",
        'api_key: "abcd1234efgh"',
        "OPENAI_API_KEY=zzzz9999yyyy",
        "AKIAABCDEFGHIJKLMNOP",
    ],
)
def test_secrets_never_reach_the_file(tmp_path: Path, secret: str) -> None:
    path = tmp_path / "l.sqlite"
    text = f"please use {secret} for the call"
    with Ledger(path) as led:
        led.record(
            LedgerEntry(
                request_id="s",
                ts=1.0,
                route="cloud",
                messages=[{"role": "user", "content": text}],
                answer=text,
                error_message=text,
            )
        )
        led.add_label("s", judge="j", label=1.0, local_answer=text)
        entry = led.rows()[0]
    raw = b"".join(f.read_bytes() for f in tmp_path.iterdir() if f.name.startswith("l.sqlite"))
    value = secret.split("=")[-1].split(" ")[-1].strip('"')
    assert value.encode() not in raw
    assert "[REDACTED]" in entry.answer
    assert "[REDACTED]" in entry.messages[0]["content"]  # messages stay valid JSON
    assert entry.answer.startswith("please use ")


def test_scrub_leaves_ordinary_text_alone() -> None:
    text = "The key insight: tokens are cheap. Ask about my bank password reset policy."
    assert scrub_secrets(text) == text


def test_store_content_false_keeps_no_prompts_or_answers(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path, store_content=False) as led:
        led.record(
            LedgerEntry(
                request_id="p",
                ts=1.0,
                route="local",
                messages=[{"role": "user", "content": "private"}],
                answer="also private",
                prompt_tokens=3,
            )
        )
        led.add_label("p", judge="j", label=0.0, local_answer="private too")
        entry = led.rows()[0]
    assert entry.messages is None and entry.answer is None and entry.prompt_tokens == 3
    assert _raw(path, "SELECT messages, answer FROM requests") == [(None, None)]
    assert _raw(path, "SELECT local_answer FROM labels") == [(None,)]


def test_record_never_raises_on_awkward_content(ledger: Ledger) -> None:
    loop: list = []
    loop.append(loop)
    awkward = [
        [{"role": "user", "content": "lone surrogate \ud800 here"}],
        [{"role": "user", "content": b"bytes", "extra": object()}],
        loop,
    ]
    for i, messages in enumerate(awkward):
        ledger.record(
            LedgerEntry(
                request_id=f"a{i}",
                ts=float(i),
                route="local",
                messages=messages,
                answer="bad \udcff answer",
                error_message="bad \ud800",
            )
        )
    rows = ledger.rows()
    assert len(rows) == 3
    assert "lone surrogate" in rows[0].messages[0]["content"]
    assert rows[0].answer.startswith("bad ")


def test_concurrent_writers_lose_nothing(ledger: Ledger) -> None:
    def write(t: int) -> None:
        for i in range(100):
            ledger.record(LedgerEntry(request_id=f"{t}-{i}", ts=float(i), route="local"))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for _ in range(20):
        ledger.rows(limit=5)  # reads interleave with writes
    for th in threads:
        th.join()
    assert ledger.count() == 800
    assert len({e.request_id for e in ledger.rows()}) == 800


def test_second_ledger_on_same_file_sees_rows(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    with Ledger(path) as writer, Ledger(path) as reader:
        writer.record(LedgerEntry(request_id="x", ts=1.0, route="cloud", cost_usd=0.5))
        assert reader.cloud_spend(since=0) == 0.5


def test_cloud_spend_sums_cloud_rows_since(ledger: Ledger) -> None:
    ledger.record(LedgerEntry(request_id="a", ts=10.0, route="cloud", cost_usd=1.0))
    ledger.record(LedgerEntry(request_id="b", ts=20.0, route="cloud", cost_usd=2.5))
    ledger.record(LedgerEntry(request_id="c", ts=20.0, route="local", cost_usd=9.0))
    ledger.record(LedgerEntry(request_id="d", ts=30.0, route="cloud", cost_usd=0.25))
    assert ledger.cloud_spend(since=15) == pytest.approx(2.75)
    assert ledger.cloud_spend(since=0) == pytest.approx(3.75)
    assert ledger.cloud_spend(since=31) == 0.0


def test_labels_join_their_requests_and_can_be_replaced(ledger: Ledger) -> None:
    ledger.record(LedgerEntry(request_id="a", ts=1.0, route="cloud", answer="42"))
    ledger.record(LedgerEntry(request_id="b", ts=2.0, route="cloud"))
    ledger.add_label("a", judge="exact", label=0.0, local_answer="41", local_confidence=0.4, ts=5.0)
    ledger.add_label("a", judge="exact", label=1.0, local_answer="42", local_cost_usd=1e-5)
    ledger.add_label("orphan", judge="exact", label=1.0, local_answer="?")
    pairs = ledger.labelled()
    assert len(pairs) == 1
    entry, label = pairs[0]
    assert entry.request_id == "a" and entry.answer == "42"
    assert (label.label, label.local_answer, label.local_cost_usd) == (1.0, "42", 1e-5)


def test_fresh_file_is_at_newest_schema(ledger: Ledger) -> None:
    assert ledger.version == MIGRATIONS[-1].version
    rows = ledger._query("SELECT version FROM schema_version")
    assert [tuple(r) for r in rows] == [(MIGRATIONS[-1].version,)]


def test_opening_an_older_file_applies_new_migrations(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "old.sqlite"
    with Ledger(path) as old:  # written at today's newest version
        old.record(LedgerEntry(request_id="kept", ts=1.0, route="cloud", cost_usd=0.5))
    newest = MIGRATIONS[-1].version
    extra = Migration(
        version=newest + 1,
        description="test: a new column",
        statements=("ALTER TABLE requests ADD COLUMN region TEXT DEFAULT 'eu'",),
    )
    monkeypatch.setattr(ledger_schema, "MIGRATIONS", (*MIGRATIONS, extra))
    with Ledger(path) as new:
        assert new.version == newest + 1
        assert [e.request_id for e in new.rows()] == ["kept"]
        new.record(LedgerEntry(request_id="after", ts=2.0, route="local"))
    assert _raw(path, "SELECT request_id, region FROM requests ORDER BY id") == [
        ("kept", "eu"),
        ("after", "eu"),
    ]
    assert _raw(path, "SELECT version FROM schema_version") == [(newest + 1,)]


def test_failed_migration_leaves_file_untouched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(path).close()
    bad = Migration(
        version=MIGRATIONS[-1].version + 1,
        description="broken",
        statements=("CREATE TABLE t (x)", "NOT SQL AT ALL"),
    )
    monkeypatch.setattr(ledger_schema, "MIGRATIONS", (*MIGRATIONS, bad))
    with pytest.raises(LedgerError, match=str(path)):
        Ledger(path)
    assert _raw(path, "SELECT version FROM schema_version") == [(MIGRATIONS[-1].version,)]
    assert _raw(path, "SELECT name FROM sqlite_master WHERE name = 't'") == []


def test_file_from_a_newer_hybridgate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    Ledger(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(HybridGateError, match="newer"):
        Ledger(path)


def test_messages_are_stored_as_json_text(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    msgs = [{"role": "user", "content": "hi"}]
    with Ledger(path) as led:
        led.record(LedgerEntry(request_id="j", ts=1.0, route="local", messages=msgs))
    (stored,) = _raw(path, "SELECT messages FROM requests")[0]
    assert json.loads(stored) == msgs


def test_closed_ledger_refuses_writes(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "c.sqlite")
    led.close()
    with pytest.raises(LedgerError, match="closed"):
        led.record(LedgerEntry(request_id="z", ts=1.0, route="local"))


# -- the ledger never loses a row, never raises sqlite3 at the caller (issue 9, item 4) --------


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's writer: BEGIN IMMEDIATE takes SQLite's write lock until rollback."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_locked_ledger_queues_rows_and_writes_them_when_the_lock_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_store, "BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "l.sqlite"
    led = Ledger(path)
    led._conn.execute("PRAGMA busy_timeout = 100")
    other = _hold_write_lock(path)
    for i in range(5):
        led.record(LedgerEntry(request_id=f"r{i}", ts=float(i), route="cloud"))  # no raise
    assert led.pending >= 1
    other.execute("ROLLBACK")
    other.close()
    assert led.flush(timeout=5)
    assert [e.request_id for e in led.rows()] == [f"r{i}" for i in range(5)]  # order kept
    led.close()


def test_rows_still_locked_at_close_are_spilled_and_ingested_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "l.sqlite"
    led = Ledger(path)
    led._conn.execute("PRAGMA busy_timeout = 50")
    other = _hold_write_lock(path)
    led.record(LedgerEntry(request_id="paid", ts=1.0, route="cloud", cost_usd=0.25))
    led.close(flush_timeout=0.2)
    spill = Path(f"{path}.pending.jsonl")
    assert spill.exists() and (spill.stat().st_mode & 0o777) == 0o600
    other.execute("ROLLBACK")
    other.close()
    with Ledger(path) as again:
        rows = again.rows()
    assert [(r.request_id, r.cost_usd) for r in rows] == [("paid", 0.25)]
    assert not spill.exists()


def test_read_only_ledger_is_a_clear_error_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ro.sqlite"
    Ledger(path).close()
    real_connect = sqlite3.connect

    def read_only_connect(database, *args, **kwargs):  # root ignores chmod; SQLite does not
        if str(database) == str(path):
            kwargs["uri"] = True
            database = f"{path.as_uri()}?mode=ro"
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(ledger_store.sqlite3, "connect", read_only_connect)
    with pytest.raises(LedgerError, match=f"{path}.*read-only"):
        Ledger(path)


def test_read_only_mode_reads_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path) as led:
        led.record(LedgerEntry(request_id="r1", ts=1.0, route="local"))
    with Ledger(path, read_only=True) as ro:
        assert [e.request_id for e in ro.rows()] == ["r1"]
        with pytest.raises(LedgerError, match="read-only"):
            ro.record(LedgerEntry(request_id="r2", ts=2.0, route="local"))
    with pytest.raises(LedgerError, match="missing.sqlite"):
        Ledger(tmp_path / "missing.sqlite", read_only=True)


@pytest.mark.parametrize("kind", ["foreign", "garbage", "wrong_columns"])
def test_foreign_or_corrupt_file_is_refused_by_name_and_left_alone(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "other.sqlite"
    if kind == "garbage":
        path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    else:
        conn = sqlite3.connect(path)
        if kind == "foreign":
            conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
        else:
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (1)")
            conn.execute("CREATE TABLE requests (id INTEGER, ts REAL)")
            conn.execute("CREATE TABLE labels (request_id TEXT)")
        conn.commit()
        conn.close()
    before = path.read_bytes()
    with pytest.raises(LedgerError, match=str(path)):
        Ledger(path)
    assert path.read_bytes() == before


def test_ledger_files_are_private(tmp_path: Path) -> None:
    home = tmp_path / "home" / "data"
    with Ledger(home / "ledger.sqlite") as led:
        led.record(LedgerEntry(request_id="r1", ts=1.0, route="local"))
        for name in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
            assert (home / name).stat().st_mode & 0o777 == 0o600, name
    assert home.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "home").stat().st_mode & 0o777 == 0o700


def test_configured_secret_values_are_redacted_whatever_their_shape(tmp_path: Path) -> None:
    key = "plainkey-1234-abcd"  # not sk- shaped, so the pattern scrubber misses it
    with Ledger(tmp_path / "l.sqlite", redact=(key,)) as led:
        led.record(
            LedgerEntry(
                request_id="r1",
                ts=1.0,
                route="cloud",
                error_message=f"Incorrect API key provided: {key}.",
                messages=[{"role": "user", "content": f"my key {key}"}],
            )
        )
        row = led.rows()[0]
    assert key not in (row.error_message or "") and key not in json.dumps(row.messages)
