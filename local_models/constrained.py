"""Constrained decoding: the one place that decides which tokens may come next.

A row constrained to a closed answer set (``answer_sets.py``) walks a token trie of its
answers: at each step only tokens that continue some answer may be picked, plus end-of-turn
once a whole answer has been emitted, and the row ends at a leaf. ``LocalEngine`` is the only
caller, and serving, the promotion gate (``training.evaluate``) and relabelling all decode
through the engine, so "the gate's accuracy is the served accuracy" holds by construction.
vLLM keeps allowed-token handling in one module (``v1/sample/sampler.py``) for the same reason.

>>> tries = TrieCache(tokenizer)
>>> cursor = tries.get(("card_lost", "balance")).cursor()
>>> token = pick(logits, cursor.allowed(eos_ids)); cursor.advance(token)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

_END = -1
"""Key marking "a whole answer ends here" in a trie node (token ids are never negative)."""

MAX_CACHED_TRIES = 64
"""Answer sets whose tries a ``TrieCache`` keeps (an adapter has one per traffic class)."""


class AnswerTrie:
    """Token trie of one closed answer set; built once, then only walked by cursors."""

    def __init__(self, sequences: Iterable[Sequence[int]]) -> None:
        """Build the trie once; cursors only read it.

        Args:
            sequences: The token ids of each allowed answer (without end-of-turn).
        """
        self.root: dict[int, dict] = {}
        for seq in sequences:
            node = self.root
            for tok in seq:
                node = node.setdefault(int(tok), {})
            node[_END] = {}

    @classmethod
    def from_answers(cls, tokenizer: Any, answers: Iterable[str]) -> AnswerTrie:
        """Tokenize each answer on its own (as training encodes the answers it learns)."""
        return cls(tokenizer(a, add_special_tokens=False).input_ids for a in answers)

    def cursor(self) -> TrieCursor:
        """A fresh walk from the root, one per decoded row."""
        return TrieCursor(self.root)


class TrieCursor:
    """One row's position in an :class:`AnswerTrie`."""

    __slots__ = ("_node",)

    def __init__(self, node: dict[int, dict]) -> None:
        self._node = node

    def allowed(self, eos_ids: Collection[int]) -> list[int]:
        """Token ids that may come next: the continuations of some answer, then ``eos_ids``
        (sorted) when an answer may end here. Never empty: a dead end allows only eos."""
        options = [t for t in self._node if t != _END]
        if _END in self._node or not options:
            options.extend(sorted(eos_ids))
        return options

    def advance(self, token: int) -> None:
        """Step along ``token``, which must be one that :meth:`allowed` offered (eos ends the
        row, so the engine does not advance on it)."""
        self._node = self._node[token]

    @property
    def finished(self) -> bool:
        """A whole answer was emitted and none continues it: the row is done."""
        return set(self._node) == {_END}


class TrieCache:
    """Tries per answer set for one tokenizer, so a batch's rows share the building work."""

    def __init__(self, tokenizer: Any, *, max_entries: int = MAX_CACHED_TRIES) -> None:
        self.tokenizer = tokenizer
        self.max_entries = max_entries
        self._tries: dict[tuple[str, ...], AnswerTrie] = {}

    def get(self, answers: Sequence[str]) -> AnswerTrie:
        """The trie of ``answers`` (built on first use; the cache is emptied when full)."""
        key = tuple(answers)
        trie = self._tries.get(key)
        if trie is None:
            if len(self._tries) >= self.max_entries:
                self._tries.clear()
            trie = self._tries[key] = AnswerTrie.from_answers(self.tokenizer, key)
        return trie


def pick(logits: Any, allowed: Sequence[int]) -> int:
    """The greedy choice among ``allowed`` token ids (the first listed wins a tie).

    Args:
        logits: One row's next-token logits, shape ``(vocab,)`` (a torch tensor).
        allowed: What :meth:`TrieCursor.allowed` returned.
    """
    import torch

    index = torch.tensor(allowed, dtype=torch.long, device=logits.device)
    return int(allowed[int(torch.argmax(logits.index_select(0, index)))])


__all__ = ["MAX_CACHED_TRIES", "AnswerTrie", "TrieCache", "TrieCursor", "pick"]
