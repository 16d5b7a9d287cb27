"""Response-cache hit latency: p50/p99 of ``ResponseCache.get()`` (goal: p50 <= 1 ms).

Usage::

    python benchmarks/cache_latency.py [--entries 1000] [--gets 5000] [--data ../shared/data]
    python benchmarks/cache_latency.py --stores disk,redis   # Redis beside disk, same run

Fills a fresh cache (temporary folder, or a fresh ``redis-server`` on loopback) with
``--entries`` answers to real Banking77 questions (synthetic when ``--data`` lacks them), then
times ``--gets`` random hits; each timed get includes computing the sha256 key. Also times
misses and puts. With several stores they are timed in alternating rounds, so drift hits each
equally. Prints one JSON object.
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
from router.policy import CacheSettings  # noqa: E402
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
    parser.add_argument("--stores", default="disk", help="comma list: disk, redis")
    args = parser.parse_args()
    if args.gets < 1000:
        parser.error("--gets must be >= 1000 for a meaningful p99")

    texts, source = load_texts(args.data, args.entries)
    requests = [request(t) for t in texts]
    stores = [name.strip() for name in args.stores.split(",") if name.strip()]
    if not stores or set(stores) - {"disk", "redis"}:
        parser.error("--stores is a comma list of disk, redis")
    rng = random.Random(0)
    hits_order = [rng.choice(requests) for _ in range(args.gets)]
    answer = BackendResult(text="card_arrival", prompt_tokens=40, completion_tokens=4)
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        caches: dict[str, ResponseCache] = {}
        for name in stores:
            if name == "redis":
                from router.devtools.services import RedisServer

                server = RedisServer(Path(tmp) / "redis")
                caches[name] = ResponseCache(CacheSettings(url=server.url))
            else:
                caches[name] = ResponseCache(directory=Path(tmp) / "disk")
        try:
            timings: dict[str, dict[str, list[float]]] = {
                n: {"hit": [], "miss": [], "put": []} for n in stores
            }
            for name, cache in caches.items():
                timings[name]["put"] = timed(
                    lambda r, c=cache: c.put(r, answer, model=MODEL, adapter_version="a1"),
                    requests,
                )
                for r in requests[:100]:  # warm-up
                    cache.get(r, model=MODEL, adapter_version="a1")
            rounds = 10
            step = max(1, len(hits_order) // rounds)
            for i in range(0, len(hits_order), step):
                for name, cache in caches.items():
                    timings[name]["hit"] += timed(
                        lambda r, c=cache: c.get(r, model=MODEL, adapter_version="a1"),
                        hits_order[i : i + step],
                    )
            for name, cache in caches.items():
                timings[name]["miss"] = timed(
                    lambda r, c=cache: c.get(r, model=MODEL, adapter_version="other"),
                    hits_order[:1000],
                )
                stats = cache.stats()
                assert stats["hits"] == args.gets + 100 and stats["store_errors"] == 0, stats
        finally:
            for cache in caches.values():
                cache.close()
            if server is not None:
                server.stop()
    out: dict = {"benchmark": "cache_latency", "data": source, "entries": len(requests)}
    for name in stores:
        out[name] = {kind: summary(ms) for kind, ms in timings[name].items()}
    if len(stores) == 2:
        a, b = stores
        out[f"{b}_over_{a}_hit_p50"] = round(out[b]["hit"]["p50_ms"] / out[a]["hit"]["p50_ms"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
