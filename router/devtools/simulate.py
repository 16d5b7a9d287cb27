"""``hybridgate simulate``: the whole loop offline on a team's own labelled traffic.

A team decides whether hybridgate pays for its traffic before deploying it: give it requests and
the answers its cloud model gave (or would give), and it runs what production would, against a
replay cloud that answers from that file:

1. phase 1: the first slice of traffic through ``HybridClient`` with the all-cloud policy, a share
   shadow-labelled by the local model ("before");
2. per night: distil the cloud's answers into a LoRA adapter, gate it on held-out data, promote
   it, relabel and retune the policy (``training.nightly.run_distill``), then serve the next slice
   with the tuned policy (its escalations teach the next night);
3. the last slice is the evaluation traffic (``--eval``, or a held-out share of ``--traffic``):
   its savings report, quality versus the references and local share are the verdict.

``hybridgate demo`` is this loop on the bundled Banking77 and GSM8K slices.
"""

from __future__ import annotations

import csv
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router._paths import LEDGER_FILENAME, POLICY_FILENAME, private_dir
from router._text import class_label

DEFAULT_CLOUD_MODEL = "gpt-4o-mini"
"""What the replay cloud's answers are priced as when ``--cloud-model`` is not given."""

EVAL_SHARE = 0.2
"""Share of ``--traffic`` held out as the evaluation slice when no ``--eval`` file is given."""

PROMPT_KEYS = ("prompt", "text", "question", "input")
REFERENCE_KEYS = ("reference", "answer", "completion", "response", "output", "category", "label")


@dataclass
class RoundResult:
    """One nightly round: distil on the cloud's answers so far, then serve fresh traffic."""

    distill: Any
    report: Any
    """Savings report of this round's traffic (tuned policy + promoted adapter)."""
    agreement: float
    """Share of locally answered requests whose answer the judge accepts."""
    quality: float
    """Mean judge score of every answer vs the reference; all-cloud scores 1.0 here."""
    local_share: float
    seconds: float
    by_class: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per traffic class (the row's ``class``, else its system prompt): requests, quality,
    local share."""


@dataclass
class SimulationResult:
    before: Any
    """Savings report of phase 1 (all cloud)."""
    rounds: list[RoundResult]
    seconds: float
    home: Path | None = None
    """Where the run kept its ledger, adapters and policy."""
    name: str = "simulation"

    @property
    def after(self) -> Any:
        """Savings report of the last round (the evaluation traffic)."""
        return self.rounds[-1].report

    def summary_lines(self) -> list[str]:
        """What ``demo``/``simulate`` print under the two tables: cost of each phase as a share
        of all-cloud, and per round how much stayed local and at what quality."""
        lines = [f"before: cost {cost_share(self.before):.1%} of all-cloud"]
        for k, r in enumerate(self.rounds, start=1):
            lines.append(
                f"after round {k}: cost {cost_share(r.report):.1%} of all-cloud, "
                f"{r.local_share:.0%} answered locally, quality {r.quality:.1%} of all-cloud, "
                f"student agreement {r.agreement:.1%} on its local answers"
            )
        where = f"; ledger at {self.home / LEDGER_FILENAME}" if self.home is not None else ""
        lines.append(f"{self.name} finished in {self.seconds:.0f} s{where}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain numbers (``--json``)."""
        return {
            "before": {"cost_share": cost_share(self.before), **_totals(self.before)},
            "rounds": [
                {
                    "cost_share": cost_share(r.report),
                    "local_share": r.local_share,
                    "quality": r.quality,
                    "agreement": r.agreement,
                    "seconds": r.seconds,
                    "by_class": r.by_class,
                    "distill": getattr(r.distill, "status", None),
                    **_totals(r.report),
                }
                for r in self.rounds
            ],
            "seconds": self.seconds,
            "home": str(self.home) if self.home else None,
        }


def _totals(report: Any) -> dict[str, Any]:
    t = report.totals
    return {
        "requests": t.requests,
        "cost_usd": t.cost_usd,
        "baseline_cost_usd": t.baseline_cost_usd,
        "p50_latency_ms": t.p50_latency_ms,
    }


def cost_share(report: Any) -> float:
    """A savings report's cost as a fraction of sending everything to the cloud (0 for no
    traffic: the baseline is floored so an empty phase does not divide by zero)."""
    totals = report.totals
    return totals.cost_usd / max(totals.baseline_cost_usd, 1e-12)


# --------------------------------------------------------------------------- traffic files


def load_traffic(path: str | Path) -> list[dict[str, Any]]:
    """Read labelled traffic: one request per CSV row or JSONL line.

    Each row has the conversation - ``messages`` (a JSON list of ``{role, content}``) or a
    ``prompt`` (aliases: text, question, input) with an optional ``system`` - and the answer
    the cloud gave or would give as ``reference`` (aliases: answer, completion, response,
    output, category, label). Optional: ``class`` (a name for per-class figures) and
    ``max_tokens``.

    Returns:
        Requests ``{"messages", "teacher", "max_tokens", "class"}`` in file order.

    Raises:
        ValueError: An unreadable file, or a row without a conversation or a reference (the
            message names the file, the row and the columns it looked for).
    """
    from router.devtools.replay import count_text_tokens

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such traffic file")
    try:
        if p.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            raw = [
                (i, json.loads(line))
                for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1)
                if line.strip()
            ]
        else:
            with p.open(newline="", encoding="utf-8") as f:
                raw = list(enumerate(csv.DictReader(f), start=2))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise ValueError(f"{p}: cannot read traffic ({exc})") from None
    out = []
    for line, row in raw:
        where = f"{p}: {'line' if p.suffix.lower() != '.csv' else 'row'} {line}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
        messages = _messages(row, where)
        reference = next((row[k] for k in REFERENCE_KEYS if row.get(k) not in (None, "")), None)
        if not isinstance(reference, str) or not reference.strip():
            raise ValueError(
                f"{where}: no reference answer; give one of the columns {', '.join(REFERENCE_KEYS)}"
            )
        tokens = row.get("max_tokens")
        try:
            max_tokens = int(tokens) if tokens not in (None, "") else None
        except (TypeError, ValueError):
            raise ValueError(f"{where}: max_tokens must be an integer, got {tokens!r}") from None
        if max_tokens is None:  # room for the reference, as an app would size it
            max_tokens = max(16, min(1024, int(count_text_tokens(reference) * 1.5) + 8))
        out.append(
            {
                "messages": messages,
                "teacher": reference.strip(),
                "max_tokens": max_tokens,
                "class": str(row.get("class") or "").strip(),
            }
        )
    if not out:
        raise ValueError(f"{p}: no requests in the file")
    return out


