"""Keys files, the bind check and the tenant column: bad input is a clear error."""

from __future__ import annotations

import sqlite3

import pytest

from router._errors import PolicyError
from router.ledger import Ledger, LedgerEntry
from router.ledger.schema import MIGRATIONS, migrate
from router.server.keys import KeyRing, hash_key
from router.server.run import ServeConfig, check_bind, is_loopback


def _ring(tmp_path, text: str) -> KeyRing:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    return KeyRing.load(path)


def test_keys_plain_and_hashed_map_to_grants(tmp_path) -> None:
    ring = _ring(
        tmp_path,
        f"sk-plain-key-1: alpha\n'{hash_key('sk-hashed-key-2')}': {{tenant: beta, daily_usd: 2,"
        " routes: [local]}\n",
    )
    assert ring.lookup("sk-plain-key-1").tenant.name == "alpha"
    beta = ring.lookup("sk-hashed-key-2")
    assert (beta.tenant.name, beta.tenant.daily_usd, beta.pinned_route) == ("beta", 2.0, "local")
    assert ring.lookup("sk-unknown-key") is None and ring.lookup(None) is None
    assert ring.tenants == ["alpha", "beta"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- a\n- b\n", "mapping of API key"),
        ("short: a\n", "at least 8 characters"),
        ("sha256:abc: a\n", "64 hex digits"),
        ("sk-good-key-1: {tenant: a, budget: 3}\n", "unknown field(s) budget"),
        ("sk-good-key-1: {tenant: a, routes: [moon]}\n", "routes may only hold"),
        ("sk-good-key-1: {tenant: a, daily_usd: -1}\n", "daily_usd must be a number >= 0"),
        ("sk-good-key-1: {daily_usd: 1}\n", "'tenant' must be a non-empty name"),
        ("sk-good-key-1: [\n", "not valid YAML"),
    ],
)
def test_bad_keys_files_name_the_problem(tmp_path, text: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        _ring(tmp_path, text)


def test_missing_keys_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(PolicyError, match="cannot read the keys file"):
        KeyRing.load(tmp_path / "nope.yaml")


def test_non_loopback_without_keys_refuses_unless_forced() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    with pytest.raises(PolicyError, match="anyone who can reach it"):
        check_bind(ServeConfig(host="0.0.0.0"))
    check_bind(ServeConfig(host="0.0.0.0", allow_no_auth=True))
    check_bind(ServeConfig(host="0.0.0.0", keys="keys.yaml"))
    check_bind(ServeConfig(host="127.0.0.1"))


def test_cli_serve_refuses_public_bind_without_keys() -> None:
    from typer.testing import CliRunner

    from router.cli import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "--keys" in result.output


def test_a_schema_2_ledger_reads_and_migrates_with_the_tenant_column(tmp_path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, MIGRATIONS[:2])  # a ledger written before tenants existed
    conn.execute("INSERT INTO requests (request_id, ts, route) VALUES ('old-1', 1.0, 'cloud')")
    conn.close()
    old = Ledger(path, read_only=True)
    assert [(r.request_id, r.tenant) for r in old.rows()] == [("old-1", None)]
    writable = Ledger(path)
    writable.record(LedgerEntry(request_id="new-1", ts=2.0, route="cloud", tenant="team-a"))
    writable.flush()
    assert [(r.request_id, r.tenant) for r in writable.rows()] == [
        ("old-1", None),
        ("new-1", "team-a"),
    ]
    assert writable.cloud_spend(since=0, tenant="team-a") == 0.0
    writable.close()
