"""Real services for the tests that need them (``router.devtools.services``).

CI installs them (``.ci/run``) and sets ``CI_REQUIRE_SERVICES=1``, so there a missing server
fails the run instead of skipping its tests; on a laptop without ``redis-server`` they skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from router.devtools.services import PostgresServer, RedisServer, free_port, postgres_bin


def redis_server(workdir: Path) -> RedisServer:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI_REQUIRE_SERVICES") == "1":
            pytest.fail("redis-server is not installed, and CI_REQUIRE_SERVICES=1 requires it")
        pytest.skip("needs redis-server")
    return RedisServer(workdir)


def postgres_server() -> PostgresServer:
    if postgres_bin() is None:
        if os.environ.get("CI_REQUIRE_SERVICES") == "1":
            pytest.fail("PostgreSQL is not installed, and CI_REQUIRE_SERVICES=1 requires it")
        pytest.skip("needs PostgreSQL (initdb, pg_ctl)")
    return PostgresServer()


__all__ = ["free_port", "postgres_server", "redis_server"]
