"""Distillation examples: where they come from (ledger, files), how they are cleaned and split.

Cleaning drops what would teach the student bad habits (refusals, errors, duplicates that
over-weight one prompt) and reports how many rows each filter removed, so a nightly job can
say why a 10k-row day became a 6k-row training set.
"""

from __future__ import annotations

import csv
import json
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from router._text import content_text

REFUSAL_PATTERNS: tuple[str, ...] = (
    r"^\s*i['’]?m sorry",
    r"^\s*i am sorry",
    r"^\s*sorry,? (but )?i (can(not|['’]t)|am unable)",
    r"\bi (cannot|can['’]t|am unable to|won['’]t) (help|assist|provide|comply|do that)",
    r"^\s*i cannot\b",
    r"\bas an ai\b",
    r"\bas a language model\b",
)
"""Regexes (case-insensitive) that mark a teacher answer as a refusal, not a label to learn."""

_REFUSAL_RE = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)

T = TypeVar("T")

MAX_ANSWER_CHARS = 64
"""Longest teacher answer distilled by default (the bundled policies' ``distill.max_answer_chars``).

Label-style answers are what the 135M student learns from a few hundred examples; long ones
(GPT-4's math working, prose) it cannot, and a few dozen of them among the labels are enough to
tip ``hardware_defaults`` to the long-text recipe, which then fails the labels too."""


@dataclass(frozen=True)
class Example:
    """One supervised pair: the conversation the user sent and the teacher's answer.

    >>> ex = Example(messages=({"role": "user", "content": "hi"},), answer="hello", ts=0.0,
    ...              source_id="req-1")
    >>> ex.prompt_text
    'user: hi'
    """

    messages: tuple[dict[str, Any], ...]
    answer: str
    ts: float
    """Unix time the teacher answered; the time split keys on it."""
    source_id: str
    """Ledger request id or ``file:line``, to trace an example back to its origin."""

    @property
    def prompt_text(self) -> str:
        """The conversation flattened to text (for dedupe and token budgets)."""
        return "\n".join(
            f"{m.get('role', '')}: {content_text(m.get('content'))}" for m in self.messages
        )


class LedgerRow(Protocol):
    """The fields of ``router.ledger.LedgerEntry`` this module reads (kept structural on purpose)."""

    request_id: str
    ts: float
    route: str
    error_type: str | None
    messages: list[dict[str, Any]] | None
    answer: str | None


@dataclass
class FilterReport:
    """How many examples each filter removed, in the order the filters ran."""

    n_in: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    n_out: int = 0

    def add(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def __str__(self) -> str:
        parts = ", ".join(f"{k}={v}" for k, v in self.dropped.items() if v) or "none"
        return f"{self.n_in} in, {self.n_out} kept; dropped: {parts}"


def examples_from_ledger(
    rows: Iterable[LedgerRow], *, min_ts: float | None = None
) -> list[Example]:
    """Turn ledger rows into examples: cloud-answered, successful, with stored text.

    Args:
        rows: ``LedgerEntry``-like objects (``request_id, ts, route, error_type, messages, answer``).
        min_ts: keep only rows answered at or after this Unix time (the nightly window).

    Returns:
        Examples in ledger order. Rows without stored messages (privacy mode) are skipped.
    """
    out: list[Example] = []
    for row in rows:
        if row.route != "cloud" or row.error_type:
            continue
        if not row.messages or not row.answer or not row.answer.strip():
            continue
        if min_ts is not None and row.ts < min_ts:
            continue
        msgs = tuple(dict(m) for m in row.messages)
        out.append(
            Example(messages=msgs, answer=row.answer, ts=float(row.ts), source_id=row.request_id)
        )
    return out


def load_examples(path: str | Path) -> list[Example]:
    """Read user-supplied examples from JSONL or CSV.

    JSONL lines are ``{"messages": [...], "answer": "...", "ts": optional}``. CSV needs either
    ``prompt,answer`` or ``text,category`` columns; each row becomes one user message. Without a
    timestamp, an example's ``ts`` is its row index, so the time split holds out the file's tail.

    Args:
        path: a ``.jsonl`` or ``.csv`` file.

    Returns:
        The examples, unfiltered.

    Raises:
        ValueError: unknown extension, missing columns/keys, or malformed JSON (names the line).
    """
    p = Path(path)
    if p.suffix == ".jsonl":
        return _load_jsonl(p)
    if p.suffix == ".csv":
        return _load_csv(p)
    raise ValueError(f"{p}: expected a .jsonl or .csv file, got {p.suffix or 'no extension'!r}")


def _load_jsonl(p: Path) -> list[Example]:
    out: list[Example] = []
    with p.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}:{i}: invalid JSON ({exc.msg})") from exc
            msgs = obj.get("messages") if isinstance(obj, dict) else None
            if not isinstance(msgs, list) or not msgs or "answer" not in obj:
                raise ValueError(f"{p}:{i}: need a non-empty 'messages' list and an 'answer'")
            out.append(
                Example(
                    messages=tuple(dict(m) for m in msgs),
                    answer=str(obj["answer"] or ""),
                    ts=float(obj.get("ts", i)),
                    source_id=f"{p.name}:{i}",
                )
            )
    return out


