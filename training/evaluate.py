"""Score a student (base model or base + adapter) against held-out teacher answers.

Two numbers gate promotion: *agreement* (the served answer matches the teacher's, per a judge)
and *loss* (mean answer-token cross-entropy under teacher forcing, on the fp32 model).

The answers are decoded by the serving engine itself (``local_models.LocalEngine``, built the
way the gateway builds it: same loader, precision, adapter merge, prompt renderer and
constrained decoder, ``local_models.constrained``). So the gate's accuracy is the served
accuracy by construction, not by keeping two decoders in step.

Closed answer sets: when a traffic class is answered from a small set of short labels
(intents, categories, yes/no), free decoding wastes the student's capacity on spelling.
``closed_answer_set`` detects such sets; ``evaluate(..., answer_sets=...)`` decodes each class
constrained to its set, exactly as the engine serves an adapter whose metadata holds them.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local_models.answer_sets import traffic_class
from local_models.errors import ModelLoadError
from local_models.prompt import prompt_messages
from training._model import encode_answer, encode_prompt, load_trainable
from training.dataset import Example
from training.lora import IGNORE_INDEX, Feature, answer_loss, collate_left

if TYPE_CHECKING:
    from local_models import LocalEngine


@dataclass(frozen=True)
class EvalResult:
    """Held-out quality of a student.

    >>> res = evaluate("smollm2-135m-instruct", heldout, adapter_dir="adapters/v0002")
    >>> res.agreement, res.n
    (0.81, 300)
    """

    agreement: float
    """Mean judge score of the served (greedy) answers vs the teacher's (0..1; the share
    agreeing for labels)."""
    loss: float
    """Mean answer-token cross-entropy on the teacher answers (nats; lower is better)."""
    n: int
    """Held-out examples scored."""
    by_class: Mapping[str, EvalResult] = field(default_factory=dict, compare=False)
    """The same figures per traffic class (system prompt, ``""`` without one): the promotion
    gate judges each class on its own, so a good class cannot carry a useless one."""
    answers: tuple[str, ...] = field(default=(), compare=False)
    """The decoded answer per example, in input order: what the gateway would return for that
    prompt with this adapter (``""`` for a prompt longer than the local context)."""

    def to_dict(self) -> dict[str, float | int]:
        return {"agreement": self.agreement, "loss": self.loss, "n": self.n}


def default_judge() -> Callable[[str, str], float]:
    """Per-example rule judge chosen from the teacher answer's shape (``router.scoring.judges``).

    Labels -> ``label_match``, numbers -> ``final_number``, prose -> ``token_f1``; the score
    is in [0, 1] and ``EvalResult.agreement`` is its mean.
    """
    from router.scoring.judges import auto_judge, get_judge

    def judge(answer: str, reference: str) -> float:
        return float(get_judge(auto_judge(reference))(answer=answer, reference=reference))

    return judge


def closed_answer_set(
    examples: Sequence[Example],
    *,
    max_labels: int = 200,
    min_coverage: float = 0.95,
    max_chars: int = 64,
    min_repeats: float = 2.0,
) -> list[str] | None:
    """Detect a closed set of short answers that covers nearly all examples.

    Args:
        examples: teacher examples of one traffic class.
        max_labels: most distinct answers a closed set may have.
        min_coverage: share of examples the set must cover.
        max_chars: longest answer that counts as a label.
        min_repeats: labels must recur: covered examples per distinct label at least this
            (all-distinct answers are open-ended even when there are few of them).

    Returns:
        The sorted distinct answers (the ``max_labels`` most frequent), or None when the
        answers are open-ended.
    """
    if not examples:
        return None
    counts = Counter(e.answer.strip() for e in examples if 0 < len(e.answer.strip()) <= max_chars)
    top = counts.most_common(max_labels)
    covered = sum(c for _, c in top)
    if not top or covered / len(examples) < min_coverage or covered / len(top) < min_repeats:
        return None
    return sorted(a for a, _ in top)


def answer_sets(examples: Sequence[Example], **kwargs: Any) -> dict[str, list[str]]:
    """Closed answer sets per traffic class (requests sharing a system prompt).

    Mixed traffic — intent labels under one system prompt, free-form math without one — has no
    closed set as a whole, but its label class does. Keys are
    ``local_models.answer_sets.traffic_class``; classes with open-ended answers are left out.
    ``kwargs`` go to :func:`closed_answer_set`.
    """
    from local_models.answer_sets import traffic_class

    groups: dict[str, list[Example]] = {}
    for e in examples:
        groups.setdefault(traffic_class(e.messages), []).append(e)
    found = {key: closed_answer_set(group, **kwargs) for key, group in groups.items()}
    return {key: labels for key, labels in found.items() if labels}


def _allowed_per_example(
    messages_list: Sequence[Sequence[dict[str, Any]]],
    allowed_answers: Sequence[str] | None,
    answer_sets: Mapping[str, Sequence[str]] | None,
) -> list[tuple[str, ...] | None]:
    """One answer set (or None) per conversation: a global set wins over per-class sets."""
    if allowed_answers:
        return [tuple(allowed_answers)] * len(messages_list)
    sets = answer_sets or {}
    return [tuple(a) if (a := sets.get(traffic_class(m))) else None for m in messages_list]


def _with_adapter(model: Any, adapter_dir: str | Path | None, *, merge: bool) -> Any:
    """Apply the adapter; ``merge`` folds it into the weights (faster to run, but it changes
    the model in place, so only for a model this module loaded itself)."""
    if adapter_dir is None:
        return model
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    return peft_model.merge_and_unload() if merge else peft_model


def serving_engine(
    model_or_spec: Any,
    *,
    tokenizer: Any = None,
    adapter_dir: str | Path | None = None,
    precision: str = "auto",
    device: str = "auto",
) -> LocalEngine:
    """The engine that answers for the gate, built as the gateway builds its local model.

    Args:
        model_or_spec: a model spec/dir (loaded by ``LocalEngine.from_config``, the gateway's
            own path), or a loaded fp32 model (a ``PeftModel`` is served merged; the caller's
            model is not changed).
        tokenizer: needed when a model object is given.
        adapter_dir: PEFT adapter merged on top, as ``local.adapter`` is served.
        precision: the serving precision (``local.precision`` in the policy).
        device: ``cpu``, ``cuda`` or ``auto``.

    Raises:
        ModelLoadError: the model or adapter cannot be loaded in that precision.
    """
    from local_models import LocalEngine, LocalModelConfig

    adapter = str(adapter_dir) if adapter_dir is not None else None
    config = LocalModelConfig(
        precision=precision,
        device=device,
        adapter_path=adapter,
        adapter_version=Path(adapter).name if adapter else None,
    )
    if isinstance(model_or_spec, str | Path):
        return LocalEngine.from_config(dataclasses.replace(config, model=str(model_or_spec)))
    if tokenizer is None:
        raise ModelLoadError("a model object needs its tokenizer (tokenizer=...)")
    model = model_or_spec
    if hasattr(model, "merge_and_unload"):  # a PeftModel: serve what merging it gives
        model = copy.deepcopy(model).merge_and_unload()
    return LocalEngine.from_pretrained_model(model, tokenizer, config, keep_base=False)


def _served_sets(
    engine: LocalEngine,
    messages_list: Sequence[Sequence[dict[str, Any]]],
    explicit: Sequence[tuple[str, ...] | None],
) -> list[tuple[str, ...] | None]:
    """The answer set each row is decoded with: the one given, else the one the adapter's
    metadata holds for the row's traffic class (the engine's own rule when serving)."""
    return [
        given if given is not None else engine.answer_sets.get(traffic_class(messages))
        for messages, given in zip(messages_list, explicit, strict=True)
    ]


def _generate(
    engine: LocalEngine,
    messages_list: Sequence[Sequence[dict[str, Any]]],
    allowed: Sequence[tuple[str, ...] | None],
    idx: Sequence[int],
    max_new_tokens: int,
) -> dict[int, str]:
    """Decode rows ``idx`` as one engine batch; a prompt the local context cannot hold gets
    ``""`` (served, it would fail locally: no local answer)."""
    from local_models import GenerationRequest
    from local_models.config import DEFAULT_MAX_TOKENS

    limit = engine.config.max_context_tokens
    out = dict.fromkeys(idx, "")
    fits = [i for i in idx if engine.count_prompt_tokens(messages_list[i]) < limit]
    requests = [
        GenerationRequest(
            messages=tuple(messages_list[i]),
            # A closed set ends itself at a leaf; the cap is the gateway's default, as served.
            max_tokens=max_new_tokens if allowed[i] is None else DEFAULT_MAX_TOKENS,
            allowed_answers=allowed[i],
        )
        for i in fits
    ]
    for i, result in zip(fits, engine.generate(requests), strict=True):
        out[i] = result.text
    return out


def evaluate(
    model_or_spec: Any,
    examples: Sequence[Example],
    *,
    tokenizer: Any = None,
    adapter_dir: str | Path | None = None,
    system_prompt: str | None = None,
    allowed_answers: Sequence[str] | None = None,
    answer_sets: Mapping[str, Sequence[str]] | None = None,
    judge: Callable[[str, str], float] | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 32,
    progress: Callable[[int, int], None] | None = None,
    precision: str = "auto",
) -> EvalResult:
    """Agreement with the teacher and answer loss on held-out examples.

    Args:
        model_or_spec: a model spec/dir, or a loaded model (with ``tokenizer``); a loaded
            ``PeftModel`` is evaluated as is.
        examples: held-out examples (never the training rows: see ``time_split``).
        tokenizer: needed when a model object is given.
        adapter_dir: PEFT adapter to apply; None evaluates the model as given.
        system_prompt: same value the adapter was trained with.
        allowed_answers: decode every example constrained to these answers (see
            ``closed_answer_set``).
        answer_sets: per traffic class answer sets (see ``answer_sets``), as they will be
            served; a class without one here is decoded with the set the adapter's own
            metadata holds for it, if any (what the engine serves).
        judge: ``(answer, reference) -> score in [0, 1]`` (bools work); default
            ``default_judge()``.
        batch_size: rows per forward pass and per engine batch.
        max_new_tokens: decode limit for free (unconstrained) decoding.
        progress: called ``(rows done, rows total)`` after each batch, so a caller can show
            that a long evaluation (minutes on a CPU) is moving.
        precision: the precision the answers are decoded in: the serving one
            (``local.precision``); the loss is always computed on the fp32 model.

    Returns:
        An ``EvalResult`` with ``by_class`` and ``answers`` filled in.

    Raises:
        ValueError: no examples.
        ModelLoadError: (``local_models.errors``) the model or adapter cannot be loaded.
    """
    import torch

    if not examples:
        raise ValueError("evaluate needs at least one held-out example")
    model, tok, _ = load_trainable(model_or_spec, tokenizer)
    # The engine takes its own copy first: applying the adapter below changes ``model``.
    engine = serving_engine(
        model_or_spec, tokenizer=tok, adapter_dir=adapter_dir, precision=precision
    )
    model = _with_adapter(model, adapter_dir, merge=isinstance(model_or_spec, str | Path))
    was_training = model.training
    model.eval()
    judge = judge or default_judge()
    messages = [prompt_messages(e.messages, system_prompt=system_prompt) for e in examples]
    prompts = [encode_prompt(tok, e.messages, system_prompt=system_prompt) for e in examples]
    explicit = _allowed_per_example([e.messages for e in examples], allowed_answers, answer_sets)
    allowed = _served_sets(engine, messages, explicit)
    classes = [traffic_class(e.messages) for e in examples]
    preds: dict[int, str] = {}
    loss_sum: dict[str, float] = dict.fromkeys(classes, 0.0)
    loss_n: dict[str, int] = dict.fromkeys(classes, 0)
    with torch.no_grad():
        # One traffic class per batch, so each class's loss adds up on its own.
        keys = list(zip(classes, allowed, strict=True))
        for idx in _batches(keys, [len(p) for p in prompts], batch_size):
            key = classes[idx[0]]
            feats = [
                Feature(
                    input_ids=prompts[i] + (ans := encode_answer(tok, examples[i].answer)),
                    labels=[IGNORE_INDEX] * len(prompts[i]) + ans,
                )
                for i in idx
            ]
            batch = collate_left(feats, pad_id=tok.pad_token_id)
            batch = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items()}
            loss_sum[key] += float(answer_loss(model, batch, reduction="sum"))
            loss_n[key] += int((batch["labels"] != IGNORE_INDEX).sum())
            preds.update(_generate(engine, messages, allowed, idx, max_new_tokens))
            if progress is not None:
                progress(len(preds), len(examples))
    if was_training:
        model.train()
    scores = [float(judge(preds[i], examples[i].answer)) for i in range(len(examples))]
    by_class: dict[str, EvalResult] = {}
    for key in loss_sum:
        members = [i for i, c in enumerate(classes) if c == key]
        by_class[key] = EvalResult(
            agreement=sum(scores[i] for i in members) / len(members),
            loss=loss_sum[key] / max(loss_n[key], 1),
            n=len(members),
            answers=tuple(preds[i] for i in members),
        )
    return EvalResult(
        agreement=sum(scores) / len(examples),
        loss=sum(loss_sum.values()) / max(sum(loss_n.values()), 1),
        n=len(examples),
        by_class=by_class,
        answers=tuple(preds[i] for i in range(len(examples))),
    )


def predict(
    model: Any,
    tokenizer: Any,
    messages_list: Sequence[Sequence[dict[str, Any]]],
    *,
    system_prompt: str | None = None,
    allowed_answers: Sequence[str] | None = None,
    answer_sets: Mapping[str, Sequence[str]] | None = None,
    max_new_tokens: int = 32,
    precision: str = "auto",
) -> list[str]:
    """The served answers for a batch of conversations, constrained where a closed set
    applies (``allowed_answers`` for all, else ``answer_sets`` per traffic class).

    Decodes through the serving engine on a copy of ``model`` (``serving_engine``), as
    :func:`evaluate` does; the model itself is left as it was.
    """
    engine = serving_engine(model, tokenizer=tokenizer, precision=precision)
    messages = [prompt_messages(m, system_prompt=system_prompt) for m in messages_list]
    explicit = _allowed_per_example(messages_list, allowed_answers, answer_sets)
    allowed = _served_sets(engine, messages, explicit)
    lengths = [engine.count_prompt_tokens(m) for m in messages]
    out: dict[int, str] = {}
    for idx in _batches(allowed, lengths, len(messages)):
        out.update(_generate(engine, messages, allowed, idx, max_new_tokens))
    return [out[i] for i in range(len(messages))]


def _batches(keys: Sequence[Hashable], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches whose rows share one key (an answer set, or a class and its answer set),
    similar lengths together (less padding)."""
    groups: dict[Hashable, list[int]] = {}
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        groups.setdefault(keys[i], []).append(i)
    return [
        group[start : start + batch_size]
        for group in groups.values()
        for start in range(0, len(group), batch_size)
    ]
