"""Cascade confidence from token log-probabilities."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from router.scoring.confidence import (
    ConfidenceModel,
    confidence,
    confidence_features,
    fit_confidence_model,
)


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


def test_fitted_model_ranks_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    answers, labels = [], []
    for _ in range(200):
        good = rng.random() < 0.5
        lps = list(np.log(rng.uniform(0.7, 1.0, 20)))
        if not good:  # fluent answers with one unsure token are the wrong ones
            lps[int(rng.integers(20))] = math.log(0.05)
        answers.append(lps)
        labels.append(int(good))
    model = fit_confidence_model(answers, labels)
    scores = [confidence(a, model=model) for a in answers]
    good_mean = np.mean([s for s, y in zip(scores, labels, strict=True) if y])
    bad_mean = np.mean([s for s, y in zip(scores, labels, strict=True) if not y])
    assert good_mean > 0.8 and bad_mean < 0.2
    restored = ConfidenceModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert restored == model
    assert confidence([], model=model) == 0.0


def test_fit_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="single class"):
        fit_confidence_model([[-0.1], [-0.2]], [1, 1])
    with pytest.raises(ValueError, match="need one label each"):
        fit_confidence_model([[-0.1]], [1, 0])
    with pytest.raises(ValueError, match="malformed"):
        ConfidenceModel.from_dict({"coef": [1.0]})
