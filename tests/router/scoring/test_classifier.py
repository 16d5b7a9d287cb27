"""DifficultyClassifier: estimator contract, learning, JSON persistence, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from router.devtools.data import load_gsm8k
from router.errors import NotFittedError
from router.scoring.classifier import DifficultyClassifier

FEATURE_SPECS = ["tfidf", "char", "hand", "tfidf+hand"]


def _synthetic(n: int = 120, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Easy prompts ask for a greeting; hard ones ask for multi-step arithmetic."""
    rng = np.random.default_rng(seed)
    easy = ["say hello to {}", "greet {} politely", "what colour is the sky, {}"]
    hard = [
        "{} buys 12 apples at $3 each, sells 40% of them and then 7 times more; how much left",
        "if {} runs 3.5 miles per hour for 14 hours and 2/3 of a day, how many miles in total",
    ]
    names = ["ann", "bob", "cara", "dev", "eli", "fay"]
    texts, labels = [], []
    for i in range(n):
        name = names[i % len(names)]
        if rng.random() < 0.5:
            texts.append(easy[i % len(easy)].format(name))
            labels.append(1)
        else:
            texts.append(hard[i % len(hard)].format(name))
            labels.append(0)
    return texts, np.array(labels)


def test_constructor_only_stores_and_params_round_trip() -> None:
    clf = DifficultyClassifier(threshold=0.7, features="nonsense", C=2.0)
    assert clf.get_params()["features"] == "nonsense"  # not validated until fit
    assert clf.set_params(threshold=0.3) is clf
    assert clf.get_params()["threshold"] == 0.3
    clone = DifficultyClassifier(**clf.get_params())
    assert clone.get_params() == clf.get_params()
    with pytest.raises(ValueError, match="invalid parameter 'thresh'"):
        clf.set_params(thresh=0.1)


def test_unfitted_use_raises_not_fitted(tmp_path) -> None:
    clf = DifficultyClassifier()
    with pytest.raises(NotFittedError):
        clf.predict_proba(["hi"])
    with pytest.raises(NotFittedError):
        clf.local_score("hi")
    with pytest.raises(NotFittedError):
        clf.save(tmp_path / "c.json")


@pytest.mark.parametrize("features", FEATURE_SPECS)
def test_common_estimator_checks(features: str, tmp_path) -> None:
    X, y = _synthetic()
    clf = DifficultyClassifier(features=features)
    assert clf.fit(X, y) is clf
    assert all(name.endswith("_") for name in vars(clf) if name not in clf.get_params())
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all()
    assert clf.local_score(X[0]) == pytest.approx(proba[0, 1])
    # learns the easy/hard split on unseen prompts
    X_test, y_test = _synthetic(n=60, seed=1)
    assert (clf.predict(X_test) == y_test).mean() >= 0.9
    # JSON round trip reproduces probabilities exactly
    path = clf.save(tmp_path / "clf.json")
    json.loads(path.read_text())  # plain JSON, no pickle
    loaded = DifficultyClassifier.load(path)
    assert loaded.get_params() == clf.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(X_test), clf.predict_proba(X_test))


def test_threshold_controls_predict() -> None:
    X, y = _synthetic()
    clf = DifficultyClassifier(features="tfidf").fit(X, y)
    p = clf.predict_proba(X)[:, 1]
    assert clf.set_params(threshold=0.0).predict(X).all()
    clf.set_params(threshold=float(np.nextafter(p.max(), 2.0)))
    assert not clf.predict(X).any()
    mid = float(np.median(p))
    clf.set_params(threshold=mid)
    np.testing.assert_array_equal(clf.predict(X), (p >= mid).astype(int))


def test_saved_file_leaves_the_cut_off_to_the_policy(tmp_path) -> None:
    """Serving compares predict_proba with the policy's thresholds; a second, saved copy of the
    cut-off in classifier.json was never read, so it is not written (and an old one is ignored)."""
    X, y = _synthetic()
    clf = DifficultyClassifier(threshold=0.9, features="tfidf").fit(X, y)
    path = clf.save(tmp_path / "clf.json")
    data = json.loads(path.read_text())
    assert "threshold" not in data["params"]
    data["params"]["threshold"] = 0.9  # as an older hybridgate wrote it
    path.write_text(json.dumps(data))
    loaded = DifficultyClassifier.load(path)
    assert loaded.threshold == 0.5
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_matches_sklearn_logistic_regression_on_same_features() -> None:
    """The numpy re-implementation must give sklearn's probabilities, or routing drifts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    X, y = _synthetic()
    clf = DifficultyClassifier(features="tfidf", sublinear_tf=True).fit(X, y)
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    ref = LogisticRegression(solver="liblinear").fit(vec.fit_transform(X), y)
    X_test, _ = _synthetic(n=30, seed=2)
    np.testing.assert_allclose(
        clf.predict_proba(X_test), ref.predict_proba(vec.transform(X_test)), atol=1e-6
    )


def test_real_slice_hand_features_beat_chance() -> None:
    rows = load_gsm8k()
    X = [r["prompt"] for r in rows]
    y = np.array([int(r["weak_correct"]) for r in rows])
    clf = DifficultyClassifier(features="hand").fit(X[:200], y[:200])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y[200:], clf.predict_proba(X[200:])[:, 1]) > 0.55


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (["a b", "c d"], [1, 2], "only 0/1"),
        (["a b", "c d"], [1, 1], "single class"),
        (["a b", "c d"], [1], "one label per prompt"),
        (["a b", 3], [1, 0], r"X\[1\] must be a str"),
        ("a string", [1, 0], "list of prompts"),
    ],
)
def test_fit_rejects_bad_input(X, y, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DifficultyClassifier().fit(X, y)


def test_fit_rejects_unknown_feature_set() -> None:
    with pytest.raises(ValueError, match="unknown feature set 'bert'"):
        DifficultyClassifier(features="tfidf+bert").fit(["a b", "c d"], [1, 0])


def test_load_rejects_other_json(tmp_path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a saved DifficultyClassifier"):
        DifficultyClassifier.load(bad)
    bad.write_text("not json")
    with pytest.raises(ValueError, match="not a JSON classifier file"):
        DifficultyClassifier.load(bad)


def test_router_modules_import_without_sklearn_or_torch() -> None:
    """The CLI ``report`` path imports router/; heavy libraries must stay lazy."""
    code = (
        "import sys, router.scoring.classifier, router.scoring.features, router.scoring.confidence, router.scoring.judges, "
        "router.tuning.sweep, router.tuning.routebench\n"
        "heavy = [m for m in ('sklearn', 'torch', 'transformers', 'scipy', 'matplotlib') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