def _load_csv(p: Path) -> list[Example]:
    with p.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or ())
        if {"prompt", "answer"} <= cols:
            pk, ak = "prompt", "answer"
        elif {"text", "category"} <= cols:
            pk, ak = "text", "category"
        else:
            raise ValueError(
                f"{p}: need 'prompt,answer' or 'text,category' columns, got {sorted(cols)}"
            )
        return [
            Example(
                messages=({"role": "user", "content": row[pk] or ""},),
                answer=row[ak] or "",
                ts=float(row["ts"]) if row.get("ts") else float(i),
                source_id=f"{p.name}:{i + 2}",
            )
            for i, row in enumerate(reader)
        ]


def normalize_prompt(text: str) -> str:
    """Lower-case, collapse whitespace and strip punctuation at the ends (for exact dedupe)."""
    return re.sub(r"\s+", " ", text.lower()).strip(" \t\n.!?")


def is_refusal(answer: str) -> bool:
    """True when the answer matches one of ``REFUSAL_PATTERNS``."""
    return bool(_REFUSAL_RE.search(answer))


def _shingles(text: str, k: int = 5) -> set[int]:
    t = normalize_prompt(text)
    if len(t) <= k:
        return {zlib.crc32(t.encode())}
    return {zlib.crc32(t[i : i + k].encode()) for i in range(len(t) - k + 1)}


class _NearDupIndex:
    """MinHash LSH over character 5-grams: O(n) inserts, exact Jaccard check on candidates."""

    _P = (1 << 61) - 1

    def __init__(self, *, threshold: float, bands: int = 16, rows: int = 2, seed: int = 0) -> None:
        import random

        rng = random.Random(seed)
        n = bands * rows
        self.threshold = threshold
        self.bands, self.rows = bands, rows
        self._ab = [(rng.randrange(1, self._P), rng.randrange(0, self._P)) for _ in range(n)]
        self._buckets: list[dict[tuple[int, ...], list[int]]] = [{} for _ in range(bands)]
        self._sets: list[set[int]] = []

    def _signature(self, sh: set[int]) -> list[int]:
        return [min((a * x + b) % self._P for x in sh) for a, b in self._ab]

    def add_if_new(self, text: str) -> bool:
        """Insert ``text``; False (and not inserted) when a near-duplicate is already indexed."""
        sh = _shingles(text)
        sig = self._signature(sh)
        keys = [tuple(sig[b * self.rows : (b + 1) * self.rows]) for b in range(self.bands)]
        seen: set[int] = set()
        for band, key in enumerate(keys):
            for j in self._buckets[band].get(key, ()):
                if j in seen:
                    continue
                seen.add(j)
                other = self._sets[j]
                if len(sh & other) / len(sh | other) >= self.threshold:
                    return False
        idx = len(self._sets)
        self._sets.append(sh)
        for band, key in enumerate(keys):
            self._buckets[band].setdefault(key, []).append(idx)
        return True


