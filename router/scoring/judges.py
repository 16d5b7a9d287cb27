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
from collections.abc import Callable
from typing import Protocol

from router.types import BackendResult, ChatRequest

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


__all__ = [
    "JUDGES",
    "Judge",
    "LLMJudge",
    "auto_judge",
    "exact_match",
    "extract_final_number",
    "final_number",
    "get_judge",
    "label_match",
    "normalize",
    "token_f1",
]
