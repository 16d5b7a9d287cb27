"""``hybridgate distill``: the whole loop once — ledger -> distil -> gate -> promote -> relabel -> retune.

Safe to run from cron: a file lock makes a second concurrent run exit cleanly, too few new
examples is a clean skip, and any crash leaves the current adapter serving (the registry only
switches ``current`` after a candidate has been trained, evaluated and gated in).

Every path into the chain (``hybridgate distill``, ``--nightly``, the demo, a library call)
takes its data filters and gate settings from the policy's ``distill`` section, so they train
on the same data and judge it the same way. What the current adapter then serves is decided by
evidence only (``serve_adapter``): the traffic classes its gate passed, at thresholds retuned
to the quality target on shadow labels, or no traffic at all until there are enough labels.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local_models.registry import AdapterInfo, AdapterRegistry
from router._paths import POLICY_FILENAME
from training.config import LoraTrainingConfig, hardware_defaults
from training.dataset import (
    Example,
    FilterReport,
    examples_from_ledger,
    filter_examples,
    time_split,
)
from training.promote import distill_and_promote

if TYPE_CHECKING:
    from router.policy import RoutingPolicy
    from training.lora import DryRunEstimate

EARN_SHADOW_RATE = 0.1
"""Least shadow-labelling rate while the adapter takes no traffic: its labels are the only way
it can show (on a later run) that it meets the quality target."""

AUDIT_RATE = 0.1
"""Share of local answers also asked of the cloud while an adapter takes traffic, when the
policy set no ``shadow.audit_rate`` of its own: the next retune's only labels on what the local tier keeps. Without
them its calibration set is the traffic the old policy sent away, not the traffic it serves,
and the quality promise does not hold (the 77-intent demo kept 65% local against 54%
predicted, at 95.1% agreement against ~98%). Costs ``AUDIT_RATE x local share`` of all-cloud."""


def _publish(summary: DistillSummary, policy: RoutingPolicy, root: Path, version: str) -> None:
    """Load the promoted adapter on the policy's engine; a refusal is reported, not raised:
    the promotion stands and the engine keeps serving the previous adapter."""

    from router.publication import PublishError, publish

    local = policy.local
    assert local.api_base is not None
    key = os.environ.get(local.api_key_env) if local.api_key_env else None
    try:
        summary.published = publish(local.api_base, version=version, root=root, api_key=key).name
    except PublishError as exc:
        summary.publish_error = str(exc)


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
    served_classes: list[str] | None = None
    """The traffic classes the candidate earned (cleared the floor); the rest go to the cloud."""
    classes: list[dict[str, Any]] = field(default_factory=list)
    """The gate's per-class verdicts (``ClassVerdict.to_dict``)."""
    relabelled: int = 0
    published: str | None = None
    """The engine name the promoted adapter now serves under (``local.api_base`` set)."""
    publish_error: str | None = None
    """Why publishing to the engine failed; the engine keeps serving the previous adapter."""
    retune: dict[str, Any] | None = None
    """The serving status ``serve_adapter`` wrote (also in ``policy.status.json``)."""
    seconds: float = 0.0
    config: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """The run for a person (``hybridgate distill`` without ``--json``)."""
        out = [
            f"status: {self.status}",
            f"examples: {self.n_candidates} candidates, {self.n_train} train, "
            f"{self.n_heldout} held out",
        ]
        if self.config:
            out.append(self.config)
        if self.version:
            out.append(f"candidate {self.version}: {self.gate_reason}")
        if self.published:
            out.append(f"published to the engine as {self.published}")
        if self.publish_error:
            out.append(f"NOT published to the engine: {self.publish_error}")
        if self.retune:
            out.append(f"retune: {self.retune}")
        out.append(f"took {self.seconds:.0f} s")
        return out


def config_for(examples: list[Example], *, epochs: float | None = None) -> LoraTrainingConfig:
    """``hardware_defaults`` for these examples (~4 characters a token, +16 for the template);
    ``epochs`` overrides the picked epochs. ``run_distill`` and ``distill --dry-run`` share it."""
    avg = sum(len(e.prompt_text) + len(e.answer) for e in examples) / max(1, len(examples)) / 4
    config = hardware_defaults(len(examples), avg + 16)
    return config if epochs is None else dataclasses.replace(config, epochs=epochs)


