"""Prompt features for the difficulty classifier, in plain Python/numpy.

Why plain code and not a scikit-learn ``Pipeline``: a fitted pipeline can only be saved with
pickle, which hybridgate forbids. The classifier stores the vocabulary, idf weights and scaler
statistics as JSON and calls these functions at predict time, so the same code tokenises at fit
and at serve time and one request scores in microseconds.

Feature sets (combine with ``+``, e.g. ``"tfidf+hand"``):

- ``tfidf``: lower-cased word unigrams and bigrams.
- ``char``: lower-cased character 3-5-grams inside word boundaries.
- ``hand``: numeric facts of a word problem (how many quantities, how large, which operations).
"""

from __future__ import annotations

import math
import re
from collections import Counter

from local_models.answer_checker import char_ngrams  # one tokeniser for both text classifiers

FEATURE_SETS: tuple[str, ...] = ("tfidf", "char", "hand")
"""Names accepted in a ``features`` spec."""

_WORD_RE = re.compile(r"(?u)\b\w\w+\b")
_NUMBER_RE = re.compile(r"\d[\d,]*(?:\.\d+)?")
_SENTENCE_RE = re.compile(r"[.!?]+(?:\s|$)")
_FRACTION_RE = re.compile(r"\b\d+\s*/\s*\d+\b")

_KEYWORD_WORDS: dict[str, tuple[str, ...]] = {
    "percent": ("percent", "percentage", "percents"),
    "fraction": ("half", "third", "thirds", "quarter", "quarters", "fourth"),
    "each": ("each", "every", "per"),
    "times": ("times", "twice", "double", "triple"),
    "money": ("dollar", "dollars", "cent", "cents"),
    "time_units": ("hour", "hours", "minute", "minutes", "week", "weeks", "day", "days")
    + ("month", "months", "year", "years"),
    "compare": ("more than", "less than", "fewer", "older", "younger"),
    "average": ("average", "mean", "ratio", "rate"),
    "remaining": ("remain", "remains", "remaining", "remainder", "remained", "left", "rest"),
    "question_how_many": ("how many", "how much"),
}
"""Operation keywords (single words or bigrams) counted per group, looked up in one dict."""
_KEYWORD_SYMBOLS: dict[str, str] = {"percent": "%", "money": "$"}
_KEYWORD_GROUP = {word: group for group, words in _KEYWORD_WORDS.items() for word in words}

HAND_FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "n_sentences",
    "n_numbers",
    "n_distinct_numbers",
    "log_largest_number",
    "n_decimals",
    "n_fractions",
    *(f"kw_{name}" for name in _KEYWORD_WORDS),
)
"""Column order of :func:`hand_features`."""


def parse_feature_spec(spec: str) -> tuple[str, ...]:
    """Split a ``features`` spec like ``"tfidf+hand"`` into validated set names.

    Args:
        spec: Feature-set names joined by ``+``.

    Returns:
        The names, in the order given, without duplicates.

    Raises:
        ValueError: If the spec is empty or names an unknown feature set.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"features must be a non-empty string like 'tfidf+hand', got {spec!r}")
    names: list[str] = []
    for raw in spec.split("+"):
        name = raw.strip().lower()
        if name not in FEATURE_SETS:
            raise ValueError(
                f"unknown feature set {raw!r} in features={spec!r}; choose from {FEATURE_SETS}"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def word_ngrams(text: str) -> list[str]:
    """Lower-cased word unigrams and bigrams (scikit-learn's default token pattern)."""
    tokens = _WORD_RE.findall(text.lower())
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]


ANALYZERS = {"tfidf": word_ngrams, "char": char_ngrams}
"""Text feature sets and the function that turns a prompt into its terms."""


def term_counts(text: str, analyzer: str) -> Counter[str]:
    """Count the terms of one prompt for a text feature set (``tfidf`` or ``char``)."""
    return Counter(ANALYZERS[analyzer](text))


def _to_float(token: str) -> float:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return 0.0


def hand_features(text: str) -> list[float]:
    """Numeric facts of a prompt that track how many reasoning steps it needs.

    Args:
        text: The prompt.

    Returns:
        One float per name in :data:`HAND_FEATURE_NAMES`, in that order.
    """
    numbers = [m.group(0).rstrip(",") for m in _NUMBER_RE.finditer(text)]
    values = [_to_float(n) for n in numbers]
    largest = max(values, default=0.0)
    words = _WORD_RE.findall(text)
    n_fractions = len(_FRACTION_RE.findall(text))
    lowered = [w.lower() for w in words]
    keywords = Counter(_KEYWORD_GROUP.get(w) for w in lowered)
    keywords.update(
        _KEYWORD_GROUP.get(f"{a} {b}") for a, b in zip(lowered, lowered[1:], strict=False)
    )
    for group, symbol in _KEYWORD_SYMBOLS.items():
        keywords[group] += text.count(symbol)
    keywords["fraction"] += n_fractions
    return [
        math.log1p(len(text)),
        math.log1p(len(words)),
        float(max(1, len(_SENTENCE_RE.findall(text)))),
        float(len(numbers)),
        float(len(set(values))),
        math.log1p(abs(largest)),
        float(sum("." in n for n in numbers)),
        float(n_fractions),
        *(float(keywords[name]) for name in _KEYWORD_WORDS),
    ]


__all__ = [
    "ANALYZERS",
    "FEATURE_SETS",
    "HAND_FEATURE_NAMES",
    "char_ngrams",
    "hand_features",
    "parse_feature_spec",
    "term_counts",
    "word_ngrams",
]
