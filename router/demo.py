"""``hybridgate demo``: the whole loop offline, on real data, against the replay cloud.

1. start the replay cloud (Banking77 intents answered with their gold label, GSM8K questions with
   GPT-4's recorded answers) on loopback;
2. send traffic through ``HybridClient`` with the all-cloud policy (a slice is shadow-labelled
   by the local model) and print the savings report: this is "before";
3. distil the cloud's answers into a LoRA adapter, gate it against held-out data, promote it,
   re-answer the held-out and labelled prompts with it and retune the routing policy;
4. send new traffic with the tuned hybrid policy and the promoted adapter, and print the report
   again, plus how often the student agreed with the teacher.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INTENT_SYSTEM = "Classify the customer's banking message. Reply with the intent label only."


@dataclass
class DemoResult:
    before: Any
    after: Any
    distill: Any
    agreement_after: float
    seconds: float


def _traffic(n: int, *, rng: random.Random, offset: int, gsm_share: float) -> list[dict[str, Any]]:
    """Requests as an app would send them: mostly short intent questions, some math."""
    from router.data import load_banking77, load_gsm8k

    banking = load_banking77()
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
                }
            )
        else:
            row = banking[rng.randrange(len(banking))]
            out.append(
                {
                    "messages": [
                        {"role": "system", "content": INTENT_SYSTEM},
                        {"role": "user", "content": row["text"]},
                    ],
                    "max_tokens": 12,
                    "teacher": row["category"],
                }
            )
    return out


def run_demo(
    *,
    home: Path,
    requests: int = 400,
    train_examples: int = 600,
    gsm_share: float = 0.15,
    shadow_rate: float = 0.1,
    epochs: float | None = None,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo in ``home`` (ledger, adapters, policy) and return the two reports."""
    import dataclasses

    from router.client import HybridClient
    from router.judges import auto_judge, get_judge
    from router.ledger import Ledger
    from router.policy import load_policy
    from router.replay import ReplayCloud
    from router.reports import summarize
    from training.config import LoraTrainingConfig
    from training.nightly import run_distill
    from training.registry import AdapterRegistry

    t0 = time.perf_counter()
    rng = random.Random(seed)
    home.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(home / "ledger.sqlite")
    registry = AdapterRegistry(home / "adapters")
    with ReplayCloud.from_datasets() as cloud:
        base = load_policy("default").replace(
            **{
                "cloud.model": "gpt-4o-mini",
                "cloud.api_base": cloud.base_url,
                "local.adapter": None,
                "cache.enabled": False,
            }
        )
        say(f"replay cloud at {cloud.base_url}; data home {home}")

        # -- 1. all-cloud traffic --------------------------------------------------------
        phase1 = _traffic(requests, rng=rng, offset=0, gsm_share=gsm_share)
        policy1 = base.replace(mode="cloud", **{"shadow.rate": shadow_rate})
        started = time.time()
        with HybridClient(policy=policy1, ledger=ledger, seed=seed) as client:
            for req in phase1:
                client.chat.completions.create(
                    messages=req["messages"], max_tokens=req["max_tokens"], temperature=0
                )
            say(f"phase 1: {len(phase1)} requests sent all-cloud; waiting for shadow labels...")
            client.shadow.drain()
        before = summarize(ledger.rows(since=started), by="route")
        say(_line("before (all cloud)", before))

        # -- 2. distil, gate, promote, relabel, retune -----------------------------------
        config = LoraTrainingConfig()
        if epochs is not None:
            config = dataclasses.replace(config, epochs=epochs)
        say(
            f"phase 2: distilling up to {train_examples} short cloud answers into a LoRA adapter..."
        )
        summary = run_distill(
            ledger=ledger,
            policy=base,
            registry=registry,
            max_train=train_examples,
            min_examples=20,
            max_answer_chars=64,
            config=None if epochs is None else config,
            policy_out=home / "policy.yaml",
            target_quality=0.97,
        )
        say(f"distill: {summary.status}; {summary.gate_reason}; retune: {summary.retune}")

        # -- 3. traffic with the tuned policy and the promoted adapter ---------------------
        tuned_path = home / "policy.yaml"
        if summary.status == "promoted" and tuned_path.exists():
            policy3 = load_policy(tuned_path)
        else:
            policy3 = base.replace(mode="cascade")
        policy3 = policy3.replace(
            **{
                "cloud.api_base": cloud.base_url,
                "shadow.rate": 0.0,
                "local.adapter": str(registry.current_path()) if registry.current_path() else None,
            }
        )
        phase3 = _traffic(requests, rng=rng, offset=requests, gsm_share=gsm_share)
        started = time.time()
        agree = 0
        local_n = 0
        with HybridClient(policy=policy3, ledger=ledger, seed=seed) as client:
            for req in phase3:
                reply = client.chat.completions.create(
                    messages=req["messages"], max_tokens=req["max_tokens"], temperature=0
                )
                if reply.route.route == "local":
                    local_n += 1
                    judge = get_judge(auto_judge(req["teacher"]))
                    agree += (
                        judge(
                            answer=reply.choices[0].message.content or "", reference=req["teacher"]
                        )
                        >= 0.5
                    )
        after = summarize(ledger.rows(since=started), by="route")
        say(_line("after (tuned hybrid + adapter)", after))
    agreement = agree / local_n if local_n else 0.0
    say(f"student/teacher agreement on the {local_n} requests answered locally: {agreement:.1%}")
    return DemoResult(before, after, summary, agreement, time.perf_counter() - t0)


def _line(title: str, report: Any) -> str:
    t = report.totals
    return (
        f"{title}: {t.requests} requests, cost ${t.cost_usd:.5f} vs all-cloud ${t.baseline_cost_usd:.5f} "
        f"-> saved {t.savings_pct:.1f}%, {t.local_share:.0%} local, p50 {t.p50_latency_ms:.0f} ms"
    )