def select_examples(
    ledger: Any,
    policy: Any,
    *,
    since: float | None = None,
    max_answer_chars: int | None = None,
) -> tuple[list[Example], list[Example], FilterReport]:
    """The ledger's distillation candidates and the ones the policy's data filter keeps.

    The one filter every path applies (``distill``, ``--nightly``, ``--dry-run``, the demo):
    long-form answers stay with the cloud. ``max_answer_chars`` overrides
    ``policy.distill.max_answer_chars`` when given.

    Returns:
        ``(candidates, kept, report)``; the report says how many rows each filter removed.
    """
    limit = policy.distill.max_answer_chars if max_answer_chars is None else max_answer_chars
    candidates = examples_from_ledger(ledger.rows(), min_ts=since)
    kept, report = filter_examples(candidates, max_answer_chars=limit)
    return candidates, kept, report


def split_for_training(
    kept: list[Example], *, holdout_fraction: float = 0.2, max_train: int | None = None
) -> tuple[list[Example], list[Example]]:
    """``(train, heldout)``: the newest ``holdout_fraction`` held out, then at most
    ``max_train`` of the newest training examples (``time_split`` raises on < 2 examples)."""
    train, heldout = time_split(kept, holdout_fraction=holdout_fraction)
    if max_train is not None:
        train = train[-max_train:]
    return train, heldout


@dataclass
class DistillEstimate:
    """What ``distill --dry-run`` shows: the data a run would train on, the hyper-parameters it
    would pick for it, and a time/cost estimate measured on this machine."""

    report: FilterReport
    n_train: int
    config: LoraTrainingConfig
    estimate: DryRunEstimate

    def lines(self) -> list[str]:
        """The report, the training-set size, the picked config and the estimate."""
        return [
            str(self.report),
            f"train on {self.n_train} examples",
            self.config.describe(),
            str(self.estimate),
        ]


