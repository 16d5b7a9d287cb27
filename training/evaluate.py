"""Score a student (base model or base + adapter) against held-out teacher answers.

Two numbers gate promotion: *agreement* (greedy answer matches the teacher's, per a judge)
and *loss* (mean answer-token cross-entropy under teacher forcing). Prompts use the same
chat-template path as training and serving (``training._model.encode_prompt``).

Closed answer sets: when a traffic class is answered from a small set of short labels
(intents, categories, yes/no), free decoding wastes the student's capacity on spelling.
``closed_answer_set`` detects such sets and ``evaluate(..., allowed_answers=...)`` decodes
greedily through a token trie of the allowed answers, so the output is always one of them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training._model import encode_answer, encode_prompt, load_trainable
from training.dataset import Example
from training.lora import Feature, answer_loss, collate_left

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EvalResult:
    """Held-out quality of a student.

    >>> res = evaluate("smollm2-135m-instruct", heldout, adapter_dir="adapters/v0002")
    >>> res.agreement, res.n
    (0.81, 300)
    """

    agreement: float
    """Mean judge score of the greedy answers vs the teacher's (0..1; share agreeing for labels)."""
    loss: float
    """Mean answer-token cross-entropy on the teacher answers (nats; lower is better)."""
    n: int
    """Held-out examples scored."""
    by_class: Mapping[str, EvalResult] = field(default_factory=dict, compare=False)
    """The same figures per traffic class (system prompt, ``""`` without one): the promotion
    gate judges each class on its own, so a good class cannot carry a useless one."""

    def to_dict(self) -> dict[str, float | int]:
        return {"agreement": self.agreement, "loss": self.loss, "n": self.n}


def _normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).strip(" .!\"'`")


def exact_match(answer: str, reference: str) -> bool:
    """Normalized exact match (case, surrounding whitespace/punctuation ignored)."""
    return _normalize(answer) == _normalize(reference)


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
    from local_models.answer_sets import traffic_class

    if allowed_answers:
        return [tuple(allowed_answers)] * len(messages_list)
    sets = answer_sets or {}
    return [tuple(a) if (a := sets.get(traffic_class(m))) else None for m in messages_list]


class _Trie:
    """Token trie of allowed answers; each path ends with the end-of-turn token."""

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        self.root: dict[int, dict] = {}
        for seq in sequences:
            node = self.root
            for tok in seq:
                node = node.setdefault(tok, {})

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        node = self.root
        for tok in prefix:
            node = node.get(tok)
            if node is None:
                return []
        return list(node)


