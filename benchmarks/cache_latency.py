"""Response-cache hit latency: p50/p99 of ``ResponseCache.get()`` (goal: p50 <= 1 ms).

Usage::

    python benchmarks/cache_latency.py [--entries 1000] [--gets 5000] [--data ../shared/data]

Fills a fresh cache (temporary folder) with ``--entries`` answers to real Banking77 questions
(synthetic when ``--data`` lacks them), then times ``--gets`` random hits; each timed get
includes computing the sha256 key. Also times misses and puts. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router._gateway.cache import ResponseCache  # noqa: E402
from router.ledger.reports import percentile  # noqa: E402
from router.types import BackendResult, ChatRequest  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MODEL = "smollm2-135m"


def load_texts(data: Path, n: int) -> tuple[list[str], str]:
    """``n`` distinct Banking77 texts when available, else synthetic ones."""
    path = data / "banking77" / "train.csv"
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            texts = list(dict.fromkeys(row["text"] for row in csv.DictReader(f)))
        return texts[:n], str(path)
    return [f"synthetic question number {i}: where is my card?" for i in range(n)], "synthetic"


def request(text: str) -> ChatRequest:
    return ChatRequest(
        messages=(
            {"role": "system", "content": "Classify the banking intent."},
            {"role": "user", "content": text},
        ),
        model="gpt-4o-mini",
        temperature=0.0,
        max_tokens=16,
    )


def timed(fn, items) -> list[float]:  # noqa: ANN001
    out = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 4),
        "p99_ms": round(percentile(ms, 99), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--gets", type=int, default=5000)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    if args.gets < 1000:
        parser.error("--gets must be >= 1000 for a meaningful p99")

    texts, source = load_texts(args.data, args.entries)
    requests = [request(t) for t in texts]
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp, ResponseCache(directory=tmp) as cache:
        answer = BackendResult(text="card_arrival", prompt_tokens=40, completion_tokens=4)
        puts = timed(lambda r: cache.put(r, answer, model=MODEL, adapter_version="a1"), requests)
        for r in requests[:100]:  # warm-up
            cache.get(r, model=MODEL, adapter_version="a1")
        hits_order = [rng.choice(requests) for _ in range(args.gets)]
        hits = timed(lambda r: cache.get(r, model=MODEL, adapter_version="a1"), hits_order)
        misses = timed(
            lambda r: cache.get(r, model=MODEL, adapter_version="other"), hits_order[:1000]
        )
        stats = cache.stats()
    assert stats["hits"] == args.gets + 100, stats
    print(
        json.dumps(
            {
                "benchmark": "cache_latency",
                "data": source,
                "entries": len(requests),
                "hit": summary(hits),
                "miss": summary(misses),
                "put": summary(puts),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
