"""Real stores started for tests and benchmarks: ``redis-server`` and PostgreSQL on free
loopback ports.

Not for production (run Redis the way your team runs it); this only gives the test suite and
``benchmarks/cache_stores.py`` a real server without mocks.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server`` in ``workdir``, no persistence, loopback only; ``stop()`` ends it."""

    def __init__(self, workdir: Path, *, binary: str | None = None) -> None:
        binary = binary or shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError(
                "redis-server is not installed (Debian: apt-get install redis-server)"
            )
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not self._ping():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def _send(self, command: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(command + b"\r\n")
            return s.recv(64)

    def _ping(self) -> bool:
        try:
            return self._send(b"PING").startswith(b"+PONG")
        except OSError:
            return False

    def flush(self) -> None:
        """Drop every key (a clean server per test)."""
        self._send(b"FLUSHALL")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def postgres_bin() -> Path | None:
    """The directory of PostgreSQL's server programs (Debian keeps them off the PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


class PostgresServer:
    """A throwaway PostgreSQL cluster (``initdb`` + ``pg_ctl``) in its own temp dir, loopback
    only, trust auth; run as the ``postgres`` user when started by root (``initdb`` refuses
    root, and that user cannot enter root's private temp dirs, so the cluster lives in a fresh
    ``/tmp`` dir of its own, removed by ``stop()``)."""

    def __init__(self) -> None:
        import os
        import tempfile

        bindir = postgres_bin()
        if bindir is None:
            raise FileNotFoundError(
                "PostgreSQL is not installed (Debian: apt-get install postgresql)"
            )
        self.workdir = Path(tempfile.mkdtemp(prefix="hybridgate-pg-"))
        self.data = self.workdir / "data"
        self.port = free_port()
        self._as: list[str] = []
        self._pg_ctl = str(bindir / "pg_ctl")
        try:
            if os.geteuid() == 0:
                shutil.chown(self.workdir, "postgres")
                self._as = ["runuser", "-u", "postgres", "--"]
            self._start(bindir)
        except BaseException:
            self.stop()  # a cluster that failed to start must not leave its files behind
            raise
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._databases = 0

    def _start(self, bindir: Path) -> None:
        self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )
        self._run(
            [
                self._pg_ctl,
                "-D",
                str(self.data),
                "-l",
                str(self.workdir / "log"),
                "-w",
                "-o",
                f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ]
        )

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(
            [*self._as, *cmd],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )

    def database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"hg{self._databases}_{time.time_ns() % 10**9}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def restart(self) -> None:
        """Stop and start the server (every client connection is dropped)."""
        self._run([self._pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "restart"])

    def stop(self) -> None:
        """Stop the server and delete the cluster (each one is 50-200 MB); safe to call twice."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self._as, self._pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
                check=False,
            )
        shutil.rmtree(self.workdir, ignore_errors=True)


__all__ = ["PostgresServer", "RedisServer", "free_port", "postgres_bin"]
