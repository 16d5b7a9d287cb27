"""The test stores clean up after themselves: a PostgreSQL cluster is 50-200 MB on disk, and
the suite starts one per run (CI machines and laptops filled ``/tmp`` before this held)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from router.devtools import services
from tests.services import postgres_server


def test_stopping_postgres_removes_its_cluster_and_a_second_stop_is_harmless() -> None:
    server = postgres_server()
    assert (server.data / "PG_VERSION").exists()
    server.stop()
    assert not server.workdir.exists()
    server.stop()


def test_a_postgres_that_fails_to_start_leaves_no_files(tmp_path, monkeypatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    initdb = bindir / "initdb"
    initdb.write_text("#!/bin/sh\nexit 3\n")
    initdb.chmod(0o755)
    temp_root = tmp_path / "temp"
    temp_root.mkdir(mode=0o777)
    temp_root.chmod(0o777)
    monkeypatch.setattr(services, "postgres_bin", lambda: bindir)
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    with pytest.raises(subprocess.CalledProcessError):
        services.PostgresServer()
    assert list(Path(temp_root).iterdir()) == []