def estimate_distill(
    *,
    ledger: Any,
    policy: Any,
    since: float | None = None,
    max_train: int | None = None,
    epochs: float | None = None,
    holdout_fraction: float = 0.2,
) -> DistillEstimate:
    """Estimate a ``run_distill`` with the same arguments, training nothing.

    The data, split and hyper-parameters are ``run_distill``'s own (``select_examples``,
    ``split_for_training``, ``config_for``), so the estimate is of the run that would happen;
    the cost uses ``local.usd_per_hour``.

    Raises:
        ValueError: No usable examples (the message carries the filter report), or too few
            to split into train and held-out.
    """
    from training.lora import dry_run

    _, kept, report = select_examples(ledger, policy, since=since)
    if not kept:
        raise ValueError(f"no usable examples in the ledger ({report})")
    train, _ = split_for_training(kept, holdout_fraction=holdout_fraction, max_train=max_train)
    config = config_for(train, epochs=epochs)
    estimate = dry_run(policy.local.model, train, config, usd_per_hour=policy.local.usd_per_hour)
    return DistillEstimate(report, len(train), config, estimate)


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
    the cascade will see for that prompt in production; the judging and storing is shadow
    labelling's own (``router.scoring.judges.label_local_answer``).
    """
    from local_models import GenerationRequest, LocalEngine, LocalModelConfig
    from local_models.answer_sets import traffic_class
    from router.scoring.judges import label_local_answer
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
            # The labelling step of shadow labelling, so tune fits on labels made one way.
            label_local_answer(
                ledger,
                example.source_id,
                result,
                reference=example.answer,
                usd_per_hour=usd_per_hour,
            )
            n += 1
    return n


def _daily_volume(ledger: Any, classes: list[str] | None, *, now: float | None = None) -> int:
    """Requests of ``classes`` (None: all) served in the last day: the traffic a threshold tuned
    tonight will see before the next run, which its quality promise is about."""
    from local_models.answer_sets import traffic_class

    since = (time.time() if now is None else now) - 86400.0
    wanted = None if classes is None else set(classes)
    return sum(
        1
        for e in ledger.rows(since=since)
        if e.reason not in ("judge", "audit")  # overhead calls, not traffic
        and (wanted is None or (e.messages is not None and traffic_class(e.messages) in wanted))
    )


def _tuned(result: Any) -> dict[str, Any]:
    return {
        "threshold": result.threshold,
        "expected_quality": result.expected_quality,
        "quality_lo": result.quality_lo,
        "delta": result.delta,
        "fresh": result.fresh,
        "cost_fraction": result.cost_fraction,
        "local_fraction": result.local_fraction,
        "n_labels": result.n_labels,
        "n_effective": result.n_effective,
    }


def _evidence(what: str, result: Any) -> str:
    eff = "" if result.n_effective is None else f" (weighted: {result.n_effective:g} effective)"
    return (
        f"{what} {result.threshold:.4f}: quality {result.expected_quality:.3f} (>= "
        f"{result.quality_lo:.3f} over {result.fresh} fresh requests with "
        f"{1 - result.delta:.0%} confidence, target {result.target_quality:.3f}) on "
        f"{result.n_labels} labels{eff}, {result.local_fraction:.1%} local, cost "
        f"{result.cost_fraction:.1%} of all-cloud"
    )


def write_status(policy_out: str | Path, status: dict[str, Any]) -> Path:
    """Write ``status`` beside the policy (atomically), where ``hybridgate report`` reads it."""
    from router._paths import write_private
    from router.ledger.reports import serving_status_path

    return write_private(serving_status_path(policy_out), json.dumps(status, indent=2, default=str))


def serve_adapter(
    ledger: Any,
    policy: Any,
    adapter: AdapterInfo,
    *,
    target_quality: float = 0.97,
    policy_out: str | Path,
    last_candidate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the policy that serves ``adapter`` at ``policy_out``, and a status file saying why.

    The adapter answers locally only what the evidence supports: the traffic classes its gate
    passed (``served_classes`` in its metadata -> ``rules.local_classes``) and, within those,
    only at thresholds retuned to ``target_quality`` on shadow labels of those classes; the
    quality promise covers as many fresh requests as those classes saw in the last day (at
    least as many as were labelled), the traffic until the next nightly run. When
    the labels cannot show that (too few of them, or no threshold keeps anything local at the
    target's 95% lower bound), the adapter takes no traffic: ``rules.local_classes: []`` sends
    every request to the cloud and shadow labelling stays on (at least ``EARN_SHADOW_RATE``),
    so a later run can tune on more labels. A bundled default threshold is never kept for a
    new adapter. In hybrid mode a cascade band whose threshold cannot be tuned is closed
    (``hybrid_low = hybrid_high``), leaving only the tuned routing.

    Returns:
        The status written beside the policy (``router.ledger.reports.serving_status_path``).
    """
    from router.policy import save_policy
    from router.tuning.retune import labelled_from_ledger, retune

    out = Path(policy_out)
    served = adapter.metadata.get("served_classes")  # None: gated before per-class gating
    classes = None if served is None else [str(c) for c in served]
    base = policy.replace(**{"local.adapter": "current", "rules.local_classes": classes})
    status: dict[str, Any] = {
        "written": time.time(),
        "policy": str(out),
        "adapter": adapter.version,
        "target_quality": target_quality,
        "local_classes": classes,
        "n_labels": None,
    }
    reason = ""
    new_policy = None
    if base.mode in ("cloud", "local"):
        new_policy, reason = base, f"mode {base.mode}: the policy decides alone, nothing tuned"
    elif classes == []:
        reason = "its gate passed no traffic class"
    else:
        trained_until = adapter.metadata.get("trained_until")
        labelled = labelled_from_ledger(ledger, classes=classes, after=trained_until)
        status["n_labels"] = len(labelled)
        status["labels_after"] = trained_until
        fresh = max(len(labelled), _daily_volume(ledger, classes))
        status["fresh"] = fresh
        route = cascade = None
        route_error = cascade_error = ""
        try:
            tuned = retune(
                labelled, base, target_quality=target_quality, fresh=fresh, out_dir=out.parent
            )
            route = tuned.result
            status["route"] = _tuned(route)
        except ValueError as exc:  # too few labels, or one class only (nothing to fit)
            route_error = str(exc)
        if base.mode in ("cascade", "hybrid"):
            start = base
            if route is not None and not route.all_cloud:
                start = tuned.policy  # its classifier; in cascade mode not its class choice
                if base.mode == "cascade":
                    start = start.replace(**{"rules.local_classes": classes})
            elif base.mode == "hybrid":  # no fitted router: cascade every request
                start = base.replace(classifier=None)
            try:  # the cascade band keeps only answers the student is sure of
                cascade = retune(
                    labelled,
                    start,
                    target="cascade",
                    target_quality=target_quality,
                    fresh=fresh,
                    out_dir=out.parent,
                )
                status["cascade"] = _tuned(cascade.result)
            except ValueError as exc:  # too few labels, or none with a confidence yet
                cascade_error = str(exc)
        route_ok = route is not None and route.local_fraction > 0
        cascade_ok = cascade is not None and cascade.result.local_fraction > 0
        if base.mode == "route" and route_ok:
            new_policy, reason = tuned.policy, _evidence("route threshold", route)
        elif base.mode != "route" and cascade_ok:
            assert cascade is not None
            new_policy = cascade.policy
            reason = _evidence("cascade threshold", cascade.result)
            if base.mode == "hybrid":
                routed = _evidence("route threshold", route) if route else route_error
                reason += f"; routing: {routed}"
        elif base.mode == "hybrid" and route_ok:
            assert route is not None
            t = tuned.policy.thresholds.route
            new_policy = tuned.policy.replace(
                **{"thresholds.hybrid_low": t, "thresholds.hybrid_high": t}
            )
            why = cascade_error or "no confidence threshold keeps anything at the target"
            reason = f"{_evidence('route threshold', route)}; no cascade band ({why})"
        else:
            found = [
                route_error
                or f"no route threshold keeps any request local on {len(labelled)} labels",
            ]
            if base.mode != "route":
                found.append(
                    cascade_error
                    or f"no cascade threshold keeps any answer local on {len(labelled)} labels"
                )
            errors = "; ".join(dict.fromkeys(found))
            reason = f"the labels cannot show quality >= {target_quality:.2f} yet: {errors}"
        unpaid = {
            **(tuned.dropped if route is not None and base.mode != "cascade" else {}),
            **(cascade.dropped if cascade is not None else {}),
        }
        if unpaid:
            status["unpaid_classes"] = unpaid
            listed = "; ".join(f"{k}: {v}" for k, v in unpaid.items())
            if new_policy is not None and new_policy.rules.local_classes == ():
                new_policy, reason = None, f"local answers do not pay on any class ({listed})"
            else:
                reason += f"; taken off the local tier because local does not pay: {listed}"
    if new_policy is not None and new_policy.mode in ("cascade", "hybrid") and base.cloud.tiers:
        new_policy, status["tiers"] = _retune_tiers(
            ledger, new_policy, target_quality, adapter.metadata.get("trained_until"),
            status.get("fresh"),
        )  # fmt: skip
        if new_policy is None:
            reason = f"the tiers' labels cannot show the target: {status['tiers']['reason']}"
        else:
            reason += f"; tiers: {status['tiers']['reason']}"
    takes_traffic = new_policy is not None and new_policy.mode != "cloud"
    if (
        takes_traffic
        and new_policy is not None
        and new_policy.mode != "local"
        and new_policy.shadow.audit_rate == 0  # a rate the user chose stands
    ):
        new_policy = new_policy.replace(**{"shadow.audit_rate": AUDIT_RATE})
    if new_policy is None:
        new_policy = base.replace(
            **{
                "rules.local_classes": [],
                "shadow.rate": max(base.shadow.rate, EARN_SHADOW_RATE),
            }
        )
    save_policy(new_policy, out)
    status.update(
        takes_traffic=takes_traffic,
        reason=reason,
        mode=new_policy.mode,
        shadow_rate=new_policy.shadow.rate,
        audit_rate=new_policy.shadow.audit_rate,
        served_classes=classes,
        local_classes=None
        if new_policy.rules.local_classes is None
        else list(new_policy.rules.local_classes),
        thresholds=dataclasses.asdict(new_policy.thresholds),
        last_candidate=last_candidate,
    )
    write_status(out, status)
    return status


