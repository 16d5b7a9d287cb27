"""#9.17: the promotion gate has a real floor, and judges each traffic class on its own."""

from __future__ import annotations

from training import EvalResult, gate, gate_by_class

INTENT = "Classify the customer's banking message. Reply with the intent label only."
MATH = ""  # GSM8K questions come without a system prompt


def _result(**classes: tuple[float, int]) -> EvalResult:
    """An evaluation with per-class (agreement, n); keys: intent, math."""
    keys = {"intent": INTENT, "math": MATH}
    by_class = {keys[k]: EvalResult(a, 0.5, n) for k, (a, n) in classes.items()}
    n = sum(r.n for r in by_class.values())
    agreement = sum(r.agreement * r.n for r in by_class.values()) / n
    return EvalResult(agreement, 0.5, n, by_class=by_class)


def test_first_adapter_has_a_real_floor() -> None:
    """The 9.5% adapter of the issue was promoted because the first floor was 0."""
    decision = gate(EvalResult(agreement=0.095, loss=1.2, n=200), None)
    assert not decision.promote and "floor 0.500" in decision.reason


def test_first_adapter_with_no_class_above_the_floor_is_rejected() -> None:
    decision = gate_by_class(_result(intent=(0.095, 190), math=(0.0, 10)), None)
    assert not decision.promote and decision.served_classes == ()
    assert "no traffic class clears" in decision.reason


def test_first_adapter_serves_only_the_classes_that_cleared_their_floor() -> None:
    decision = gate_by_class(_result(intent=(0.85, 180), math=(0.1, 12)), None)
    assert decision.promote and decision.served_classes == (INTENT,)
    verdicts = {v.traffic_class: v for v in decision.classes}
    assert verdicts[MATH].serve is False and "floor" in verdicts[MATH].reason
    assert verdicts[INTENT].n == 180 and verdicts[INTENT].current_agreement is None


def test_a_class_with_too_few_heldout_rows_is_not_served() -> None:
    decision = gate_by_class(_result(intent=(0.9, 100), math=(1.0, 3)), None)
    assert decision.served_classes == (INTENT,)
    (math,) = [v for v in decision.classes if v.traffic_class == MATH]
    assert "3 held-out rows, need 10" in math.reason
    loose = gate_by_class(_result(intent=(0.9, 100), math=(1.0, 3)), None, min_class_examples=3)
    assert set(loose.served_classes) == {INTENT, MATH}


def test_later_adapter_must_beat_the_current_one_on_a_class_it_serves() -> None:
    current = _result(intent=(0.80, 100), math=(0.05, 20))
    same = gate_by_class(_result(intent=(0.805, 100), math=(0.3, 20)), current)
    assert not same.promote and "no served class gains" in same.reason  # math gain is below floor
    better = gate_by_class(_result(intent=(0.86, 100), math=(0.05, 20)), current)
    assert better.promote and better.served_classes == (INTENT,)


def test_later_adapter_may_not_give_up_a_class_the_current_one_serves() -> None:
    faq = "Answer from the FAQ."
    current = EvalResult(
        0.8,
        0.5,
        200,
        by_class={INTENT: EvalResult(0.8, 0.5, 100), faq: EvalResult(0.8, 0.5, 100)},
    )
    worse_faq = EvalResult(
        0.7,
        0.5,
        200,
        by_class={INTENT: EvalResult(0.95, 0.5, 100), faq: EvalResult(0.45, 0.5, 100)},
    )
    decision = gate_by_class(worse_faq, current, current_served=[INTENT, faq])
    assert not decision.promote and "worse on 'Answer from the FAQ.'" in decision.reason
    # a class the current adapter was never gated in for is no loss
    ok = gate_by_class(worse_faq, current, current_served=[INTENT])
    assert ok.promote and ok.served_classes == (INTENT,)
