"""Judges compare a local answer with the cloud (teacher) answer."""

from __future__ import annotations

import pytest

from router._transports.base import MockTransport
from router.scoring.judges import (
    JUDGES,
    LLMJudge,
    auto_judge,
    exact_match,
    extract_final_number,
    final_number,
    get_judge,
    label_match,
    token_f1,
)
from router.types import BackendResult


def test_exact_match_ignores_case_punctuation_and_spacing() -> None:
    assert exact_match(answer="  Card Arrival! ", reference="card arrival") == 1.0
    assert exact_match(answer="card arrived", reference="card arrival") == 0.0


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("so 9 * 2 = 18\n#### 18", 18.0),
        ("#### $1,250.", 1250.0),
        ("she makes $18 every day.", 18.0),
        ("it drops to -3.5 degrees", -3.5),
        ("x = 4 then #### 7 (not 4)", 7.0),
        ("no digits here", None),
    ],
)
def test_extract_final_number(text: str, number: float | None) -> None:
    assert extract_final_number(text) == number


def test_final_number_compares_gsm8k_and_prose_answers() -> None:
    local = "Janet sells 16 - 3 - 4 = 9 eggs for 9 * 2 = 18.\n#### 18"
    assert final_number(answer=local, reference="So she makes $18 every day.") == 1.0
    assert final_number(answer="#### 17", reference="She makes $18.") == 0.0
    assert final_number(answer="I do not know", reference="#### 18") == 0.0
    assert final_number(answer="Paris", reference="paris") == 1.0  # no number: exact match


def test_label_match_uses_first_line() -> None:
    assert label_match(answer="card_arrival\nbecause...", reference="card_arrival") == 1.0
    assert label_match(answer="lost_or_stolen_card", reference="card_arrival") == 0.0


def test_token_f1_partial_credit() -> None:
    assert token_f1(answer="the cat sat", reference="the cat sat") == 1.0
    assert token_f1(answer="the cat", reference="the cat sat down") == pytest.approx(2 / 3)
    assert token_f1(answer="dog", reference="cat") == 0.0


def test_registry_and_unknown_name() -> None:
    assert set(JUDGES) == {"exact_match", "final_number", "label_match", "token_f1"}
    assert get_judge("token_f1") is token_f1
    with pytest.raises(ValueError, match="unknown judge 'bleu'"):
        get_judge("bleu")


def test_judges_reject_non_strings() -> None:
    with pytest.raises(ValueError, match="answer must be a str"):
        exact_match(answer=None, reference="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("teacher", "name"),
    [
        ("card_arrival", "label_match"),
        ("Refund request", "label_match"),
        ("9 * 2 = 18\n#### 18", "final_number"),
        ("So the total is 42.", "final_number"),
        ("You can reset your PIN in the app under Settings, then Security.", "token_f1"),
    ],
)
def test_auto_judge(teacher: str, name: str) -> None:
    assert auto_judge(teacher) == name


def test_llm_judge_asks_cloud_and_returns_its_result() -> None:
    replies = iter(["Yes.", "no", "maybe"])
    cloud = MockTransport(lambda r: BackendResult(text=next(replies), cost_usd=0.0002))
    judge = LLMJudge(cloud, model="gpt-4o-mini")
    score, result = judge(answer="18", reference="$18", question="How much?")
    assert score == 1.0 and result.cost_usd == 0.0002
    request = cloud.calls[0]
    assert request.model == "gpt-4o-mini" and request.temperature == 0.0
    assert (
        "$18" in request.messages[-1]["content"] and "How much?" in request.messages[-1]["content"]
    )
    assert judge(answer="17", reference="18")[0] == 0.0
    assert judge(answer="17", reference="18")[0] == 0.0  # unparseable reply: not trusted


def test_llm_judge_needs_a_transport() -> None:
    with pytest.raises(ValueError, match="complete"):
        LLMJudge(object())  # type: ignore[arg-type]
