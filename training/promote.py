"""The evaluation gate and the nightly distill -> evaluate -> register -> promote pipeline.

A candidate adapter replaces the current one only if it agrees with the teacher more often by
a margin and its answer loss has not regressed beyond a tolerance; anything that fails before
``promote`` (a crash mid-training included) leaves ``CURRENT`` untouched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from training._model import hash_model_files, resolve_base
from training.config import LoraTrainingConfig
from training.dataset import Example
from training.evaluate import EvalResult, answer_sets, evaluate
from training.lora import StepInfo, train_lora
from training.registry import AdapterRegistry


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, and a reason a human can read in the nightly log."""

    promote: bool
    reason: str


def gate(
    candidate: EvalResult,
    current: EvalResult | None,
    *,
    min_gain: float = 0.01,
    max_loss_regression: float = 0.05,
    min_agreement: float = 0.0,
) -> GateDecision:
    """Decide promotion from held-out results of the candidate and the current adapter.

    Args:
        candidate: the new adapter's ``EvalResult``.
        current: the current adapter's result on the same held-out set (None: no adapter yet,
            compare against ``min_agreement`` only).
        min_gain: agreement must rise by at least this much (absolute, 0..1).
        max_loss_regression: answer loss may rise by at most this fraction of the current loss.
        min_agreement: floor for the very first adapter.

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


@dataclass(frozen=True)
class DistillOutcome:
    """What one distillation run did."""

    version: str
    decision: GateDecision
    candidate: EvalResult
    current: EvalResult | None


def distill_and_promote(
    base: str | Path,
    train: Sequence[Example],
    heldout: Sequence[Example],
    config: LoraTrainingConfig,
    *,
    registry: AdapterRegistry,
    min_gain: float = 0.01,
    max_loss_regression: float = 0.05,
    progress: bool = False,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
    work_dir: str | Path | None = None,
) -> DistillOutcome:
    """Train a candidate, evaluate it and the current adapter, register it, promote if it wins.

    Args:
        base: model spec or HF dir (loaded fresh for training and for each evaluation, since
            attaching adapters mutates a model object).
        train: training examples; heldout: newer examples (see ``time_split``).
        config: LoRA hyper-parameters.
        registry: where adapters live.
        min_gain, max_loss_regression: passed to ``gate``.
        progress, callbacks: passed to ``train_lora``.
        work_dir: scratch dir for the candidate (temp dir by default).

    Returns:
        A ``DistillOutcome`` (the candidate is registered either way, promoted only if gated in).

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
        kw = {"system_prompt": config.system_prompt, "answer_sets": sets}
        cand = evaluate(base, heldout, adapter_dir=out, **kw)
        cur_info = registry.current()
        current = None
        if cur_info is not None:
            current = evaluate(base, heldout, adapter_dir=cur_info.path, **kw)
        decision = gate(cand, current, min_gain=min_gain, max_loss_regression=max_loss_regression)
        base_dir = resolve_base(str(base))
        metadata = {
            "base_model": str(base),
            "base_model_sha256": hash_model_files(base_dir),
            "data_window": {"min_ts": min(e.ts for e in train), "max_ts": max(e.ts for e in train)},
            "n_train": len(train),
            "n_heldout": len(heldout),
            "metrics": {
                **cand.to_dict(),
                "tokens_per_s": res.tokens_per_s,
                "final_loss": res.final_loss,
            },
            "gate": {"promote": decision.promote, "reason": decision.reason},
            "config": config.to_dict(),
            "system_prompt": config.system_prompt,
            "answer_sets": sets,
        }
        version = registry.register(out, metadata)
    if decision.promote:
        registry.promote(version)
    return DistillOutcome(version=version, decision=decision, candidate=cand, current=current)
