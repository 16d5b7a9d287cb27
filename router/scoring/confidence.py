"""How sure the local model was of its own answer, from its token log-probabilities.

The cascade answers locally first and keeps the answer when ``confidence >= thresholds.cascade``,
else escalates to the cloud. For a label from a closed answer set it is the label's probability;
otherwise the **geometric-mean token probability**,
``exp(mean logprob)``, in [0, 1]: it needs no training data, is monotone in the average surprise
of the answer and does not shrink with answer length (a product of probabilities would punish
long answers). ``hybridgate tune --what cascade`` picks ``thresholds.cascade`` on this score.

An empty answer has confidence 0.0: there is nothing to trust, so the cascade escalates.

:class:`ConfidenceFeatures` also reports the least likely token and the share of unsure tokens,
for analysis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
    """``exp(mean_logprob)`` in [0, 1]: what :func:`confidence` returns."""
    frac_low_prob: float
    """Share of tokens with probability below :data:`LOW_PROB`."""
    n_tokens: int
    """Number of generated tokens."""


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


def confidence(
    token_logprobs: Sequence[float],
    *,
    closed_answer: bool = False,
    answer_check: float | None = None,
) -> float:
    """Confidence in [0, 1] that a local answer is acceptable.

    An open answer: ``exp(mean logprob)``, the geometric-mean token probability. An answer
    decoded from a closed answer set (a label): ``exp(sum logprob)``, the probability of the
    whole label. A label's later tokens are near-certain once its first is picked, so the mean
    dilutes the one choice that matters; on 1,000 held-out Banking77 rows (77 intents) the
    label probability separated right from wrong better (AUC 0.843 vs 0.824) and a cascade
    tuned to 97% kept 49% local instead of 45% (``benchmarks/confidence_scores.py``).

    With the adapter's answer checker's probability of the label (``answer_check``, see
    ``local_models.answer_checker``) it is the geometric mean of the two,
    ``sqrt(label probability x answer_check)``: a label both the student and a classifier
    trained on the cloud's labels believe is far more often right (AUC 0.843 -> 0.94 on those
    rows; a cascade tuned to 97% kept 72% local instead of 50%, ``distill_banking77.py``).

    Args:
        token_logprobs: Natural-log probability of each generated token.
        closed_answer: The answer came from constrained decoding over a closed set.
        answer_check: The answer checker's probability of that label, in [0, 1] (closed
            answers only; ignored otherwise).

    Returns:
        0.0 for an empty answer, else the score above.

    Raises:
        ValueError: If a logprob is NaN or positive, or ``answer_check`` is not in [0, 1].
    """
    features = confidence_features(token_logprobs)
    if closed_answer and features.n_tokens:
        label = math.exp(features.mean_logprob * features.n_tokens)
        if answer_check is None:
            return label
        if not 0.0 <= answer_check <= 1.0:  # NaN fails it too
            raise ValueError(f"answer_check must be a probability in [0, 1], got {answer_check}")
        return math.sqrt(label * answer_check)
    return features.geometric_mean_prob


__all__ = [
    "LOW_PROB",
    "ConfidenceFeatures",
    "confidence",
    "confidence_features",
]
