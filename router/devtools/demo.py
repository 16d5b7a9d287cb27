"""``hybridgate demo``: the whole loop offline, on real data, against the replay cloud.

1. start the replay cloud (Banking77 intents answered with their gold label, GSM8K questions with
   GPT-4's recorded answers) on loopback; the traffic is a support bot's: 20 of the 77 intents
   (``router.devtools.data.demo_intents``), texts never repeated between the two phases, plus a share
   of math questions;
2. send traffic through ``HybridClient`` with the all-cloud policy (a slice is shadow-labelled
   by the local model) and print the savings report: this is "before";
3. distil the cloud's answers into a LoRA adapter, gate it against held-out data, promote it,
   re-answer the held-out and labelled prompts with it and retune the routing policy;
4. send new traffic with the tuned hybrid policy and the promoted adapter, and print the report
   again, plus how often the student agreed with the teacher.

``rounds`` > 1 repeats 3-4 as further nights would: each distillation also learns from the
cloud's answers to the requests the student escalated the night before.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router._paths import LEDGER_FILENAME, POLICY_FILENAME

INTENT_SYSTEM = "Classify the customer's banking message. Reply with the intent label only."
CLOUD_MODEL = "gpt-4-1106-preview"
"""The GSM8K answers the replay cloud returns were recorded from this model, so the demo prices
cloud calls as it ($10 / $30 per 1M input / output tokens in litellm's price map)."""


@dataclass
class RoundResult:
    """One nightly round: distil on the cloud's answers so far, then serve fresh traffic."""

    distill: Any
    report: Any
    """Savings report of this round's traffic (tuned policy + promoted adapter)."""
    agreement: float
    """Share of locally answered requests whose answer the judge accepts."""
    quality: float
    """Mean judge score of every answer vs the teacher; all-cloud scores 1.0 here."""
    local_share: float
    seconds: float


@dataclass
class DemoResult:
    before: Any
    """Savings report of phase 1 (all cloud)."""
    rounds: list[RoundResult]
    seconds: float
    home: Path | None = None
    """Where the demo kept its ledger, adapters and policy."""

    @property
    def after(self) -> Any:
        """Savings report of the last round."""
        return self.rounds[-1].report

    def summary_lines(self) -> list[str]:
        """What ``hybridgate demo`` prints under the two tables: cost of each phase as a share
        of all-cloud, and per round how much stayed local and at what quality."""
        lines = [f"before: cost {cost_share(self.before):.1%} of all-cloud"]
        for k, r in enumerate(self.rounds, start=1):
            lines.append(
                f"after round {k}: cost {cost_share(r.report):.1%} of all-cloud, "
                f"{r.local_share:.0%} answered locally, quality {r.quality:.1%} of all-cloud, "
                f"student agreement {r.agreement:.1%} on its local answers"
            )
        where = f"; ledger at {self.home / LEDGER_FILENAME}" if self.home is not None else ""
        lines.append(f"demo finished in {self.seconds:.0f} s{where}")
        return lines


def cost_share(report: Any) -> float:
    """A savings report's cost as a fraction of sending everything to the cloud (0 for no
    traffic: the baseline is floored so an empty phase does not divide by zero)."""
    totals = report.totals
    return totals.cost_usd / max(totals.baseline_cost_usd, 1e-12)


def _pools(seed: int, parts: int = 2) -> list[list[dict[str, str]]]:
    """Banking77 texts of the demo's intents, split into ``parts`` disjoint pools (phase 1,
    then one per round), so the student is never scored on a text it was trained on."""
    from router.devtools.data import demo_intents, load_banking77

    rows = load_banking77()
    keep = set(demo_intents([r["category"] for r in rows]))
    pool = [r for r in rows if r["category"] in keep]
    random.Random(seed).shuffle(pool)
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
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo in ``home`` (ledger, adapters, policy) and return the reports.

    ``gsm_share`` of the traffic is GSM8K math (long answers the 135M student cannot give: it
    stays with the cloud and sets a floor under the cost); the rest is Banking77 intents.
    Requests go out from ``concurrency`` threads at once, as an app's would. Each of
    ``rounds`` is one nightly run (distil on every cloud answer so far, the escalated ones
    included, gate, promote, retune) followed by ``requests`` fresh requests.
    """
    from router.client import HybridClient
    from router.devtools.replay import ReplayCloud
    from router.ledger import Ledger
    from router.ledger.reports import summarize
    from router.policy import load_policy

    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    t0 = time.perf_counter()
    rng = random.Random(seed)
    home.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(home / LEDGER_FILENAME)
    with ReplayCloud.from_datasets() as cloud:
        base = load_policy("default").replace(
            **{
                "cloud.model": cloud_model,
                "cloud.api_base": cloud.base_url,
                "local.adapter": None,
                "cache.enabled": False,
            }
        )
        say(f"replay cloud at {cloud.base_url}; data home {home}")

        # -- 1. all-cloud traffic --------------------------------------------------------
        pools = _pools(seed, parts=rounds + 1)
        phase1 = _traffic(requests, rng=rng, banking=pools[0], offset=0, gsm_share=gsm_share)
        # Shadow jobs from many threads: the local batcher answers them in batches, and the
        # long math answers find each other in waves of their own instead of one per wave.
        policy1 = base.replace(mode="cloud", **{"shadow.rate": shadow_rate, "shadow.workers": 32})
        started = time.time()
        with HybridClient(policy=policy1, ledger=ledger, seed=seed) as client:
            _send(client, phase1, concurrency)
            say(f"phase 1: {len(phase1)} requests sent all-cloud; waiting for shadow labels...")
            client.shadow.drain()
        before = summarize(ledger.rows(since=started), by="route")
        say(_line("before (all cloud)", before))
        say(f"phase 1 took {time.perf_counter() - t0:.0f} s")

        # -- 2., 3. per round: distil + gate + promote + retune, then fresh traffic ----------
        results = []
        for k in range(1, rounds + 1):
            traffic = _traffic(
                requests, rng=rng, banking=pools[k], offset=k * requests, gsm_share=gsm_share
            )
            results.append(
                _round(
                    k,
                    traffic,
                    home=home,
                    ledger=ledger,
                    base=base,
                    cloud_url=cloud.base_url,
                    train_examples=train_examples,
                    epochs=epochs,
                    concurrency=concurrency,
                    seed=seed,
                    say=say,
                )
            )
    return DemoResult(before, results, seconds=time.perf_counter() - t0, home=home)


def _round(
    k: int,
    traffic: list[dict[str, Any]],
    *,
    home: Path,
    ledger: Any,
    base: Any,
    cloud_url: str,
    train_examples: int,
    epochs: float | None,
    concurrency: int,
    seed: int,
    say: Callable[[str], None],
) -> RoundResult:
    """Distil, gate, promote, relabel and retune; then send ``traffic`` with the result."""
    from local_models.registry import AdapterRegistry
    from router.client import HybridClient
    from router.ledger.reports import serving_status_lines, summarize
    from training.evaluate import default_judge
    from training.nightly import run_distill

    t0 = time.perf_counter()
    registry = AdapterRegistry(home / "adapters")
    say(f"round {k}: distilling up to {train_examples} short cloud answers into a LoRA adapter...")
    # The same data filters and gate settings as `hybridgate distill` (the policy's `distill`
    # section): long answers such as the math working stay with the cloud on every path.
    summary = run_distill(
        ledger=ledger,
        policy=base,
        registry=registry,
        max_train=train_examples,
        min_examples=20,
        epochs=epochs,
        policy_out=home / POLICY_FILENAME,
        target_quality=0.97,
    )
    say(f"distill: {summary.status}; {summary.gate_reason}")
    for line in serving_status_lines(home / POLICY_FILENAME):
        say(line)
    say(f"round {k}: distil, gate, relabel and retune took {time.perf_counter() - t0:.0f} s")
    t1 = time.perf_counter()
    current = registry.current()
    policy, shadowing = _round_policy(home / POLICY_FILENAME, base, current, cloud_url)
    started = time.time()
    with HybridClient(policy=policy, ledger=ledger, seed=seed) as client:
        replies = _send(client, traffic, concurrency)
        if shadowing:  # the labels a later round tunes on
            client.shadow.drain()
    judge = default_judge()  # the promotion gate's judge, picked per teacher answer
    scores, local_scores = [], []
    for req, reply in zip(traffic, replies, strict=True):
        score = float(judge(reply.choices[0].message.content or "", req["teacher"]) >= 0.5)
        scores.append(score)
        if reply.route.route == "local":
            local_scores.append(score)
    report = summarize(ledger.rows(since=started), by="route")
    serving = current.version if current else "none"
    say(_line(f"round {k} (tuned hybrid + adapter {serving})", report))
    agreement = sum(local_scores) / len(local_scores) if local_scores else 0.0
    quality = sum(scores) / len(scores) if scores else 0.0
    say(
        f"round {k}: student/teacher agreement on the {len(local_scores)} requests answered "
        f"locally: {agreement:.1%}; quality of all answers vs all-cloud: {quality:.1%}; "
        f"traffic took {time.perf_counter() - t1:.0f} s"
    )
    return RoundResult(
        summary,
        report,
        agreement=agreement,
        quality=quality,
        local_share=len(local_scores) / len(traffic) if traffic else 0.0,
        seconds=time.perf_counter() - t0,
    )


def _round_policy(tuned_path: Path, base: Any, current: Any, cloud_url: str) -> tuple[Any, bool]:
    """The policy a round's traffic is served with, and whether it shadow-labels.

    The nightly chain's policy when it wrote one (the adapter then serves only what its labels
    showed it can); otherwise all-cloud: with no tuned policy there is no evidence for any
    threshold, and the bundled defaults must not hand traffic to an untested adapter (or the
    base model). A policy under which the adapter takes no traffic keeps shadow labelling on,
    so the next round has labels to tune on; otherwise the round measures serving only.
    """
    from router.policy import load_policy

    policy = load_policy(tuned_path) if tuned_path.exists() else base.replace(mode="cloud")
    shadowing = policy.mode == "cloud" or policy.rules.local_classes == ()
    changes: dict[str, Any] = {
        "cloud.api_base": cloud_url,
        "local.adapter": str(current.path) if current else None,
        # callers come back together at the end of a wave: give them time to rejoin
        "local.max_wait_ms": 25.0,
    }
    if shadowing:
        changes["shadow.workers"] = 32  # as in phase 1: the batcher answers them together
    else:
        changes["shadow.rate"] = 0.0
    return policy.replace(**changes), shadowing


def _send(client: Any, traffic: list[dict[str, Any]], concurrency: int) -> list[Any]:
    """Send every request from ``concurrency`` threads; replies come back in traffic order."""
    from concurrent.futures import ThreadPoolExecutor

    def one(req: dict[str, Any]) -> Any:
        return client.chat.completions.create(
            messages=req["messages"], max_tokens=req["max_tokens"], temperature=0
        )

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(one, traffic))


def _line(title: str, report: Any) -> str:
    t = report.totals
    return (
        f"{title}: {t.requests} requests, cost ${t.cost_usd:.5f} vs all-cloud ${t.baseline_cost_usd:.5f} "
        f"-> saved {t.savings_pct:.1f}%, {t.local_share:.0%} local, p50 {t.p50_latency_ms:.0f} ms"
    )