def _messages(row: dict[str, Any], where: str) -> list[dict[str, str]]:
    messages = row.get("messages")
    if isinstance(messages, str) and messages.strip():
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            raise ValueError(f"{where}: messages is not a JSON list of messages") from None
    if messages not in (None, ""):
        if not (
            isinstance(messages, list)
            and messages
            and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
            and messages[-1].get("role") == "user"
        ):
            raise ValueError(
                f"{where}: messages must be a non-empty list of {{role, content}} ending with "
                "the user's turn"
            )
        return [{"role": str(m.get("role")), "content": m["content"]} for m in messages]
    prompt = next((row[k] for k in PROMPT_KEYS if row.get(k) not in (None, "")), None)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(
            f"{where}: no conversation; give messages or one of the columns {', '.join(PROMPT_KEYS)}"
        )
    system = row.get("system")
    head = [{"role": "system", "content": system}] if isinstance(system, str) and system else []
    return [*head, {"role": "user", "content": prompt}]


def split_phases(
    traffic: Sequence[dict[str, Any]],
    *,
    nights: int,
    eval_traffic: Sequence[dict[str, Any]] | None = None,
    seed: int = 0,
) -> list[list[dict[str, Any]]]:
    """Phase 1, then one slice per night after the first, then the evaluation slice.

    The traffic is shuffled (seeded) so every slice is drawn from the same mix; without
    ``eval_traffic`` the last ``EVAL_SHARE`` of it is held out for evaluation, and no text of
    the evaluation slice is trained on unless it also occurs in the training slices.
    """
    if nights < 1:
        raise ValueError(f"nights must be >= 1, got {nights}")
    rows = list(traffic)
    random.Random(seed).shuffle(rows)
    if eval_traffic is None:
        held = max(1, round(len(rows) * EVAL_SHARE))
        rows, evaluation = rows[:-held], rows[-held:]
    else:
        evaluation = list(eval_traffic)
    if len(rows) < nights:
        raise ValueError(
            f"{len(rows)} training requests cannot fill {nights} night(s); send more traffic"
        )
    slices = [rows[i::nights] for i in range(nights)]
    return [*slices, evaluation]


# --------------------------------------------------------------------------- the loop


