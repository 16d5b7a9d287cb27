"""A second opinion on a closed-set answer: how likely the cloud would have given that label.

A 135M student's label probability ranks its right answers above its wrong ones only so well
(ROC AUC 0.84 on 77 Banking77 intents). A character n-gram TF-IDF logistic regression trained on
the same distillation rows (prompt -> the cloud's label) makes different mistakes from the
student, so when both agree the label is far more often right: the cascade's confidence for a
closed-set answer becomes ``sqrt(label probability x checker probability)``
(``router.scoring.confidence``), which lifted the share a cascade keeps local at 97% quality from
50% to 72% there (``benchmarks/distill_banking77.py``). The answer itself stays the student's.

Training fits one checker per traffic class with a closed answer set (``fit_answer_checker``) and
writes it beside the adapter weights (``CHECKER_FILE``, safetensors: coefficients as tensors,
vocabulary and labels in the header); the engine loads it with the adapter, swaps it with the
adapter, and scores every answer decoded from that class's set. Scoring one answer is a sparse
dot product in numpy (~0.1 ms); fitting needs scikit-learn, imported only then.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from local_models.errors import ModelLoadError

CHECKER_FILE = "answer_checker.safetensors"
"""Written into an adapter directory by training; not part of the PEFT weights."""

_FORMAT = "hybridgate.answer_checker"
_FORMAT_VERSION = 1
MIN_DF = 2
"""An n-gram must occur in this many training prompts to count (drops typos and noise)."""
C = 30.0
"""Inverse L2 strength of the logistic regression (30 beat 10 and 100 at 1,000 and 4,500
Banking77 examples in the held-out AUC of the combined confidence)."""


def char_ngrams(text: str, *, low: int = 3, high: int = 5) -> list[str]:
    """Character n-grams inside space-padded words (like scikit-learn's ``char_wb``)."""
    grams: list[str] = []
    for word in text.lower().split():
        padded = f" {word} "
        length = len(padded)
        for n in range(low, high + 1):
            if n > length:
                break
            grams.extend(padded[i : i + n] for i in range(length - n + 1))
    return grams


def fit_vocabulary(
    counts: Sequence[Mapping[str, int]], *, min_df: int = 1
) -> tuple[dict[str, int], list[float]]:
    """Terms seen in at least ``min_df`` documents (sorted) and their smoothed idf,
    ``log((1 + n) / (1 + df)) + 1`` as scikit-learn computes it."""
    df: Counter[str] = Counter()
    for c in counts:
        df.update(c.keys())
    terms = sorted(t for t, d in df.items() if d >= min_df)
    n = len(counts)
    return {t: i for i, t in enumerate(terms)}, [
        math.log((1 + n) / (1 + df[t])) + 1.0 for t in terms
    ]


def tfidf_row(
    counts: Mapping[str, int],
    vocab: Mapping[str, int],
    idf: Sequence[float],
    *,
    sublinear_tf: bool = True,
) -> list[tuple[int, float]]:
    """L2-normalised tf-idf entries ``(column, value)`` of one document."""
    entries = []
    for term, count in counts.items():
        col = vocab.get(term)
        if col is None:
            continue
        tf = 1.0 + math.log(count) if sublinear_tf else float(count)
        entries.append((col, tf * idf[col]))
    norm = math.sqrt(sum(v * v for _, v in entries))
    if norm == 0.0:
        return []
    return [(col, v / norm) for col, v in entries]


def checker_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """What a checker reads of a conversation: its user turns (the system prompt is the traffic
    class, the same for every request of it)."""
    return "\n".join(
        m["content"]
        for m in messages
        if m.get("role") == "user" and isinstance(m.get("content"), str)
    )


@dataclass(frozen=True)
class _ClassModel:
    answers: tuple[str, ...]
    vocab: dict[str, int]
    idf: list[float]
    coef: np.ndarray
    """(terms, answers) float32."""
    bias: np.ndarray

    def probability(self, text: str, answer: str) -> float:
        try:
            k = self.answers.index(answer)
        except ValueError:
            return 0.0  # a label the cloud never gave for this class
        return float(self.probabilities(text)[k])

    def probabilities(self, text: str) -> np.ndarray:
        """Softmax over ``answers`` for one prompt."""
        row = tfidf_row(Counter(char_ngrams(text)), self.vocab, self.idf)
        logits = self.bias.astype(np.float64)
        if row:
            cols = np.fromiter((c for c, _ in row), dtype=np.int64, count=len(row))
            vals = np.fromiter((v for _, v in row), dtype=np.float64, count=len(row))
            logits = logits + vals @ self.coef[cols]
        logits -= logits.max()
        p = np.exp(logits)
        return p / p.sum()


class AnswerChecker:
    """Per traffic class, P(the cloud's label is ``answer`` | the prompt).

    >>> checker = fit_answer_checker({"Reply with the intent.": (texts, labels)})
    >>> checker.save(adapter_dir / CHECKER_FILE)
    >>> AnswerChecker.load(adapter_dir / CHECKER_FILE).probability(
    ...     "Reply with the intent.", "my card is lost", "lost_or_stolen_card")
    """

    def __init__(self, models: Mapping[str, _ClassModel]) -> None:
        self._models = dict(models)

    @property
    def traffic_classes(self) -> list[str]:
        return sorted(self._models)

    def probability(self, traffic_class: str, text: str, answer: str) -> float | None:
        """The checker's probability of ``answer``; None when it has no model for the class."""
        model = self._models.get(traffic_class)
        return None if model is None else model.probability(text, answer)

    def best(self, traffic_class: str, text: str) -> tuple[str, float] | None:
        """The label the checker itself would give, with its probability (None: no model)."""
        model = self._models.get(traffic_class)
        if model is None:
            return None
        p = model.probabilities(text)
        k = int(p.argmax())
        return model.answers[k], float(p[k])

    def save(self, path: str | Path) -> Path:
        from safetensors.numpy import save_file

        path = Path(path)
        tensors: dict[str, np.ndarray] = {}
        header: list[dict[str, Any]] = []
        for i, key in enumerate(self.traffic_classes):
            m = self._models[key]
            terms = sorted(m.vocab, key=m.vocab.__getitem__)
            header.append({"traffic_class": key, "answers": list(m.answers), "terms": terms})
            tensors[f"{i}.coef"] = np.ascontiguousarray(m.coef, dtype=np.float32)
            tensors[f"{i}.bias"] = np.asarray(m.bias, dtype=np.float32)
            tensors[f"{i}.idf"] = np.asarray(m.idf, dtype=np.float32)
        meta = {"format": _FORMAT, "version": str(_FORMAT_VERSION), "classes": json.dumps(header)}
        save_file(tensors, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> AnswerChecker:
        """Raises ModelLoadError, naming the file, when it is not a checker this code reads."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as fh:
                meta = fh.metadata() or {}
                if meta.get("format") != _FORMAT or meta.get("version") != str(_FORMAT_VERSION):
                    raise ValueError(f"not a {_FORMAT} v{_FORMAT_VERSION} file")
                models = {}
                for i, entry in enumerate(json.loads(meta["classes"])):
                    coef, bias = fh.get_tensor(f"{i}.coef"), fh.get_tensor(f"{i}.bias")
                    terms, answers = entry["terms"], tuple(entry["answers"])
                    if coef.shape != (len(terms), len(answers)) or bias.shape != (len(answers),):
                        raise ValueError(f"class {i}: tensor shapes do not match its labels")
                    models[str(entry["traffic_class"])] = _ClassModel(
                        answers=answers,
                        vocab={t: j for j, t in enumerate(terms)},
                        idf=fh.get_tensor(f"{i}.idf").astype(np.float64).tolist(),
                        coef=coef,
                        bias=bias,
                    )
        except Exception as exc:  # safetensors raises its own types for bad bytes
            raise ModelLoadError(
                f"{path}: unreadable answer checker ({exc}); delete it to serve the adapter "
                "with the label probability alone, or retrain"
            ) from None
        return cls(models)


def fit_answer_checker(data: Mapping[str, tuple[Sequence[str], Sequence[str]]]) -> AnswerChecker:
    """One checker per traffic class from ``{class: (prompt texts, the cloud's labels)}``.

    A class whose rows hold fewer than two distinct labels is left out (nothing to tell apart).
    """
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    models: dict[str, _ClassModel] = {}
    for key, (texts, labels) in data.items():
        if len(texts) != len(labels):
            raise ValueError(f"traffic class {key!r}: {len(texts)} texts but {len(labels)} labels")
        if len(set(labels)) < 2:
            continue
        counts = [Counter(char_ngrams(t)) for t in texts]
        vocab, idf = fit_vocabulary(counts, min_df=MIN_DF)
        if not vocab:
            continue
        rows, cols, vals = [], [], []
        for r, c in enumerate(counts):
            for col, val in tfidf_row(c, vocab, idf):
                rows.append(r)
                cols.append(col)
                vals.append(val)
        design = sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(vocab)))
        lr = LogisticRegression(C=C, max_iter=2000).fit(design, list(labels))
        answers = tuple(str(a) for a in lr.classes_)
        coef = lr.coef_.T.astype(np.float32)  # (terms, answers)
        bias = lr.intercept_.astype(np.float32)
        if len(answers) == 2:  # scikit-learn keeps one row for two classes: logit of the second
            coef = np.concatenate([np.zeros_like(coef), coef], axis=1)
            bias = np.array([0.0, bias[0]], dtype=np.float32)
        models[key] = _ClassModel(answers=answers, vocab=vocab, idf=idf, coef=coef, bias=bias)
    return AnswerChecker(models)


def read_answer_checker(adapter_path: str | Path | None) -> AnswerChecker | None:
    """The checker stored beside an adapter, or None when it has none."""
    if adapter_path is None:
        return None
    path = Path(adapter_path) / CHECKER_FILE
    return AnswerChecker.load(path) if path.is_file() else None


__all__ = [
    "CHECKER_FILE",
    "AnswerChecker",
    "char_ngrams",
    "checker_text",
    "fit_answer_checker",
    "fit_vocabulary",
    "read_answer_checker",
    "tfidf_row",
]
