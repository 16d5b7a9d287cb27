"""``hybridgate demo``: ``hybridgate simulate`` on the bundled data, offline.

The replay cloud answers Banking77 intents with their gold label and GSM8K questions with GPT-4's
recorded answers; the traffic is a support bot's: 20 of the 77 intents
(``router.devtools.data.demo_intents``; ``intents="all"`` for every one), texts never repeated
between phases, plus a share of math questions. Phase 1 is all-cloud with shadow labels; each of
``rounds`` nights distils, gates, promotes and retunes, then serves fresh traffic
(``router.devtools.simulate.run_simulation``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router.devtools.simulate import RoundResult, SimulationResult, cost_share, run_simulation

INTENT_SYSTEM = "Classify the customer's banking message. Reply with the intent label only."
CLOUD_MODEL = "gpt-4-1106-preview"
"""The GSM8K answers the replay cloud returns were recorded from this model, so the demo prices
cloud calls as it ($10 / $30 per 1M input / output tokens in litellm's price map)."""

ALL_INTENTS_PER_INTENT = 40
"""``intents="all"``: at most this many texts per intent (the shipped slice holds every text of
the demo's 20 intents but ~39 of the others; capping keeps the 77 as balanced as real traffic)."""

DemoResult = SimulationResult
"""The demo's result is a simulation's."""


def _pools(seed: int, parts: int = 2, *, intents: str = "demo") -> list[list[dict[str, str]]]:
    """Banking77 texts of the demo's intents (or all 77), split into ``parts`` disjoint pools
    (phase 1, then one per round), so the student is never scored on a text it was trained on."""
    from router.devtools.data import demo_intents, load_banking77

    if intents not in ("demo", "all"):
        raise ValueError(f"intents must be 'demo' (20 intents) or 'all' (77), got {intents!r}")
    rows = load_banking77()
    rng = random.Random(seed)
    if intents == "demo":
        keep = set(demo_intents([r["category"] for r in rows]))
        pool = [r for r in rows if r["category"] in keep]
    else:
        by_intent: dict[str, list[dict[str, str]]] = {}
        for r in rows:
            by_intent.setdefault(r["category"], []).append(r)
        pool = []
        for name in sorted(by_intent):
            texts = by_intent[name]
            pool += rng.sample(texts, min(len(texts), ALL_INTENTS_PER_INTENT))
    rng.shuffle(pool)
    return [pool[i::parts] for i in range(parts)]


def _traffic(
    n: int, *, rng: random.Random, banking: list[dict[str, str]], offset: int, gsm_share: float
) -> list[dict[str, Any]]:
    """Requests as an app would send them: mostly short intent questions, some math."""
    from router.devtools.data import load_gsm8k

    gsm = load_gsm8k()
    out = []
    for i in range(n):
        if rng.random() < gsm_share:
            row = gsm[(offset + i) % len(gsm)]
            out.append(
                {
                    "messages": [{"role": "user", "content": row["prompt"]}],
                    "max_tokens": 256,
                    "teacher": row["answer"],
                    "class": "math",
                }
            )
        else:
            row = banking[i % len(banking)]  # each text once before any repeats
            out.append(
                {
                    "messages": [
                        {"role": "system", "content": INTENT_SYSTEM},
                        {"role": "user", "content": row["text"]},
                    ],
                    "max_tokens": 12,
                    "teacher": row["category"],
                    "class": "intents",
                }
            )
    return out


def run_demo(
    *,
    home: Path,
    requests: int = 1000,
    train_examples: int = 1000,
    rounds: int = 1,
    gsm_share: float = 0.05,
    shadow_rate: float = 0.1,
    epochs: float | None = None,
    concurrency: int = 8,
    cloud_model: str = CLOUD_MODEL,
    intents: str = "demo",
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> SimulationResult:
    """Run the demo in ``home`` (ledger, adapters, policy) and return the reports.

    ``gsm_share`` of the traffic is GSM8K math (long answers the 135M student cannot give: it
    stays with the cloud and sets a floor under the cost); the rest is Banking77 intents, the
    demo's 20 or ``intents="all"``. ``requests`` per phase: phase 1, then one per round.
    """
    from router.devtools.replay import ReplayCloud

    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    rng = random.Random(seed)
    pools = _pools(seed, parts=rounds + 1, intents=intents)
    phases = [
        _traffic(requests, rng=rng, banking=pools[k], offset=k * requests, gsm_share=gsm_share)
        for k in range(rounds + 1)
    ]
    with ReplayCloud.from_datasets() as cloud:
        return run_simulation(
            phases,
            home=home,
            cloud_url=cloud.base_url,
            cloud_model=cloud_model,
            train_examples=train_examples,
            shadow_rate=shadow_rate,
            epochs=epochs,
            concurrency=concurrency,
            seed=seed,
            say=say,
            name="demo",
        )


__all__ = ["CLOUD_MODEL", "INTENT_SYSTEM", "DemoResult", "RoundResult", "cost_share", "run_demo"]
