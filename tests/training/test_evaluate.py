from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.helpers import LABELS, make_examples
from training import EvalResult, closed_answer_set, evaluate, exact_match, predict
from training.dataset import Example


def _ex(answer: str) -> Example:
    return Example(({"role": "user", "content": "q"},), answer, 0.0, "s")


def test_closed_answer_set_detects_small_label_sets() -> None:
    examples = [_ex(LABELS[i % 3]) for i in range(100)]
    assert closed_answer_set(examples) == sorted(LABELS)


def test_closed_answer_set_rejects_open_ended_answers() -> None:
    free = [_ex(f"The answer is {i}, because we add the numbers step by step.") for i in range(100)]
    assert closed_answer_set(free) is None
    many = [_ex(f"label_{i}") for i in range(300)]
    assert closed_answer_set(many, max_labels=200) is None  # 200 labels cover only 67%
    # a few stray long answers do not break the set while coverage stays >= 95%
    mostly = [_ex(LABELS[i % 3]) for i in range(97)] + [_ex("x" * 100)] * 3
    assert closed_answer_set(mostly) == sorted(LABELS)


def test_exact_match_normalizes_case_space_and_end_punctuation() -> None:
    assert exact_match(" Card_Arrival.\n", "card_arrival")
    assert not exact_match("card_arrival_late", "card_arrival")


def test_constrained_decoding_only_emits_allowed_answers(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    convs = [e.messages for e in make_examples(7)]
    free = predict(model, tok, convs, max_new_tokens=6)
    assert not all(a in LABELS for a in free)  # random weights babble when unconstrained
    allowed = (*LABELS, "card")  # "card" is a token-prefix of "card_arrival": both reachable
    got = predict(model, tok, convs, allowed_answers=allowed)
    assert len(got) == 7 and all(a in allowed for a in got)


def test_evaluate_scores_agreement_and_loss(tiny_model_dir: Path) -> None:
    held = make_examples(6)
    res = evaluate(str(tiny_model_dir), held, allowed_answers=LABELS, judge=lambda a, r: True)
    assert isinstance(res, EvalResult) and res.n == 6 and res.agreement == 1.0 and res.loss > 0
    never = evaluate(str(tiny_model_dir), held, allowed_answers=LABELS, judge=lambda a, r: False)
    assert never.agreement == 0.0 and never.loss == pytest.approx(res.loss)
    with pytest.raises(ValueError, match="held-out"):
        evaluate(str(tiny_model_dir), [])


def test_default_judge_picks_by_answer_shape() -> None:
    from training.evaluate import default_judge

    judge = default_judge()
    assert judge("Card_Arrival", "card_arrival") == 1.0
    assert judge("lost_card", "card_arrival") == 0.0
    assert judge("so the total is 42.", "step one... #### 42") == 1.0


def test_answer_sets_are_found_per_traffic_class() -> None:
    from training import answer_sets

    system = {"role": "system", "content": "Reply with the intent only."}
    labelled = [
        Example(messages=(system, *e.messages), answer=e.answer, ts=e.ts, source_id=e.source_id)
        for e in make_examples(30)
    ]
    free = [
        Example(
            messages=({"role": "user", "content": f"what is {i} + {i}?"},),
            answer=f"{i} + {i} = {2 * i}",
            ts=100 + i,
            source_id=f"m{i}",
        )
        for i in range(30)
    ]
    sets = answer_sets(labelled + free)
    assert sets == {"Reply with the intent only.": sorted(LABELS)}
    assert closed_answer_set(labelled + free) is None  # mixed traffic has no set as a whole


def test_predict_constrains_only_the_classes_with_a_set(tiny_model_dir: Path) -> None:
    from training._model import load_trainable

    model, tok, _ = load_trainable(str(tiny_model_dir))
    system = {"role": "system", "content": "Label it."}
    convs = [
        (system, {"role": "user", "content": "where is my card"}),
        ({"role": "user", "content": "where is my card"},),
    ]
    got = predict(model, tok, convs, answer_sets={"Label it.": list(LABELS)})
    assert got[0] in LABELS
    assert got[1] not in LABELS
