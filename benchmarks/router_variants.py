"""Router variants on RouteLLM's GSM8K responses: the shipped TF-IDF router beside features from
the local model itself (#12: "router past 0.70 APGR, prompt-only, decision under 1 ms p50").

    python benchmarks/router_variants.py --data ../shared/data/routellm_gsm8k/gsm8k_responses.csv

Same data, folds, label (``no_gain``) and APGR / CPT curve as ``router_quality.py`` /
``hybridgate bench router``; every score comes from a model not trained on that fold. Variants:

- ``tfidf+hand LR``: the shipped ``DifficultyClassifier``.
- ``emb LR`` / ``emb kNN`` / ``emb MLP``: mean of SmolLM2's *input* token embeddings (a table
  lookup, no forward pass), L2-normalised, into logistic regression, cosine kNN or an MLP.
- ``hidden LR`` / ``hidden kNN`` / ``hidden MLP``: mean-pooled last hidden state of SmolLM2 (one
  forward pass over the prompt: what the gateway would pay per decision).
- ``tfidf+hand + hidden``: the mean of the two LR probabilities (an ensemble).

``decision p50 ms`` is featurise + score for one prompt (single thread of work, this CPU),
median over ``--latency-prompts`` prompts. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))
DEFAULT_DATA = _ROOT.parent / "shared" / "data" / "routellm_gsm8k" / "gsm8k_responses.csv"

from router.tuning.routebench import (  # noqa: E402
    GRID_POINTS,
    TARGETS,
    _fold_ids,
    load_routing_csv,
    routing_curve,
    summarize_curve,
)


class Embedder:
    """SmolLM2's tokenizer and weights: input-embedding means and last-hidden-state means."""

    def __init__(self) -> None:
        import torch

        from local_models.loader import load_model

        self.torch = torch
        self.model, self.tokenizer = load_model("smollm2-135m-instruct", precision="fp32")
        self.model.eval()
        self.table = self.model.get_input_embeddings().weight.detach().numpy()

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"][:512]

    def emb(self, text: str) -> np.ndarray:
        v = self.table[self.ids(text)].mean(axis=0)
        return v / (np.linalg.norm(v) + 1e-9)

    def hidden(self, text: str) -> np.ndarray:
        with self.torch.inference_mode():
            ids = self.torch.tensor([self.ids(text)])
            out = self.model(input_ids=ids, output_hidden_states=True)
            v = out.hidden_states[-1][0].mean(dim=0).numpy()
        return v / (np.linalg.norm(v) + 1e-9)


