"""How sure the local model was of its own answer, from its token log-probabilities.

The cascade answers locally first and keeps the answer when ``confidence >= threshold``, else
escalates to the cloud. Confidence is in [0, 1]:

- Default (no fitted model): the **geometric-mean token probability**, ``exp(mean logprob)``.
  It needs no training data, is monotone in the average surprise of the answer and does not
  shrink with answer length (a product of probabilities would punish long answers).
- With a :class:`ConfidenceModel` fitted on labelled answers (local answer acceptable or not),
  a logistic regression on :class:`ConfidenceFeatures`, so the output is a calibrated
  P(acceptable); this also uses the minimum and low-probability-token share, which catch a
  single wrong digit in an otherwise fluent answer.

An empty answer has confidence 0.0: there is nothing to trust, so the cascade escalates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

LOW_PROB = 0.5
"""A token with probability below this counts as "unsure" in ``frac_low_prob``."""


@dataclass(frozen=True)
class ConfidenceFeatures:
    """Summary of one answer's token log-probabilities.

    Usage::

        f = confidence_features([-0.1, -0.02, -2.3])
        f.geometric_mean_prob, f.frac_low_prob
    """

    mean_logprob: float
    """Average natural-log probability per token (<= 0)."""
    min_logprob: float
    """The least likely token's log-probability: one unsure token can sink a math answer."""
    geometric_mean_prob: float
    """``exp(mean_logprob)`` in [0, 1]: the default confidence."""
    frac_low_prob: float
    """Share of tokens with probability below :data:`LOW_PROB`."""
    n_tokens: int
    """Number of generated tokens."""

    def vector(self) -> list[float]:
        """The features a :class:`ConfidenceModel` uses, in a fixed order."""
        return [
            self.mean_logprob,
            max(self.min_logprob, -50.0),
            self.geometric_mean_prob,
            self.frac_low_prob,
            math.log1p(self.n_tokens),
        ]


def _check(token_logprobs: Sequence[float]) -> list[float]:
    if isinstance(token_logprobs, (str, bytes)):
        raise ValueError("token_logprobs must be a list of floats, not a string")
    values = [float(v) for v in token_logprobs]
    for i, v in enumerate(values):
        if math.isnan(v) or v > 1e-6:
            raise ValueError(f"token_logprobs[{i}]={v!r} is not a log-probability (must be <= 0)")
    return [min(v, 0.0) for v in values]


def confidence_features(token_logprobs: Sequence[float]) -> ConfidenceFeatures:
    """Summarise per-token log-probabilities.

    Args:
        token_logprobs: Natural-log probability of each generated token.

    Returns:
        The features; an empty answer gives zeros with ``min_logprob=-inf``.

    Raises:
        ValueError: If a value is NaN or positive (not a log-probability).
    """
    values = _check(token_logprobs)
    if not values:
        return ConfidenceFeatures(-math.inf, -math.inf, 0.0, 1.0, 0)
    mean = sum(values) / len(values)
    low = math.log(LOW_PROB)
    return ConfidenceFeatures(
        mean_logprob=mean,
        min_logprob=min(values),
        geometric_mean_prob=math.exp(mean),
        frac_low_prob=sum(v < low for v in values) / len(values),
        n_tokens=len(values),
    )


@dataclass(frozen=True)
class ConfidenceModel:
    """Logistic regression from :class:`ConfidenceFeatures` to P(local answer acceptable).

    Usage::

        model = fit_confidence_model(logprob_lists, labels)
        confidence(result.token_logprobs, model=model)
        ConfidenceModel.from_dict(json.loads(text))   # round-trips through JSON, no pickle
    """

    coef: tuple[float, ...]
    """One weight per entry of :meth:`ConfidenceFeatures.vector` (on standardised features)."""
    intercept: float
    mean: tuple[float, ...]
    """Feature means used for standardising."""
    scale: tuple[float, ...]
    """Feature standard deviations used for standardising."""

    def __post_init__(self) -> None:
        width = len(ConfidenceFeatures(0.0, 0.0, 0.0, 0.0, 0).vector())
        if not (len(self.coef) == len(self.mean) == len(self.scale) == width):
            raise ValueError(f"ConfidenceModel needs {width} coef/mean/scale values")
        if any(s <= 0 for s in self.scale):
            raise ValueError("ConfidenceModel scale values must be > 0")

    def predict(self, features: ConfidenceFeatures) -> float:
        """P(acceptable) for one answer's features."""
        if features.n_tokens == 0:
            return 0.0
        z = self.intercept + sum(
            w * (x - m) / s
            for w, x, m, s in zip(self.coef, features.vector(), self.mean, self.scale, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfidenceModel:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: If fields are missing or malformed.
        """
        try:
            return cls(
                coef=tuple(float(v) for v in data["coef"]),
                intercept=float(data["intercept"]),
                mean=tuple(float(v) for v in data["mean"]),
                scale=tuple(float(v) for v in data["scale"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed ConfidenceModel data: {exc}") from exc


def fit_confidence_model(
    token_logprobs: Sequence[Sequence[float]],
    labels: Sequence[int],
    *,
    C: float = 1.0,  # noqa: N803
) -> ConfidenceModel:
    """Fit a calibrated confidence from labelled local answers.

    Args:
        token_logprobs: One list of token log-probabilities per local answer.
        labels: 1 where that local answer was acceptable (judge agreed with the cloud), else 0.
        C: Inverse L2-regularisation strength.

    Returns:
        The fitted model.

    Raises:
        ValueError: On mismatched lengths, labels other than 0/1, or only one class.
    """
    if len(token_logprobs) != len(labels):
        raise ValueError(
            f"got {len(token_logprobs)} answers but {len(labels)} labels; need one label each"
        )
    ys = [int(v) for v in labels]
    if set(ys) - {0, 1}:
        raise ValueError("labels must be 0/1 (1 = local answer acceptable)")
    if len(set(ys)) < 2:
        raise ValueError("labels have a single class; need acceptable and unacceptable answers")
    import numpy as np
    from sklearn.linear_model import LogisticRegression  # lazy: fit-time only

    raw = np.array([confidence_features(lp).vector() for lp in token_logprobs], dtype=float)
    raw[~np.isfinite(raw)] = -50.0
    mean = raw.mean(axis=0)
    scale = raw.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=C, max_iter=1000).fit((raw - mean) / scale, ys)
    return ConfidenceModel(
        coef=tuple(float(v) for v in model.coef_.ravel()),
        intercept=float(model.intercept_[0]),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
    )


def confidence(token_logprobs: Sequence[float], *, model: ConfidenceModel | None = None) -> float:
    """Confidence in [0, 1] that a local answer is acceptable.

    Args:
        token_logprobs: Natural-log probability of each generated token.
        model: A fitted :class:`ConfidenceModel`; without one, ``exp(mean logprob)``.

    Returns:
        0.0 for an empty answer, else the geometric-mean token probability or the model's
        calibrated probability.

    Raises:
        ValueError: If a value is NaN or positive.
    """
    features = confidence_features(token_logprobs)
    if model is not None:
        return model.predict(features)
    return features.geometric_mean_prob


__all__ = [
    "LOW_PROB",
    "ConfidenceFeatures",
    "ConfidenceModel",
    "confidence",
    "confidence_features",
    "fit_confidence_model",
]
