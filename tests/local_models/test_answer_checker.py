"""The answer checker: a second opinion on a closed-set label, stored and swapped with the
adapter, scoring only answers decoded from the adapter's own answer set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local_models import GenerationRequest
from local_models.answer_checker import (
    CHECKER_FILE,
    AnswerChecker,
    fit_answer_checker,
    read_answer_checker,
)
from local_models.errors import ModelLoadError

SYSTEM = "Reply with the intent label only."
TEXTS = {
    "card_lost": ["I lost my card", "my card is lost", "lost card help", "card lost today"],
    "refund": ["where is my refund", "refund not arrived", "I want a refund", "refund please"],
    "balance": ["what is my balance", "show balance", "balance check", "my account balance"],
}


def fitted() -> AnswerChecker:
    texts = [t for ts in TEXTS.values() for t in ts]
    labels = [label for label, ts in TEXTS.items() for _ in ts]
    return fit_answer_checker({SYSTEM: (texts, labels), "one label only": (["a", "b"], ["x"] * 2)})


def test_checker_believes_the_label_its_training_rows_support() -> None:
    checker = fitted()
    probs = {a: checker.probability(SYSTEM, "I lost my card again", a) for a in TEXTS}
    assert max(probs, key=probs.get) == "card_lost"
    assert sum(probs.values()) == pytest.approx(1.0)
    assert checker.probability(SYSTEM, "I lost my card", "not_a_label") == 0.0
    assert checker.probability("another class", "I lost my card", "card_lost") is None
    assert checker.traffic_classes == [SYSTEM]  # a single-label class has nothing to tell apart


def test_checker_round_trips_through_safetensors_and_refuses_a_broken_file(tmp_path) -> None:
    checker = fitted()
    path = checker.save(tmp_path / CHECKER_FILE)
    loaded = read_answer_checker(tmp_path)
    for text in ("refund not here", "balance?", "zzz"):
        for label in TEXTS:
            assert loaded.probability(SYSTEM, text, label) == pytest.approx(
                checker.probability(SYSTEM, text, label), abs=1e-6
            )
    assert read_answer_checker(tmp_path / "elsewhere") is None
    path.write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match=f"{CHECKER_FILE}: unreadable answer checker"):
        read_answer_checker(tmp_path)


def test_engine_scores_its_answer_sets_labels_and_swaps_the_checker_with_the_adapter(
    make_engine, make_adapter
) -> None:
    labels = list(TEXTS)
    checked = Path(make_adapter("checked", seed=3))
    (checked / "metadata.json").write_text(json.dumps({"answer_sets": {SYSTEM: labels}}))
    fitted().save(checked / CHECKER_FILE)
    plain = Path(make_adapter("plain", seed=4))
    (plain / "metadata.json").write_text(json.dumps({"answer_sets": {SYSTEM: labels}}))
    engine = make_engine()
    engine.swap_adapter(str(checked), version="v0002")
    labelled = (
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "I lost my card"},
    )
    reqs = [
        GenerationRequest(messages=labelled, max_tokens=20),
        GenerationRequest(messages=labelled[1:], max_tokens=5),  # no answer set: open answer
        GenerationRequest(messages=labelled, max_tokens=20, allowed_answers=("yes", "no")),
    ]
    set_label, free, own_choice = engine.generate(reqs)
    assert set_label.closed_answer and set_label.text in labels
    expected = engine.checker.probability(SYSTEM, "I lost my card", set_label.text)
    assert set_label.answer_check == pytest.approx(expected)
    assert free.answer_check is None
    assert own_choice.closed_answer and own_choice.answer_check is None  # not the checker's set
    engine.swap_adapter(str(plain), version="v0003")
    after = engine.generate(reqs[:1])[0]
    assert after.closed_answer and after.answer_check is None and engine.checker is None


def test_checker_names_its_own_best_label() -> None:
    checker = fitted()
    label, p = checker.best(SYSTEM, "refund not arrived yet")
    assert label == "refund" and p == pytest.approx(
        checker.probability(SYSTEM, "refund not arrived yet", "refund")
    )
    assert checker.best("another class", "x") is None