MIN_TIER_LABELS = 50
"""Explored requests (every tier asked) needed before the nightly run retunes the tiers."""


def _retune_tiers(
    ledger: Any, policy: Any, target_quality: float, after: float | None, fresh: int | None
) -> tuple[Any, dict[str, Any]]:
    """An N-tier cascade's thresholds, all at once, on explored requests newer than the
    adapter's training data: the two-tier promise does not hold once a middle tier can keep
    answers. Too few labels: the thresholds stay as they were (the status says so); a choice
    of all-cloud: None (the adapter takes no traffic)."""
    from router.tuning.tiers import tier_data_from_ledger, tune_tiers, tuned_policy

    data = tier_data_from_ledger(ledger, after=after)
    n = len(data.final_usd)
    if n < MIN_TIER_LABELS:
        why = f"not retuned: {n} explored requests (every tier asked), {MIN_TIER_LABELS} needed"
        return policy, {"retuned": False, "n_labels": n, "reason": why}
    try:
        choice = tune_tiers(data, target_quality=target_quality, fresh=max(fresh or 0, n))
        tuned = None if choice.all_cloud else tuned_policy(policy, choice)
    except ValueError as exc:  # the labels are for another cascade
        return policy, {"retuned": False, "n_labels": n, "reason": f"not retuned: {exc}"}
    note = {"retuned": True, "n_labels": n, "reason": "; ".join(choice.lines())}
    note["thresholds"] = dict(zip(choice.names, choice.thresholds, strict=True))
    return tuned, note


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
    min_gain: float | None = None,
    do_relabel: bool = True,
    do_retune: bool = True,
    target_quality: float = 0.97,
    policy_out: str | Path | None = None,
    lock_path: str | Path | None = None,
    progress: bool = True,
) -> DistillSummary:
    """Run the chain once. Returns a summary; raises only on real failures.

    ``config`` None picks ``hardware_defaults`` for the data; ``epochs`` overrides its epochs.
    Data filters and gate settings come from ``policy.distill``; ``max_answer_chars`` and
    ``min_gain`` override it when given (set ``distill.max_answer_chars: null`` to lift the
    answer-length limit). After the gate, ``do_retune`` rewrites the serving policy at
    ``policy_out`` for the current adapter, promoted tonight or not (``serve_adapter``).
    """
    from filelock import FileLock, Timeout

    t0 = time.perf_counter()
    from router._paths import private_dir

    registry = registry or AdapterRegistry()
    lock_file = Path(lock_path or Path(registry.root) / "distill.lock")
    private_dir(lock_file.parent)  # else filelock makes the adapters' folder 0755
    lock = FileLock(str(lock_file), mode=0o600)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return DistillSummary(status="locked", gate_reason="another distill run holds the lock")
    try:
        base = base or policy.local.model
        settings = policy.distill
        gain = settings.min_gain if min_gain is None else min_gain
        candidates, kept, report = select_examples(
            ledger, policy, since=since, max_answer_chars=max_answer_chars
        )
        dropped = {k: v for k, v in getattr(report, "dropped", {}).items() if v}
        summary = DistillSummary(
            status="too_few_examples", n_candidates=len(candidates), dropped=dropped
        )
        if len(kept) < min_examples:
            summary.gate_reason = f"{len(kept)} usable examples, need {min_examples}"
            summary.seconds = time.perf_counter() - t0
            return summary
        train, heldout = split_for_training(
            kept, holdout_fraction=holdout_fraction, max_train=max_train
        )
        if config is None:
            config = config_for(train)
        if epochs is not None:
            config = dataclasses.replace(config, epochs=epochs)
        summary.config = config.describe()
        outcome = distill_and_promote(
            base,
            train,
            heldout,
            config,
            registry=registry,
            min_gain=gain,
            min_agreement=settings.min_agreement,
            min_class_examples=settings.min_class_examples,
            progress=progress,
            precision=policy.local.precision,
        )
        summary.n_train, summary.n_heldout = len(train), len(heldout)
        summary.version = outcome.version
        summary.gate_reason = outcome.decision.reason
        summary.candidate = outcome.candidate.to_dict()
        summary.current = outcome.current.to_dict() if outcome.current else None
        summary.status = "promoted" if outcome.decision.promote else "rejected"
        summary.served_classes = list(outcome.decision.served_classes)
        summary.classes = [v.to_dict() for v in outcome.decision.classes]
        if outcome.decision.promote and policy.local.api_base:
            _publish(summary, policy, registry.root, outcome.version)
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
        current = registry.current() if do_retune else None
        if current is not None:  # promoted tonight, or the one still serving
            out = Path(policy_out) if policy_out else Path(registry.root).parent / POLICY_FILENAME
            summary.retune = serve_adapter(
                ledger,
                policy,
                current,
                target_quality=target_quality,
                policy_out=out,
                last_candidate={
                    "version": summary.version,
                    "status": summary.status,
                    "reason": summary.gate_reason,
                },
            )
        summary.seconds = time.perf_counter() - t0
        return summary
    finally:
        lock.release()
