"""The evaluation gate and the nightly distill -> evaluate -> register -> promote pipeline.

The gate judges each *traffic class* (requests sharing a system prompt) on its own held-out
rows: a class is served locally only if the adapter agrees with the teacher on at least a floor
share of it (``min_agreement``; the first adapter too: it has nothing else to beat). A candidate
is promoted only if it serves some class, and, when an adapter is current, beats it by a margin
on a class it serves, loses no more than that margin on any class the current one serves, and
its answer loss has not regressed beyond a tolerance. The classes it earned are recorded in its
metadata (``served_classes``) and written into the serving policy (``rules.local_classes``), so
the router sends every other class to the cloud. Anything that fails before ``promote`` (a crash
mid-training included) leaves ``CURRENT`` untouched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local_models.registry import AdapterRegistry
from router._text import class_label
from training._model import hash_model_files, resolve_base
from training.config import LoraTrainingConfig
from training.dataset import Example
from training.evaluate import EvalResult, answer_sets, evaluate
from training.lora import StepInfo, train_lora

DEFAULT_MIN_AGREEMENT = 0.5
"""Held-out agreement a traffic class needs before an adapter serves it (policy
``distill.min_agreement``). 0 would promote the first adapter whatever it scored: a 9.5%
student once took traffic that way."""

DEFAULT_MIN_CLASS_EXAMPLES = 10
"""Held-out rows a class needs before its agreement counts (policy ``distill.min_class_examples``)."""


@dataclass(frozen=True)
class ClassVerdict:
    """The gate's finding on one traffic class."""

    traffic_class: str
    n: int
    agreement: float
    current_agreement: float | None
    serve: bool
    """The candidate may answer this class locally."""
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "traffic_class": self.traffic_class,
            "n": self.n,
            "agreement": self.agreement,
            "current_agreement": self.current_agreement,
            "serve": self.serve,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, and a reason a human can read in the nightly log."""

    promote: bool
    reason: str
    classes: tuple[ClassVerdict, ...] = field(default=())
    """Per-class findings (empty from the whole-set ``gate``)."""

    @property
    def served_classes(self) -> tuple[str, ...]:
        """The traffic classes the candidate earned (what the router may keep local)."""
        return tuple(v.traffic_class for v in self.classes if v.serve)


def gate(
    candidate: EvalResult,
    current: EvalResult | None,
    *,
    min_gain: float = 0.01,
    max_loss_regression: float = 0.05,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
) -> GateDecision:
    """Decide promotion from held-out results of the candidate and the current adapter.

    Args:
        candidate: the new adapter's ``EvalResult``.
        current: the current adapter's result on the same held-out set (None: no adapter yet,
            compare against ``min_agreement`` only).
        min_gain: agreement must rise by at least this much (absolute, 0..1).
        max_loss_regression: answer loss may rise by at most this fraction of the current loss.
        min_agreement: floor for the very first adapter (``DEFAULT_MIN_AGREEMENT``).

    Returns:
        A ``GateDecision``.

    Raises:
        ValueError: negative margins, or an empty evaluation.
    """
    if min_gain < 0 or max_loss_regression < 0:
        raise ValueError("min_gain and max_loss_regression must be >= 0")
    if candidate.n == 0:
        raise ValueError("candidate was evaluated on 0 examples")
    if current is None:
        ok = candidate.agreement >= min_agreement
        return GateDecision(
            ok,
            f"first adapter: agreement {candidate.agreement:.3f} "
            f"{'>=' if ok else '<'} floor {min_agreement:.3f}",
        )
    gain = candidate.agreement - current.agreement
    loss_limit = current.loss * (1 + max_loss_regression)
    if gain < min_gain:
        return GateDecision(
            False,
            f"agreement gain {gain:+.3f} < required {min_gain:.3f} "
            f"({candidate.agreement:.3f} vs {current.agreement:.3f})",
        )
    if candidate.loss > loss_limit:
        return GateDecision(
            False,
            f"loss regressed: {candidate.loss:.4f} > {loss_limit:.4f} "
            f"(current {current.loss:.4f} + {max_loss_regression:.0%})",
        )
    return GateDecision(
        True,
        f"agreement {candidate.agreement:.3f} vs {current.agreement:.3f} ({gain:+.3f}), "
        f"loss {candidate.loss:.4f} vs {current.loss:.4f}",
    )


def gate_by_class(
    candidate: EvalResult,
    current: EvalResult | None,
    *,
    current_served: Collection[str] | None = None,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    min_gain: float = 0.01,
    max_loss_regression: float = 0.05,
    min_class_examples: int = DEFAULT_MIN_CLASS_EXAMPLES,
) -> GateDecision:
    """Decide promotion, and which traffic classes the candidate serves, class by class.

    A class is served when it has ``min_class_examples`` held-out rows, the candidate's agreement
    on them is at least ``min_agreement``, and it is not worse than the current adapter's by more
    than ``min_gain``. The first adapter is promoted when it serves any class; a later one when it
    serves a class on which it gains ``min_gain`` over the current adapter, gives up no class the
    current adapter serves and still clears, and its overall loss has not regressed.

    Args:
        candidate, current: ``evaluate`` results on the same held-out rows (``by_class`` filled).
        current_served: the classes the current adapter was gated in for (its metadata's
            ``served_classes``); None: the classes it clears the floor on today.
        min_agreement, min_gain, max_loss_regression, min_class_examples: see above.

    Returns:
        A ``GateDecision`` with one ``ClassVerdict`` per class, largest first.

    Raises:
        ValueError: an empty or class-less evaluation, or margins out of range.
    """
    if min_gain < 0 or max_loss_regression < 0 or not 0 <= min_agreement <= 1:
        raise ValueError("min_gain, max_loss_regression must be >= 0 and min_agreement in [0, 1]")
    if candidate.n == 0 or not candidate.by_class:
        raise ValueError("gate_by_class needs a non-empty evaluation with by_class results")
    cur_classes = current.by_class if current is not None else {}
    verdicts: list[ClassVerdict] = []
    won: list[str] = []
    lost: list[str] = []
    for key, res in sorted(candidate.by_class.items(), key=lambda kv: (-kv[1].n, kv[0])):
        cur = cur_classes.get(key)
        b = cur.agreement if cur is not None else None
        if res.n < min_class_examples:
            serve, why = False, f"{res.n} held-out rows, need {min_class_examples}"
        elif res.agreement < min_agreement:
            serve, why = False, f"agreement {res.agreement:.3f} < floor {min_agreement:.3f}"
        elif b is not None and res.agreement < b - min_gain:
            serve, why = False, f"agreement {res.agreement:.3f} < current {b:.3f}"
        else:
            serve = True
            why = f"agreement {res.agreement:.3f} >= floor {min_agreement:.3f}"
            if b is not None:
                why += f", current {b:.3f} ({res.agreement - b:+.3f})"
        verdicts.append(ClassVerdict(key, res.n, res.agreement, b, serve, why))
        if serve and (b is None or res.agreement - b >= min_gain):
            won.append(key)
        if current is not None and b is not None and not serve and res.n >= min_class_examples:
            was_served = key in current_served if current_served is not None else True
            if was_served and b >= min_agreement:
                lost.append(key)
    classes = tuple(verdicts)
    served = [v.traffic_class for v in verdicts if v.serve]
    summary = "; ".join(f"{class_label(v.traffic_class)}: {v.reason}" for v in verdicts)
    if current is None:
        if not served:
            return GateDecision(
                False, f"first adapter: no traffic class clears: {summary}", classes
            )
        return GateDecision(
            True,
            f"first adapter: serves {len(served)} of {len(verdicts)} classes: {summary}",
            classes,
        )
    loss_limit = current.loss * (1 + max_loss_regression)
    if candidate.loss > loss_limit:
        return GateDecision(
            False,
            f"loss regressed: {candidate.loss:.4f} > {loss_limit:.4f} "
            f"(current {current.loss:.4f} + {max_loss_regression:.0%})",
            classes,
        )
    if lost:
        names = ", ".join(class_label(k) for k in lost)
        return GateDecision(
            False, f"worse on {names}, which the current adapter serves: {summary}", classes
        )
    if not won:
        return GateDecision(
            False,
            f"no served class gains >= {min_gain:.3f} over the current adapter: {summary}",
            classes,
        )
    return GateDecision(
        True,
        f"serves {len(served)} of {len(verdicts)} classes, gains on {len(won)}: {summary}",
        classes,
    )


@dataclass(frozen=True)
class DistillOutcome:
    """What one distillation run did."""

    version: str
    decision: GateDecision
    candidate: EvalResult
    current: EvalResult | None


def write_answer_checker(
    adapter_dir: Path, train: Sequence[Example], sets: Mapping[str, Sequence[str]]
) -> Path | None:
    """Fit the answer checker of each closed answer set on the same rows the adapter learned
    (``local_models.answer_checker``) and store it beside the weights; None when no traffic
    class has a closed set."""
    from local_models.answer_checker import CHECKER_FILE, checker_text, fit_answer_checker
    from local_models.answer_sets import traffic_class

    data: dict[str, tuple[list[str], list[str]]] = {key: ([], []) for key in sets}
    allowed = {key: set(answers) for key, answers in sets.items()}
    for e in train:
        key, answer = traffic_class(e.messages), e.answer.strip()
        if key in data and answer in allowed[key]:
            data[key][0].append(checker_text(e.messages))
            data[key][1].append(answer)
    checker = fit_answer_checker(data)
    if not checker.traffic_classes:
        return None
    return checker.save(Path(adapter_dir) / CHECKER_FILE)


def distill_and_promote(
    base: str | Path,
    train: Sequence[Example],
    heldout: Sequence[Example],
    config: LoraTrainingConfig,
    *,
    registry: AdapterRegistry,
    min_gain: float = 0.01,
    max_loss_regression: float = 0.05,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    min_class_examples: int = DEFAULT_MIN_CLASS_EXAMPLES,
    progress: bool = False,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
    work_dir: str | Path | None = None,
    precision: str = "auto",
) -> DistillOutcome:
    """Train a candidate, evaluate it and the current adapter, register it, promote if it wins.

    Args:
        base: model spec or HF dir (loaded fresh for training and for each evaluation, since
            attaching adapters mutates a model object).
        train: training examples; heldout: newer examples (see ``time_split``), both already
            through ``filter_examples`` (``training.nightly.run_distill`` does that).
        config: LoRA hyper-parameters.
        registry: where adapters live.
        min_gain, max_loss_regression, min_agreement, min_class_examples: passed to
            ``gate_by_class``.
        progress, callbacks: passed to ``train_lora``.
        work_dir: scratch dir for the candidate (temp dir by default).
        precision: the precision the gateway serves with (``local.precision``): the gate
            decodes with it, so the agreement it measures is the served agreement.

    Returns:
        A ``DistillOutcome`` (the candidate is registered either way, promoted only if gated in;
        its metadata records the per-class verdicts and ``served_classes``).

    Raises:
        TypeError: ``base`` is a model object.
    """
    if not isinstance(base, str | Path):
        raise TypeError("distill_and_promote needs a model spec or directory, not a model object")
    sets = answer_sets(train)  # per traffic class, from training rows only
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        out = Path(tmp) / "candidate"
        res = train_lora(
            base,
            train,
            config,
            output_dir=out,
            progress=progress,
            callbacks=callbacks,
            resume=False,
        )
        write_answer_checker(out, train, sets)
        kw = {"system_prompt": config.system_prompt, "answer_sets": sets, "precision": precision}
        cand = evaluate(base, heldout, adapter_dir=out, **kw)
        cur_info = registry.current()
        current = None
        if cur_info is not None:
            current = evaluate(base, heldout, adapter_dir=cur_info.path, **kw)
        decision = gate_by_class(
            cand,
            current,
            current_served=cur_info.metadata.get("served_classes") if cur_info else None,
            min_agreement=min_agreement,
            min_gain=min_gain,
            max_loss_regression=max_loss_regression,
            min_class_examples=min_class_examples,
        )
        base_dir = resolve_base(str(base))
        metadata = {
            "base_model": str(base),
            "base_model_sha256": hash_model_files(base_dir),
            "data_window": {"min_ts": min(e.ts for e in train), "max_ts": max(e.ts for e in train)},
            "n_train": len(train),
            "n_heldout": len(heldout),
            # Labels of requests up to here may be of examples it learned: the retune that
            # promises quality on fresh traffic must not calibrate on them.
            "trained_until": max((e.ts for e in train), default=None),
            "metrics": {
                **cand.to_dict(),
                "tokens_per_s": res.tokens_per_s,
                "final_loss": res.final_loss,
            },
            "gate": {
                "promote": decision.promote,
                "reason": decision.reason,
                "min_agreement": min_agreement,
                "min_gain": min_gain,
                "min_class_examples": min_class_examples,
                "classes": [v.to_dict() for v in decision.classes],
            },
            "served_classes": list(decision.served_classes),
            "config": config.to_dict(),
            "system_prompt": config.system_prompt,
            "answer_sets": sets,
        }
        version = registry.register(out, metadata)
    if decision.promote:
        # The candidate was just loaded and run from these bytes (evaluate); promote still
        # checks the copy's files and recorded hash, but need not load the model again.
        registry.promote(version, smoke_test=False)
    return DistillOutcome(version=version, decision=decision, candidate=cand, current=current)
