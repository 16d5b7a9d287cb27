"""Judges: how well a local answer matches the cloud (teacher) answer, as a float in [0, 1].

Used to label shadow traffic (was the local answer acceptable?), to score the cascade and to
evaluate distilled adapters. Rule judges are free and deterministic; :class:`LLMJudge` asks the
cloud model and returns its ``BackendResult`` so the caller can ledger the cost.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from router.types import BackendResult, ChatRequest

if TYPE_CHECKING:
    from router.ledger import Label

Judge = Callable[..., float]
"""``judge(*, answer: str, reference: str) -> float`` in [0, 1]."""

_PUNCT_TABLE = str.maketrans({c: " " for c in string.punctuation + "“”‘’«»…–—"})
_NUMBER_RE = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?")


def normalize(text: str) -> str:
    """Casefold, turn punctuation into spaces and collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_PUNCT_TABLE)
    return " ".join(text.split())


def _check(answer: object, reference: object) -> None:
    for name, value in (("answer", answer), ("reference", reference)):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a str, got {type(value).__name__}")


def exact_match(*, answer: str, reference: str) -> float:
    """1.0 when both are equal after :func:`normalize`, else 0.0."""
    _check(answer, reference)
    return float(normalize(answer) == normalize(reference))


def extract_final_number(text: str) -> float | None:
    """The answer's final number: after the last ``####`` when present, else the last number.

    Commas, ``$`` and a trailing period are ignored, so ``"#### $1,250."`` gives ``1250.0``.
    """
    tail = text.rsplit("####", 1)[1] if "####" in text else text
    matches = _NUMBER_RE.findall(tail)
    if not matches:
        return None
    token = matches[0] if "####" in text else matches[-1]
    cleaned = token.replace("$", "").replace(",", "").replace(" ", "")
    try:
        return float(cleaned)
    except ValueError:
        return None


def final_number(*, answer: str, reference: str) -> float:
    """1.0 when both answers end in the same number (GSM8K ``#### N`` aware).

    When the reference holds no number there is nothing numeric to compare, so this falls back
    to :func:`exact_match`.
    """
    _check(answer, reference)
    ref = extract_final_number(reference)
    if ref is None:
        return exact_match(answer=answer, reference=reference)
    got = extract_final_number(answer)
    if got is None:
        return 0.0
    return float(abs(got - ref) <= 1e-6 * max(1.0, abs(ref)))


def label_match(*, answer: str, reference: str) -> float:
    """Classification: 1.0 when the answer's first non-empty line, normalised, is the label."""
    _check(answer, reference)
    first = next((line for line in answer.splitlines() if line.strip()), "")
    return float(normalize(first) == normalize(reference))