def filter_examples(
    examples: Sequence[Example],
    *,
    max_answer_chars: int | None = MAX_ANSWER_CHARS,
    max_tokens: int | None = 512,
    token_counter: Callable[[str], int] | None = None,
    near_dup_threshold: float | None = 0.9,
    perplexity_fn: Callable[[Example], float] | None = None,
    max_perplexity: float | None = None,
) -> tuple[list[Example], FilterReport]:
    """Drop examples that would hurt training, counting each reason.

    This is the one filter every distillation path applies (``hybridgate distill`` and its
    ``--dry-run``, the nightly run, the demo, library callers of ``run_distill``), so they all
    train on the same data and ``hardware_defaults`` picks the same recipe for it.

    Filters run in order: empty/error answers, refusals, long answers, over-long items, exact
    duplicates of the normalized prompt (first kept), near duplicates (character 5-gram Jaccard
    >= ``near_dup_threshold`` via MinHash LSH), then the optional perplexity filter.

    Args:
        examples: candidate examples (keep ledger order: the first of duplicates wins).
        max_answer_chars: drop examples whose stripped answer is longer than this (see
            ``MAX_ANSWER_CHARS``); None disables.
        max_tokens: drop items whose prompt + answer exceed this many tokens; None disables.
        token_counter: counts tokens of a string (e.g. a tokenizer's); default ~4 chars/token.
        near_dup_threshold: Jaccard threshold for near duplicates; None disables.
        perplexity_fn: scores an example under a model (higher = less plausible).
        max_perplexity: drop examples whose ``perplexity_fn`` score exceeds this.

    Returns:
        ``(kept, report)``.

    Raises:
        ValueError: only one of ``perplexity_fn`` / ``max_perplexity`` given, or a bad threshold.
    """
    if (perplexity_fn is None) != (max_perplexity is None):
        raise ValueError("perplexity filter needs both perplexity_fn and max_perplexity")
    if max_answer_chars is not None and max_answer_chars < 1:
        raise ValueError(f"max_answer_chars must be >= 1 or None, got {max_answer_chars}")
    if near_dup_threshold is not None and not 0.0 < near_dup_threshold <= 1.0:
        raise ValueError(f"near_dup_threshold must be in (0, 1], got {near_dup_threshold}")
    count = token_counter or (lambda s: max(1, len(s) // 4))
    report = FilterReport(n_in=len(examples))
    reasons = ("empty_answer", "refusal", "long_answer", "too_long", "exact_dup", "near_dup")
    for reason in (*reasons, "perplexity"):
        report.dropped[reason] = 0
    seen_exact: set[str] = set()
    near = _NearDupIndex(threshold=near_dup_threshold) if near_dup_threshold else None
    kept: list[Example] = []
    for ex in examples:
        if not ex.answer or not ex.answer.strip():
            report.add("empty_answer")
            continue
        if is_refusal(ex.answer):
            report.add("refusal")
            continue
        if max_answer_chars is not None and len(ex.answer.strip()) > max_answer_chars:
            report.add("long_answer")
            continue
        if max_tokens is not None and count(ex.prompt_text) + count(ex.answer) > max_tokens:
            report.add("too_long")
            continue
        key = normalize_prompt(ex.prompt_text)
        if key in seen_exact:
            report.add("exact_dup")
            continue
        seen_exact.add(key)
        if near is not None and not near.add_if_new(ex.prompt_text):
            report.add("near_dup")
            continue
        if perplexity_fn is not None and perplexity_fn(ex) > max_perplexity:  # type: ignore[operator]
            report.add("perplexity")
            continue
        kept.append(ex)
    report.n_out = len(kept)
    return kept, report


def time_split(
    examples: Sequence[Example], *, holdout_fraction: float = 0.2
) -> tuple[list[Example], list[Example]]:
    """Split so the held-out set is the newest examples: evaluation never sees training rows.

    Args:
        examples: examples in any order.
        holdout_fraction: share held out, in (0, 1).

    Returns:
        ``(train, heldout)``, each sorted by ``ts``; every held-out ``ts`` >= every train ``ts``.

    Raises:
        ValueError: fraction outside (0, 1) or fewer than 2 examples.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if len(examples) < 2:
        raise ValueError(f"need at least 2 examples to split, got {len(examples)}")
    ordered = sorted(examples, key=lambda e: e.ts)
    n_hold = min(len(ordered) - 1, max(1, round(len(ordered) * holdout_fraction)))
    return ordered[:-n_hold], ordered[-n_hold:]


def stratified_sample(
    items: Sequence[T],
    n: int,
    *,
    seed: int = 0,
    key: Callable[[T], Any] = lambda e: e.answer,
) -> list[T]:
    """A seeded sample of ``n`` items that keeps every class's share (classes by ``key``).

    Why: public label files are often sorted by class (Banking77's ``train.csv`` is sorted by
    intent), so "the first N rows" trains and scores on a fraction of the classes. Each class
    gets at least one item when ``n`` allows it, the rest is allocated in proportion to class
    size (largest remainder), and the result is shuffled so no class forms a run.

    Args:
        items: the pool (e.g. examples; ``key`` defaults to ``Example.answer``).
        n: how many to take; ``n >= len(items)`` returns all of them, shuffled.
        seed: the same seed and pool give the same sample.
        key: the class of an item.

    Returns:
        ``min(n, len(items))`` items.

    Raises:
        ValueError: ``n`` is negative.
    """
    import random

    if n < 0:
        raise ValueError(f"sample size must be >= 0, got {n}")
    rng = random.Random(seed)
    if n >= len(items):
        out = list(items)
        rng.shuffle(out)
        return out
    groups: dict[Any, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    classes = sorted(groups, key=repr)  # independent of file order
    for c in classes:
        rng.shuffle(groups[c])
    if n < len(classes):  # too few slots for every class: n distinct classes, one item each
        quota = dict.fromkeys(rng.sample(classes, n), 1)
    else:
        quota = dict.fromkeys(classes, 1)
        spare = {c: len(groups[c]) - 1 for c in classes}
        left, room = n - len(classes), sum(spare.values())
        shares = {c: left * spare[c] / room if room else 0.0 for c in classes}
        for c in classes:
            quota[c] += int(shares[c])
        short = n - sum(quota.values())
        by_remainder = sorted(classes, key=lambda c: (int(shares[c]) - shares[c], rng.random()))
        for c in by_remainder[:short]:
            quota[c] += 1
    out = [item for c, k in quota.items() for item in groups[c][:k]]
    rng.shuffle(out)
    return out
