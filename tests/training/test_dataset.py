from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from training.dataset import (
    Example,
    examples_from_ledger,
    filter_examples,
    is_refusal,
    load_examples,
    time_split,
)


@dataclass
class Row:
    request_id: str
    ts: float
    route: str
    error_type: str | None
    messages: list[dict] | None
    answer: str | None
    completion_tokens: int = 3


def _ex(prompt: str, answer: str = "ok", ts: float = 0.0) -> Example:
    return Example(({"role": "user", "content": prompt},), answer, ts, prompt[:8])


def test_examples_from_ledger_keeps_only_successful_cloud_rows_with_text() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    rows = [
        Row("a", 10, "cloud", None, msgs, "hello"),
        Row("b", 11, "local", None, msgs, "hello"),  # local answers are not teacher answers
        Row("c", 12, "cloud", "RateLimited", msgs, None),
        Row("d", 13, "cloud", None, None, "hello"),  # messages not stored (privacy mode)
        Row("e", 14, "cloud", None, msgs, "  "),
        Row("f", 5, "cloud", None, msgs, "old"),
    ]
    got = examples_from_ledger(rows, min_ts=10)
    assert [e.source_id for e in got] == ["a"]
    assert got[0].messages == ({"role": "user", "content": "hi"},) and got[0].ts == 10.0


def test_load_csv_text_category_and_prompt_answer(tmp_path: Path) -> None:
    p = tmp_path / "b.csv"
    p.write_text("text,category\nwhere is my card?,card_arrival\nlost it,lost_card\n")
    got = load_examples(p)
    assert [e.answer for e in got] == ["card_arrival", "lost_card"]
    assert got[0].messages == ({"role": "user", "content": "where is my card?"},)
    q = tmp_path / "q.csv"
    q.write_text("prompt,answer\n2+2?,4\n")
    assert load_examples(q)[0].answer == "4"


def test_load_jsonl_and_errors_name_the_problem(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text(
        json.dumps({"messages": [{"role": "user", "content": "x"}], "answer": "y", "ts": 7}) + "\n"
    )
    (ex,) = load_examples(p)
    assert ex.answer == "y" and ex.ts == 7.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [], "answer": "y"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1"):
        load_examples(bad)
    cols = tmp_path / "c.csv"
    cols.write_text("question,label\na,b\n")
    with pytest.raises(ValueError, match="columns"):
        load_examples(cols)
    with pytest.raises(ValueError, match=".txt"):
        load_examples(tmp_path / "x.txt")


def test_refusal_detection() -> None:
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("As an AI language model, I do not have opinions.")
    assert is_refusal("I cannot provide that information.")
    assert not is_refusal("card_arrival")
    assert not is_refusal("Your card should arrive in 3 days; sorry for the wait.")


def test_filters_count_each_reason() -> None:
    examples = [
        _ex(
            "How do I top up my account with a card? I tried twice today and it keeps failing with an error about the card issuer, what should I do next",
            "top_up",
        ),
        _ex(
            "how do i top up my account with a card? i tried twice today and it keeps failing with an error about the card issuer, what should I do next",
            "top_up",
        ),  # exact dup after normalizing
        _ex(
            "  How do I top up my account with a card? I tried twice today and it keeps failing with an error about the card issuer, what should I do next??!",
            "top_up",
        ),  # exact dup too
        _ex(
            "How do I top up my account with a card? I tried twice today and it keeps faling with an error about the card issuer, what should I do next",
            "top_up",
        ),  # near dup (typo)
        _ex("Where is my new card, it has not arrived", "card_arrival"),
        _ex("error row", ""),
        _ex("tell me a secret", "I'm sorry, I cannot help with that."),
        _ex("long " * 400, "x"),
        _ex("weird text that the model finds implausible", "zzz"),
    ]
    kept, report = filter_examples(
        examples,
        max_tokens=256,
        perplexity_fn=lambda e: 1000.0 if e.answer == "zzz" else 5.0,
        max_perplexity=100.0,
    )
    assert [e.answer for e in kept] == ["top_up", "card_arrival"]
    assert report.dropped == {
        "empty_answer": 1,
        "refusal": 1,
        "long_answer": 0,
        "too_long": 1,
        "exact_dup": 2,
        "near_dup": 1,
        "perplexity": 1,
    }
    assert report.n_in == 9 and report.n_out == 2
    assert "9 in, 2 kept" in str(report)


def test_near_dup_keeps_distinct_prompts_at_scale() -> None:
    examples = [_ex(f"customer {i} asks about transfer number {i * 7919}", "t") for i in range(300)]
    kept, report = filter_examples(examples)
    assert len(kept) > 250  # distinct ids are not near-duplicates of each other
    assert report.dropped["exact_dup"] == 0


def test_perplexity_filter_needs_both_arguments() -> None:
    with pytest.raises(ValueError, match="perplexity"):
        filter_examples([_ex("a")], perplexity_fn=lambda e: 1.0)


def test_time_split_holds_out_the_newest_and_never_overlaps() -> None:
    examples = [
        _ex(f"prompt {i}", ts=float(t)) for i, t in enumerate([5, 1, 9, 3, 7, 2, 8, 4, 6, 0])
    ]
    train, held = time_split(examples, holdout_fraction=0.3)
    assert len(held) == 3 and len(train) == 7
    assert max(e.ts for e in train) < min(e.ts for e in held)
    assert sorted(e.ts for e in held) == [7.0, 8.0, 9.0]
    assert not {e.source_id for e in train} & {e.source_id for e in held}


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1])
def test_time_split_rejects_bad_fraction(frac: float) -> None:
    with pytest.raises(ValueError, match="holdout_fraction"):
        time_split([_ex("a", ts=0), _ex("b", ts=1)], holdout_fraction=frac)


def test_long_answers_are_filtered_on_every_path_by_default() -> None:
    """#9.17: the one filter drops long teacher answers (math working) unless told otherwise."""
    examples = [_ex("what is my balance", "balance"), _ex("solve 48 / 2", "Half of 48 is " * 8)]
    kept, report = filter_examples(examples)
    assert [e.answer for e in kept] == ["balance"] and report.dropped["long_answer"] == 1
    kept, _ = filter_examples(examples, max_answer_chars=None)
    assert len(kept) == 2
    with pytest.raises(ValueError, match="max_answer_chars"):
        filter_examples(examples, max_answer_chars=0)
