"""Ledger writes/s with 1, 4 and 16 writer processes, SQLite file vs PostgreSQL, and
``hybridgate report`` on a large ledger in both.

    python benchmarks/ledger_stores.py [--writers 1 4 16] [--rows 500] [--report-rows 1000000]

Each writer is its own process with its own ``Ledger`` (as separate gateways are), all on one
SQLite file or one PostgreSQL database (a throwaway local cluster, ``router.devtools.services``,
fsync off as for tests; loopback). Every run checks rows == writes and no duplicate ids. The
report figure times ``hybridgate report --format json`` (a fresh process, read-only open) on a
ledger bulk-loaded with ``--report-rows`` rows. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.ledger import Ledger, LedgerEntry  # noqa: E402


def _entry(w: int, i: int) -> LedgerEntry:
    return LedgerEntry(
        request_id=f"w{w}-{i}",
        ts=time.time(),
        route="cloud" if i % 3 else "local",
        reason="score>=0.62",
        model="gpt-4o-mini",
        prompt_tokens=40,
        completion_tokens=8,
        cost_usd=0.0001,
        baseline_cost_usd=0.0002,
        latency_ms=12.0,
        messages=[{"role": "user", "content": f"where is my card? ({i})"}],
        answer="card_arrival",
    )


def _writer(where: str, w: int, rows: int, start: mp.Event) -> None:
    with Ledger(where) as led:
        start.wait()
        for i in range(rows):
            led.record(_entry(w, i))


def writes_per_s(where: str, writers: int, rows: int) -> dict:
    Ledger(where).close()  # create and migrate once, outside the timing
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(where, w, rows, start)) for w in range(writers)]
    for p in procs:
        p.start()
    time.sleep(3.0)  # let every writer import and open its ledger
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    with Ledger(where, read_only=True) as led:
        got = led.rows()
    assert len(got) == writers * rows, (len(got), writers * rows)
    assert len({e.request_id for e in got}) == writers * rows
    return {
        "writers": writers,
        "rows": writers * rows,
        "wall_s": wall,
        "writes_per_s": writers * rows / wall,
    }


def bulk_load(where: str, n: int) -> None:
    """``n`` rows in batches, through the ledger's own insert statement (not timed)."""
    from router.ledger.schema import _INSERT_SQL

    with Ledger(where) as led:
        batch = []
        for i in range(n):
            batch.append(led._entry_params(_entry(i % 16, i)))
            if len(batch) == 10_000 or i == n - 1:
                with led._lock:
                    led._conn.execute("BEGIN IMMEDIATE")
                    led._conn.executemany(_INSERT_SQL, batch)
                    led._conn.execute("COMMIT")
                batch = []


def report_seconds(where: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "router.cli", "report", "--ledger", where, "--format", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-500:])
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rows", type=int, default=500, help="rows per writer")
    ap.add_argument("--report-rows", type=int, default=1_000_000)
    args = ap.parse_args()

    from router.devtools.services import PostgresServer

    server = PostgresServer()
    out: dict = {"writes": [], "report": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for writers in args.writers:
                for store in ("sqlite", "postgres"):
                    where = (
                        str(Path(tmp) / f"w{writers}.sqlite")
                        if store == "sqlite"
                        else server.database()
                    )
                    out["writes"].append(
                        {"store": store, **writes_per_s(where, writers, args.rows)}
                    )
            if args.report_rows:
                for store in ("sqlite", "postgres"):
                    where = (
                        str(Path(tmp) / "big.sqlite") if store == "sqlite" else server.database()
                    )
                    bulk_load(where, args.report_rows)
                    out["report"].append(
                        {
                            "store": store,
                            "rows": args.report_rows,
                            "report_s": report_seconds(where),
                        }
                    )
    finally:
        server.stop()
    print("| writers | SQLite writes/s | PostgreSQL writes/s |")
    print("|---|---|---|")
    for writers in args.writers:
        by = {r["store"]: r for r in out["writes"] if r["writers"] == writers}
        print(
            f"| {writers} | {by['sqlite']['writes_per_s']:,.0f} | {by['postgres']['writes_per_s']:,.0f} |"
        )
    for r in out["report"]:
        print(f"report on {r['rows']:,} rows, {r['store']}: {r['report_s']:.1f} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
