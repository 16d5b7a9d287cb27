"""The constrained decoder's one job: which tokens may come next, and the pick among them."""

from __future__ import annotations

import pytest

from local_models.constrained import AnswerTrie, TrieCache, pick

EOS = {9, 7}


def test_a_cursor_allows_continuations_then_eos_where_an_answer_ends():
    cursor = AnswerTrie([[1, 2], [1, 2, 3], [4]]).cursor()
    assert cursor.allowed(EOS) == [1, 4]  # no answer is empty: eos is not allowed yet
    cursor.advance(1)
    assert cursor.allowed(EOS) == [2]
    cursor.advance(2)
    assert cursor.allowed(EOS) == [3, 7, 9]  # "1 2" is whole, "1 2 3" goes on
    assert not cursor.finished
    cursor.advance(3)
    assert cursor.finished and cursor.allowed(EOS) == [7, 9]


def test_advancing_on_a_token_the_trie_never_offered_is_a_bug_not_a_guess():
    cursor = AnswerTrie([[1, 2]]).cursor()
    with pytest.raises(KeyError):
        cursor.advance(5)


def test_pick_is_greedy_among_the_allowed_tokens_only():
    import torch

    logits = torch.tensor([0.0, 5.0, 1.0, 3.0, 3.0, 9.0])
    assert pick(logits, [2, 3]) == 3
    assert pick(logits, [4, 3]) == 4  # a tie goes to the first listed
    assert pick(logits, [0]) == 0  # token 5 scores highest but is not allowed


def test_answers_are_tokenized_alone_and_their_tries_are_built_once(tokenizer):
    cache = TrieCache(tokenizer, max_entries=2)
    trie = cache.get(("card", "card_arrival"))
    assert cache.get(["card", "card_arrival"]) is trie
    cursor = trie.cursor()
    eos = {tokenizer.eos_token_id}
    for token in tokenizer("card", add_special_tokens=False).input_ids:
        assert token in cursor.allowed(eos)
        cursor.advance(token)
    after = cursor.allowed(eos)  # "card" may end here or go on to "card_arrival"
    assert tokenizer.eos_token_id in after and len(after) > 1
    cache.get(("a",))
    cache.get(("b",))  # full: emptied, then refilled
    assert cache.get(("card", "card_arrival")) is not trie
