"""Real services for the tests that need them (``router.devtools.services``).

CI installs them (``.ci/run``) and sets ``CI_REQUIRE_SERVICES=1``, so there a missing server
fails the run instead of skipping its tests; on a laptop without ``redis-server`` they skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from router.devtools.services import RedisServer, free_port


def redis_server(workdir: Path) -> RedisServer:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI_REQUIRE_SERVICES") == "1":
            pytest.fail("redis-server is not installed, and CI_REQUIRE_SERVICES=1 requires it")
        pytest.skip("needs redis-server")
    return RedisServer(workdir)


__all__ = ["free_port", "redis_server"]
