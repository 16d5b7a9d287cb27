"""The ledger on a real PostgreSQL: many writers, migrations racing, budgets across gateways."""

from __future__ import annotations

import json
import threading

import pytest

from router.errors import BudgetExceeded, LedgerError
from router.ledger import MIGRATIONS, Ledger, LedgerEntry
from router.ledger.postgres import display, to_postgres
from tests.services import free_port


def test_two_gateways_with_many_threads_lose_nothing_and_share_no_id(pg_url) -> None:
    ledgers = [Ledger(pg_url), Ledger(pg_url)]

    def write(led: Ledger, t: int) -> None:
        for i in range(100):
            led.record(LedgerEntry(request_id=f"{t}-{i}", ts=float(i), route="cloud"))

    threads = [threading.Thread(target=write, args=(ledgers[t % 2], t)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    reader = ledgers[0]
    assert reader.count() == 800
    assert len({e.request_id for e in reader.rows()}) == 800
    ids = reader._query("SELECT COUNT(DISTINCT id) FROM requests")
    assert ids[0][0] == 800
    for led in ledgers:
        led.close()


def test_gateways_starting_together_migrate_once(pg_url) -> None:
    opened: list[Ledger] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(Ledger(pg_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and len(opened) == 6
    assert {led.version for led in opened} == {MIGRATIONS[-1].version}
    versions = opened[0]._query("SELECT version FROM schema_version")
    assert [tuple(v) for v in versions] == [(MIGRATIONS[-1].version,)]
    for led in opened:
        led.close()


def test_a_password_never_reaches_messages_or_repr(pg_url) -> None:
    url = f"postgresql://app:hunter2secret@127.0.0.1:{free_port()}/ledger"
    with pytest.raises(LedgerError) as err:
        Ledger(url)
    assert "hunter2secret" not in str(err.value) and "app:***@127.0.0.1" in str(err.value)
    assert display(url) == url.replace("hunter2secret", "***")
    with Ledger(pg_url) as led:
        assert repr(led) == f"Ledger(path={pg_url!r}, store_content=True)"


def test_read_only_reads_and_refuses_writes(pg_url) -> None:
    with Ledger(pg_url) as led:
        led.record(LedgerEntry(request_id="a", ts=1.0, route="cloud", cost_usd=0.5))
    with Ledger(pg_url, read_only=True) as ro:
        assert [e.request_id for e in ro.rows()] == ["a"]
        with pytest.raises(LedgerError, match="read-only"):
            ro.record(LedgerEntry(request_id="b", ts=2.0, route="cloud"))


def test_an_empty_database_read_only_is_not_a_ledger(pg_url) -> None:
    with pytest.raises(LedgerError, match="not a hybridgate ledger"):
        Ledger(pg_url, read_only=True)


def test_the_daily_budget_counts_every_gateways_spend(pg_url, tmp_path) -> None:
    """Two gateways, one Postgres ledger: the second sees what the first spent."""
    from router.client import HybridClient
    from router.devtools.replay import ReplayCloud
    from router.policy.io import policy_from_dict

    question = "q " * 40
    with ReplayCloud({question.strip(): "a"}, model="gpt-4-1106-preview") as cloud:
        policy = policy_from_dict(
            {
                "mode": "cloud",
                "cloud": {"model": cloud.model, "api_base": cloud.base_url, "max_retries": 0},
                "cache": {"enabled": False},
                "budget": {"daily_usd": 0.0002, "on_exceeded": "fail"},
            }
        )
        first, second = (HybridClient(policy=policy, ledger=pg_url) for _ in range(2))
        ask = [{"role": "user", "content": question.strip()}]
        first.chat.completions.create(messages=ask)  # spends past the 0.0002 USD cap
        with pytest.raises(BudgetExceeded):
            second.chat.completions.create(messages=ask)
        first.close()
        second.close()
    with Ledger(pg_url, read_only=True) as led:
        assert [(r.route, r.error_type) for r in led.rows()] == [
            ("cloud", None),
            ("none", "BudgetExceeded"),  # refused before routing: no call was made
        ]


def test_report_reads_a_postgres_ledger(pg_url) -> None:
    from typer.testing import CliRunner

    from router.cli import app

    with Ledger(pg_url) as led:
        for i in range(3):
            led.record(
                LedgerEntry(
                    request_id=f"r{i}",
                    ts=float(i),
                    route="cloud",
                    cost_usd=0.01,
                    baseline_cost_usd=0.01,
                )
            )
    result = CliRunner().invoke(app, ["report", "--ledger", pg_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["totals"]["requests"] == 3
    assert data["totals"]["cost_usd"] == pytest.approx(0.03)


def test_statements_in_postgres_dialect() -> None:
    assert to_postgres("SELECT * FROM requests WHERE ts >= ? AND route = ?") == (
        "SELECT * FROM requests WHERE ts >= %s AND route = %s"
    )
    upsert = to_postgres(
        "INSERT OR REPLACE INTO labels (request_id, judge, label) VALUES (?, ?, ?)"
    )
    assert upsert == (
        "INSERT INTO labels (request_id, judge, label) VALUES (%s, %s, %s) "
        "ON CONFLICT (request_id) DO UPDATE SET judge = EXCLUDED.judge, label = EXCLUDED.label"
    )
    ddl = to_postgres(
        "CREATE TABLE t (\n id INTEGER PRIMARY KEY AUTOINCREMENT,\n ts REAL NOT NULL,\n user TEXT\n)"
    )
    assert "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" in ddl
    assert "ts DOUBLE PRECISION NOT NULL" in ddl and '"user" TEXT' in ddl
    assert "pg_advisory_xact_lock" in to_postgres("BEGIN IMMEDIATE")


def test_rows_written_while_the_server_restarts_are_kept() -> None:
    """A dropped connection fails one write (queued, not lost); the retry reconnects."""
    from tests.services import postgres_server

    server = postgres_server()
    try:
        url = server.database()
        led = Ledger(url)
        led.record(LedgerEntry(request_id="before", ts=1.0, route="cloud"))
        server.restart()
        for i in range(5):
            led.record(LedgerEntry(request_id=f"after-{i}", ts=2.0 + i, route="cloud"))
        assert led.flush(timeout=30)
        assert [e.request_id for e in led.rows()] == ["before"] + [f"after-{i}" for i in range(5)]
        led.close()
    finally:
        server.stop()
