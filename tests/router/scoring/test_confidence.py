"""Cascade confidence from token log-probabilities."""

from __future__ import annotations

import math

import pytest

from router.scoring.confidence import confidence, confidence_features


def test_default_confidence_is_geometric_mean_probability() -> None:
    lps = [math.log(0.9), math.log(0.5), math.log(0.8)]
    assert confidence(lps) == pytest.approx((0.9 * 0.5 * 0.8) ** (1 / 3))
    assert confidence([0.0, 0.0]) == 1.0
    # length-neutral: repeating the same answer does not lower confidence
    assert confidence(lps * 3) == pytest.approx(confidence(lps))


def test_features() -> None:
    f = confidence_features([math.log(0.9), math.log(0.2), math.log(0.4), math.log(0.99)])
    assert f.n_tokens == 4
    assert f.min_logprob == pytest.approx(math.log(0.2))
    assert f.frac_low_prob == 0.5
    assert f.geometric_mean_prob == pytest.approx(math.exp(f.mean_logprob))


def test_empty_answer_has_zero_confidence_and_bad_values_raise() -> None:
    assert confidence([]) == 0.0
    with pytest.raises(ValueError, match="not a log-probability"):
        confidence([-0.1, 0.5])
    with pytest.raises(ValueError, match="not a log-probability"):
        confidence([float("nan")])


def test_a_label_from_a_closed_answer_set_is_scored_by_its_probability() -> None:
    """A label's first token is the choice; the rest follow. The product keeps that choice's
    doubt undiluted, where the geometric mean would halve it over two near-certain tokens."""
    import math

    lps = [math.log(0.5), math.log(0.99), math.log(0.99)]
    assert confidence(lps, closed_answer=True) == pytest.approx(0.5 * 0.99 * 0.99)
    assert confidence(lps) == pytest.approx((0.5 * 0.99 * 0.99) ** (1 / 3))
    assert confidence([], closed_answer=True) == 0.0


def test_an_answer_checker_opinion_is_combined_with_the_label_probability() -> None:
    lps = [math.log(0.81)]
    assert confidence(lps, closed_answer=True, answer_check=0.25) == pytest.approx(0.45)
    assert confidence(lps, closed_answer=True, answer_check=None) == pytest.approx(0.81)
    assert confidence(lps, closed_answer=False, answer_check=0.0) == pytest.approx(0.81)
    with pytest.raises(ValueError, match="answer_check must be a probability"):
        confidence(lps, closed_answer=True, answer_check=1.5)