def run_simulation(
    phases: Sequence[Sequence[dict[str, Any]]],
    *,
    home: Path,
    cloud_url: str,
    cloud_model: str = DEFAULT_CLOUD_MODEL,
    train_examples: int = 1000,
    shadow_rate: float = 0.1,
    epochs: float | None = None,
    concurrency: int = 8,
    seed: int = 0,
    say: Callable[[str], None] = print,
    name: str = "simulation",
) -> SimulationResult:
    """Run phase 1 all-cloud, then one night + fresh slice per later phase, in ``home``.

    ``phases[0]`` is sent all-cloud (``shadow_rate`` of it shadow-labelled); each later phase
    follows one nightly round (distil on every cloud answer so far, the escalated ones
    included, gate, promote, retune) and is served with its result. The cloud at
    ``cloud_url`` (a :class:`router.devtools.replay.ReplayCloud`) is priced as ``cloud_model``.
    Requests go out from ``concurrency`` threads at once, as an app's would.
    """
    from router.client import HybridClient
    from router.ledger import Ledger
    from router.ledger.reports import summarize
    from router.policy import load_policy

    if len(phases) < 2:
        raise ValueError("need phase 1 and at least one phase after a night")
    t0 = time.perf_counter()
    earlier = [name for name in (LEDGER_FILENAME, "adapters") if (home / name).exists()]
    if earlier:  # its rows would be trained on and its adapters served: not this run's figures
        raise ValueError(
            f"{home} holds an earlier run ({', '.join(earlier)}); its traffic and adapters "
            "would mix into this one: remove it or pass another --home"
        )
    private_dir(home)  # the user's traffic lands here: 0700
    ledger = Ledger(home / LEDGER_FILENAME)
    base = load_policy("default").replace(
        **{
            "cloud.model": cloud_model,
            "cloud.api_base": cloud_url,
            "local.adapter": None,
            "cache.enabled": False,
        }
    )
    say(f"replay cloud at {cloud_url} priced as {cloud_model}; data home {home}")
    # Shadow jobs from many threads: the local batcher answers them in batches.
    policy1 = base.replace(mode="cloud", **{"shadow.rate": shadow_rate, "shadow.workers": 32})
    started = time.time()
    with HybridClient(policy=policy1, ledger=ledger, seed=seed) as client:
        _send(client, phases[0], concurrency)
        say(f"phase 1: {len(phases[0])} requests sent all-cloud; waiting for shadow labels...")
        client.shadow.drain()
    before = summarize(ledger.rows(since=started), by="route")
    say(_line("before (all cloud)", before))
    say(f"phase 1 took {time.perf_counter() - t0:.0f} s")
    results = [
        _round(
            k,
            list(traffic),
            home=home,
            ledger=ledger,
            base=base,
            cloud_url=cloud_url,
            train_examples=train_examples,
            epochs=epochs,
            concurrency=concurrency,
            seed=seed,
            say=say,
        )
        for k, traffic in enumerate(phases[1:], start=1)
    ]
    return SimulationResult(before, results, seconds=time.perf_counter() - t0, home=home, name=name)


def simulate_file(
    traffic_path: str | Path,
    *,
    home: Path,
    eval_path: str | Path | None = None,
    nights: int = 1,
    cloud_model: str = DEFAULT_CLOUD_MODEL,
    seed: int = 0,
    **kw: Any,
) -> SimulationResult:
    """``hybridgate simulate``: load the files, start a replay cloud answering from them, run.

    Raises:
        ValueError: A bad traffic file, too little traffic for ``nights``, or a cloud model
            without a known price (``PolicyError``).
    """
    from router._text import last_user_text
    from router.devtools.replay import ReplayCloud
    from router.ledger.pricing import PriceBook

    PriceBook().price(cloud_model)  # an unknown model fails now, not after phase 1
    traffic = load_traffic(traffic_path)
    evaluation = load_traffic(eval_path) if eval_path else None
    phases = split_phases(traffic, nights=nights, eval_traffic=evaluation, seed=seed)
    answers: dict[str, str] = {}
    for row in [*traffic, *(evaluation or [])]:
        answers.setdefault(last_user_text(row["messages"]).strip(), row["teacher"])
    with ReplayCloud(answers, model=cloud_model) as cloud:
        return run_simulation(
            phases, home=home, cloud_url=cloud.base_url, cloud_model=cloud_model, seed=seed, **kw
        )


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
    groups: dict[str, list[tuple[float, bool]]] = {}
    for req, reply in zip(traffic, replies, strict=True):
        score = float(judge(reply.choices[0].message.content or "", req["teacher"]) >= 0.5)
        scores.append(score)
        local = reply.route.route == "local"
        if local:
            local_scores.append(score)
        groups.setdefault(_class_of(req), []).append((score, local))
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
    by_class = {
        name: {
            "requests": len(rows),
            "quality": sum(s for s, _ in rows) / len(rows),
            "local_share": sum(loc for _, loc in rows) / len(rows),
        }
        for name, rows in sorted(groups.items())
    }
    return RoundResult(
        summary,
        report,
        agreement=agreement,
        quality=quality,
        local_share=len(local_scores) / len(traffic) if traffic else 0.0,
        seconds=time.perf_counter() - t0,
        by_class=by_class,
    )


def _class_of(req: dict[str, Any]) -> str:
    """A request's class for the figures: its ``class`` column, else its system prompt."""
    if req.get("class"):
        return str(req["class"])
    from local_models.answer_sets import traffic_class
    from router.ledger.reports import CLASS_KEY_WIDTH

    return class_label(traffic_class(req["messages"]), width=CLASS_KEY_WIDTH, quote=False)


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


def _send(client: Any, traffic: Sequence[dict[str, Any]], concurrency: int) -> list[Any]:
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


__all__ = [
    "DEFAULT_CLOUD_MODEL",
    "RoundResult",
    "SimulationResult",
    "cost_share",
    "load_traffic",
    "run_simulation",
    "simulate_file",
    "split_phases",
]
