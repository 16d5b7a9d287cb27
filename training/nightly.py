"""``hybridgate distill``: the whole loop once — ledger -> distil -> gate -> promote -> relabel -> retune.

Safe to run from cron: a file lock makes a second concurrent run exit cleanly, too few new
examples is a clean skip, and any crash leaves the current adapter serving (the registry only
switches ``current`` after a candidate has been trained, evaluated and gated in).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.config import LoraTrainingConfig, hardware_defaults
from training.dataset import Example, examples_from_ledger, filter_examples, time_split
from training.promote import distill_and_promote
from training.registry import AdapterRegistry


@dataclass
class DistillSummary:
    """What one run did; ``status`` is one of locked, too_few_examples, promoted, rejected."""

    status: str
    n_candidates: int = 0
    n_train: int = 0
    n_heldout: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    version: str | None = None
    gate_reason: str = ""
    candidate: dict[str, Any] | None = None
    current: dict[str, Any] | None = None
    relabelled: int = 0
    retune: dict[str, Any] | None = None
    seconds: float = 0.0
    config: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_for(examples: list[Example], *, epochs: float | None = None) -> LoraTrainingConfig:
    """``hardware_defaults`` for these examples (~4 characters a token, +16 for the template);
    ``epochs`` overrides the picked epochs. ``run_distill`` and ``distill --dry-run`` share it."""
    avg = sum(len(e.prompt_text) + len(e.answer) for e in examples) / max(1, len(examples)) / 4
    config = hardware_defaults(len(examples), avg + 16)
    return config if epochs is None else dataclasses.replace(config, epochs=epochs)


RELABEL_MAX_TOKENS = 32
"""Decode limit when re-answering a prompt without a closed answer set (labels need few)."""


def relabel(
    ledger: Any,
    examples: list[Example],
    *,
    base: str,
    adapter_dir: str | Path,
    system_prompt: str | None,
    usd_per_hour: float,
    precision: str = "auto",
    batch_size: int = 16,
) -> int:
    """Re-answer prompts with the new adapter and store fresh labels in the ledger.

    The router learns that the student got better: ``tune`` then fits on these labels. The
    answers come from the serving engine itself (same precision, answer sets from the
    adapter's metadata, same decoding), so each label carries the answer and the confidence
    the cascade will see for that prompt in production.
    """
    from local_models import GenerationRequest, LocalEngine, LocalModelConfig
    from local_models.answer_sets import traffic_class
    from router.confidence import confidence
    from router.judges import auto_judge, get_judge
    from training._model import prompt_messages

    engine = LocalEngine.from_config(
        LocalModelConfig(
            model=base,
            precision=precision,
            adapter_path=str(adapter_dir),
            adapter_version=Path(adapter_dir).name,
        )
    )
    # One traffic class per batch, similar lengths together: shared prefix, little padding.
    todo = sorted(
        ((tuple(prompt_messages(e.messages, system_prompt=system_prompt)), e) for e in examples),
        key=lambda pair: (traffic_class(pair[0]), sum(len(m["content"]) for m in pair[0])),
    )
    n = 0
    for i in range(0, len(todo), batch_size):
        batch = todo[i : i + batch_size]
        results = engine.generate(
            [
                GenerationRequest(messages=messages, max_tokens=RELABEL_MAX_TOKENS)
                for messages, _ in batch
            ]
        )
        for (_, example), result in zip(batch, results, strict=True):
            name = auto_judge(example.answer)
            score = float(get_judge(name)(answer=result.text, reference=example.answer))
            ledger.add_label(
                example.source_id,
                judge=name,
                label=score,
                local_answer=result.text,
                local_confidence=confidence(result.token_logprobs),
                local_cost_usd=result.compute_seconds * usd_per_hour / 3600,
            )
            n += 1
    return n


def _relabel_set(ledger: Any, heldout: list[Example]) -> list[Example]:
    """Held-out examples plus every request that already carries a (now stale) label."""
    seen = {e.source_id for e in heldout}
    out = list(heldout)
    for entry, _label in ledger.labelled():
        if entry.request_id in seen or not entry.messages or not entry.answer:
            continue
        seen.add(entry.request_id)
        out.append(
            Example(
                messages=tuple(entry.messages),
                answer=entry.answer,
                ts=entry.ts,
                source_id=entry.request_id,
            )
        )
    return out


def run_distill(
    *,
    ledger: Any,
    policy: Any,
    registry: AdapterRegistry | None = None,
    base: str | None = None,
    config: LoraTrainingConfig | None = None,
    epochs: float | None = None,
    min_examples: int = 50,
    since: float | None = None,
    holdout_fraction: float = 0.2,
    max_train: int | None = None,
    max_answer_chars: int | None = None,
    min_gain: float = 0.01,
    do_relabel: bool = True,
    do_retune: bool = True,
    target_quality: float = 0.97,
    policy_out: str | Path | None = None,
    lock_path: str | Path | None = None,
    progress: bool = True,
) -> DistillSummary:
    """Run the chain once. Returns a summary; raises only on real failures.

    ``config`` None picks ``hardware_defaults`` for the data; ``epochs`` overrides its epochs.
    """
    from filelock import FileLock, Timeout

    t0 = time.perf_counter()
    registry = registry or AdapterRegistry()
    lock = FileLock(str(lock_path or Path(registry.root) / "distill.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return DistillSummary(status="locked", gate_reason="another distill run holds the lock")
    try:
        base = base or policy.local.model
        candidates = examples_from_ledger(ledger.rows(), min_ts=since)
        if max_answer_chars is not None:  # long-form answers stay with the cloud
            candidates = [e for e in candidates if len(e.answer) <= max_answer_chars]
        kept, report = filter_examples(candidates)
        dropped = {k: v for k, v in getattr(report, "dropped", {}).items() if v}
        summary = DistillSummary(
            status="too_few_examples", n_candidates=len(candidates), dropped=dropped
        )
        if len(kept) < min_examples:
            summary.gate_reason = f"{len(kept)} usable examples, need {min_examples}"
            summary.seconds = time.perf_counter() - t0
            return summary
        train, heldout = time_split(kept, holdout_fraction=holdout_fraction)
        if max_train is not None:
            train = train[-max_train:]
        if config is None:
            config = config_for(train)
        if epochs is not None:
            config = dataclasses.replace(config, epochs=epochs)
        summary.config = config.describe()
        outcome = distill_and_promote(
            base, train, heldout, config, registry=registry, min_gain=min_gain, progress=progress
        )
        summary.n_train, summary.n_heldout = len(train), len(heldout)
        summary.version = outcome.version
        summary.gate_reason = outcome.decision.reason
        summary.candidate = outcome.candidate.to_dict()
        summary.current = outcome.current.to_dict() if outcome.current else None
        summary.status = "promoted" if outcome.decision.promote else "rejected"
        if outcome.decision.promote and do_relabel:
            info = registry.show(outcome.version)
            summary.relabelled = relabel(
                ledger,
                _relabel_set(ledger, heldout),
                base=base,
                adapter_dir=info.path,
                system_prompt=config.system_prompt,
                usd_per_hour=policy.local.usd_per_hour,
                precision=policy.local.precision,
            )
        if outcome.decision.promote and do_retune:
            from router.policy import save_policy
            from router.retune import labelled_from_ledger, retune

            out = Path(policy_out) if policy_out else Path(registry.root).parent / "policy.yaml"
            try:
                labelled = labelled_from_ledger(ledger)
                tuned = retune(
                    labelled,
                    policy.replace(**{"local.adapter": "current"}),
                    target_quality=target_quality,
                    out_dir=out.parent,
                )
                new_policy, cascade = tuned.policy, None
                if new_policy.mode in ("cascade", "hybrid"):
                    try:  # the cascade band keeps only answers the student is sure of
                        cascade = retune(
                            labelled,
                            new_policy,
                            target="cascade",
                            target_quality=target_quality,
                            out_dir=out.parent,
                        )
                        new_policy = cascade.policy
                    except ValueError:
                        cascade = None  # no confidences yet: keep the policy's threshold
                save_policy(new_policy, out)
                r = tuned.result
                summary.retune = {
                    "policy": str(out),
                    "threshold": r.threshold,
                    "expected_quality": r.expected_quality,
                    "cost_fraction": r.cost_fraction,
                    "local_fraction": r.local_fraction,
                    "met_target": r.quality_ci[0] >= r.target_quality - 1e-12,
                    "n_labels": r.n_labels,
                }
                if cascade is not None:
                    summary.retune["cascade_threshold"] = cascade.result.threshold
                    summary.retune["cascade_expected_quality"] = cascade.result.expected_quality
            except ValueError as exc:  # too few labels to tune: the adapter still serves
                summary.retune = {"skipped": str(exc)}
        summary.seconds = time.perf_counter() - t0
        return summary
    finally:
        lock.release()