def token_f1(*, answer: str, reference: str) -> float:
    """SQuAD-style token F1 between the normalised answers (1.0 when both are empty)."""
    _check(answer, reference)
    got, ref = normalize(answer).split(), normalize(reference).split()
    if not got and not ref:
        return 1.0
    overlap = sum((Counter(got) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(got), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


JUDGES: dict[str, Judge] = {
    "exact_match": exact_match,
    "final_number": final_number,
    "label_match": label_match,
    "token_f1": token_f1,
}
"""Rule judges by name (policy files and the CLI refer to them by these names)."""


def get_judge(name: str) -> Judge:
    """Look up a rule judge.

    Raises:
        ValueError: If ``name`` is not in :data:`JUDGES`.
    """
    try:
        return JUDGES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown judge {name!r}; choose from {sorted(JUDGES)}") from None


_ENDS_WITH_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?\s*[.)]?\s*$")


def auto_judge(teacher_answer: str) -> str:
    """Pick a judge name from the shape of the teacher's answer.

    ``####`` or a trailing number -> ``final_number`` (math); a short single line of at most
    four words -> ``label_match`` (classification); anything else -> ``token_f1``.
    """
    if not isinstance(teacher_answer, str):
        raise ValueError(f"teacher_answer must be a str, got {type(teacher_answer).__name__}")
    text = teacher_answer.strip()
    if "####" in text or _ENDS_WITH_NUMBER.search(text):
        return "final_number"
    if text and "\n" not in text and len(text.split()) <= 4 and len(text) <= 48:
        return "label_match"
    return "token_f1"


class _Completes(Protocol):
    def complete(self, request: ChatRequest) -> BackendResult: ...


_LLM_JUDGE_SYSTEM = (
    "You compare two answers to the same request. Reply with exactly one word: "
    "'yes' if answer B says the same thing as reference answer A (same final result or label), "
    "'no' otherwise."
)


class LLMJudge:
    """Asks a (cloud) model whether the local answer is equivalent to the reference.

    Usage::

        judge = LLMJudge(cloud_transport, model="gpt-4o-mini")
        score, result = judge(answer=local_text, reference=cloud_text, question=prompt)
        ledger.record(cost=result.cost_usd)  # the judge call is a cloud call too

    Args:
        transport: Anything with ``.complete(ChatRequest) -> BackendResult``.
        model: Model name put in the request.

    A reply that starts with neither "yes" nor "no" scores 0.0: when in doubt, the local answer
    is not trusted.
    """

    def __init__(self, transport: _Completes, *, model: str = "judge") -> None:
        if not callable(getattr(transport, "complete", None)):
            raise ValueError("transport must have a complete(ChatRequest) method")
        self.transport = transport
        self.model = model

    def request(self, *, answer: str, reference: str, question: str | None = None) -> ChatRequest:
        """The judge prompt, deterministic (temperature 0) and short (max 3 tokens)."""
        _check(answer, reference)
        parts = [f"Request:\n{question}\n"] if question else []
        parts += [f"Reference answer A:\n{reference}\n", f"Answer B:\n{answer}\n", "Same? yes/no"]
        return ChatRequest(
            messages=(
                {"role": "system", "content": _LLM_JUDGE_SYSTEM},
                {"role": "user", "content": "\n".join(parts)},
            ),
            model=self.model,
            temperature=0.0,
            max_tokens=3,
            metadata={"hybridgate_purpose": "judge"},
        )

    def __call__(
        self, *, answer: str, reference: str, question: str | None = None
    ) -> tuple[float, BackendResult]:
        """Score one answer; transport errors (``BackendError``) propagate.

        Returns:
            ``(score, backend_result)`` with score 1.0 for "yes", else 0.0.
        """
        result = self.transport.complete(
            self.request(answer=answer, reference=reference, question=question)
        )
        verdict = normalize(result.text).split()
        return (1.0 if verdict[:1] == ["yes"] else 0.0), result


class LocalAnswer(Protocol):
    """What labelling reads from a local answer: a ``BackendResult`` (shadow labelling) or a
    ``local_models.GenerationResult`` (nightly relabelling) both fit."""

    @property
    def text(self) -> str: ...
    @property
    def token_logprobs(self) -> Sequence[float] | None: ...
    @property
    def compute_seconds(self) -> float: ...


def label_local_answer(
    ledger: Any,
    request_id: str,
    local: LocalAnswer,
    *,
    reference: str,
    usd_per_hour: float,
    judge: str = "auto",
    llm_judge: Callable[[str, str], float] | None = None,
) -> Label:
    """Judge a local answer against the cloud's and store the label in the ledger.

    The one labelling step behind shadow labelling (live traffic) and nightly relabelling (a
    newly promoted adapter re-answering labelled prompts), so ``hybridgate tune`` fits on
    labels made one way: the same judge choice, the same confidence the cascade sees and the
    same local-cost formula as the ledger's rows.

    Args:
        ledger: Anything with ``add_label`` (``router.ledger.Ledger``).
        request_id: The request the label is about.
        local: The local answer, with its token log-probabilities and compute seconds.
        reference: The cloud (teacher) answer it is judged against.
        usd_per_hour: Local hardware price (``local.usd_per_hour``), for the label's cost.
        judge: A rule judge's name, ``"auto"`` (picked from the reference's shape) or
            ``"llm"`` (then ``llm_judge`` scores).
        llm_judge: ``(answer, reference) -> score`` for ``judge="llm"``; it may call and
            ledger the cloud.

    Returns:
        The label as stored (its ``ts`` is this process's clock at labelling).

    Raises:
        ValueError: An unknown judge, or ``"llm"`` without ``llm_judge``.
    """
    import time

    from router.ledger import Label
    from router.ledger.pricing import local_cost
    from router.scoring.confidence import confidence

    name = auto_judge(reference) if judge == "auto" else judge
    if name == "llm":
        if llm_judge is None:
            raise ValueError("judge 'llm' needs llm_judge (a cloud transport)")
        score = float(llm_judge(local.text, reference))
    else:
        score = float(get_judge(name)(answer=local.text, reference=reference))
    label = Label(
        request_id=request_id,
        judge=name,
        label=score,
        local_answer=local.text,
        local_confidence=confidence(
            local.token_logprobs or [],
            closed_answer=getattr(local, "closed_answer", False),
            answer_check=getattr(local, "answer_check", None),
        ),
        local_cost_usd=local_cost(local.compute_seconds, usd_per_hour),
        ts=time.time(),
    )
    ledger.add_label(
        request_id,
        judge=label.judge,
        label=label.label,
        local_answer=label.local_answer,
        local_confidence=label.local_confidence,
        local_cost_usd=label.local_cost_usd,
    )  # ts: the ledger's clock, as for every label
    return label


__all__ = [
    "JUDGES",
    "Judge",
    "LLMJudge",
    "LocalAnswer",
    "auto_judge",
    "exact_match",
    "extract_final_number",
    "final_number",
    "get_judge",
    "label_local_answer",
    "label_match",
    "normalize",
    "token_f1",
]
