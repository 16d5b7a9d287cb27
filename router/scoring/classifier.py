"""Difficulty classifier: P(the local/weak model's answer is acceptable) for a prompt.

It follows scikit-learn's estimator shape (constructor stores, ``fit`` returns ``self``, learned
state ends in ``_``) but keeps no scikit-learn object after ``fit``: the vocabulary, idf weights,
scaler statistics and logistic-regression coefficients are plain lists that :meth:`save` writes as
JSON (no pickle) and that :meth:`predict_proba` applies in pure Python, so scoring one request
costs microseconds and importing this module pulls in neither scikit-learn nor torch.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from local_models.answer_checker import fit_vocabulary, tfidf_row
from router._errors import NotFittedError
from router.scoring.features import (
    ANALYZERS,
    HAND_FEATURE_NAMES,
    hand_features,
    parse_feature_spec,
    term_counts,
)

_FORMAT = "hybridgate.difficulty_classifier"
_FORMAT_VERSION = 1
_NOT_SAVED = frozenset({"threshold"})
"""Params left out of saved files: serving reads the policy's thresholds, never these."""


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class DifficultyClassifier:
    """Scores how likely the local model answers a prompt acceptably.

    Usage::

        clf = DifficultyClassifier(features="tfidf+hand").fit(prompts, local_ok)
        clf.predict_proba(["What is 2+2?"])[:, 1]   # P(local acceptable)
        clf.save("router.json")   # then point a policy's ``classifier:`` at it

    Args:
        threshold: The cut :meth:`predict` uses (offline use only). Not saved: the
            gateway applies the policy's ``thresholds.*`` to :meth:`predict_proba`, so a policy
            is the one home of routing cut-offs (``hybridgate tune`` writes them there), and a
            loaded classifier predicts at the default 0.5 until ``set_params`` says otherwise.
        features: Feature sets joined by ``+``: ``tfidf`` (word 1-2-grams), ``char`` (char
            3-5-grams), ``hand`` (counts of numbers, length, operation keywords).
        C: Inverse L2-regularisation strength of the logistic regression; smaller is smoother.
        min_df: Drop terms seen in fewer training prompts than this (noise, model size).
        sublinear_tf: Use ``1 + log(count)`` term frequencies, so repeated words count less.
        class_weight: ``"balanced"`` reweights classes by inverse frequency; ``None`` does not.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        features: str = "tfidf",
        C: float = 1.0,  # noqa: N803 - scikit-learn's name for it
        min_df: int = 1,
        sublinear_tf: bool = True,
        class_weight: str | None = None,
    ) -> None:
        self.threshold = threshold
        self.features = features
        self.C = C
        self.min_df = min_df
        self.sublinear_tf = sublinear_tf
        self.class_weight = class_weight

    # -- estimator protocol -------------------------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the constructor parameters (scikit-learn's contract; ``deep`` is ignored)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> DifficultyClassifier:
        """Set constructor parameters, e.g. ``set_params(threshold=0.7)``; returns ``self``.

        Raises:
            ValueError: If a name is not a constructor parameter.
        """
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for DifficultyClassifier; valid: {sorted(valid)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"DifficultyClassifier({args})"

    def _validate_params(self) -> tuple[str, ...]:
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if not float(self.C) > 0:
            raise ValueError(f"C must be > 0, got {self.C!r}")
        if int(self.min_df) < 1:
            raise ValueError(f"min_df must be >= 1, got {self.min_df!r}")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {self.class_weight!r}")
        return parse_feature_spec(self.features)

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, X: Sequence[str], y: Sequence[int] | np.ndarray) -> DifficultyClassifier:  # noqa: N803
        """Learn vocabulary, idf, scaling and logistic-regression weights.

        Args:
            X: Prompts.
            y: 1 where the local/weak answer was acceptable, 0 where the cloud was needed.

        Returns:
            ``self``, fitted.

        Raises:
            ValueError: On mismatched lengths, non-string prompts, labels other than 0/1, or a
                single class (nothing to learn).
        """
        sets = self._validate_params()
        texts = _check_texts(X)
        labels = np.asarray(y)
        if labels.ndim != 1 or len(labels) != len(texts):
            raise ValueError(f"y must be 1-D with one label per prompt: {len(texts)} prompts")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("y must contain only 0/1 (1 = local answer acceptable)")
        labels = labels.astype(int)
        if len(np.unique(labels)) < 2:
            raise ValueError("y has a single class; need both acceptable (1) and not (0) examples")

        from scipy import sparse  # lazy: scikit-learn's dependency, fit-time only
        from sklearn.linear_model import LogisticRegression

        vocab: dict[str, dict[str, int]] = {}
        idf: dict[str, list[float]] = {}
        blocks = []
        n = len(texts)
        for name in sets:
            if name == "hand":
                continue
            counts = [term_counts(t, name) for t in texts]
            vocab[name], idf[name] = fit_vocabulary(counts, min_df=int(self.min_df))
            rows, cols, vals = [], [], []
            for r, c in enumerate(counts):
                for col, val in self._tfidf_row(c, vocab[name], idf[name]):
                    rows.append(r)
                    cols.append(col)
                    vals.append(val)
            blocks.append(sparse.csr_matrix((vals, (rows, cols)), shape=(n, len(vocab[name]))))
        hand_mean: list[float] = []
        hand_scale: list[float] = []
        if "hand" in sets:
            raw = np.array([hand_features(t) for t in texts], dtype=float)
            mean = raw.mean(axis=0)
            scale = raw.std(axis=0)
            scale[scale == 0] = 1.0
            hand_mean, hand_scale = mean.tolist(), scale.tolist()
            blocks.append(sparse.csr_matrix((raw - mean) / scale))
        design = sparse.hstack(blocks).tocsr()

        model = LogisticRegression(
            C=float(self.C), class_weight=self.class_weight, max_iter=2000, solver="liblinear"
        )
        model.fit(design, labels)
        coef = model.coef_.ravel()

        self.feature_sets_ = sets
        self.vocabulary_ = vocab
        self.idf_ = idf
        self.hand_mean_ = hand_mean
        self.hand_scale_ = hand_scale
        offset = 0
        self.coef_: dict[str, list[float]] = {}
        for name in sets:
            width = len(HAND_FEATURE_NAMES) if name == "hand" else len(vocab[name])
            self.coef_[name] = coef[offset : offset + width].tolist()
            offset += width
        self.intercept_ = float(model.intercept_[0])
        self.classes_ = np.array([0, 1])
        self.n_features_ = int(design.shape[1])
        return self

    def _tfidf_row(
        self, counts: dict[str, int], vocab: dict[str, int], idf: list[float]
    ) -> list[tuple[int, float]]:
        """L2-normalised tf-idf entries ``(column, value)`` of one prompt."""
        return tfidf_row(counts, vocab, idf, sublinear_tf=self.sublinear_tf)

    # -- prediction ---------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(
                "DifficultyClassifier is not fitted: call fit(X, y) or DifficultyClassifier.load()"
            )

    def _logit(self, text: str) -> float:
        z = self.intercept_
        for name in self.feature_sets_:
            coef = self.coef_[name]
            if name == "hand":
                raw = hand_features(text)
                z += sum(
                    w * (v - m) / s
                    for w, v, m, s in zip(coef, raw, self.hand_mean_, self.hand_scale_, strict=True)
                )
            else:
                row = self._tfidf_row(
                    term_counts(text, name), self.vocabulary_[name], self.idf_[name]
                )
                z += sum(coef[col] * v for col, v in row)
        return z

    def local_score(self, text: str) -> float:
        """P(local answer acceptable) for one prompt: the fast path for per-request routing.

        Raises:
            NotFittedError: Before ``fit`` or ``load``.
            ValueError: If ``text`` is not a string.
        """
        self._check_fitted()
        if not isinstance(text, str):
            raise ValueError(f"prompt must be a str, got {type(text).__name__}")
        return _sigmoid(self._logit(text))

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:  # noqa: N803
        """Return an ``(n, 2)`` array: column 0 P(cloud needed), column 1 P(local acceptable).

        Raises:
            NotFittedError: Before ``fit`` or ``load``.
            ValueError: If ``X`` is not a sequence of strings.
        """
        self._check_fitted()
        texts = _check_texts(X)
        p = np.array([_sigmoid(self._logit(t)) for t in texts], dtype=float)
        return np.column_stack([1.0 - p, p]) if len(p) else np.zeros((0, 2))

    def predict(self, X: Sequence[str]) -> np.ndarray:  # noqa: N803
        """Return 1 (local) where P(local acceptable) >= ``threshold``, else 0.

        The gateway does not call this: it compares :meth:`predict_proba` with the policy's
        thresholds (``route``, ``hybrid_low``/``hybrid_high``)."""
        return (self.predict_proba(X)[:, 1] >= float(self.threshold)).astype(int)

    # -- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Params (all but ``threshold``, which the policy owns) and learned state as JSON-ready
        data (what :meth:`save` writes)."""
        self._check_fitted()
        vocab_lists = {
            name: [t for t, _ in sorted(v.items(), key=lambda kv: kv[1])]
            for name, v in self.vocabulary_.items()
        }
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "params": {k: v for k, v in self.get_params().items() if k not in _NOT_SAVED},
            "state": {
                "feature_sets": list(self.feature_sets_),
                "vocabulary": vocab_lists,
                "idf": self.idf_,
                "hand_feature_names": list(HAND_FEATURE_NAMES),
                "hand_mean": self.hand_mean_,
                "hand_scale": self.hand_scale_,
                "coef": self.coef_,
                "intercept": self.intercept_,
                "n_features": self.n_features_,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DifficultyClassifier:
        """Rebuild a fitted classifier from :meth:`to_dict` output.

        Raises:
            ValueError: If the data is not a saved hybridgate classifier of a known version.
        """
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError("not a saved DifficultyClassifier (missing 'format' marker)")
        if data.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"unsupported DifficultyClassifier file version {data.get('version')!r}; "
                f"this hybridgate reads version {_FORMAT_VERSION}"
            )
        state = data["state"]
        if state.get("hand_feature_names", list(HAND_FEATURE_NAMES)) != list(HAND_FEATURE_NAMES):
            raise ValueError("saved classifier uses different hand features; refit it")
        unknown = set(state["feature_sets"]) - set(ANALYZERS) - {"hand"}
        if unknown:
            raise ValueError(f"saved classifier uses unknown feature sets {sorted(unknown)}")
        # Files written before the policy owned the cut-off carry a ``threshold`` nobody read.
        params = {k: v for k, v in data["params"].items() if k not in _NOT_SAVED}
        clf = cls(**params)
        clf.feature_sets_ = tuple(state["feature_sets"])
        clf.vocabulary_ = {
            name: {t: i for i, t in enumerate(terms)} for name, terms in state["vocabulary"].items()
        }
        clf.idf_ = {name: [float(v) for v in vals] for name, vals in state["idf"].items()}
        clf.hand_mean_ = [float(v) for v in state["hand_mean"]]
        clf.hand_scale_ = [float(v) for v in state["hand_scale"]]
        clf.coef_ = {name: [float(v) for v in vals] for name, vals in state["coef"].items()}
        clf.intercept_ = float(state["intercept"])
        clf.classes_ = np.array([0, 1])
        clf.n_features_ = int(state["n_features"])
        return clf

    def save(self, path: str | Path) -> Path:
        """Write params and learned state to one JSON file (no pickle); returns the path.

        Raises:
            NotFittedError: Before ``fit``.
        """
        from local_models._home import write_private  # its vocabulary is the user's prompts

        return write_private(path, json.dumps(self.to_dict(), separators=(",", ":")))

    @classmethod
    def load(cls, path: str | Path) -> DifficultyClassifier:
        """Read a classifier written by :meth:`save`.

        Raises:
            FileNotFoundError: If the file is missing.
            ValueError: If it is not valid JSON or not a saved classifier.
        """
        source = Path(path)
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not a JSON classifier file ({exc})") from exc
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{source}: corrupt classifier file (missing {exc})") from exc


def _check_texts(X: Sequence[str]) -> list[str]:  # noqa: N803
    if isinstance(X, str):
        raise ValueError("X must be a list of prompts, not a single string")
    texts = list(X)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"X[{i}] must be a str prompt, got {type(t).__name__}")
    return texts


__all__ = ["DifficultyClassifier"]
