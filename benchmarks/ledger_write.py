"""Per-request ledger write cost: p50/p99 of ``Ledger.record()`` (goal: well under 2 ms p50).

Usage::

    python benchmarks/ledger_write.py [--n 5000] [--threads 1] [--data ../shared/data]

Messages are real Banking77 customer texts when ``--data`` holds them (synthetic otherwise),
written to a fresh ledger file in a temporary folder (WAL, synchronous=NORMAL, as in
production). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.ledger import Ledger, LedgerEntry  # noqa: E402
from router.ledger.reports import percentile  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def load_texts(data: Path, n: int) -> tuple[list[str], str]:
    """Banking77 texts when available, else synthetic ones of similar length."""
    path = data / "banking77" / "train.csv"
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            texts = [row["text"] for row in csv.DictReader(f)]
        return texts[: max(n, 1)], str(path)
    rng = random.Random(0)
    words = [
        "card",
        "transfer",
        "account",
        "pending",
        "refund",
        "top",
        "up",
        "exchange",
        "rate",
        "atm",
        "fee",
    ]
    return [" ".join(rng.choices(words, k=12)) for _ in range(n)], "synthetic"


def make_entry(text: str, i: int) -> LedgerEntry:
    return LedgerEntry(
        request_id=uuid.uuid4().hex,
        ts=time.time(),
        route="local" if i % 3 else "cloud",
        reason="score>=0.62",
        score=0.7,
        model="smollm2-135m",
        requested_model="gpt-4o-mini",
        prompt_tokens=40,
        completion_tokens=8,
        cost_usd=1e-6,
        baseline_cost_usd=2e-5,
        latency_ms=120.0,
        policy_version="default-1",
        messages=[
            {"role": "system", "content": "Classify the banking intent."},
            {"role": "user", "content": text},
        ],
        answer="card_arrival",
        tags={"bench": "ledger_write"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="records per thread")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()

    texts, source = load_texts(args.data, args.n)
    with tempfile.TemporaryDirectory() as tmp, Ledger(Path(tmp) / "bench.sqlite") as ledger:
        for i in range(200):  # warm-up: statement cache, WAL file creation
            ledger.record(make_entry(texts[i % len(texts)], i))
        samples: list[list[float]] = [[] for _ in range(args.threads)]

        def work(t: int) -> None:
            out = samples[t]
            for i in range(args.n):
                entry = make_entry(texts[i % len(texts)], i)
                start = time.perf_counter()
                ledger.record(entry)
                out.append((time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        workers = [threading.Thread(target=work, args=(t,)) for t in range(args.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - start
        latencies = [x for s in samples for x in s]
        rows = ledger.count()
    print(
        json.dumps(
            {
                "benchmark": "ledger_write",
                "data": source,
                "threads": args.threads,
                "records": len(latencies),
                "rows_in_ledger": rows,
                "p50_ms": round(percentile(latencies, 50), 4),
                "p99_ms": round(percentile(latencies, 99), 4),
                "mean_ms": round(statistics.fmean(latencies), 4),
                "max_ms": round(max(latencies), 3),
                "writes_per_s": round(len(latencies) / wall, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