def _with_adapter(model: Any, adapter_dir: str | Path | None, *, merge: bool) -> Any:
    """Apply the adapter; ``merge`` folds it into the weights (faster to run, but it changes
    the model in place, so only for a model this module loaded itself)."""
    if adapter_dir is None:
        return model
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    return peft_model.merge_and_unload() if merge else peft_model


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
        answer_sets: per traffic class answer sets (see ``answer_sets``), as served.
        judge: ``(answer, reference) -> score in [0, 1]`` (bools work); default
            ``default_judge()``.
        batch_size: sequences per forward pass.
        max_new_tokens: decode limit for free (unconstrained) decoding.
        progress: called ``(rows done, rows total)`` after each batch, so a caller can show
            that a long evaluation (minutes on a CPU) is moving.

    Returns:
        An ``EvalResult`` with ``by_class`` filled in.

    Raises:
        ValueError: no examples.
    """
    import torch

    from local_models.answer_sets import traffic_class

    if not examples:
        raise ValueError("evaluate needs at least one held-out example")
    model, tok, _ = load_trainable(model_or_spec, tokenizer)
    model = _with_adapter(model, adapter_dir, merge=isinstance(model_or_spec, str | Path))
    was_training = model.training
    model.eval()
    judge = judge or default_judge()
    prompts = [encode_prompt(tok, e.messages, system_prompt=system_prompt) for e in examples]
    allowed = _allowed_per_example([e.messages for e in examples], allowed_answers, answer_sets)
    classes = [traffic_class(e.messages) for e in examples]
    tries = _tries(tok, allowed)
    preds: dict[int, str] = {}
    loss_sum: dict[str, float] = dict.fromkeys(classes, 0.0)
    loss_n: dict[str, int] = dict.fromkeys(classes, 0)
    with torch.no_grad():
        # One traffic class per batch, so each class's loss adds up on its own.
        keys = list(zip(classes, allowed, strict=True))
        for idx in _batches(keys, [len(p) for p in prompts], batch_size):
            trie = tries.get(allowed[idx[0]])
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
            texts = _greedy(model, tok, [prompts[i] for i in idx], trie, max_new_tokens)
            for i, text in zip(idx, texts, strict=True):
                preds[i] = text
            if progress is not None:
                progress(len(preds), len(examples))
    if was_training:
        model.train()
    scores = [float(judge(preds[i], examples[i].answer)) for i in range(len(examples))]
    by_class: dict[str, EvalResult] = {}
    for key in loss_sum:
        members = [scores[i] for i, c in enumerate(classes) if c == key]
        by_class[key] = EvalResult(
            agreement=sum(members) / len(members),
            loss=loss_sum[key] / max(loss_n[key], 1),
            n=len(members),
        )
    return EvalResult(
        agreement=sum(scores) / len(examples),
        loss=sum(loss_sum.values()) / max(sum(loss_n.values()), 1),
        n=len(examples),
        by_class=by_class,
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
) -> list[str]:
    """Greedy answers for a batch of conversations, constrained where a closed set applies
    (``allowed_answers`` for all, else ``answer_sets`` per traffic class)."""
    import torch

    prompts = [encode_prompt(tokenizer, m, system_prompt=system_prompt) for m in messages_list]
    allowed = _allowed_per_example(messages_list, allowed_answers, answer_sets)
    tries = _tries(tokenizer, allowed)
    out: list[str] = [""] * len(prompts)
    with torch.no_grad():
        for idx in _batches(allowed, [len(p) for p in prompts], len(prompts)):
            texts = _greedy(
                model,
                tokenizer,
                [prompts[i] for i in idx],
                tries.get(allowed[idx[0]]),
                max_new_tokens,
            )
            for i, text in zip(idx, texts, strict=True):
                out[i] = text
    return out


def _tries(tok: Any, allowed: Sequence[tuple[str, ...] | None]) -> dict[tuple[str, ...], _Trie]:
    return {a: _Trie([encode_answer(tok, x) for x in a]) for a in set(allowed) if a is not None}


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


def _greedy(
    model: Any, tok: Any, prompts: Sequence[list[int]], trie: _Trie | None, max_new_tokens: int
) -> list[str]:
    feats = [Feature(input_ids=p, labels=[IGNORE_INDEX] * len(p)) for p in prompts]
    batch = collate_left(feats, pad_id=tok.pad_token_id)
    width = batch["input_ids"].shape[1]
    eos = tok.eos_token_id
    kwargs: dict[str, Any] = {}
    if trie is not None:
        depth = max(len(p) for p in _trie_paths(trie.root))

        def allowed(_batch_id: int, ids: Any) -> list[int]:
            return trie.allowed(ids[width:].tolist()) or [eos]

        kwargs["prefix_allowed_tokens_fn"] = allowed
        max_new_tokens = depth
    out = model.generate(
        input_ids=batch["input_ids"].to(model.device),
        attention_mask=batch["attention_mask"].to(model.device),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=tok.pad_token_id,
        eos_token_id=eos,
        **kwargs,
    )
    return [tok.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def _trie_paths(node: dict, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    if not node:
        return [prefix]
    return [p for tok, child in node.items() for p in _trie_paths(child, (*prefix, tok))]