def _lr(C: float = 1.0) -> Callable:  # noqa: N803
    from sklearn.linear_model import LogisticRegression

    def fit(X: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:  # noqa: N803
        model = LogisticRegression(C=C, max_iter=2000).fit(X, y)
        return lambda Z: model.predict_proba(Z)[:, list(model.classes_).index(0)]  # noqa: N803

    return fit


def _knn(k: int = 25) -> Callable:
    def fit(X: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:  # noqa: N803
        def need(Z: np.ndarray) -> np.ndarray:  # noqa: N803
            sims = Z @ X.T
            top = np.argsort(-sims, axis=1)[:, :k]
            weights = np.take_along_axis(sims, top, axis=1).clip(min=1e-6)
            return ((y[top] == 0) * weights).sum(axis=1) / weights.sum(axis=1)

        return need

    return fit


def _mlp(seed: int) -> Callable:
    from sklearn.neural_network import MLPClassifier

    def fit(X: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:  # noqa: N803
        model = MLPClassifier(
            hidden_layer_sizes=(64,),
            alpha=1e-2,
            max_iter=400,
            early_stopping=True,
            random_state=seed,
        ).fit(X, y)
        return lambda Z: model.predict_proba(Z)[:, list(model.classes_).index(0)]  # noqa: N803

    return fit


def _tfidf(seed: int) -> Callable:
    from router.scoring.classifier import DifficultyClassifier

    def fit(texts: list[str], y: np.ndarray) -> Callable[[list[str]], np.ndarray]:
        clf = DifficultyClassifier(features="tfidf+hand").fit(texts, y)
        return lambda T: clf.predict_proba(T)[:, 0]  # noqa: N803

    return fit


def evaluate(
    need_for_fold: Callable[[np.ndarray, np.ndarray], np.ndarray],
    weak: np.ndarray,
    strong: np.ndarray,
    folds: int,
    seed: int,
) -> dict[str, float]:
    n = len(weak)
    fold_of = _fold_ids(n, folds, seed)
    curve = np.zeros(GRID_POINTS)
    for k in range(folds):
        test, train = np.nonzero(fold_of == k)[0], np.nonzero(fold_of != k)[0]
        need = need_for_fold(train, test)
        curve += len(test) / n * routing_curve(need, weak[test], strong[test])
    return summarize_curve(curve, float(weak.mean()), float(strong.mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--prompt-col", default="prompt")
    parser.add_argument("--weak-col", default="mistralai/Mixtral-8x7B-Instruct-v0.1")
    parser.add_argument("--strong-col", default="gpt-4-1106-preview")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--latency-prompts", type=int, default=200)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # a decision runs beside the batcher: one thread is its share
    prompts, weak, strong = load_routing_csv(
        args.data, prompt_col=args.prompt_col, weak_col=args.weak_col, strong_col=args.strong_col
    )
    prompts = list(prompts)
    weak, strong = np.asarray(weak, float), np.asarray(strong, float)
    y = TARGETS["no_gain"](weak, strong)
    embedder = Embedder()
    t0 = time.perf_counter()
    E = np.stack([embedder.emb(p) for p in prompts])  # noqa: N806
    H = np.stack([embedder.hidden(p) for p in prompts])  # noqa: N806
    featurise_s = time.perf_counter() - t0

    def on(X: np.ndarray, make: Callable) -> Callable:  # noqa: N803
        def need(train: np.ndarray, test: np.ndarray) -> np.ndarray:
            return make(X[train], y[train])(X[test])

        return need

    def texts(make: Callable) -> Callable:
        def need(train: np.ndarray, test: np.ndarray) -> np.ndarray:
            return make([prompts[i] for i in train], y[train])([prompts[i] for i in test])

        return need

    def ensemble(seed: int) -> Callable:
        def need(train: np.ndarray, test: np.ndarray) -> np.ndarray:
            a = texts(_tfidf(seed))(train, test)
            b = on(H, _lr())(train, test)
            return (a + b) / 2

        return need

    variants: dict[str, tuple[Callable[[int], Callable], str]] = {
        "tfidf+hand LR (shipped)": (lambda s: texts(_tfidf(s)), "text"),
        "emb LR": (lambda s: on(E, _lr()), "emb"),
        "emb kNN (k=25)": (lambda s: on(E, _knn()), "emb"),
        "emb MLP (64)": (lambda s: on(E, _mlp(s)), "emb"),
        "hidden LR": (lambda s: on(H, _lr()), "hidden"),
        "hidden kNN (k=25)": (lambda s: on(H, _knn()), "hidden"),
        "hidden MLP (64)": (lambda s: on(H, _mlp(s)), "hidden"),
        "tfidf+hand + hidden LR": (ensemble, "text+hidden"),
    }
    # decision latency: featurise one prompt and score it with a model fit on everything
    sample = prompts[: args.latency_prompts]
    tfidf_all = _tfidf(0)(prompts, y)
    lr_e, lr_h = _lr()(E, y), _lr()(H, y)

    def timed(fn: Callable[[str], object]) -> float:
        ms = []
        for p in sample:
            start = time.perf_counter()
            fn(p)
            ms.append((time.perf_counter() - start) * 1000)
        return statistics.median(ms)

    latency = {
        "text": timed(lambda p: tfidf_all([p])),
        "emb": timed(lambda p: lr_e(embedder.emb(p)[None])),
        "hidden": timed(lambda p: lr_h(embedder.hidden(p)[None])),
    }
    latency["text+hidden"] = latency["text"] + latency["hidden"]

    rows = []
    for name, (make, kind) in variants.items():
        runs = [evaluate(make(s), weak, strong, args.folds, s) for s in args.seeds]
        rows.append(
            {
                "variant": name,
                "apgr": statistics.mean(r["apgr"] for r in runs),
                "apgr_sd": statistics.pstdev(r["apgr"] for r in runs),
                "cpt50": statistics.mean(r["cpt50"] for r in runs),
                "decision_p50_ms": latency[kind],
            }
        )
    print(f"n={len(prompts)}, folds={args.folds}, seeds={args.seeds}, label=no_gain")
    print("| variant | APGR (sd over seeds) | CPT(50%) | decision p50 ms |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['apgr']:.3f} ({r['apgr_sd']:.3f}) | {r['cpt50'] * 100:.1f}% "
            f"| {r['decision_p50_ms']:.3f} |"
        )
    print(json.dumps({"n": len(prompts), "featurise_s": featurise_s, "rows": rows}))


if __name__ == "__main__":
    main()
